"""Redis-specific behaviour: outages, crash durability, Sentinel, URL forms."""

from __future__ import annotations

import asyncio
import json
import select
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelConnectionPool

from gateway.consent.model import ConsentEvent, ConsentState
from gateway.store.base import StoreError, StoreUnavailableError
from gateway.store.guard import FailClosedStore
from gateway.store.inbox import Inbox
from gateway.store.redis import RedisStore, client_from_url
from tests.store.test_contract import (
    SCOPE_NUMBER,
    SUB_A,
    SUB_B,
    load_cached,
    make_event,
    make_reply,
    mids,
)
from tests.support.redis_server import RedisServer, redis_server_binary

needs_redis = pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server")


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, so it can be killed without hurting others."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


@pytest.mark.redis
@needs_redis
class TestOutage:
    async def test_outage_fails_fast_and_loses_nothing(self, own_server: RedisServer) -> None:
        """Redis killed: calls raise StoreUnavailableError fast; restarted: all acks are there."""
        store = await RedisStore.from_url(
            own_server.url + "?timeout_s=0.5&heartbeat_s=0.2", instance="t"
        )
        try:
            acknowledged = [
                make_event(state=ConsentState.OPTED_OUT, dedup_key=f"k{i}") for i in range(20)
            ]
            for event in acknowledged:
                assert await store.append(event) is True
            await store.current(SUB_A)

            own_server.kill()
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await store.append(make_event())
            with pytest.raises(StoreUnavailableError):
                await store.current(SUB_B)
            assert time.monotonic() - started < 3.0

            own_server.start()
            later = make_event(state=ConsentState.OPTED_IN)
            assert await store.append(later) is True
            assert await store.history(SUB_A) == [*acknowledged, later]
            assert await store.append(acknowledged[0]) is False  # dedup survived the crash
            await store.wait_cache_ready(5.0)
            await store.sync()
            assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        finally:
            await store.close()

    async def test_cache_is_dropped_when_the_channel_is_lost(self, own_server: RedisServer) -> None:
        """After the invalidation connection is lost, nothing is answered from the cache."""
        store = await RedisStore.from_url(own_server.url + "?heartbeat_s=0.2", instance="t")
        try:
            await store.append(make_event())
            await store.current(SUB_A)
            assert store.cached_current(SUB_A) is not None
            own_server.kill()
            with pytest.raises(StoreUnavailableError):
                await store.sync()  # the listener cannot have confirmed anything since
            own_server.start()
            await store.wait_cache_ready(5.0)
            assert store.cached_current(SUB_A) is None  # emptied on reconnection
        finally:
            await store.close()

    async def test_open_against_nothing_fails_fast(self) -> None:
        """Opening a store where no Redis listens raises StoreUnavailableError."""
        with pytest.raises(StoreUnavailableError):
            await RedisStore.from_url("redis://127.0.0.1:1/0?timeout_s=0.5", instance="t")


@pytest.mark.redis
@needs_redis
class TestServerErrors:
    """A server that answers but refuses (OOM, a replica's READONLY...) is as unavailable as one
    that is gone: every redis-py error is StoreUnavailableError."""

    async def test_out_of_memory_refuses_writes_then_recovers(
        self, own_server: RedisServer
    ) -> None:
        """maxmemory 1 with noeviction: the append script and the probe fail with OOM, behind
        the guard the store faults; memory back: the probe passes and the write goes in."""
        admin = Redis(host=own_server.host, port=own_server.port, decode_responses=True)
        store = await RedisStore.from_url(own_server.url + "?heartbeat_s=0.2", instance="t")
        guard = FailClosedStore(store, recovery_interval_s=0.02)
        try:
            assert await guard.append(make_event(SUB_B)) is True
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", 1)
            with pytest.raises(StoreUnavailableError, match="maxmemory") as info:
                await store.append(make_event(dedup_key="oom"))
            assert SUB_A not in str(info.value)  # redis-py quotes the keys: numbers are masked
            with pytest.raises(StoreUnavailableError, match="maxmemory"):
                await store.probe()
            with pytest.raises(StoreUnavailableError, match="maxmemory"):
                await guard.append(make_event(dedup_key="oom"))
            assert guard.fault is not None
            with pytest.raises(StoreUnavailableError, match="maxmemory"):
                await guard.ping()  # /readyz says why
            await admin.config_set("maxmemory", 0)
            await guard.wait_healthy(10.0)
            assert await guard.append(make_event(dedup_key="oom")) is True
            assert [e.dedup_key for e in await guard.history(SUB_A)] == ["oom"]
            assert await guard.record_count() == 2
        finally:
            await admin.config_set("maxmemory", 0)
            await admin.aclose()
            await guard.close()

    async def test_undecodable_data_is_unavailable(self, redis_server: RedisServer) -> None:
        """A current record or history entry that does not decode raises StoreUnavailableError
        (the proxy then answers "try later"), not an error the proxy would not catch."""
        store = await RedisStore.from_url(redis_server.url + "?prefix=garbled", instance="t")
        raw = Redis(host=redis_server.host, port=redis_server.port)
        try:
            await raw.hset(f"garbled:{{{SUB_A}}}:c", "number:1", b"\xff not json")
            await raw.rpush(f"garbled:{{{SUB_B}}}:h", b"[1, 2")
            with pytest.raises(StoreUnavailableError, match="undecodable"):
                await store.current(SUB_A)
            with pytest.raises(StoreUnavailableError, match="undecodable"):
                await store.history(SUB_B)
            await raw.set("garbled:records", "many")
            with pytest.raises(StoreUnavailableError, match="undecodable record counter"):
                await store.record_count()
        finally:
            await raw.aclose()
            await store.close()

    async def test_probe_waits_for_replicas(self, redis_server: RedisServer) -> None:
        """With wait_replicas the probe includes WAIT: no replica means the probe fails."""
        store = await RedisStore.from_url(
            redis_server.url + "?prefix=probewait&wait_replicas=1&wait_timeout_s=0.05",
            instance="t",
        )
        try:
            with pytest.raises(StoreUnavailableError, match="0 of 1 replicas"):
                await store.probe()
        finally:
            await store.close()

    async def test_older_store_counts_from_zero(self, redis_server: RedisServer) -> None:
        """Records written before the counter existed are not counted (missing key: 0); the
        count grows from the first change on."""
        store = await RedisStore.from_url(redis_server.url + "?prefix=oldcount", instance="t")
        raw = Redis(host=redis_server.host, port=redis_server.port)
        try:
            await raw.hset(f"oldcount:{{{SUB_B}}}:c", "number:1", '["opted_out", 1.0, "e"]')
            assert await store.record_count() == 0
            await store.append(make_event(SUB_A))
            assert await store.record_count() == 1
        finally:
            await raw.aclose()
            await store.close()


@pytest.mark.redis
@needs_redis
class TestMessageIdKeys:
    async def test_one_key_per_upstream_id_with_its_ttl(self, redis_server: RedisServer) -> None:
        """A put sets PREFIX:mid:<upstream_id> to a JSON object with a PX expiry; a put with
        no time left deletes the key; nothing is counted as a consent record."""
        store = await RedisStore.from_url(redis_server.url + "?prefix=midkeys", instance="t")
        raw = Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
        try:
            await store.put_message_ids([mids("up 1", "gw-1", "gw-2"), mids("up-2")], 60.0)
            assert json.loads(await raw.get("midkeys:mid:up 1")) == {
                "c": ["gw-1", "gw-2"],
                "a": "acme_sys",
            }
            assert 59_000 < await raw.pttl("midkeys:mid:up-2") <= 60_000
            await store.put_message_ids([mids("up-2", "gw-3")], 0.0)
            assert await raw.exists("midkeys:mid:up-2") == 0
            assert await store.record_count() == 0
        finally:
            await raw.aclose()
            await store.close()

    async def test_undecodable_value_is_unavailable(self, redis_server: RedisServer) -> None:
        """A stored value that is not the expected JSON raises StoreUnavailableError."""
        store = await RedisStore.from_url(redis_server.url + "?prefix=midbad", instance="t")
        raw = Redis(host=redis_server.host, port=redis_server.port)
        try:
            await raw.set("midbad:mid:a", b"\xff not json")
            await raw.set("midbad:mid:b", b'{"c": 5, "a": "x"}')
            await raw.set("midbad:mid:c", b"[1, 2]")
            for upstream_id in ("a", "b", "c"):
                with pytest.raises(StoreUnavailableError, match="undecodable"):
                    await store.get_message_ids(upstream_id)
        finally:
            await raw.aclose()
            await store.close()

    async def test_put_waits_for_replicas(self, redis_server: RedisServer) -> None:
        """With wait_replicas a put is followed by WAIT: no replica means the put fails."""
        store = await RedisStore.from_url(
            redis_server.url + "?prefix=midwait&wait_replicas=1&wait_timeout_s=0.05",
            instance="t",
        )
        try:
            with pytest.raises(StoreUnavailableError, match="0 of 1 replicas"):
                await store.put_message_ids([mids("up-1", "gw-1")], 60.0)
        finally:
            await store.close()

    @pytest.mark.parametrize("ttl_s", [float("inf"), float("nan")])
    async def test_non_finite_ttl_is_misuse(self, redis_server: RedisServer, ttl_s: float) -> None:
        """A ttl that is not a finite number is a caller's error, not an unavailable store."""
        store = await RedisStore.from_url(redis_server.url + "?prefix=midttl", instance="t")
        try:
            with pytest.raises(StoreError, match="finite") as info:
                await store.put_message_ids([mids("up-1", "gw")], ttl_s)
            assert not isinstance(info.value, StoreUnavailableError)
        finally:
            await store.close()


@pytest.mark.redis
@needs_redis
class TestSentinel:
    async def test_store_through_sentinel(self, redis_server: RedisServer, tmp_path: Path) -> None:
        """A redis+sentinel:// URL finds the master through Sentinel and works."""
        sentinel = RedisServer(
            tmp_path / "sentinel", sentinel_for=(redis_server.host, redis_server.port)
        )
        sentinel.start()
        try:
            url = f"redis+sentinel://{sentinel.host}:{sentinel.port}/mymaster/0?prefix=sent"
            store = await RedisStore.from_url(url, instance="t")
            try:
                assert await store.append(make_event(SUB_B)) is True
                assert (await store.current(SUB_B))[SCOPE_NUMBER].state is (ConsentState.OPTED_OUT)
            finally:
                await store.close()
        finally:
            sentinel.stop()


class TestUrls:
    def test_plain_url(self) -> None:
        """redis:// gives a client on that host, port and db, and our options."""
        client, options = client_from_url(
            "redis://:secret@10.0.0.5:6380/2?prefix=acme&timeout_s=0.25", instance="i"
        )
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("10.0.0.5", 6380, 2)
        assert kwargs["password"] == "secret"
        assert options.prefix == "acme"
        assert options.timeout_s == 0.25

    def test_sentinel_url(self) -> None:
        """redis+sentinel:// lists sentinels, then the service name and the db."""
        client, _ = client_from_url(
            "redis+sentinel://s1:26379,s2/mymaster/1?sentinel_password=x", instance="i"
        )
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "mymaster"
        assert pool.connection_kwargs["db"] == 1

    def test_tls_url(self) -> None:
        """rediss:// turns TLS on."""
        client, _ = client_from_url("rediss://h:6379/0", instance="i")
        assert client.connection_pool.connection_class.__name__ == "SSLConnection"

    @pytest.mark.parametrize(
        "url",
        [
            "redis://h/0?bogus=1",
            "redis://h/0?prefix=a:b",
            "redis://h/0?timeout_s=soon",
            "redis+sentinel://s1:26379",
            "redis://h:port/0",
            "redis://h/0?max_replies=0",
        ],
    )
    def test_bad_urls_are_refused(self, url: str) -> None:
        """A malformed URL or unknown parameter raises StoreError naming the problem."""
        with pytest.raises(StoreError, match=r"store\.url"):
            client_from_url(url, instance="i")


@pytest.mark.redis
class TestSync:
    async def test_sync_returns_after_peer_write(self, redis_server: RedisServer) -> None:
        """sync() returns once a peer's acknowledged opt-out has reached this cache."""
        url = redis_server.url + "?prefix=syncpeer"
        first = await RedisStore.from_url(url, instance="a")
        second = await RedisStore.from_url(url, instance="b")
        try:
            await second.current(SUB_A)
            assert second.cached_current(SUB_A) == {}
            await asyncio.gather(first.append(make_event()), first.append(make_event(SUB_B)))
            await second.sync()
            assert second.cached_current(SUB_A) is None
        finally:
            await first.close()
            await second.close()


@pytest.mark.redis
@needs_redis
class TestCacheLease:
    async def test_cache_stays_up_across_quiet_heartbeats(self, own_server: RedisServer) -> None:
        """With no invalidations at all, heartbeat replies keep the cache answering for many
        lease periods (redis-py mis-parses PONG on a subscribed connection; any reply counts)."""
        # A lease of 0.6 s (3 x heartbeat): a loaded machine that stalls the loop longer than
        # a lease rightly turns the cache off, and that is not what this test is about.
        store = await RedisStore.from_url(own_server.url + "?heartbeat_s=0.2", instance="t")
        try:
            await store.current(SUB_A)
            assert store.cached_current(SUB_A) == {}
            # Over three lease periods of silence: the behaviour under test is what time does
            # to the lease, so time has to pass.
            await asyncio.sleep(2.0)
            assert store.cache_ready
            assert store.cached_current(SUB_A) == {}
        finally:
            await store.close()


@pytest.mark.redis
@needs_redis
class TestReplyKeys:
    async def test_records_live_under_the_subscribers_hash_tag(
        self, redis_server: RedisServer
    ) -> None:
        """Records are PREFIX:{s}:r (reply id -> JSON) and PREFIX:{s}:ro (ids in order), both
        trimmed to max_replies; no invalidation is published and nothing is counted."""
        store = await RedisStore.from_url(
            redis_server.url + "?prefix=rkeys&max_replies=2", instance="t"
        )
        raw = Redis(host=redis_server.host, port=redis_server.port, decode_responses=True)
        pubsub = raw.pubsub()
        try:
            await pubsub.subscribe("rkeys:invalidate")
            for i in range(3):
                await store.record_reply(make_reply(reply_id=f"r{i}", at=float(i)))
            assert await raw.lrange(f"rkeys:{{{SUB_A}}}:ro", 0, -1) == ["r1", "r2"]
            kept = await raw.hgetall(f"rkeys:{{{SUB_A}}}:r")
            assert sorted(kept) == ["r1", "r2"]
            assert json.loads(kept["r2"])["text"] == make_reply().text
            assert await store.record_count() == 0
            messages = []
            while (message := await pubsub.get_message(timeout=0.05)) is not None:
                messages.append(message)
            assert [m["type"] for m in messages] == ["subscribe"]
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await raw.aclose()
            await store.close()

    async def test_undecodable_value_is_unavailable(self, redis_server: RedisServer) -> None:
        """A stored record that is not the expected JSON raises StoreUnavailableError."""
        store = await RedisStore.from_url(redis_server.url + "?prefix=rbad", instance="t")
        raw = Redis(host=redis_server.host, port=redis_server.port)
        try:
            await raw.hset(f"rbad:{{{SUB_A}}}:r", "x", b'{"reply_id": "x"}')
            await raw.rpush(f"rbad:{{{SUB_A}}}:ro", "x")
            with pytest.raises(StoreUnavailableError, match="undecodable"):
                await store.replies(SUB_A)
        finally:
            await raw.aclose()
            await store.close()

    async def test_record_waits_for_replicas(self, redis_server: RedisServer) -> None:
        """With wait_replicas a record is followed by WAIT: no replica means it fails."""
        store = await RedisStore.from_url(
            redis_server.url + "?prefix=rwait&wait_replicas=1&wait_timeout_s=0.05",
            instance="t",
        )
        try:
            with pytest.raises(StoreUnavailableError, match="0 of 1 replicas"):
                await store.record_reply(make_reply())
        finally:
            await store.close()


def change_elsewhere(url: str, event: ConsentEvent) -> None:
    """Append ``event`` through a store of another instance, on a thread and loop of its own,
    while the caller's event loop gets no turn (its listener task cannot run meanwhile)."""

    async def write() -> None:
        other = await RedisStore.from_url(url, instance="elsewhere")
        try:
            await other.append(event)
        finally:
            await other.close()

    thread = threading.Thread(target=asyncio.run, args=(write(),))
    thread.start()
    thread.join()


async def wait_unread(store: RedisStore, timeout_s: float = 5.0) -> bool:
    """Block the loop until a subscription connection of ``store`` has bytes in the kernel,
    then end the turn (the inbox polls once per turn) before the listener can read them."""
    fds = [fd for fd, _buffer in store._inbox._watched.values()]
    readable, _w, _x = select.select(fds, [], [], timeout_s)
    await asyncio.sleep(0)
    return bool(readable)


@pytest.mark.redis
@needs_redis
class TestInvalidationInFlight:
    """A change committed elsewhere whose invalidation has reached this process but not yet
    its listener task: the loop may run an MT's callback first, and the cache must not answer
    it from the state before the change (gateway.store.inbox)."""

    async def test_an_unread_invalidation_sends_the_lookup_to_redis(
        self, own_server: RedisServer
    ) -> None:
        """Cached as allowed, opted out elsewhere, invalidation unread: cached_current is None
        and current() reads the opt-out from Redis; once read, the cache answers again."""
        store = await RedisStore.from_url(own_server.url, instance="here")
        try:
            assert await load_cached(store, SUB_A) == {}  # the empty answer is cached
            change_elsewhere(own_server.url, make_event(state=ConsentState.OPTED_OUT))
            assert await wait_unread(store)
            assert store._inbox.pending()
            assert store.cached_current(SUB_A) is None
            assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
            await store.sync()
            cached = await load_cached(store, SUB_A)  # answered from the cache again
            assert cached[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        finally:
            await store.close()

    async def test_a_connection_that_cannot_be_watched_turns_the_cache_off(
        self, own_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """redis-py internals not as expected: store_cache_unsafe is logged and every lookup
        goes to Redis (never a cached answer), yet lookups work."""

        watch = Inbox.watch

        def blind(self: Inbox, pubsub: object) -> tuple[int, str | None]:
            return watch(self, object())  # as if redis-py had no such attributes

        monkeypatch.setattr(Inbox, "watch", blind)
        with structlog.testing.capture_logs() as logged:
            store = await RedisStore.from_url(own_server.url, instance="here")
        try:
            assert [e for e in logged if e["event"] == "store_cache_unsafe"]
            assert await store.current(SUB_A) == {}
            assert store.cached_current(SUB_A) is None
            await store.append(make_event(state=ConsentState.OPTED_OUT))
            assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
            assert store.cached_current(SUB_A) is None
        finally:
            await store.close()


def test_an_inbox_watching_nothing_is_pending() -> None:
    """With no connection watched (not yet subscribed, or between reconnections) the inbox
    never lets the cache answer; a watch that fails leaves it blind until forgotten."""
    inbox = Inbox()
    assert inbox.pending()
    handle, problem = inbox.watch(object())
    assert problem is not None
    assert "cannot watch" in problem
    assert inbox.pending()
    inbox.forget(handle)
    assert inbox.pending()
