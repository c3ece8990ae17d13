"""Cache misses of one loop turn read together: one backend call for all of them.

Why: a read from a client may carry a hundred submit_sm to numbers the cache has not seen,
and one backend call each (a reader-thread job and a loop wake-up on SQLite, a round trip on
Redis) costs far more than the decision itself. So ``load(subscriber)`` only queues the
subscriber and returns a future; once per loop turn (``call_soon``) the queued subscribers are
read with one ``load_many`` (the store's ``current_many``) and every future is answered.

The cache's rules hold for each subscriber as for a single load (``gateway.store.cache``):
the ticket is taken when the subscriber is queued, before the read is sent, so an
invalidation, ``clear`` or ``disable`` between then and the answer keeps that answer out of
the cache (the waiter still gets it: it was read after the waiter asked). Any failure of the
batch's read fails every waiter with it: nobody is answered from a read that did not finish.
Futures are answered in the order they were queued, so callers resume in the order they
asked (the enforcer's per-subscriber orderings stay as they were).

Used from the event loop thread only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from gateway.consent.model import ConsentRecord
from gateway.store.cache import ConsentCache, Ticket

LoadMany = Callable[[list[str]], Awaitable[Mapping[str, Mapping[str, ConsentRecord]]]]


@dataclass(slots=True)
class _Waiter:
    ticket: Ticket
    future: asyncio.Future[Mapping[str, ConsentRecord]]


class BatchLoader:
    """Queue misses, read them once per loop turn with ``load_many``, fill the cache."""

    __slots__ = ("_cache", "_load_many", "_queued", "_running", "batches")

    def __init__(self, cache: ConsentCache, load_many: LoadMany) -> None:
        self._cache = cache
        self._load_many = load_many
        self._queued: list[_Waiter] = []
        # Reads under way, kept so their tasks are not collected before they finish.
        self._running: set[asyncio.Task[None]] = set()
        self.batches = 0

    def load(self, subscriber: str) -> asyncio.Future[Mapping[str, ConsentRecord]]:
        """The subscriber's current records, read with the other misses of this turn."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Mapping[str, ConsentRecord]] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append(_Waiter(self._cache.begin(subscriber), future))
        return future

    def _flush(self) -> None:
        waiters, self._queued = self._queued, []
        if not waiters:
            return
        self.batches += 1
        task = asyncio.get_running_loop().create_task(self._read(waiters))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _read(self, waiters: list[_Waiter]) -> None:
        cache = self._cache
        try:
            subscribers = list(dict.fromkeys(w.ticket.subscriber for w in waiters))
            try:
                found = await self._load_many(subscribers)
            except asyncio.CancelledError:
                for waiter in waiters:
                    waiter.future.cancel()  # the loop is closing: nobody gets an answer
                raise
            except Exception as exc:  # noqa: BLE001 - every waiter fails alike: fail closed
                for waiter in waiters:
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                return
            for waiter in waiters:
                subscriber = waiter.ticket.subscriber
                records = found.get(subscriber)
                if records is None:
                    # A backend that left out a subscriber it was asked for broke its contract:
                    # "nothing" is not an answer it gave, so refuse rather than allow.
                    error = LookupError(f"current_many left out {subscriber!r}")
                    if not waiter.future.done():
                        waiter.future.set_exception(error)
                    continue
                value = cache.fill(waiter.ticket, records)
                if not waiter.future.done():
                    waiter.future.set_result(value)
        finally:
            for waiter in waiters:
                cache.release(waiter.ticket)
