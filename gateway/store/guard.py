"""Fail closed in front of every backend: after one failure, nothing is answered until a probe
proves the backend works again.

Why: a failed write may be a STOP the gateway could not record. Until the store works again no
decision can be sure to be current, so the proxy must not go on answering from a cache, and no
caller should wait on a backend that just failed. ``FailClosedStore`` implements the same
``ConsentStore`` protocol around any backend; ``gateway.store.factory.open_store`` returns one
for every URL, so the daemon, the admin API and the CLI all get it.

- Any exception from the backend (``StoreError`` or anything else, except a cancellation)
  becomes ``StoreUnavailableError`` and puts the store into a *fault* with a reason: the
  message of the first failure. ``store_unavailable`` is logged once, when the fault begins
  (never per refused call), and the ``smppgw_consent_store_up`` gauge drops to 0.
- While faulted, ``cached_current`` and ``cached_footer_seen`` answer None and every other
  operation raises ``StoreUnavailableError(reason)`` at once, without touching the backend:
  nothing hangs, nothing waits.
- A recovery task, owned by the store and cancelled by ``close``, runs the backend's
  ``probe()`` every ``recovery_interval_s`` (each bounded by ``probe_timeout_s``). While it
  fails, the reason follows the latest failure (a removed file later replaced reads
  "replaced"). When it passes, the backend's caches are emptied (anything may have changed
  meanwhile), the fault clears, and ``store_recovered`` is logged with how long it lasted.
- ``ping()`` (``/readyz``) raises the reason while faulted; ``probe()`` runs the backend's
  probe at once and clears the fault when it passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Final, TypeVar

from gateway.consent.caps import CapReservation, CapVerdict
from gateway.consent.model import ConsentEvent, ConsentRecord
from gateway.store.base import (
    ConsentStore,
    ImportChange,
    ImportOutcome,
    MessageIds,
    ReplyRecord,
    ResumedImports,
    StoreError,
    StoreUnavailableError,
)
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

T = TypeVar("T")

_log = logs.get_logger()

DEFAULT_RECOVERY_INTERVAL_S: Final = 0.5
DEFAULT_PROBE_TIMEOUT_S: Final = 10.0


def _reason(exc: BaseException) -> str:
    """What a caller and the log are told: a store error's message, or what the bug was."""
    if isinstance(exc, StoreError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError):
        return "the store did not answer in time"
    return f"unexpected store failure: {type(exc).__name__}: {exc}"


class FailClosedStore:
    """A ConsentStore that refuses everything from a backend failure until a probe passes."""

    def __init__(
        self,
        inner: ConsentStore,
        *,
        name: str = "",
        recovery_interval_s: float = DEFAULT_RECOVERY_INTERVAL_S,
        probe_timeout_s: float = DEFAULT_PROBE_TIMEOUT_S,
        metrics: Metrics | None = None,
    ) -> None:
        if recovery_interval_s <= 0 or probe_timeout_s <= 0:
            raise StoreError("store.url: recovery_interval_s must be > 0")
        self.inner = inner
        self.name = name  # the store URL without secrets, for the log
        self.recovery_interval_s = recovery_interval_s
        self.probe_timeout_s = probe_timeout_s
        self._fault: str | None = None
        self._fault_since = 0.0
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._recovery: asyncio.Task[None] | None = None
        self._closed = False
        # Told of every consent change this store object made (the audit trail); awaited
        # before append returns, so the change is in the trail before it is acknowledged.
        self.on_change: Callable[[Sequence[ConsentEvent]], Awaitable[None]] | None = None
        self._up = metrics.store_up() if metrics is not None else None
        if self._up is not None:
            self._up.set(1)

    # --- the fault ------------------------------------------------------------------------------

    @property
    def fault(self) -> str | None:
        """The reason the store refuses everything, or None while it works."""
        return self._fault

    def _trip(self, operation: str, exc: BaseException) -> StoreUnavailableError:
        """Enter (or stay in) the fault; the error to raise to this call's caller."""
        reason = _reason(exc)
        if self._fault is None and not self._closed:
            self._fault = reason
            self._fault_since = time.monotonic()
            self._healthy.clear()
            if self._up is not None:
                self._up.set(0)
            _log.error(logs.STORE_UNAVAILABLE, operation=operation, error=reason, store=self.name)
            self._start_recovery()
        return StoreUnavailableError(reason)

    def fail(self, operation: str, exc: BaseException) -> None:
        """Enter the fault now, as if ``operation`` had just failed with ``exc``: the daemon
        starts this way on a Redis that does not answer yet; the probe clears it."""
        self._trip(operation, exc)

    def _recovered(self) -> None:
        if self._fault is None:
            return
        self.inner.clear_cache()  # before anything is answered again
        down_s = time.monotonic() - self._fault_since
        self._fault = None
        self._healthy.set()
        if self._up is not None:
            self._up.set(1)
        _log.info(logs.STORE_RECOVERED, down_s=round(down_s, 3), store=self.name)

    def _start_recovery(self) -> None:
        if self._closed or (self._recovery is not None and not self._recovery.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a synchronous caller without a loop: the next awaited call starts it
        self._recovery = loop.create_task(self._recover(), name="consent-store-recovery")

    async def _recover(self) -> None:
        while self._fault is not None and not self._closed:
            # The pace of probing a failed backend, not a synchronisation.
            await asyncio.sleep(self.recovery_interval_s)
            try:
                await self._probe_inner()
            except StoreUnavailableError as exc:
                if self._fault is not None:
                    self._fault = str(exc)
                continue
            self._recovered()

    async def _probe_inner(self) -> None:
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                await self.inner.probe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure of the backend means "unavailable"
            raise StoreUnavailableError(_reason(exc)) from exc

    def _admit(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._fault is not None:
            self._start_recovery()  # in case the fault began where no loop was running
            raise StoreUnavailableError(self._fault)

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        self._admit()
        try:
            return await call()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure of the backend means "unavailable"
            raise self._trip(operation, exc) from exc

    async def wait_healthy(self, timeout_s: float) -> None:
        """Return once the store is not faulted; StoreUnavailableError after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._healthy.wait()
        except TimeoutError:
            raise StoreUnavailableError(self._fault or "store did not recover") from None

    # --- ConsentStore ---------------------------------------------------------------------------

    async def append(self, event: ConsentEvent) -> bool:
        added = await self._call("append", lambda: self.inner.append(event))
        if added and self.on_change is not None:
            await self.on_change((event,))
        return added

    async def current(self, subscriber: str) -> Mapping[str, ConsentRecord]:
        return await self._call("current", lambda: self.inner.current(subscriber))

    def cached_current(self, subscriber: str) -> Mapping[str, ConsentRecord] | None:
        if self._fault is not None or self._closed:
            return None
        try:
            return self.inner.cached_current(subscriber)
        except Exception as exc:  # noqa: BLE001 - every failure of the backend means "unavailable"
            self._trip("cached_current", exc)
            return None

    async def history(self, subscriber: str, scope: str | None = None) -> list[ConsentEvent]:
        return await self._call("history", lambda: self.inner.history(subscriber, scope))

    async def footer_seen(self, subscriber: str, campaign: str) -> bool:
        return await self._call("footer_seen", lambda: self.inner.footer_seen(subscriber, campaign))

    def cached_footer_seen(self, subscriber: str, campaign: str) -> bool | None:
        if self._fault is not None or self._closed:
            return None
        try:
            return self.inner.cached_footer_seen(subscriber, campaign)
        except Exception as exc:  # noqa: BLE001 - every failure of the backend means "unavailable"
            self._trip("cached_footer_seen", exc)
            return None

    async def mark_footer_seen(self, subscriber: str, campaign: str, at: float) -> None:
        await self._call(
            "mark_footer_seen", lambda: self.inner.mark_footer_seen(subscriber, campaign, at)
        )

    async def reserve_send(
        self, subscriber: str, key: str, token: str, *, limit: int, window_s: float, now: float
    ) -> CapVerdict:
        return await self._call(
            "reserve_send",
            lambda: self.inner.reserve_send(
                subscriber, key, token, limit=limit, window_s=window_s, now=now
            ),
        )

    async def reserve_sends(self, batch: Sequence[CapReservation]) -> list[CapVerdict]:
        return await self._call("reserve_sends", lambda: self.inner.reserve_sends(batch))

    async def release_send(self, subscriber: str, key: str, token: str) -> None:
        await self._call("release_send", lambda: self.inner.release_send(subscriber, key, token))

    async def sends_counted(self, subscriber: str, key: str, window_s: float, now: float) -> int:
        return await self._call(
            "sends_counted", lambda: self.inner.sends_counted(subscriber, key, window_s, now)
        )

    async def put_message_ids(self, entries: Iterable[MessageIds], ttl_s: float) -> None:
        batch = list(entries)
        await self._call("put_message_ids", lambda: self.inner.put_message_ids(batch, ttl_s))

    async def get_message_ids(self, upstream_id: str) -> MessageIds | None:
        return await self._call("get_message_ids", lambda: self.inner.get_message_ids(upstream_id))

    async def record_reply(self, reply: ReplyRecord) -> bool:
        return await self._call("record_reply", lambda: self.inner.record_reply(reply))

    async def replies(self, subscriber: str) -> list[ReplyRecord]:
        return await self._call("replies", lambda: self.inner.replies(subscriber))

    async def export(self) -> AsyncIterator[ConsentRecord]:
        self._admit()
        try:
            async for record in self.inner.export():
                yield record
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure of the backend means "unavailable"
            raise self._trip("export", exc) from exc

    async def import_events(
        self, events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent]
    ) -> int:
        return await self._call("import_events", lambda: self.inner.import_events(events))

    async def current_many(
        self, subscribers: Iterable[str]
    ) -> dict[str, Mapping[str, ConsentRecord]]:
        return await self._call("current_many", lambda: self.inner.current_many(subscribers))

    async def history_many(self, subscribers: Iterable[str]) -> dict[str, list[ConsentEvent]]:
        return await self._call("history_many", lambda: self.inner.history_many(subscribers))

    async def import_changes(self, changes: Sequence[ImportChange]) -> ImportOutcome:
        outcome = await self._call("import_changes", lambda: self.inner.import_changes(changes))
        if self.on_change is not None:
            conflicts = outcome.conflicts
            await self.on_change([c.event for c in changes if c.event.event_id not in conflicts])
        return outcome

    async def resume_imports(self) -> ResumedImports:
        resumed = await self._call("resume_imports", self.inner.resume_imports)
        if resumed.events and self.on_change is not None:
            await self.on_change(resumed.events)  # never told before: their import failed
        return resumed

    async def record_count(self) -> int:
        return await self._call("record_count", self.inner.record_count)

    async def ping(self) -> None:
        await self._call("ping", self.inner.ping)

    async def probe(self) -> None:
        """The backend's probe, now, even while faulted; a pass clears the fault."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            await self._probe_inner()
        except StoreUnavailableError as exc:
            if self._fault is not None:
                self._fault = str(exc)
            raise self._trip("probe", exc) from exc
        self._recovered()

    def clear_cache(self) -> None:
        self.inner.clear_cache()

    async def sync(self) -> None:
        """Return once every change acknowledged anywhere before the call reached this store's
        cache: the backend's ``sync()`` where it has one (Redis), else nothing to wait for
        (SQLite checks the file's change counter before every answer; memory is not shared)."""
        sync = getattr(self.inner, "sync", None)
        if sync is None:
            self._admit()
            return
        await self._call("sync", sync)

    async def close(self) -> None:
        self._closed = True
        task = self._recovery
        self._recovery = None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # never raises: a cancellation of close() still arrives
        await self.inner.close()
