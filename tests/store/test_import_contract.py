"""The store contract of the batched reads and the all-or-nothing import (``current_many``,
``history_many``, ``import_changes``, ``resume_imports``), run against every backend as
tests/store/test_contract.py runs the rest; and what each backend does when an import fails
midway (SQLite: a statement failing inside the transaction; Redis: the server stopped while the
import is staged, and while it is applied)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.consent.model import ConsentEvent, ConsentRecord, ConsentState, fold
from gateway.store import redis as redis_module
from gateway.store.base import ConsentStore, ImportChange, StoreError, StoreUnavailableError
from gateway.store.guard import FailClosedStore
from gateway.store.redis import RedisStore
from tests.store.test_contract import (
    SCOPE_CAMPAIGN,
    SCOPE_NUMBER,
    SUB_A,
    SUB_B,
    Backend,
    server_for,
)
from tests.store.test_contract import make_event as contract_event
from tests.support.redis_server import RedisServer, redis_server_binary


def make_event(
    subscriber: str = SUB_A,
    scope: str = SCOPE_NUMBER,
    state: ConsentState = ConsentState.OPTED_OUT,
    *,
    at: float = 1_700_000_000.0,
) -> ConsentEvent:
    return contract_event(subscriber, scope, state, at=at)


def new(event: ConsentEvent) -> ImportChange:
    """A change planned against no record."""
    return ImportChange(event=event, expected=None)


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "guarded-sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind: str = request.param
    server = server_for(kind, request)
    backend = Backend(kind, tmp_path, server)
    yield backend
    await backend.close()


@pytest.fixture
async def store(backend: Backend) -> ConsentStore:
    return await backend.new()


async def snapshot(store: ConsentStore, subscribers: list[str]) -> Any:
    """Everything an import could change: records, histories, the count."""
    return (
        [r async for r in store.export()],
        await store.history_many(subscribers),
        await store.record_count(),
    )


def subscribers(n: int) -> list[str]:
    return [f"1555300{i:04d}" for i in range(n)]


class TestManyReads:
    async def test_current_many_equals_current(self, store: ConsentStore) -> None:
        """Every subscriber asked for is answered, {} for one without records, across
        several batches, with exactly what current() says."""
        subs = subscribers(4500)
        events = [make_event(s) for s in subs[:4400]]
        events.append(make_event(subs[0], SCOPE_CAMPAIGN, ConsentState.OPTED_IN))
        assert await store.import_events(events) == len(events)
        asked = [*subs, subs[0]]  # a duplicate is answered once
        found = await store.current_many(asked)
        assert set(found) == set(subs)
        for subscriber in (subs[0], subs[1], subs[4399], subs[4400], subs[4499]):
            assert dict(found[subscriber]) == dict(await store.current(subscriber))
        assert dict(found[subs[4450]]) == {}
        assert set(found[subs[0]]) == {SCOPE_NUMBER, SCOPE_CAMPAIGN}
        assert await store.current_many([]) == {}

    async def test_history_many_equals_history(self, store: ConsentStore) -> None:
        """Histories in append order per subscriber, [] for one without events."""
        first = make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_OUT)
        other = make_event(SUB_B, SCOPE_NUMBER, ConsentState.OPTED_IN)
        second = make_event(SUB_A, SCOPE_CAMPAIGN, ConsentState.OPTED_IN)
        for event in (first, other, second):
            await store.append(event)
        found = await store.history_many([SUB_A, SUB_B, "15559999999"])
        assert found == {SUB_A: [first, second], SUB_B: [other], "15559999999": []}
        assert found[SUB_A] == await store.history(SUB_A)


class TestImportChanges:
    async def test_appends_in_order_like_append(self, store: ConsentStore) -> None:
        """Every change is appended in order: history, current, export and the count all
        show it as if each had been appended on its own."""
        events = [make_event(s, at=1_700_000_000.0 + i) for i, s in enumerate(subscribers(2500))]
        events.append(make_event(SUB_A, SCOPE_CAMPAIGN, ConsentState.BLOCKED))
        outcome = await store.import_changes([new(e) for e in events])
        assert outcome.appended == len(events)
        assert outcome.conflicts == frozenset()
        assert await store.record_count() == len(events)
        exported = [r async for r in store.export()]
        assert sorted(exported, key=lambda r: (r.subscriber, r.scope)) == sorted(
            fold(events).values(), key=lambda r: (r.subscriber, r.scope)
        )
        assert await store.history(SUB_A) == [events[-1]]
        assert await store.history(subscribers(1)[0]) == [events[0]]

    async def test_a_changed_record_is_not_overwritten(self, store: ConsentStore) -> None:
        """A change planned against a record that is no longer current is refused (a STOP
        that came meanwhile stays); the others are applied."""
        planned_on = make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_IN)
        await store.append(planned_on)
        stop = make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_OUT)
        await store.append(stop)  # arrives after the import was planned
        on_b = make_event(SUB_B, SCOPE_NUMBER, ConsentState.OPTED_OUT)
        await store.append(on_b)
        stale = make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_IN)
        absent = make_event(SUB_B, SCOPE_NUMBER, ConsentState.OPTED_IN)  # "no record": wrong
        matching = make_event(SUB_B, SCOPE_CAMPAIGN, ConsentState.OPTED_IN)
        follows = make_event("15550000003", SCOPE_NUMBER, ConsentState.OPTED_IN)
        outcome = await store.import_changes(
            [
                ImportChange(event=stale, expected=planned_on.event_id),
                new(absent),
                new(matching),
                new(follows),
            ]
        )
        assert outcome.appended == 2
        assert outcome.conflicts == {stale.event_id, absent.event_id}
        current_a = await store.current(SUB_A)
        assert current_a[SCOPE_NUMBER].last_event_id == stop.event_id
        current_b = await store.current(SUB_B)
        assert current_b[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        assert current_b[SCOPE_CAMPAIGN].state is ConsentState.OPTED_IN
        assert await store.history(SUB_A) == [planned_on, stop]
        again = make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_IN)
        outcome = await store.import_changes([ImportChange(event=again, expected=stop.event_id)])
        assert outcome.appended == 1
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_IN

    async def test_the_same_import_twice_appends_nothing_more(self, store: ConsentStore) -> None:
        """Planned again against what it was planned against before, a retried import is
        refused as a whole: a retry cannot append twice."""
        changes = [new(make_event(s)) for s in subscribers(30)]
        assert (await store.import_changes(changes)).appended == 30
        before = await snapshot(store, subscribers(30))
        retry = [new(make_event(c.event.subscriber)) for c in changes]
        outcome = await store.import_changes(retry)
        assert outcome.appended == 0
        assert len(outcome.conflicts) == 30
        assert await snapshot(store, subscribers(30)) == before

    async def test_misuse_writes_nothing(self, store: ConsentStore) -> None:
        """Two changes of one pair, or an event with a dedup_key, are refused before
        anything is written."""
        good = new(make_event(SUB_B))
        twice = [good, new(make_event(SUB_A)), new(make_event(SUB_A))]
        with pytest.raises(StoreError, match="two changes"):
            await store.import_changes(twice)
        if isinstance(store, FailClosedStore):
            await store.probe()  # the guard takes misuse for a failure too: clear it
        keyed = contract_event(SUB_A, dedup_key="k")
        with pytest.raises(StoreError, match="dedup_key"):
            await store.import_changes([good, new(keyed)])
        if isinstance(store, FailClosedStore):
            await store.probe()  # the guard takes misuse for a failure too: clear it
        assert await store.record_count() == 0
        assert await store.history_many([SUB_A, SUB_B]) == {SUB_A: [], SUB_B: []}

    async def test_nothing_to_import_and_nothing_to_resume(self, store: ConsentStore) -> None:
        """An empty import appends nothing; with no import cut off, nothing is resumed."""
        assert (await store.import_changes([])).appended == 0
        assert (await store.resume_imports()).appended == 0
        assert await store.record_count() == 0

    async def test_own_cache_and_peers_see_the_import(self, backend: Backend) -> None:
        """A cached answer from before the import is never given after it, here or on a
        peer (another instance or process on the same data)."""
        first = await backend.new()
        await first.append(make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_IN))
        assert (await first.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        peer = await backend.peer(first) if backend.shared else None
        if peer is not None:
            assert (await peer.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        record = (await first.current(SUB_A))[SCOPE_NUMBER]
        stop = make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_OUT)
        outcome = await first.import_changes(
            [ImportChange(event=stop, expected=record.last_event_id)]
        )
        assert outcome.appended == 1
        assert (await first.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        if peer is not None:
            if isinstance(peer, RedisStore):
                await peer.sync()
            assert (await peer.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT


# --- failures midway ---------------------------------------------------------------------------


def _arm_sqlite_failure(path: Path, after: int) -> None:
    """A trigger in the store file that makes the ``after``-th event insert fail (a statement
    failing in the middle of the import's transaction, as a full disk would)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute(
            "CREATE TRIGGER fail_midway BEFORE INSERT ON events"
            f" WHEN (SELECT count(*) FROM events) >= {after}"
            " BEGIN SELECT RAISE(ABORT, 'injected failure'); END"
        )
        conn.commit()
    finally:
        conn.close()


def _disarm_sqlite_failure(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TRIGGER fail_midway")
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["sqlite", "guarded-sqlite"])
async def test_sqlite_failure_midway_leaves_the_store_as_it_was(kind: str, tmp_path: Path) -> None:
    """An import that fails after 1,500 of its 3,000 events were inserted leaves records,
    histories and the count exactly as they were; the same import then goes through."""
    backend = Backend(kind, tmp_path, None)
    try:
        store = await backend.new()
        existing = make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_IN)
        await store.append(existing)
        subs = subscribers(3000)
        before = await snapshot(store, [SUB_A, *subs])
        path = Path(backend._where[id(store)])
        _arm_sqlite_failure(path, after=1500)
        changes = [new(make_event(s)) for s in subs]
        with pytest.raises(StoreError, match="injected failure"):
            await store.import_changes(changes)
        _disarm_sqlite_failure(path)
        if kind == "guarded-sqlite":
            await store.probe()
        assert await snapshot(store, [SUB_A, *subs]) == before
        assert (await store.import_changes(changes)).appended == 3000
        assert await store.record_count() == 3001
    finally:
        await backend.close()


needs_redis = pytest.mark.skipif(redis_server_binary() is None, reason="needs redis-server")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone, so it can be stopped without hurting others."""
    if redis_server_binary() is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


async def _open(server: RedisServer, prefix: str) -> RedisStore:
    return await RedisStore.from_url(f"{server.url}?prefix={prefix}&timeout_s=1", instance="t")


async def _redis_keys(server: RedisServer, pattern: str) -> list[str]:
    raw = Redis(host=server.host, port=server.port, decode_responses=True)
    try:
        return sorted([k async for k in raw.scan_iter(match=pattern)])
    finally:
        await raw.aclose()


@pytest.mark.redis
@needs_redis
class TestRedisFailureMidway:
    async def test_server_stopped_while_staging(
        self, own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Redis stopped (killed) after part of the import was staged: once it is back,
        nothing counts (records, histories, count as before) and nothing is resumed; the
        same import then goes through."""
        prefix = f"s{uuid.uuid4().hex[:8]}"
        store = await _open(own_redis, prefix)
        existing = make_event(SUB_A)
        await store.append(existing)
        subs = subscribers(5000)
        before = await snapshot(store, [SUB_A, *subs])
        monkeypatch.setattr(redis_module, "_IMPORT_STAGE_PIPELINE", 1)  # a round trip a chunk
        real_call = store._call
        calls = 0

        async def call_then_crash(awaitable: Any) -> Any:
            nonlocal calls
            result = await real_call(awaitable)
            calls += 1
            if calls == 2:  # two chunks of 1,000 are staged: Redis crashes
                own_redis.kill()
            return result

        monkeypatch.setattr(store, "_call", call_then_crash)
        changes = [new(make_event(s)) for s in subs]
        with pytest.raises(StoreUnavailableError):
            await store.import_changes(changes)
        assert calls == 2  # it never got to the commit point
        monkeypatch.setattr(store, "_call", real_call)
        own_redis.start()
        await store.close()
        store = await _open(own_redis, prefix)
        try:
            assert await _redis_keys(own_redis, f"{prefix}:import:*:changes")  # staged, inert
            assert (await store.resume_imports()).appended == 0
            assert await snapshot(store, [SUB_A, *subs]) == before
            assert (await store.import_changes(changes)).appended == 5000
            assert await store.record_count() == 5001
            assert await _redis_keys(own_redis, f"{prefix}:imports") == []
        finally:
            await store.close()

    async def test_server_stopped_while_applying(self, own_redis: RedisServer) -> None:
        """Redis stopped after the commit point and two chunks: the committed run is kept,
        and resume_imports applies the rest once (the import ends up whole, never twice)."""
        prefix = f"a{uuid.uuid4().hex[:8]}"
        store = await _open(own_redis, prefix)
        subs = subscribers(5000)
        apply = store._import_apply_script
        applied = 0

        async def apply_then_crash(*args: Any, **kwargs: Any) -> Any:
            nonlocal applied
            result = await apply(*args, **kwargs)
            applied += 1
            if applied == 3:
                own_redis.kill()  # the third chunk is queued in a pipeline that never returns
            return result

        store._import_apply_script = apply_then_crash  # type: ignore[assignment]
        changes = [new(make_event(s, at=1_700_000_000.0 + i)) for i, s in enumerate(subs)]
        with pytest.raises(StoreUnavailableError):
            await store.import_changes(changes)
        await store.close()
        own_redis.start()
        store = await _open(own_redis, prefix)
        try:
            partial = await store.record_count()
            assert 0 < partial < 5000  # what was applied before the crash shows
            told: list[ConsentEvent] = []

            async def on_change(events: Sequence[ConsentEvent]) -> None:
                told.extend(events)

            guarded = FailClosedStore(store, name="redis")
            guarded.on_change = on_change
            resumed = await guarded.resume_imports()
            assert partial + resumed.appended == 5000
            # The whole import goes to the audit trail now, the chunks before the crash too.
            assert sorted(e.event_id for e in told) == sorted(c.event.event_id for c in changes)
            assert told == list(resumed.events)
            assert await store.record_count() == 5000
            histories = await store.history_many(subs)
            assert all(len(histories[s]) == 1 for s in subs)  # nothing applied twice
            exported: list[ConsentRecord] = [r async for r in store.export()]
            assert sorted(exported, key=lambda r: r.subscriber) == sorted(
                fold(c.event for c in changes).values(), key=lambda r: r.subscriber
            )
            assert (await store.resume_imports()).appended == 0
            assert await _redis_keys(own_redis, f"{prefix}:import:*:changes") == []
        finally:
            await store.close()
