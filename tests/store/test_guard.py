"""The fail-closed guard: one failure refuses everything at once until a probe passes.

The backend here is the memory store with a switch that makes it fail (or hang) the way a real
one does at random: a bug, a lost server. The SQLite and Redis failures themselves are tested
on the real things in test_sqlite_file.py and test_redis.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
import structlog

from gateway.consent.model import ConsentRecord
from gateway.store.base import StoreError, StoreUnavailableError
from gateway.store.factory import open_store
from gateway.store.guard import FailClosedStore
from gateway.store.memory import MemoryStore
from gateway.telemetry import logs
from gateway.telemetry.metrics import STORE_UP, Metrics
from tests.store.test_contract import SUB_A, SUB_B, make_event
from tests.support.redis_server import RedisServer

WAIT_S = 10.0


class FlakyStore(MemoryStore):
    """MemoryStore that raises ``failure`` from every call while it is set (probe included),
    or never answers while ``hang`` is set; it counts the calls that reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.failure: BaseException | None = None
        self.hang = False
        self.calls = 0
        self.cleared = 0
        self.entered = asyncio.Event()  # set by the first call that reaches this backend

    async def _gate(self) -> None:
        self.calls += 1
        self.entered.set()
        if self.hang:
            await asyncio.Event().wait()  # never set: a backend that does not answer
        if self.failure is not None:
            raise self.failure

    async def append(self, event: Any) -> bool:
        await self._gate()
        return await super().append(event)

    async def current(self, subscriber: str) -> Mapping[str, ConsentRecord]:
        await self._gate()
        return await super().current(subscriber)

    async def history(self, subscriber: str, scope: str | None = None) -> list[Any]:
        await self._gate()
        return await super().history(subscriber, scope)

    async def record_count(self) -> int:
        await self._gate()
        return await super().record_count()

    async def ping(self) -> None:
        await self._gate()

    async def probe(self) -> None:
        await self._gate()

    async def export(self) -> AsyncIterator[ConsentRecord]:
        async for record in super().export():
            await self._gate()
            yield record

    def cached_current(self, subscriber: str) -> Mapping[str, ConsentRecord] | None:
        if self.failure is not None:
            raise self.failure
        return super().cached_current(subscriber)

    def clear_cache(self) -> None:
        self.cleared += 1


@pytest.fixture
def inner() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
async def guard(inner: FlakyStore) -> AsyncIterator[FailClosedStore]:
    store = FailClosedStore(inner, name="flaky://", recovery_interval_s=0.01)
    yield store
    await store.close()


async def trip(guard: FailClosedStore, inner: FlakyStore, failure: BaseException) -> None:
    """Make one call fail with ``failure``; the guard is faulted afterwards."""
    inner.failure = failure
    with pytest.raises(StoreUnavailableError):
        await guard.append(make_event(SUB_B))
    assert guard.fault is not None


class TestFault:
    @pytest.mark.parametrize(
        "failure",
        [StoreError("disk says no"), RuntimeError("a bug"), TimeoutError(), KeyError("x")],
        ids=["store-error", "bug", "timeout", "key-error"],
    )
    async def test_any_failure_is_unavailable(
        self, guard: FailClosedStore, inner: FlakyStore, failure: BaseException
    ) -> None:
        """Whatever the backend raises reaches the caller as StoreUnavailableError (what the
        proxy answers with a temporary status) and puts the store into a fault."""
        inner.failure = failure
        with pytest.raises(StoreUnavailableError) as info:
            await guard.current(SUB_A)
        assert info.value.__cause__ is failure
        assert guard.fault == str(info.value)

    async def test_faulted_store_refuses_at_once_without_the_backend(
        self, guard: FailClosedStore, inner: FlakyStore
    ) -> None:
        """While faulted every operation raises the reason, and none reaches the backend, so a
        backend that would hang now hangs nobody."""
        await trip(guard, inner, StoreError("disk says no"))
        inner.hang = True
        reached = inner.calls
        async with asyncio.timeout(WAIT_S):  # a bound against a hang, not a speed assertion
            calls: list[Callable[[], Awaitable[object]]] = [
                lambda: guard.append(make_event()),
                lambda: guard.current(SUB_A),
                lambda: guard.history(SUB_A),
                lambda: guard.footer_seen(SUB_A, "acme"),
                lambda: guard.mark_footer_seen(SUB_A, "acme", 1.0),
                lambda: guard.import_events([make_event()]),
                lambda: guard.record_count(),
                lambda: guard.ping(),
            ]
            for call in calls:
                with pytest.raises(StoreUnavailableError, match="disk says no"):
                    await call()
            with pytest.raises(StoreUnavailableError, match="disk says no"):
                _ = [r async for r in guard.export()]
        assert inner.calls == reached

    async def test_cached_answers_stop_while_faulted(
        self, guard: FailClosedStore, inner: FlakyStore
    ) -> None:
        """The local answers are off during a fault: a write that failed may have been a STOP."""
        await guard.append(make_event(SUB_A))
        await guard.mark_footer_seen(SUB_A, "acme", 1.0)
        assert guard.cached_current(SUB_A) is not None
        assert guard.cached_footer_seen(SUB_A, "acme") is True
        await trip(guard, inner, StoreError("x"))
        inner.failure = None
        inner.hang = True  # the probe does not pass: the fault lasts
        assert guard.cached_current(SUB_A) is None
        assert guard.cached_footer_seen(SUB_A, "acme") is None

    async def test_failing_cache_read_faults_too(
        self, guard: FailClosedStore, inner: FlakyStore
    ) -> None:
        """An exception from cached_current is a miss for the caller and a fault for the store."""
        inner.failure = RuntimeError("cache bug")
        inner.hang = True
        assert guard.cached_current(SUB_A) is None
        assert guard.fault is not None
        assert "cache bug" in guard.fault

    async def test_cancellation_is_not_a_fault(
        self, guard: FailClosedStore, inner: FlakyStore
    ) -> None:
        """A caller cancelled while waiting for the backend leaves the store healthy."""
        inner.hang = True
        task = asyncio.create_task(guard.current(SUB_A))
        await inner.entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert guard.fault is None

    async def test_failing_export_faults(self, guard: FailClosedStore, inner: FlakyStore) -> None:
        """A failure in the middle of an export ends it with StoreUnavailableError."""
        for i in range(3):
            await guard.append(make_event(f"1555000000{i}"))
        exported = []

        async def read_all() -> None:
            async for record in guard.export():
                exported.append(record)
                inner.failure = OSError("gone")

        with pytest.raises(StoreUnavailableError):
            await read_all()
        assert len(exported) == 1
        assert guard.fault is not None


class TestRecovery:
    async def test_probe_passing_recovers_and_empties_the_caches(
        self, guard: FailClosedStore, inner: FlakyStore
    ) -> None:
        """Once the backend works again the recovery task's probe passes: the fault clears,
        the backend's caches are emptied, and calls reach the backend again."""
        await trip(guard, inner, StoreError("down"))
        inner.failure = None
        await guard.wait_healthy(WAIT_S)
        assert guard.fault is None
        assert inner.cleared == 1
        assert await guard.append(make_event(SUB_A)) is True
        assert guard.cached_current(SUB_A) is not None

    async def test_reason_follows_the_latest_probe(
        self, guard: FailClosedStore, inner: FlakyStore
    ) -> None:
        """While the probe fails, the reason given to callers is the latest failure."""
        await trip(guard, inner, StoreError("first"))
        inner.failure = StoreError("second")
        with pytest.raises(StoreUnavailableError, match="second"):
            await guard.probe()
        with pytest.raises(StoreUnavailableError, match="second"):
            await guard.current(SUB_A)

    async def test_probe_call_recovers_at_once(self, inner: FlakyStore) -> None:
        """probe() runs the backend's probe now, even while faulted, and clears the fault."""
        guard = FailClosedStore(inner, recovery_interval_s=3600)  # the task would wait an hour
        try:
            await trip(guard, inner, StoreError("down"))
            inner.failure = None
            await guard.probe()
            assert guard.fault is None
            await guard.ping()
        finally:
            await guard.close()

    async def test_hanging_probe_is_bounded(self, inner: FlakyStore) -> None:
        """A probe that never answers fails after probe_timeout_s, and the store stays faulted."""
        guard = FailClosedStore(inner, recovery_interval_s=3600, probe_timeout_s=0.05)
        try:
            await trip(guard, inner, StoreError("down"))
            inner.failure = None
            inner.hang = True
            with pytest.raises(StoreUnavailableError, match="did not answer in time"):
                await guard.probe()
            assert guard.fault is not None
        finally:
            await guard.close()

    async def test_close_ends_the_recovery_task(self, inner: FlakyStore) -> None:
        """close() cancels the recovery task it owns: nothing keeps probing a closed store."""
        guard = FailClosedStore(inner, recovery_interval_s=0.01)
        await trip(guard, inner, StoreError("down"))
        task = guard._recovery
        assert task is not None
        assert not task.done()
        await guard.close()
        assert task.done()
        with pytest.raises(StoreError, match="closed"):
            await guard.current(SUB_A)


class TestSync:
    @pytest.mark.redis
    async def test_sync_passes_to_the_backend(self, redis_server: RedisServer) -> None:
        """sync() through the guard waits for the Redis backend's invalidations."""
        url = redis_server.url + "?prefix=guardsync"
        first = await open_store(url, instance="a")
        second = await open_store(url, instance="b")
        try:
            await second.current(SUB_A)
            assert second.cached_current(SUB_A) == {}
            await first.append(make_event())
            await second.sync()
            assert second.cached_current(SUB_A) is None
        finally:
            await first.close()
            await second.close()

    async def test_sync_without_a_backend_sync(
        self, guard: FailClosedStore, inner: FlakyStore
    ) -> None:
        """A backend with nothing to wait for: sync() returns, or refuses while faulted."""
        await guard.sync()
        await trip(guard, inner, StoreError("down"))
        inner.hang = True
        with pytest.raises(StoreUnavailableError):
            await guard.sync()


class TestTelemetry:
    async def test_logged_once_per_fault(self, guard: FailClosedStore, inner: FlakyStore) -> None:
        """store_unavailable is logged when the fault begins (not per refused call) with the
        operation and the error; store_recovered when it ends, with how long it lasted."""
        with structlog.testing.capture_logs() as captured:
            await trip(guard, inner, StoreError("disk says no"))
            for _ in range(5):
                with pytest.raises(StoreUnavailableError):
                    await guard.current(SUB_A)
                assert guard.cached_current(SUB_A) is None
            inner.failure = None
            await guard.wait_healthy(WAIT_S)
        events = [e for e in captured if e["event"].startswith("store_")]
        assert [e["event"] for e in events] == [logs.STORE_UNAVAILABLE, logs.STORE_RECOVERED]
        down, up = events
        assert down["log_level"] == "error"
        assert down["operation"] == "append"
        assert down["error"] == "disk says no"
        assert down["store"] == "flaky://"
        assert up["log_level"] == "info"
        assert up["down_s"] >= 0

    async def test_store_up_gauge(self, inner: FlakyStore) -> None:
        """smppgw_consent_store_up is 1 while the store works and 0 during a fault."""
        metrics = Metrics()
        guard = FailClosedStore(inner, recovery_interval_s=0.01, metrics=metrics)
        try:
            assert metrics.registry.get_sample_value(STORE_UP) == 1
            await trip(guard, inner, StoreError("down"))
            assert metrics.registry.get_sample_value(STORE_UP) == 0
            inner.failure = None
            await guard.wait_healthy(WAIT_S)
            assert metrics.registry.get_sample_value(STORE_UP) == 1
        finally:
            await guard.close()

    def test_no_gauge_without_a_store(self) -> None:
        """A gateway without a store (consent disabled) exports no store_up at all."""
        assert Metrics().registry.get_sample_value(STORE_UP) is None
