"""Frequency-cap reservations of one loop turn, made with one store call.

Why: every MT of a capped campaign must be counted in the store (durable and shared by the
instances) before it goes, and one store call per MT (a writer job and its commit on SQLite,
a round trip on Redis, a task each) costs several times what the rest of its path does. So the
enforcer only queues a capped MT here once its policy allowed it; once per loop turn
(``call_soon``: every MT decided from the reads of that turn) the queue is reserved with one
``ConsentStore.reserve_sends`` and the enforcer is handed the batch and its verdicts together.

Order: one batch is in the store at a time. What is queued meanwhile waits for it and goes as
the next batch (so the batches grow with the load, like a group commit), and every batch is
settled in the order it was queued. So MTs to one subscriber are counted in the order they came
(the second sees the first) and are sent on in that order, whatever the store.

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

ReserveMany = Callable[[Sequence[CapReservation]], Awaitable[list[CapVerdict]]]
# Told each batch in queue order: its items and their verdicts, or why there are none.
Settle = Callable[[list[T], list[CapVerdict] | Exception], None]

log = logs.get_logger()


class CapBatcher(Generic[T]):
    """Queue reservations with what they are for; reserve each loop turn's in one call."""

    __slots__ = (
        "_flushing",
        "_items",
        "_max_batch",
        "_now",
        "_pending",
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
    ) -> None:
        self._reserve = reserve
        self._settle = settle
        self._now = now
        self._max_batch = max_batch
        self._items: list[T] = []
        # (subscriber, key, token, limit, window_s) of each queued item; ``now`` is read once
        # per batch, when it is sent.
        self._pending: list[tuple[str, str, str, int, float]] = []
        self._flushing = False  # a flush is scheduled
        self._running: asyncio.Task[None] | None = None
        self.batches = 0

    def add(
        self, item: T, subscriber: str, key: str, token: str, limit: int, window_s: float
    ) -> None:
        """Queue one reservation; ``item`` is settled with its verdict."""
        self._items.append(item)
        self._pending.append((subscriber, key, token, limit, window_s))
        if not self._flushing and self._running is None:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        if self._running is not None or not self._items:
            return  # the batch in the store starts the next one when it is done
        size = self._max_batch
        items, self._items = self._items[:size], self._items[size:]
        pending, self._pending = self._pending[:size], self._pending[size:]
        self.batches += 1
        self._running = asyncio.get_running_loop().create_task(self._run(items, pending))

    async def _run(self, items: list[T], pending: list[tuple[str, str, str, int, float]]) -> None:
        now = self._now()
        batch = [CapReservation(s, k, t, n, w, now) for s, k, t, n, w in pending]
        outcome: list[CapVerdict] | Exception
        try:
            outcome = await self._reserve(batch)
            if len(outcome) != len(batch):
                # A store that broke its contract: no verdict can be trusted, so none is used.
                outcome = LookupError(f"reserve_sends answered {len(outcome)} of {len(batch)}")
        except Exception as exc:  # noqa: BLE001 - every MT of the batch is refused with it
            outcome = exc
        finally:
            self._running = None
            if self._items:
                self._flush()  # the next batch goes to the store while this one is settled
        try:
            self._settle(items, outcome)
        except Exception:  # a task boundary: logged, the relay goes on
            log.exception(logs.CONNECTION_FAILED, where="frequency_caps")

    async def close(self) -> None:
        """Cancel the batch in the store (shutdown); what is queued is not sent."""
        task = self._running
        self._items, self._pending = [], []
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
