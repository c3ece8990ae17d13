"""Frequency-cap reservations of one loop turn, made with one store call.

Why: every MT of a capped campaign must be counted in the store (durable and shared by the
instances) before it goes, and one store call per MT (a writer job and its commit on SQLite,
a round trip on Redis, a task each) costs several times what the rest of its path does. So the
enforcer only queues a capped MT here once its policy allowed it; once per loop turn
(``call_soon``: every MT decided from the reads of that turn) the queue is reserved with one
``ConsentStore.reserve_sends`` and the enforcer is handed the batch and its verdicts together.

Order: a subscriber is in at most one batch in the store at a time. A reservation for one who
is waits, with every later one for them, and goes in a batch after that one is settled; the
others go on (up to ``MAX_IN_FLIGHT`` batches at once, so a store call's latency does not
hold up the MTs of other subscribers). So MTs to one subscriber are counted in the order they
came (the second sees the first, whatever the store and however its calls overlap) and are
sent on in that order.

Failure: a failed call settles every MT of its batch with the exception (the enforcer refuses
them all: fail closed), and so does a store that answers the wrong number of verdicts.

Used from the event loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Final, Generic, TypeVar

from gateway.consent.caps import CapReservation, CapVerdict
from gateway.telemetry import logs

T = TypeVar("T")

MAX_BATCH: Final = 1024  # reservations per store call; more wait for the next one
MAX_IN_FLIGHT: Final = 4  # store calls under way at once; more wait for one to end

ReserveMany = Callable[[Sequence[CapReservation]], Awaitable[list[CapVerdict]]]
# Told each batch in queue order: its items and their verdicts, or why there are none.
Settle = Callable[[list[T], list[CapVerdict] | Exception], None]

log = logs.get_logger()

_Pending = tuple[str, str, str, int, float]  # subscriber, key, token, limit, window_s


class CapBatcher(Generic[T]):
    """Queue reservations with what they are for; reserve each loop turn's in one call."""

    __slots__ = (
        "_busy",
        "_flushing",
        "_max_batch",
        "_max_in_flight",
        "_now",
        "_queued",
        "_reserve",
        "_running",
        "_settle",
        "batches",
    )

    def __init__(
        self,
        reserve: ReserveMany,
        settle: Settle[T],
        now: Callable[[], float],
        *,
        max_batch: int = MAX_BATCH,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self._reserve = reserve
        self._settle = settle
        self._now = now
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        # Each queued item with (subscriber, key, token, limit, window_s); ``now`` is read once
        # per batch, when it is sent.
        self._queued: list[tuple[T, _Pending]] = []
        self._busy: set[str] = set()  # subscribers with a batch in the store
        self._flushing = False  # a flush is scheduled
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0

    def add(
        self, item: T, subscriber: str, key: str, token: str, limit: int, window_s: float
    ) -> None:
        """Queue one reservation; ``item`` is settled with its verdict."""
        self._queued.append((item, (subscriber, key, token, limit, window_s)))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        while self._queued and len(self._running) < self._max_in_flight:
            if not self._start():
                return

    def _start(self) -> bool:
        """Send the next batch to the store; False when every queued one must wait."""
        busy = self._busy
        batch: list[tuple[T, _Pending]] = []
        waiting: list[tuple[T, _Pending]] = []
        held: set[str] = set()  # subscribers whose next reservation waits: so do the later
        for entry in self._queued:
            subscriber = entry[1][0]
            if subscriber in busy or subscriber in held or len(batch) >= self._max_batch:
                held.add(subscriber)
                waiting.append(entry)
            else:
                batch.append(entry)
        if not batch:
            return False
        self._queued = waiting
        subscribers = {pending[0] for _item, pending in batch}
        busy.update(subscribers)
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._run(batch, subscribers))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return True

    async def _run(self, queued: list[tuple[T, _Pending]], subscribers: set[str]) -> None:
        now = self._now()
        batch = [CapReservation(s, k, t, n, w, now) for _item, (s, k, t, n, w) in queued]
        outcome: list[CapVerdict] | Exception
        try:
            outcome = await self._reserve(batch)
            if len(outcome) != len(batch):
                # A store that broke its contract: no verdict can be trusted, so none is used.
                outcome = LookupError(f"reserve_sends answered {len(outcome)} of {len(batch)}")
        except Exception as exc:  # noqa: BLE001 - every MT of the batch is refused with it
            outcome = exc
        finally:
            self._busy.difference_update(subscribers)
            task = asyncio.current_task()
            if task is not None:
                self._running.discard(task)  # room for the next batch before this one settles
            if self._queued:
                # What waited for these subscribers goes to the store while this is settled:
                # it cannot be answered before this batch is.
                self._flush()
        try:
            self._settle([item for item, _pending in queued], outcome)
        except Exception:  # a task boundary: logged, the relay goes on
            log.exception(logs.CONNECTION_FAILED, where="frequency_caps")

    async def close(self) -> None:
        """Cancel the batches in the store (shutdown); what is queued is not sent."""
        self._queued = []
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
