"""What only a Redis Cluster store has to show, on a real three-master cluster on loopback: a
subscriber's keys in one slot, changes seen at once by another instance, a master down failing
closed and recovering, imports and exports across slots, the URL's refusals; and that the
single-Redis key names are still the ones older releases wrote."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from gateway.consent.caps import CapReservation
from gateway.consent.model import ConsentState
from gateway.store.base import ImportChange, StoreError, StoreUnavailableError
from gateway.store.factory import count_records, open_store
from gateway.store.redis import RedisStore
from gateway.store.rediscluster import (
    SLOTS,
    RedisClusterStore,
    key_slot,
    parse_cluster_url,
    slot_tags,
)
from tests.store.test_contract import (
    SCOPE_CAMPAIGN,
    SCOPE_NUMBER,
    load_cached,
    make_event,
    make_reply,
)
from tests.store.test_redis import wait_unread
from tests.support.redis_server import RedisClusterServers, RedisServer

pytestmark = pytest.mark.redis


def prefix() -> str:
    return f"c{uuid.uuid4().hex[:10]}"


def subscribers_on_every_master(store: RedisClusterStore, per_master: int = 1) -> list[str]:
    """Subscriber numbers whose slots are served by each of the masters."""
    found: dict[str, list[str]] = {}
    n = 0
    while len(found) < 3 or any(len(v) < per_master for v in found.values()):
        subscriber = f"1555{n:07d}"
        owner = store._current_map().owners[key_slot(store._key(subscriber, "c"))]
        if len(found.setdefault(owner, [])) < per_master:
            found[owner].append(subscriber)
        n += 1
    return [s for part in found.values() for s in part]


@pytest.fixture
async def opened(redis_cluster: RedisClusterServers) -> AsyncIterator[list[RedisClusterStore]]:
    stores: list[RedisClusterStore] = []
    yield stores
    for store in stores:
        await store.close()


async def open_pair(
    cluster: RedisClusterServers, stores: list[RedisClusterStore], query: str = ""
) -> tuple[RedisClusterStore, RedisClusterStore]:
    url = f"{cluster.url}?prefix={prefix()}&timeout_s=1{query}"
    first = await RedisClusterStore.from_url(url, instance="a")
    stores.append(first)
    second = await RedisClusterStore.from_url(url, instance="b")
    stores.append(second)
    return first, second


def test_slot_function_agrees_with_redis(redis_cluster: RedisClusterServers) -> None:
    """Our CRC16 gives the slot CLUSTER KEYSLOT gives, and every slot has a tag of its own."""
    client = redis_cluster.servers[0]
    for key in ("gw:{15550000001}:c", "gw:mid:abc", "foo{}bar", "gw:records:{n7}", "x"):
        assert key_slot(key) == int(
            redis_cluster._cli("cluster", "keyslot", key, port=client.port).strip()
        )
    tags = slot_tags()
    assert len(tags) == SLOTS
    assert [key_slot("{" + t + "}") for t in tags] == list(range(SLOTS))


async def test_a_subscribers_keys_share_one_slot(
    redis_cluster: RedisClusterServers, opened: list[RedisClusterStore]
) -> None:
    """Every key written for one subscriber (records, history, dedup mark, footer, replies)
    is in one slot, and the record counter it moves is in that slot too."""
    store, _peer = await open_pair(redis_cluster, opened)
    subscriber = "15550001234"
    await store.append(make_event(subscriber, dedup_key="k1"))
    await store.mark_footer_seen(subscriber, "acme", 1.0)
    await store.record_reply(make_reply(subscriber))
    keys: list[str] = []
    for server in redis_cluster.servers:
        client = Redis(host=server.host, port=server.port, decode_responses=True)
        try:
            keys.extend([k async for k in client.scan_iter(match=f"{store._p}:*")])
        finally:
            await client.aclose()
    mine = [k for k in keys if "{" + subscriber + "}" in k]
    assert {k.rsplit(":", 1)[-1] for k in mine} >= {"c", "h", "f", "r", "ro"}
    assert any(":d:" in k for k in mine)
    slots = {key_slot(k) for k in mine}
    assert slots == {key_slot(store._key(subscriber, "c"))}
    assert {key_slot(store._records_key_for(subscriber))} == slots
    assert await store.record_count() == 1


async def test_a_change_through_one_instance_is_seen_by_another_at_once(
    redis_cluster: RedisClusterServers, opened: list[RedisClusterStore]
) -> None:
    """Subscribers on each master, cached by the second instance: a change made through the
    first is what the second answers once sync() returns, never its cached record."""
    first, second = await open_pair(redis_cluster, opened)
    subscribers = subscribers_on_every_master(first)
    for subscriber in subscribers:
        await first.append(make_event(subscriber, state=ConsentState.OPTED_IN))
    await second.sync()
    for subscriber in subscribers:
        assert (await second.current(subscriber))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        assert second.cached_current(subscriber) is not None  # cached now
    for subscriber in subscribers:
        await first.append(make_event(subscriber, state=ConsentState.OPTED_OUT))
    await second.sync()
    for subscriber in subscribers:
        assert second.cached_current(subscriber) is None  # the invalidation arrived
        assert (await second.current(subscriber))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT


async def test_a_master_down_fails_closed_and_recovers(
    redis_cluster: RedisClusterServers,
) -> None:
    """One master killed: the guarded store refuses (StoreUnavailableError, never a stale or
    empty answer), its cache is off; once the master is back with its data, the guard's
    probe brings the store back and what was written before is there."""
    url = f"{redis_cluster.url}?prefix={prefix()}&timeout_s=0.5&recovery_interval_s=0.1"
    guarded = await open_store(url, instance="t")
    try:
        inner = guarded.inner
        assert isinstance(inner, RedisClusterStore)
        subscribers = subscribers_on_every_master(inner)
        for subscriber in subscribers:
            await guarded.append(make_event(subscriber))
            await guarded.current(subscriber)
        victim = redis_cluster.servers[1]
        name = f"{victim.host}:{victim.port}"
        on_victim = next(
            s
            for s in subscribers
            if inner._current_map().owners[key_slot(inner._key(s, "c"))] == name
        )
        victim.kill()
        try:
            with pytest.raises(StoreUnavailableError):
                await guarded.history(on_victim)
            assert not inner.cache_ready  # dropped with the failed call, not at the lease's end
            for subscriber in subscribers:  # the guard refuses every subscriber meanwhile
                with pytest.raises(StoreUnavailableError):
                    await guarded.current(subscriber)
            with pytest.raises(StoreUnavailableError):
                await guarded.append(make_event(subscribers[0]))
        finally:
            victim.start()
            redis_cluster.wait_ok()
        await guarded.wait_healthy(15)
        await inner.wait_cache_ready(10)
        for subscriber in subscribers:
            assert (await guarded.current(subscriber))[SCOPE_NUMBER].state is (
                ConsentState.OPTED_OUT
            )
    finally:
        await guarded.close()


async def test_import_and_export_across_slots(
    redis_cluster: RedisClusterServers, opened: list[RedisClusterStore]
) -> None:
    """An import that spans every master lands whole; the export and the count have all of
    it; a second instance sees it."""
    first, second = await open_pair(redis_cluster, opened)
    subscribers = subscribers_on_every_master(first, per_master=40)
    changes = [ImportChange(event=make_event(s), expected=None) for s in subscribers]
    changes += [
        ImportChange(event=make_event(s, SCOPE_CAMPAIGN), expected=None) for s in subscribers[:10]
    ]
    outcome = await first.import_changes(changes)
    assert outcome.appended == len(changes)
    assert await second.record_count() == len(changes)
    exported = [(r.subscriber, r.scope) async for r in second.export()]
    assert sorted(exported) == sorted((c.event.subscriber, c.event.scope) for c in changes)
    await second.sync()
    assert (await second.current(subscribers[-1]))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT


async def test_an_import_cut_off_after_its_commit_point_is_resumed(
    redis_cluster: RedisClusterServers,
    opened: list[RedisClusterStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The apply step fails after the commit point: a later resume applies every slot's share,
    once; a second resume finds nothing."""
    first, second = await open_pair(redis_cluster, opened)
    subscribers = subscribers_on_every_master(first, per_master=5)
    changes = [ImportChange(event=make_event(s), expected=None) for s in subscribers]

    async def cut_off(run: str) -> Any:
        raise StoreUnavailableError("redis: cut off")

    monkeypatch.setattr(first, "_apply_run", cut_off)
    with pytest.raises(StoreUnavailableError):
        await first.import_changes(changes)
    assert await second.record_count() == 0
    resumed = await second.resume_imports()
    assert resumed.appended == len(changes)
    assert {e.event_id for e in resumed.events} == {c.event.event_id for c in changes}
    assert await second.record_count() == len(changes)
    assert (await second.resume_imports()).appended == 0
    history = await second.history_many(subscribers)
    assert all(len(events) == 1 for events in history.values())


async def test_an_import_that_fails_before_its_commit_point_leaves_nothing(
    redis_cluster: RedisClusterServers,
    opened: list[RedisClusterStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commit refused: nothing counts, nothing is resumed, no staged key is left."""
    first, second = await open_pair(redis_cluster, opened)
    subscribers = subscribers_on_every_master(first, per_master=3)
    changes = [ImportChange(event=make_event(s), expected=None) for s in subscribers]

    async def refuse(key: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        if script is first._run_commit_script:
            raise StoreUnavailableError("redis: refused")
        return await RedisClusterStore._on_run_node(first, key, script, keys, args)

    monkeypatch.setattr(first, "_on_run_node", refuse)
    with pytest.raises(StoreUnavailableError):
        await first.import_changes(changes)
    assert (await second.resume_imports()).appended == 0
    assert await second.record_count() == 0
    left = []
    for server in redis_cluster.servers:
        client = Redis(host=server.host, port=server.port, decode_responses=True)
        try:
            left.extend([k async for k in client.scan_iter(match=f"{first._p}:import:*")])
        finally:
            await client.aclose()
    assert left == []


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("/0", "database 0 only"),
        ("?sentinel_password=x", "sentinel_password does not apply"),
        ("?bogus=1", "unknown parameter"),
    ],
)
async def test_url_refusals_name_store_url(
    redis_cluster: RedisClusterServers, query: str, words: str
) -> None:
    with pytest.raises(StoreError, match=r"store\.url") as caught:
        await count_records(redis_cluster.url + query)
    assert words in str(caught.value)


async def test_single_redis_key_names_are_unchanged(redis_server: RedisServer) -> None:
    """Data as earlier releases wrote it on one Redis (``gw:{s}:c``, ``gw:{s}:h``,
    ``gw:records``) is read as it is: upgrading never loses a consent change."""
    p = prefix()
    event = make_event("15550009999")
    raw = Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
    try:
        await raw.hset(
            f"{p}:{{15550009999}}:c",
            SCOPE_NUMBER,
            f'["{event.state.value}",{event.at},"{event.event_id}"]',
        )
        await raw.set(f"{p}:records", 1)
    finally:
        await raw.aclose()
    store = await RedisStore.from_url(f"{redis_server.url}?prefix={p}", instance="t")
    try:
        record = (await store.current("15550009999"))[SCOPE_NUMBER]
        assert (record.state, record.last_event_id) == (ConsentState.OPTED_OUT, event.event_id)
        assert await store.record_count() == 1
    finally:
        await store.close()


def test_cluster_url_seeds_options_and_tls() -> None:
    """Seeds in order (default port 6379), our options, credentials and TLS from the URL."""
    seeds, options, pool = parse_cluster_url(
        "rediss+cluster://u:p%40ss@h1:7000,h2,[::1]:7002?prefix=x&timeout_s=0.3"
        "&wait_replicas=1&ssl_cert_reqs=none"
    )
    assert seeds == [("h1", 7000), ("h2", 6379), ("::1", 7002)]
    assert (options.prefix, options.timeout_s, options.wait_replicas) == ("x", 0.3, 1)
    assert (pool["username"], pool["password"]) == ("u", "p@ss")
    assert pool["connection_class"].__name__ == "SSLConnection"
    assert pool["ssl_cert_reqs"] == "none"
    _seeds, _options, plain = parse_cluster_url("redis+cluster://h1:7000")
    assert plain["connection_class"].__name__ == "Connection"
    assert "ssl_cert_reqs" not in plain


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://",
        "redis+cluster://h:7000/1",
        "redis+cluster://h:port",
        "redis+cluster://h:7000?timeout_s=soon",
        "redis+cluster://h:7000?prefix=a:b",
    ],
)
def test_bad_cluster_urls_are_refused(url: str) -> None:
    with pytest.raises(StoreError, match=r"store\.url"):
        parse_cluster_url(url)


async def test_a_run_abandoned_while_staging_is_swept_after_a_day(
    redis_cluster: RedisClusterServers,
    opened: list[RedisClusterStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An importer that died between staging and its commit point leaves staged shares that no
    lookup reads; a day later the next resume marks the run aborted and deletes them, and a
    commit of that run is refused from then on."""
    first, second = await open_pair(redis_cluster, opened)
    subscribers = subscribers_on_every_master(first, per_master=2)
    changes = [ImportChange(event=make_event(s), expected=None) for s in subscribers]

    async def die(key: str, script: Any, keys: list[str], args: list[Any]) -> Any:
        raise StoreUnavailableError("redis: the importer died here")

    async def no_cleanup(run: str) -> None:
        return None  # a killed process cleans nothing up

    monkeypatch.setattr(first, "_on_run_node", die)
    monkeypatch.setattr(first, "_abort_run", no_cleanup)
    with pytest.raises(StoreUnavailableError):
        await first.import_changes(changes)

    async def staged_keys() -> list[str]:
        found: list[str] = []
        for server in redis_cluster.servers:
            client = Redis(host=server.host, port=server.port, decode_responses=True)
            try:
                found.extend([k async for k in client.scan_iter(match=f"{first._p}:import:*")])
            finally:
                await client.aclose()
        return found

    assert await staged_keys()  # left behind, counted nowhere
    assert (await second.resume_imports()).appended == 0  # not a day old yet: kept
    assert await staged_keys()
    _committed, staging = second._run_keys()
    run = str((await second._call(second._client_for(staging).zrange(staging, 0, -1)))[0])
    later = time.time() + 2 * 86_400
    monkeypatch.setattr("gateway.store.rediscluster.time.time", lambda: later)
    assert (await second.resume_imports()).appended == 0
    assert await staged_keys() == []
    assert await second.record_count() == 0
    record = second._run_key(run)
    with pytest.raises(StoreUnavailableError, match="abandoned"):
        await RedisClusterStore._on_run_node(
            second, record, second._run_commit_script, [record, *second._run_keys()], [run]
        )


async def test_daemon_start_on_a_cluster_that_does_not_answer_fails_closed() -> None:
    """The daemon's way in (start_unavailable): a cluster whose seeds do not answer opens in a
    fault; every call is refused, nothing raises anything else."""
    url = "redis+cluster://127.0.0.1:1,127.0.0.1:2?timeout_s=0.2&recovery_interval_s=0.1"
    with pytest.raises(StoreUnavailableError):
        await open_store(url, instance="t")
    guarded = await open_store(url, instance="t", start_unavailable=True)
    try:
        assert guarded.fault is not None
        with pytest.raises(StoreUnavailableError):
            await guarded.current("15550000001")
        with pytest.raises(StoreUnavailableError):
            await guarded.append(make_event("15550000001"))
    finally:
        await guarded.close()


async def test_wait_replicas_waits_on_the_master_that_took_the_write(
    redis_cluster: RedisClusterServers, opened: list[RedisClusterStore]
) -> None:
    """wait_replicas=1 on masters without replicas: an append on each master and the probe
    are reported unavailable, as WAIT on the master that took the write answers 0."""
    first, _second = await open_pair(redis_cluster, opened, "&wait_replicas=1&wait_timeout_s=0.05")
    for subscriber in subscribers_on_every_master(first):
        with pytest.raises(StoreUnavailableError, match="reached 0 of 1 replicas"):
            await first.append(make_event(subscriber))
    with pytest.raises(StoreUnavailableError, match="reached 0 of 1 replicas"):
        await first.probe()


def move_slot(
    cluster: RedisClusterServers, slot: int, source: RedisServer, target: RedisServer
) -> None:
    """Move one slot, with its keys, from ``source`` to ``target`` (what resharding does)."""
    src = SyncRedis(host=source.host, port=source.port, decode_responses=True)
    dst = SyncRedis(host=target.host, port=target.port, decode_responses=True)
    try:
        src_id, dst_id = src.execute_command("CLUSTER MYID"), dst.execute_command("CLUSTER MYID")
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
        while keys := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
        for node in (dst, src):
            node.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
        for server in cluster.servers:
            if server not in (source, target):
                other = SyncRedis(host=server.host, port=server.port)
                try:
                    other.execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)
                finally:
                    other.close()
    finally:
        src.close()
        dst.close()
    cluster.wait_ok()


async def test_a_slot_moved_away_fails_closed_then_the_new_map_is_used(
    redis_cluster: RedisClusterServers,
) -> None:
    """A subscriber's slot moved to another master under a running store: the old master's
    MOVED is a refusal (never followed), the probe reads the new map, and the store recovers
    with the subscriber's data, now on the new master; its changes still reach a peer."""
    url = f"{redis_cluster.url}?prefix={prefix()}&timeout_s=1&recovery_interval_s=0.1"
    guarded = await open_store(url, instance="t")
    peer = await RedisClusterStore.from_url(url.partition("&recovery")[0], instance="p")
    try:
        inner = guarded.inner
        assert isinstance(inner, RedisClusterStore)
        subscriber = subscribers_on_every_master(inner)[0]
        await guarded.append(make_event(subscriber, state=ConsentState.OPTED_IN))
        slot = key_slot(inner._key(subscriber, "c"))
        by_name = {f"{s.host}:{s.port}": s for s in redis_cluster.servers}
        source = by_name[inner._current_map().owners[slot]]
        target = next(s for s in redis_cluster.servers if s is not source)
        move_slot(redis_cluster, slot, source, target)
        with pytest.raises(StoreUnavailableError):
            await guarded.history(subscriber)  # sent to the old master: MOVED
        await guarded.wait_healthy(10)
        assert inner._current_map().owners[slot] == f"{target.host}:{target.port}"
        assert [e.state for e in await guarded.history(subscriber)] == [ConsentState.OPTED_IN]
        await inner.wait_cache_ready(10)
        assert (await guarded.current(subscriber))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        await peer.refresh_map()
        await peer.append(make_event(subscriber, state=ConsentState.OPTED_OUT))
        await inner.sync()
        assert (await guarded.current(subscriber))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        assert await guarded.record_count() == 1
    finally:
        await peer.close()
        await guarded.close()


async def test_an_unread_invalidation_from_any_master_sends_the_lookup_to_redis(
    redis_cluster: RedisClusterServers, opened: list[RedisClusterStore]
) -> None:
    """Subscribers on every master, cached as allowed; each opted out through another
    instance while this loop gets no turn: with the invalidation unread, nothing is answered
    from the cache, and the lookup reads the opt-out (gateway.store.inbox, one per master)."""
    url = f"{redis_cluster.url}?prefix={prefix()}&timeout_s=1"
    store = await RedisClusterStore.from_url(url, instance="here")
    opened.append(store)
    for subscriber in subscribers_on_every_master(store, per_master=1):
        assert await load_cached(store, subscriber) == {}

        async def write(subscriber: str = subscriber) -> None:
            other = await RedisClusterStore.from_url(url, instance="elsewhere")
            try:
                await other.append(make_event(subscriber, state=ConsentState.OPTED_OUT))
            finally:
                await other.close()

        thread = threading.Thread(target=asyncio.run, args=(write(),))
        thread.start()
        thread.join()  # this loop (and so the listener) gets no turn meanwhile
        assert await wait_unread(store)
        assert store._inbox.pending()
        assert store.cached_current(subscriber) is None
        assert (await store.current(subscriber))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT


async def test_a_batch_of_reservations_across_slots_and_masters(
    redis_cluster: RedisClusterServers, opened: list[RedisClusterStore]
) -> None:
    """A batch over two subscribers on each master (so a pipeline of scripts per master, one
    script per slot) is counted in order for each, also after every master lost its scripts."""
    store, peer = await open_pair(redis_cluster, opened)
    subscribers = subscribers_on_every_master(store, per_master=2)
    for server in redis_cluster.servers:
        client = Redis(host=server.host, port=server.port)
        try:
            await client.script_flush()
        finally:
            await client.aclose()
    day = 86_400.0
    batch = [
        CapReservation(s, "c:acme", f"{s}-{n}", 2, day, 1_700_000_000.0 + n)
        for n in range(3)
        for s in subscribers
    ]
    verdicts = await store.reserve_sends(batch)
    assert [(v.allowed, v.counted) for v in verdicts] == (
        [(True, 1)] * 6 + [(True, 2)] * 6 + [(False, 2)] * 6
    )
    for subscriber in subscribers:
        assert await peer.sends_counted(subscriber, "c:acme", day, 1_700_000_010.0) == 2
