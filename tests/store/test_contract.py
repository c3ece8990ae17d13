"""The ConsentStore contract, run against every backend (memory, SQLite, real Redis) and against
SQLite behind the fail-closed guard (what ``open_store`` returns)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.consent.caps import CapReservation, reserve_all
from gateway.consent.model import (
    Actor,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    MatchType,
    fold,
)
from gateway.store.base import (
    ConsentStore,
    MessageIds,
    ReplyOutcome,
    ReplyRecord,
    StoreError,
)
from gateway.store.factory import open_store
from gateway.store.memory import MemoryStore
from gateway.store.redis import RedisStore
from gateway.store.rediscluster import RedisClusterStore
from gateway.store.sqlite import SqliteStore
from tests.support.redis_server import RedisClusterServers, RedisServer

SUB_A = "15550000001"
SUB_B = "15550000002"
SCOPE_NUMBER = "number:15550100"
SCOPE_CAMPAIGN = "campaign:acme"

_ids = itertools.count()


def make_event(
    subscriber: str = SUB_A,
    scope: str = SCOPE_NUMBER,
    state: ConsentState = ConsentState.OPTED_OUT,
    *,
    dedup_key: str | None = None,
    at: float = 1_700_000_000.0,
) -> ConsentEvent:
    return ConsentEvent(
        event_id=f"ev{next(_ids)}-{uuid.uuid4().hex[:8]}",
        at=at,
        subscriber=subscriber,
        scope=scope,
        state=state,
        actor=Actor.KEYWORD,
        match=MatchType.KEYWORD,
        words="STOP",
        sender="15550100",
        campaign="acme",
        system_id="acme_sys",
        smsc_message_id="m-1",
        instance="test",
        dedup_key=dedup_key,
    )


def expected_current(events: list[ConsentEvent], subscriber: str) -> dict[str, ConsentRecord]:
    return {scope: rec for (scope, sub), rec in fold(events).items() if sub == subscriber}


class Backend:
    """Opens fresh stores of one kind, peers on the same data, and reopens them."""

    def __init__(
        self,
        kind: str,
        tmp_path: Path,
        redis_server: RedisServer | RedisClusterServers | None,
    ) -> None:
        self.kind = kind
        self._tmp = tmp_path
        self._redis = redis_server
        self._stores: list[ConsentStore] = []
        self._where: dict[int, str] = {}

    @property
    def shared(self) -> bool:
        return self.kind != "memory"

    async def _open(self, where: str, max_replies: int | None = None) -> ConsentStore:
        store: ConsentStore
        # Each backend's own way to set the auto-reply records kept per subscriber.
        option = "" if max_replies is None else f"max_replies={max_replies}"
        kwargs = {} if max_replies is None else {"max_replies": max_replies}
        if self.kind == "memory":
            store = MemoryStore(**kwargs)
        elif self.kind == "sqlite":
            store = await SqliteStore.open(where, instance="test", create=True, **kwargs)
        elif self.kind == "guarded-sqlite":
            # What the daemon, the admin API and the CLI get: the backend behind the guard.
            url = f"sqlite://{where}" + (f"?{option}" if option else "")
            store = await open_store(url, instance="test", create=True)
        elif self.kind == "cluster":
            assert isinstance(self._redis, RedisClusterServers)
            store = await RedisClusterStore.from_url(
                f"{self._redis.url}?prefix={where}&timeout_s=2" + (f"&{option}" if option else ""),
                instance="test",
            )
        else:
            assert self._redis is not None
            store = await RedisStore.from_url(
                f"{self._redis.url}?prefix={where}&timeout_s=2" + (f"&{option}" if option else ""),
                instance="test",
            )
        self._stores.append(store)
        self._where[id(store)] = where
        return store

    async def new(self, *, max_replies: int | None = None) -> ConsentStore:
        """A store on fresh, empty data (``max_replies``: auto-reply records kept each)."""
        name = f"t{uuid.uuid4().hex[:12]}"
        sqlite = self.kind.endswith("sqlite")
        where = str(self._tmp / f"{name}.db") if sqlite else name
        return await self._open(where, max_replies)

    async def peer(self, store: ConsentStore) -> ConsentStore:
        """A second store object on the same data (another instance or process)."""
        return await self._open(self._where[id(store)])

    async def reopen(self, store: ConsentStore) -> ConsentStore:
        await store.close()
        return await self.peer(store)

    async def close(self) -> None:
        for store in self._stores:
            await store.close()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        "guarded-sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
def backend_kind(request: pytest.FixtureRequest) -> str:
    kind: str = request.param
    return kind


@pytest.fixture
async def backend(
    backend_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    server = server_for(backend_kind, request)
    backend = Backend(backend_kind, tmp_path, server)
    yield backend
    await backend.close()


@pytest.fixture
async def store(backend: Backend) -> ConsentStore:
    return await backend.new()


def server_for(
    kind: str, request: pytest.FixtureRequest
) -> RedisServer | RedisClusterServers | None:
    """The Redis (or the cluster) that a backend of ``kind`` runs on, started once a session."""
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server
    if kind == "cluster":
        cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
        return cluster
    return None


def need_shared(backend: Backend) -> None:
    if not backend.shared:
        pytest.skip("the memory store is private to its object")


async def settle(store: ConsentStore) -> None:
    """Wait until changes acknowledged elsewhere reached this store's cache (Redis only)."""
    if isinstance(store, RedisStore):
        await store.sync()


async def load_cached(store: ConsentStore, subscriber: str) -> Mapping[str, ConsentRecord]:
    """current(subscriber), once cached_current answers it too.

    A Redis store's cache stays silent while bytes are unread on its subscription connections
    (gateway.store.inbox): on a cluster every invalidation, its own included, arrives once per
    master, and heartbeat answers come and go. So load until the cache answers, for a bounded
    time; a cache that never answers fails.
    """
    deadline = time.monotonic() + 5.0
    while True:
        loaded = await store.current(subscriber)
        hit = store.cached_current(subscriber)
        if hit is not None or time.monotonic() > deadline:
            assert hit == loaded
            return loaded
        await asyncio.sleep(0.005)


class TestAppend:
    async def test_append_updates_current_and_history(self, store: ConsentStore) -> None:
        """An appended event shows in history and becomes the current record of its scope."""
        event = make_event()
        assert await store.append(event) is True
        assert await store.history(SUB_A) == [event]
        current = await store.current(SUB_A)
        assert dict(current) == expected_current([event], SUB_A)
        assert current[SCOPE_NUMBER].state is ConsentState.OPTED_OUT

    async def test_unknown_subscriber_has_no_records(self, store: ConsentStore) -> None:
        """A subscriber never seen has an empty current mapping and empty history."""
        assert dict(await store.current("15559999999")) == {}
        assert await store.history("15559999999") == []

    async def test_later_event_wins_per_scope(self, store: ConsentStore) -> None:
        """The current record of a scope is the last event appended to it; scopes are apart."""
        events = [
            make_event(state=ConsentState.OPTED_OUT),
            make_event(scope=SCOPE_CAMPAIGN, state=ConsentState.PENDING),
            make_event(state=ConsentState.OPTED_IN),
        ]
        for event in events:
            await store.append(event)
        current = await store.current(SUB_A)
        assert current[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        assert current[SCOPE_NUMBER].last_event_id == events[2].event_id
        assert current[SCOPE_CAMPAIGN].state is ConsentState.PENDING

    async def test_history_keeps_order_and_filters_by_scope(self, store: ConsentStore) -> None:
        """History returns events in append order, optionally limited to one scope."""
        events = [
            make_event(scope=SCOPE_NUMBER, at=3.0),
            make_event(scope=SCOPE_CAMPAIGN, at=1.0),
            make_event(scope=SCOPE_NUMBER, at=2.0),
        ]
        for event in events:
            await store.append(event)
        assert await store.history(SUB_A) == events
        assert await store.history(SUB_A, SCOPE_NUMBER) == [events[0], events[2]]

    async def test_dedup_key_makes_retransmission_a_no_op(self, store: ConsentStore) -> None:
        """A second event with an already seen dedup_key is refused and changes nothing."""
        first = make_event(state=ConsentState.OPTED_OUT, dedup_key="mo:abc")
        again = make_event(state=ConsentState.OPTED_IN, dedup_key="mo:abc")
        assert await store.append(first) is True
        assert await store.append(again) is False
        assert await store.history(SUB_A) == [first]
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT

    async def test_dedup_keys_are_per_subscriber(self, store: ConsentStore) -> None:
        """The same dedup_key for two subscribers is two different events."""
        assert await store.append(make_event(SUB_A, dedup_key="k")) is True
        assert await store.append(make_event(SUB_B, dedup_key="k")) is True

    async def test_own_write_is_never_hidden_by_the_cache(self, store: ConsentStore) -> None:
        """After an opt-out is acknowledged, the cache no longer answers the old opt-in."""
        await store.append(make_event(state=ConsentState.OPTED_IN))
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        await store.append(make_event(state=ConsentState.OPTED_OUT))
        cached = store.cached_current(SUB_A)
        assert cached is None or cached[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT

    async def test_cached_current_answers_after_a_load(self, store: ConsentStore) -> None:
        """Once current() has loaded a subscriber, cached_current answers without awaiting."""
        await store.append(make_event())
        assert (await load_cached(store, SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        assert await load_cached(store, "15559999998") == {}


events_strategy = st.lists(
    st.tuples(
        st.sampled_from([SUB_A, SUB_B, "15550000003"]),
        st.sampled_from([SCOPE_NUMBER, SCOPE_CAMPAIGN, "list:acme/promo", "global:*"]),
        st.sampled_from(list(ConsentState)),
        st.one_of(st.none(), st.sampled_from(["d1", "d2", "d3"])),
        st.floats(min_value=0, max_value=2e9, allow_nan=False),
    ),
    max_size=12,
)


class TestProjection:
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(spec=events_strategy)
    async def test_current_equals_fold_of_history(
        self, backend: Backend, spec: list[tuple[str, str, ConsentState, str | None, float]]
    ) -> None:
        """For any event sequence, current() == fold(history()) and dedup follows the model."""
        store = await backend.new()
        seen: set[tuple[str, str]] = set()
        accepted: list[ConsentEvent] = []
        for subscriber, scope, state, dedup_key, at in spec:
            event = make_event(subscriber, scope, state, dedup_key=dedup_key, at=at)
            fresh = dedup_key is None or (subscriber, dedup_key) not in seen
            assert await store.append(event) is fresh
            if fresh:
                accepted.append(event)
                if dedup_key is not None:
                    seen.add((subscriber, dedup_key))
            # interleave reads so the cache is exercised between writes
            cached = store.cached_current(subscriber)
            if cached is not None:
                assert dict(cached) == expected_current(accepted, subscriber)
        for subscriber in (SUB_A, SUB_B, "15550000003"):
            history = await store.history(subscriber)
            assert history == [e for e in accepted if e.subscriber == subscriber]
            assert dict(await store.current(subscriber)) == expected_current(history, subscriber)
        await store.close()


class TestFooter:
    async def test_footer_seen_per_campaign(self, store: ConsentStore) -> None:
        """footer_seen is false until marked, then true, for that campaign only."""
        assert await store.footer_seen(SUB_A, "acme") is False
        assert store.cached_footer_seen(SUB_A, "acme") is None
        await store.mark_footer_seen(SUB_A, "acme", 10.0)
        await store.mark_footer_seen(SUB_A, "acme", 20.0)
        assert await store.footer_seen(SUB_A, "acme") is True
        assert store.cached_footer_seen(SUB_A, "acme") is True
        assert await store.footer_seen(SUB_A, "other") is False
        assert await store.footer_seen(SUB_B, "acme") is False


DAY = 86_400.0
T0 = 1_700_000_000.0


class TestFrequencyCounter:
    async def test_counts_up_to_the_limit_then_refuses(self, store: ConsentStore) -> None:
        """Three sends in a day are counted; the fourth is refused and not counted."""
        for n in range(1, 4):
            verdict = await store.reserve_send(
                SUB_A, "c:acme", f"m{n}", limit=3, window_s=DAY, now=T0 + n
            )
            assert (verdict.allowed, verdict.counted) == (True, n)
        refused = await store.reserve_send(SUB_A, "c:acme", "m4", limit=3, window_s=DAY, now=T0 + 9)
        assert (refused.allowed, refused.counted) == (False, 3)
        assert await store.sends_counted(SUB_A, "c:acme", DAY, T0 + 10) == 3

    async def test_window_rolls(self, store: ConsentStore) -> None:
        """A send leaves the count exactly one window after it was made."""
        for n in range(3):
            await store.reserve_send(SUB_A, "c:acme", f"m{n}", limit=3, window_s=DAY, now=T0 + n)
        late = await store.reserve_send(SUB_A, "c:acme", "x", limit=3, window_s=DAY, now=T0 + DAY)
        assert (late.allowed, late.counted) == (True, 3)  # m0 left, x came in
        assert await store.sends_counted(SUB_A, "c:acme", DAY, T0 + DAY + 2) == 1

    async def test_same_token_counts_once(self, store: ConsentStore) -> None:
        """The parts of one message (one token) count once, and go even at the limit."""
        await store.reserve_send(SUB_A, "c:acme", "long", limit=1, window_s=DAY, now=T0)
        again = await store.reserve_send(SUB_A, "c:acme", "long", limit=1, window_s=DAY, now=T0 + 1)
        assert (again.allowed, again.counted) == (True, 1)
        other = await store.reserve_send(SUB_A, "c:acme", "new", limit=1, window_s=DAY, now=T0 + 2)
        assert other.allowed is False

    async def test_release_and_keys_are_separate(self, store: ConsentStore) -> None:
        """A released send no longer counts; counters differ per key and subscriber."""
        await store.reserve_send(SUB_A, "c:acme", "m1", limit=1, window_s=DAY, now=T0)
        assert (
            await store.reserve_send(SUB_A, "c:other", "m2", limit=1, window_s=DAY, now=T0)
        ).allowed
        assert (
            await store.reserve_send(SUB_B, "c:acme", "m3", limit=1, window_s=DAY, now=T0)
        ).allowed
        await store.release_send(SUB_A, "c:acme", "m1")
        assert await store.sends_counted(SUB_A, "c:acme", DAY, T0) == 0
        assert (
            await store.reserve_send(SUB_A, "c:acme", "m4", limit=1, window_s=DAY, now=T0)
        ).allowed

    async def test_two_instances_at_two_of_three(self, backend: Backend) -> None:
        """Two reservations at once through two store objects at 2 of 3: exactly one goes."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        for n in range(2):
            await first.reserve_send(SUB_A, "b:acme", f"m{n}", limit=3, window_s=DAY, now=T0 + n)
        results = await asyncio.gather(
            *(
                s.reserve_send(SUB_A, "b:acme", f"race{i}", limit=3, window_s=DAY, now=T0 + 5)
                for i, s in enumerate((first, second) * 3)
            )
        )
        assert sum(r.allowed for r in results) == 1
        assert await second.sends_counted(SUB_A, "b:acme", DAY, T0 + 6) == 3


def reservation(
    token: str, *, subscriber: str = SUB_A, key: str = "c:acme", limit: int = 3, at: float = T0
) -> CapReservation:
    return CapReservation(subscriber, key, token, limit, DAY, at)


# Batches of reservations: (subscriber, key, token, limit, seconds after T0), tokens from a few
# so that repeats (the parts of one message) come up, times over two windows.
reservations_strategy = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from([SUB_A, SUB_B]),
            st.sampled_from(["c:acme", "b:acme"]),
            st.sampled_from([f"m{n}" for n in range(6)]),
            st.integers(min_value=1, max_value=3),
            st.sampled_from([0.0, 1.0, 2.0, DAY, DAY + 1.0, 2 * DAY]),
        ),
        max_size=8,
    ),
    min_size=1,
    max_size=4,
)


class TestFrequencyBatch:
    async def test_in_order_within_a_batch(self, store: ConsentStore) -> None:
        """A later reservation of a batch sees the earlier ones of its counter, and only those."""
        verdicts = await store.reserve_sends(
            [
                reservation("m1", limit=2),
                reservation("m2", limit=2),
                reservation("m3", limit=2),
                reservation("m4", subscriber=SUB_B, limit=2),
                reservation("m5", key="c:other", limit=2),
            ]
        )
        assert [(v.allowed, v.counted) for v in verdicts] == [
            (True, 1),
            (True, 2),
            (False, 2),
            (True, 1),
            (True, 1),
        ]
        assert await store.sends_counted(SUB_A, "c:acme", DAY, T0) == 2

    async def test_over_the_limit_admits_exactly_up_to_it(self, store: ConsentStore) -> None:
        """One counted already and a batch of five at a cap of three: two go, three are refused
        and not counted."""
        await store.reserve_send(SUB_A, "c:acme", "m0", limit=3, window_s=DAY, now=T0)
        verdicts = await store.reserve_sends([reservation(f"m{n}", at=T0 + 1) for n in range(1, 6)])
        assert [v.allowed for v in verdicts] == [True, True, False, False, False]
        assert [v.counted for v in verdicts] == [2, 3, 3, 3, 3]
        assert await store.sends_counted(SUB_A, "c:acme", DAY, T0 + 2) == 3

    async def test_a_token_twice_counts_once(self, store: ConsentStore) -> None:
        """The parts of one message in one batch count once and go even at the limit; another
        message after them is refused."""
        verdicts = await store.reserve_sends(
            [
                reservation("long", limit=1),
                reservation("long", limit=1),
                reservation("new", limit=1),
            ]
        )
        assert [(v.allowed, v.counted) for v in verdicts] == [(True, 1), (True, 1), (False, 1)]
        again = await store.reserve_sends([reservation("long", limit=1, at=T0 + 5)])
        assert (again[0].allowed, again[0].counted) == (True, 1)

    async def test_the_window_expires_within_a_batch(self, store: ConsentStore) -> None:
        """Reservations of one batch at different times: each trims the window ending at its
        own time, so a send leaves the count exactly one window after it was made."""
        await store.reserve_send(SUB_A, "c:acme", "m0", limit=2, window_s=DAY, now=T0)
        verdicts = await store.reserve_sends(
            [
                reservation("a", limit=2, at=T0 + 1),
                reservation("b", limit=2, at=T0 + 2),
                reservation("c", limit=2, at=T0 + DAY),
                reservation("d", limit=2, at=T0 + DAY + 1.5),
            ]
        )
        # b is refused (m0 and a are counted); at T0 + DAY m0 has left; at T0 + DAY + 1.5 so
        # has a, and c is counted.
        assert [(v.allowed, v.counted) for v in verdicts] == [
            (True, 2),
            (False, 2),
            (True, 2),
            (True, 2),
        ]
        assert await store.sends_counted(SUB_A, "c:acme", DAY, T0 + DAY + 2) == 2

    async def test_an_empty_batch(self, store: ConsentStore) -> None:
        """Nothing to reserve answers nothing."""
        assert await store.reserve_sends([]) == []

    async def test_two_instances_race_with_batches(self, backend: Backend) -> None:
        """Batches through two store objects at once, at 2 of 3: exactly one of all goes."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        await first.reserve_sends([reservation("m0"), reservation("m1")])
        results = await asyncio.gather(
            *(
                s.reserve_sends([reservation(f"race{i}-{n}", at=T0 + 5) for n in range(3)])
                for i, s in enumerate((first, second) * 2)
            )
        )
        assert sum(v.allowed for batch in results for v in batch) == 1
        assert await second.sends_counted(SUB_A, "c:acme", DAY, T0 + 6) == 3

    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(spec=reservations_strategy)
    async def test_batches_answer_what_the_model_does(
        self, backend: Backend, spec: list[list[tuple[str, str, str, int, float]]]
    ) -> None:
        """Any batches, in order, give the verdicts of ``caps.reserve_all`` on a model
        counter, and the same as one ``reserve_send`` each on another store."""
        store = await backend.new()
        single = await backend.new()
        model: dict[tuple[str, str], dict[str, float]] = {}
        for batch in spec:
            reservations = [CapReservation(s, k, t, n, DAY, T0 + at) for s, k, t, n, at in batch]
            expected = reserve_all(lambda s, k: model.setdefault((s, k), {}), reservations)
            assert await store.reserve_sends(reservations) == expected
            one_by_one = [
                await single.reserve_send(
                    r.subscriber, r.key, r.token, limit=r.limit, window_s=r.window_s, now=r.now
                )
                for r in reservations
            ]
            assert one_by_one == expected


async def _aiter(events: list[ConsentEvent]) -> AsyncIterator[ConsentEvent]:
    for event in events:
        yield event


class TestExportImport:
    @pytest.mark.parametrize("as_async", [False, True], ids=["list", "async-iterable"])
    async def test_import_then_export(self, store: ConsentStore, as_async: bool) -> None:
        """Imported events obey dedup, and export yields every current record once."""
        events = [
            make_event(f"1555123{i:04d}", SCOPE_NUMBER, ConsentState.OPTED_OUT, dedup_key="imp")
            for i in range(1200)
        ]
        events.append(make_event("15551230000", SCOPE_NUMBER, dedup_key="imp"))  # duplicate
        events.append(make_event("15551230001", SCOPE_CAMPAIGN, ConsentState.OPTED_IN))
        source = _aiter(events) if as_async else events
        assert await store.import_events(source) == 1201
        exported = [record async for record in store.export()]
        expected = fold(e for e in events[:1200] + events[1201:])
        assert len(exported) == len(expected) == 1201
        assert sorted(exported, key=lambda r: (r.subscriber, r.scope)) == sorted(
            expected.values(), key=lambda r: (r.subscriber, r.scope)
        )
        assert (await store.current("15551230001"))[SCOPE_CAMPAIGN].state is (ConsentState.OPTED_IN)

    async def test_export_of_empty_store(self, store: ConsentStore) -> None:
        """An empty store exports nothing."""
        assert [r async for r in store.export()] == []


class TestRecordCount:
    async def test_empty_store_counts_zero(self, store: ConsentStore) -> None:
        """A new store has no records."""
        assert await store.record_count() == 0

    async def test_counts_current_records_not_events(self, store: ConsentStore) -> None:
        """A new (subscriber, scope) adds one; a change of it, or a duplicate, adds nothing."""
        await store.append(make_event(SUB_A, SCOPE_NUMBER, dedup_key="c1"))
        await store.append(make_event(SUB_A, SCOPE_CAMPAIGN))
        await store.append(make_event(SUB_B, SCOPE_NUMBER))
        assert await store.record_count() == 3
        await store.append(make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_IN))
        assert await store.append(make_event(SUB_B, dedup_key="c1")) is True  # per subscriber
        assert await store.append(make_event(SUB_A, "global:*", dedup_key="c1")) is False
        assert await store.record_count() == 3
        assert await store.record_count() == len([r async for r in store.export()])

    async def test_import_is_counted(self, store: ConsentStore) -> None:
        """Imported events count like appended ones."""
        events = [make_event(f"1555999{i:04d}") for i in range(30)]
        assert await store.import_events(events + events[:5]) == 35
        assert await store.record_count() == 30

    async def test_peer_sees_the_count(self, backend: Backend) -> None:
        """The count is the backend's, not this object's: a peer reads the same number."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        await first.append(make_event(SUB_A))
        await first.append(make_event(SUB_B))
        assert await second.record_count() == 2


class TestProbe:
    async def test_probe_changes_no_consent_data(self, store: ConsentStore) -> None:
        """probe() passes on a working store and leaves history, records and count as they were."""
        await store.append(make_event(dedup_key="p1"))
        before = ([r async for r in store.export()], await store.history(SUB_A))
        for _ in range(3):
            await store.probe()
        assert ([r async for r in store.export()], await store.history(SUB_A)) == before
        assert await store.record_count() == 1
        assert await store.append(make_event(dedup_key="p1")) is False

    async def test_probe_drops_no_peer_cache(self, backend: Backend) -> None:
        """A probe is not a consent change: another store object's cache keeps its entries."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        await first.append(make_event())
        await settle(second)
        await second.current(SUB_A)
        await first.probe()
        await settle(second)
        await asyncio.sleep(0)  # the next turn of the loop (SQLite checks once per turn)
        assert second.cached_current(SUB_A) is not None

    async def test_clear_cache_empties_the_local_cache(self, backend: Backend) -> None:
        """After clear_cache the next answer comes from the backend (memory has no cache)."""
        need_shared(backend)
        store = await backend.new()
        await store.append(make_event())
        await load_cached(store, SUB_A)
        store.clear_cache()
        assert store.cached_current(SUB_A) is None
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT


class TestLifecycle:
    async def test_ping_and_close(self, store: ConsentStore) -> None:
        """ping answers while open; every operation raises StoreError after close."""
        await store.ping()
        await store.close()
        with pytest.raises(StoreError):
            await store.append(make_event())
        with pytest.raises(StoreError):
            await store.history(SUB_A)
        with pytest.raises(StoreError):
            await store.probe()
        with pytest.raises(StoreError):
            await store.record_count()

    def test_implements_protocol(self, store: ConsentStore) -> None:
        """Every backend satisfies the runtime-checkable ConsentStore protocol."""
        assert isinstance(store, ConsentStore)


class TestSharing:
    async def test_peer_sees_opt_out_at_once(self, backend: Backend) -> None:
        """An opt-out through one store object drops another object's cached opt-in."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        await first.append(make_event(state=ConsentState.OPTED_IN))
        await settle(second)  # else the opt-in's own invalidation may race the load below
        assert (await second.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        assert second.cached_current(SUB_A) is not None  # now served from its cache
        await first.append(make_event(state=ConsentState.OPTED_OUT))
        await settle(second)
        cached = second.cached_current(SUB_A)
        assert cached is None or cached[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        assert (await second.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT

    async def test_dedup_is_shared(self, backend: Backend) -> None:
        """A dedup_key seen through one store object is refused through another."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        assert await first.append(make_event(dedup_key="mo:1")) is True
        assert await second.append(make_event(dedup_key="mo:1")) is False

    async def test_data_survives_reopen(self, backend: Backend) -> None:
        """History, current state, dedup and footer marks survive closing and reopening."""
        need_shared(backend)
        store = await backend.new()
        events = [make_event(dedup_key="mo:7"), make_event(scope=SCOPE_CAMPAIGN)]
        for event in events:
            await store.append(event)
        await store.mark_footer_seen(SUB_A, "acme", 5.0)
        reopened = await backend.reopen(store)
        assert await reopened.history(SUB_A) == events
        assert dict(await reopened.current(SUB_A)) == expected_current(events, SUB_A)
        assert await reopened.append(make_event(dedup_key="mo:7")) is False
        assert await reopened.footer_seen(SUB_A, "acme") is True


LONG_TTL_S = 3600.0
ACCOUNT = "acme_sys"


def mids(upstream_id: str, *client_ids: str, account: str = ACCOUNT) -> MessageIds:
    return MessageIds(upstream_id=upstream_id, client_ids=client_ids, account=account)


class TestMessageIds:
    async def test_put_then_get(self, store: ConsentStore) -> None:
        """A kept mapping is returned as it was put, for its upstream id only."""
        entries = [mids("up-1", "gw-1"), mids("up-2", "gw-2")]
        await store.put_message_ids(entries, LONG_TTL_S)
        assert await store.get_message_ids("up-1") == entries[0]
        assert await store.get_message_ids("up-2") == entries[1]

    async def test_unknown_id_is_none(self, store: ConsentStore) -> None:
        """An upstream id never put has no mapping."""
        assert await store.get_message_ids("never-seen") is None

    async def test_second_put_replaces(self, store: ConsentStore) -> None:
        """A later put for the same upstream id replaces the earlier mapping entirely."""
        await store.put_message_ids([mids("up-1", "gw-1")], LONG_TTL_S)
        later = mids("up-1", "gw-7", "gw-8", account="other_sys")
        await store.put_message_ids([later], LONG_TTL_S)
        assert await store.get_message_ids("up-1") == later

    async def test_last_entry_of_one_put_wins(self, store: ConsentStore) -> None:
        """Two entries for one upstream id in the same put: the later one is kept."""
        await store.put_message_ids([mids("up-1", "first"), mids("up-1", "second")], LONG_TTL_S)
        assert await store.get_message_ids("up-1") == mids("up-1", "second")

    async def test_added_part_has_no_client_ids(self, store: ConsentStore) -> None:
        """A part the gateway added round-trips with an empty tuple of client ids."""
        await store.put_message_ids([mids("up-added")], LONG_TTL_S)
        found = await store.get_message_ids("up-added")
        assert found == mids("up-added")
        assert found is not None
        assert found.client_ids == ()

    async def test_several_client_ids_keep_their_order(self, store: ConsentStore) -> None:
        """A part standing for several client parts keeps all their ids, in order."""
        entry = mids("up-1", "gw-3", "gw-1", "gw-2")
        await store.put_message_ids([entry], LONG_TTL_S)
        assert await store.get_message_ids("up-1") == entry

    async def test_odd_ids_round_trip(self, store: ConsentStore) -> None:
        """Ids with spaces, unicode, quotes, key syntax and 65 characters round-trip exactly."""
        odd = [
            "id with spaces",
            "ÜnÎcødé-メッセージ-🙂",
            "x" * 65,
            "{tag}:mid:*?[]",
            'quote\'s "and" back\\slash; DROP TABLE message_ids',
            "%41%20+&=",
        ]
        entries = [mids(u, *odd[i:], account=f"konto-ß-{i}") for i, u in enumerate(odd)]
        await store.put_message_ids(entries, LONG_TTL_S)
        for entry in entries:
            assert await store.get_message_ids(entry.upstream_id) == entry
        assert await store.get_message_ids("x" * 64) is None

    @pytest.mark.parametrize("ttl_s", [0.0, -1.0])
    async def test_ttl_already_passed_is_absent_at_once(
        self, store: ConsentStore, ttl_s: float
    ) -> None:
        """A put whose ttl is zero or negative leaves nothing to get, and replaces a live
        mapping of the same upstream id (that one is gone too)."""
        await store.put_message_ids([mids("up-1", "gw-1")], LONG_TTL_S)
        await store.put_message_ids([mids("up-1", "gw-2"), mids("up-2", "gw-3")], ttl_s)
        assert await store.get_message_ids("up-1") is None
        assert await store.get_message_ids("up-2") is None

    async def test_mapping_expires_after_its_ttl(self, store: ConsentStore) -> None:
        """A mapping put with a short ttl is gone once it passed; a long-lived one stays."""
        await store.put_message_ids([mids("up-long", "gw-1")], LONG_TTL_S)
        await store.put_message_ids([mids("up-short", "gw-2")], 0.05)
        deadline = time.monotonic() + 10.0
        while await store.get_message_ids("up-short") is not None:
            assert time.monotonic() < deadline, "the mapping did not expire"
            await asyncio.sleep(0.01)  # poll the condition, bounded by the deadline
        assert await store.get_message_ids("up-long") == mids("up-long", "gw-1")

    async def test_empty_put_changes_nothing(self, store: ConsentStore) -> None:
        """A put of no entries is accepted and leaves the kept mappings as they are."""
        await store.put_message_ids([mids("up-1", "gw-1")], LONG_TTL_S)
        await store.put_message_ids([], LONG_TTL_S)
        await store.put_message_ids(iter(()), 0.0)
        assert await store.get_message_ids("up-1") == mids("up-1", "gw-1")

    async def test_entries_may_be_a_generator(self, store: ConsentStore) -> None:
        """Any iterable of entries is taken, a one-shot generator included."""
        await store.put_message_ids((mids(f"up-{i}", f"gw-{i}") for i in range(10)), LONG_TTL_S)
        assert await store.get_message_ids("up-9") == mids("up-9", "gw-9")

    async def test_not_consent_data(self, store: ConsentStore) -> None:
        """Mappings do not count as consent records and are not exported."""
        await store.append(make_event())
        await store.put_message_ids([mids(f"up-{i}", "gw") for i in range(5)], LONG_TTL_S)
        assert await store.record_count() == 1
        assert len([r async for r in store.export()]) == 1

    async def test_put_drops_no_peer_cache(self, backend: Backend) -> None:
        """A put is not a consent change: another store object's consent cache keeps its entry."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        await first.append(make_event())
        await settle(second)
        await second.current(SUB_A)
        await first.put_message_ids([mids(f"up-{i}", "gw") for i in range(10)], LONG_TTL_S)
        await settle(second)
        await asyncio.sleep(0)  # the next turn of the loop (SQLite checks once per turn)
        assert second.cached_current(SUB_A) is not None

    async def test_peer_sees_puts(self, backend: Backend) -> None:
        """A mapping put through one store object is read, and replaced, through another."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        await first.put_message_ids([mids("up-1", "gw-1")], LONG_TTL_S)
        assert await second.get_message_ids("up-1") == mids("up-1", "gw-1")
        await second.put_message_ids([mids("up-1", "gw-2")], LONG_TTL_S)
        assert await first.get_message_ids("up-1") == mids("up-1", "gw-2")

    async def test_mappings_survive_reopen(self, backend: Backend) -> None:
        """Kept mappings are still there after the store is closed and opened again."""
        need_shared(backend)
        store = await backend.new()
        await store.put_message_ids([mids("up-1", "gw-1", "gw-2")], LONG_TTL_S)
        reopened = await backend.reopen(store)
        assert await reopened.get_message_ids("up-1") == mids("up-1", "gw-1", "gw-2")

    async def test_closed_store_refuses(self, store: ConsentStore) -> None:
        """After close, put and get raise StoreError (an empty put as well)."""
        await store.close()
        with pytest.raises(StoreError):
            await store.put_message_ids([mids("up-1", "gw-1")], LONG_TTL_S)
        with pytest.raises(StoreError):
            await store.put_message_ids([], LONG_TTL_S)
        with pytest.raises(StoreError):
            await store.get_message_ids("up-1")


def make_reply(
    subscriber: str = SUB_A,
    *,
    event_id: str | None = "ev-1",
    reply_id: str | None = None,
    outcome: ReplyOutcome = ReplyOutcome.ACCEPTED,
    text: str = "ACME: You are unsubscribed. Reply START to resubscribe.",
    at: float = 1_700_000_000.5,
) -> ReplyRecord:
    accepted = outcome is ReplyOutcome.ACCEPTED
    return ReplyRecord(
        reply_id=reply_id or uuid.uuid4().hex,
        event_id=event_id,
        subscriber=subscriber,
        kind="opt_out_confirmation",
        text=text,
        source="15550100",
        destination=f"+{subscriber}",
        at=at,
        outcome=outcome,
        command_status=0 if accepted else 0x45,
        status="ESME_ROK" if accepted else "ESME_RSUBMITFAIL",
        message_ids=("m-17", "m-18") if accepted else (),
        answered_at=at + 0.25,
        parts=2,
        campaign="acme",
        system_id="acme_sys",
        carrier="conn-7",
        words=None if event_id else "HELP",
        error=None if accepted else "refused",
        instance="test",
    )


class TestReplies:
    async def test_record_then_read_in_order(self, store: ConsentStore) -> None:
        """Recorded replies come back equal, in record order, for their subscriber only."""
        first = make_reply(at=20.0)
        second = make_reply(event_id=None, outcome=ReplyOutcome.REFUSED, at=10.0)
        other = make_reply(SUB_B)
        assert await store.record_reply(first) is True
        assert await store.record_reply(other) is True
        assert await store.record_reply(second) is True
        assert await store.replies(SUB_A) == [first, second]
        assert await store.replies(SUB_B) == [other]
        assert await store.replies("15559999999") == []

    async def test_every_field_round_trips(self, store: ConsentStore) -> None:
        """Odd texts and every optional field absent or present survive exactly."""
        full = make_reply(text='Ünïcødé "quoted" \\ back\nslash 🙂 ; DROP TABLE replies')
        bare = ReplyRecord(
            reply_id="bare",
            event_id=None,
            subscriber=SUB_A,
            kind="help",
            text="",
            source="",
            destination="",
            at=0.0,
            outcome=ReplyOutcome.NOT_SENT,
        )
        lost = dataclasses.replace(
            make_reply(), outcome=ReplyOutcome.NO_ANSWER, command_status=None, answered_at=None
        )
        for reply in (full, bare, lost):
            assert await store.record_reply(reply) is True
        assert await store.replies(SUB_A) == [full, bare, lost]
        (got_bare,) = [r for r in await store.replies(SUB_A) if r.reply_id == "bare"]
        assert got_bare.message_ids == ()
        assert got_bare.command_status is None

    async def test_same_reply_id_is_recorded_once(self, store: ConsentStore) -> None:
        """A second record with a kept reply_id is refused (False) and changes nothing."""
        first = make_reply(reply_id="r-1")
        assert await store.record_reply(first) is True
        later = dataclasses.replace(first, outcome=ReplyOutcome.REFUSED, text="other")
        assert await store.record_reply(later) is False
        assert await store.replies(SUB_A) == [first]

    async def test_newest_are_kept_per_subscriber(self, backend: Backend) -> None:
        """Beyond max_replies of a subscriber the oldest are dropped; others keep theirs."""
        store = await backend.new(max_replies=3)
        mine = [make_reply(at=float(i)) for i in range(5)]
        theirs = [make_reply(SUB_B, at=float(i)) for i in range(2)]
        for reply in (*theirs, *mine):
            assert await store.record_reply(reply) is True
        assert await store.replies(SUB_A) == mine[2:]
        assert await store.replies(SUB_B) == theirs

    async def test_not_consent_data(self, store: ConsentStore) -> None:
        """A reply record changes no current record, history, count or export."""
        event = make_event()
        await store.append(event)
        for i in range(4):
            await store.record_reply(make_reply(event_id=event.event_id, at=float(i)))
        assert await store.history(SUB_A) == [event]
        assert await store.record_count() == 1
        assert len([r async for r in store.export()]) == 1
        assert dict(await store.current(SUB_A)) == expected_current([event], SUB_A)

    async def test_record_drops_no_peer_cache(self, backend: Backend) -> None:
        """A reply record is not a consent change: another store object keeps its cache."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        await first.append(make_event())
        await settle(second)
        await second.current(SUB_A)
        await first.record_reply(make_reply())
        await settle(second)
        await asyncio.sleep(0)  # the next turn of the loop (SQLite checks once per turn)
        assert second.cached_current(SUB_A) is not None

    async def test_peer_reads_and_reopen_keeps(self, backend: Backend) -> None:
        """Records made through one store object are read through another, and after reopen;
        a reply_id seen through one is refused through the other."""
        need_shared(backend)
        first = await backend.new()
        second = await backend.peer(first)
        reply = make_reply(reply_id="shared-1")
        await first.record_reply(reply)
        assert await second.replies(SUB_A) == [reply]
        assert await second.record_reply(reply) is False
        reopened = await backend.reopen(first)
        assert await reopened.replies(SUB_A) == [reply]

    async def test_closed_store_refuses(self, store: ConsentStore) -> None:
        """After close, record_reply and replies raise StoreError."""
        await store.close()
        with pytest.raises(StoreError):
            await store.record_reply(make_reply())
        with pytest.raises(StoreError):
            await store.replies(SUB_A)
