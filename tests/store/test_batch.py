"""Cache misses of one loop turn read together (gateway.store.batch) on SQLite, Redis and a
Redis cluster: one backend call per turn, the cache's ticket rules, failures fail every waiter."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.consent.model import ConsentRecord, ConsentState
from gateway.store.base import ConsentStore, StoreUnavailableError
from gateway.store.guard import FailClosedStore
from gateway.store.redis import RedisStore
from gateway.store.sqlite import SqliteStore
from tests.store.test_contract import Backend, expected_current, make_event, server_for

Records = Mapping[str, ConsentRecord]
SUBSCRIBERS = [f"1555020{i:04d}" for i in range(60)]


@pytest.fixture(
    params=[
        "sqlite",
        "guarded-sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    kind: str = request.param
    backend = Backend(kind, tmp_path, server_for(kind, request))
    yield backend
    await backend.close()


def inner(store: ConsentStore) -> SqliteStore | RedisStore:
    """The backend itself (behind the guard, where there is one)."""
    found = store.inner if isinstance(store, FailClosedStore) else store
    assert isinstance(found, SqliteStore | RedisStore)
    return found


async def ready(store: ConsentStore) -> None:
    backend = inner(store)
    if isinstance(backend, RedisStore):
        await backend.wait_cache_ready(5.0)


def count_reads(store: ConsentStore) -> list[list[str]]:
    """Record each ``current_many`` the backend is asked for (its subscribers)."""
    backend = inner(store)
    calls: list[list[str]] = []
    real = backend.current_many

    def counted(subscribers: Iterable[str]) -> Awaitable[dict[str, Records]]:
        wanted = list(subscribers)
        calls.append(wanted)
        return real(wanted)

    backend.current_many = counted  # type: ignore[method-assign]
    return calls


def count_round_trips(store: ConsentStore) -> list[int]:
    """Count the backend's own calls: SQLite reader jobs, Redis round trips (``_call``)."""
    backend = inner(store)
    calls: list[int] = []
    if isinstance(backend, SqliteStore):
        reader = backend._reader
        real_submit = reader.submit

        def submit(fn: Callable[..., Any], **kwargs: Any) -> asyncio.Future[Any]:
            calls.append(1)
            return real_submit(fn, **kwargs)

        reader.submit = submit  # type: ignore[method-assign]
    else:
        real_call = backend._call

        def call(awaitable: Awaitable[Any]) -> Awaitable[Any]:
            calls.append(1)
            return real_call(awaitable)

        backend._call = call  # type: ignore[method-assign]
    return calls


def masters(store: ConsentStore) -> int:
    """How many Redis connections a pipeline of SUBSCRIBERS is split over (1 off a cluster)."""
    backend = inner(store)
    if isinstance(backend, SqliteStore):
        return 1
    return len(backend._group(SUBSCRIBERS, lambda s: backend._key(s, "c")))


async def seed(store: ConsentStore) -> list[Any]:
    """Give every third subscriber an opt-in and every fifth an opt-out; the events."""
    events = []
    for i, subscriber in enumerate(SUBSCRIBERS):
        if i % 3 == 0:
            events.append(make_event(subscriber, state=ConsentState.OPTED_IN))
        if i % 5 == 0:
            events.append(make_event(subscriber, scope="campaign:acme"))
    for event in events:
        assert await store.append(event)
    return events


async def test_misses_of_one_turn_are_one_backend_call(backend: Backend) -> None:
    """Sixty concurrent misses (some repeated) cost one current_many and one reader job or
    one pipeline per master, and every answer is then cached."""
    store = await backend.new()
    await ready(store)
    events = await seed(store)
    reads = count_reads(store)
    trips = count_round_trips(store)
    asked = SUBSCRIBERS + SUBSCRIBERS[:10]
    answers = await asyncio.gather(*(store.current(s) for s in asked))
    assert len(reads) == 1
    assert sorted(reads[0]) == sorted(SUBSCRIBERS)  # each subscriber read once
    assert 1 <= len(trips) <= masters(store)
    for subscriber, answer in zip(asked, answers, strict=True):
        assert dict(answer) == expected_current(events, subscriber)
    cached = 0
    for _ in range(200):  # a Redis cache answers once its subscription is quiet
        cached = sum(store.cached_current(s) is not None for s in SUBSCRIBERS)
        if cached == len(SUBSCRIBERS):
            break
        await asyncio.sleep(0.01)
    assert cached == len(SUBSCRIBERS)


async def test_lookups_of_later_turns_are_batches_of_their_own(backend: Backend) -> None:
    """A miss asked in a later turn is not held for an earlier batch: one read each."""
    store = await backend.new()
    await ready(store)
    reads = count_reads(store)
    for subscriber in SUBSCRIBERS[:3]:
        assert await store.current(subscriber) == {}
    assert reads == [[s] for s in SUBSCRIBERS[:3]]


async def test_batched_answers_equal_one_by_one_reads(backend: Backend) -> None:
    """The batch answers what a fresh store's current() answers one subscriber at a time."""
    store = await backend.new()
    await ready(store)
    await seed(store)
    batched = await asyncio.gather(*(store.current(s) for s in SUBSCRIBERS))
    other = await backend.peer(store)
    await ready(other)
    for subscriber, answer in zip(SUBSCRIBERS, batched, strict=True):
        assert answer == await other.current(subscriber)


async def test_invalidation_during_the_batch_is_not_cached(backend: Backend) -> None:
    """An opt-out stored between the batch's read and its answer keeps that answer out of the
    cache: the next lookup reads the opt-out."""
    store = await backend.new()
    await ready(store)
    target = SUBSCRIBERS[0]
    assert await store.append(make_event(target, state=ConsentState.OPTED_IN))
    backend_store = inner(store)
    real = backend_store.current_many
    opt_out = make_event(target, state=ConsentState.OPTED_OUT)

    async def racing(subscribers: Iterable[str]) -> dict[str, Records]:
        found = await real(subscribers)
        assert await store.append(opt_out)  # acknowledged: its invalidation is in
        return found

    backend_store.current_many = racing  # type: ignore[method-assign]
    answers = await asyncio.gather(*(store.current(s) for s in SUBSCRIBERS[:5]))
    backend_store.current_many = real  # type: ignore[method-assign]
    assert answers[0][opt_out.scope].state is ConsentState.OPTED_IN  # read before the opt-out
    assert store.cached_current(target) is None
    now = await store.current(target)
    assert now[opt_out.scope].state is ConsentState.OPTED_OUT


async def test_a_failed_read_fails_every_waiter(backend: Backend) -> None:
    """When the batch's read fails, every lookup of it raises StoreUnavailableError and
    nothing is cached."""
    store = await backend.new()
    await ready(store)
    backend_store = inner(store)

    async def failing(subscribers: Iterable[str]) -> dict[str, Records]:
        raise StoreUnavailableError("backend down")

    backend_store.current_many = failing  # type: ignore[method-assign]
    results = await asyncio.gather(
        *(store.current(s) for s in SUBSCRIBERS[:20]), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailableError) for r in results)
    assert all(backend_store.cached_current(s) is None for s in SUBSCRIBERS[:20])


async def test_sqlite_file_gone_fails_every_waiter(tmp_path: Path) -> None:
    """SQLite: the database file removed under the store: the one reader job's file check
    fails, and every lookup of the batch gets StoreUnavailableError."""
    path = tmp_path / "gone.db"
    store = await SqliteStore.open(path, instance="test", create=True)
    try:
        trips = count_round_trips(store)
        os.rename(path, tmp_path / "moved.db")
        results = await asyncio.gather(
            *(store.current(s) for s in SUBSCRIBERS[:20]), return_exceptions=True
        )
        assert len(trips) == 1
        assert all(isinstance(r, StoreUnavailableError) for r in results)
    finally:
        await store.close()


async def test_a_cancelled_waiter_leaves_the_others_answered(backend: Backend) -> None:
    """One lookup of a batch cancelled: the others still get their answers."""
    store = await backend.new()
    await ready(store)
    events = await seed(store)
    tasks = [asyncio.ensure_future(store.current(s)) for s in SUBSCRIBERS[:6]]
    await asyncio.sleep(0)  # every task has asked: the batch is queued
    tasks[2].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[2], asyncio.CancelledError)
    for i, subscriber in enumerate(SUBSCRIBERS[:6]):
        if i != 2:
            assert dict(results[i]) == expected_current(events, subscriber)  # type: ignore[arg-type]
