"""The local read cache in front of a store: a bounded LRU of ``current()`` answers.

Why: the MT hot path must not pay a network round trip or a thread hop per message
(PRODUCT.md section 6), and the number of records (10 million) must not show in the cost per
message or the start-up time. So each store object keeps the answers for its hot subscribers in
memory, including empty answers (most MT recipients have no record at all), and loads nothing
at start.

Correctness rules (the cache must never serve a stale "allowed" after an opt-out):

1. Every write made through this store object drops the subscriber's entry once the write is
   acknowledged by the backend.
2. Writes made elsewhere (another gateway instance, the CLI) reach the cache as invalidations
   from the backend (Redis pub/sub; SQLite's change counter). ``invalidate`` drops one entry,
   ``clear`` drops everything.
3. A load races with invalidations: a read sent before an opt-out and answered after its
   invalidation would put the old state back. So a load takes a ticket (``begin``) before it
   reads; ``fill`` stores its result only when no invalidation of that subscriber, no ``clear``
   and no ``disable`` happened since the ticket was taken.
4. While the backend's invalidation channel is not known to be working (not yet confirmed, lost,
   or silent past its lease) the cache is disabled: it answers nothing and keeps nothing, and it
   is emptied again when it is enabled, so a lost invalidation can never leave a stale entry.

The cache is used from the event loop thread only; it has no locks.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from gateway.consent.model import ConsentRecord

EMPTY: Final[Mapping[str, ConsentRecord]] = MappingProxyType({})


@dataclass(slots=True)
class _Load:
    """Loads of one subscriber in flight, and how often it was invalidated meanwhile."""

    count: int = 0
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Ticket:
    """Taken before a load; ``fill`` trusts the loaded value only if nothing changed since."""

    subscriber: str
    generation: int
    version: int
    load: _Load = field(compare=False)


class ConsentCache:
    """Bounded LRU of subscriber -> read-only mapping of scope key -> record."""

    __slots__ = ("_entries", "_generation", "_lease_until", "_max_entries", "_pending", "hits")

    def __init__(self, max_entries: int = 100_000, *, enabled: bool = True) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must be >= 0")
        self._max_entries = max_entries
        self._entries: OrderedDict[str, Mapping[str, ConsentRecord]] = OrderedDict()
        self._pending: dict[str, _Load] = {}
        self._generation = 0
        # Monotonic deadline after which the cache stops answering (see rule 4); inf = no lease.
        self._lease_until = math.inf if enabled else -math.inf
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self._lease_until == math.inf or time.monotonic() < self._lease_until

    def get(self, subscriber: str) -> Mapping[str, ConsentRecord] | None:
        value = self._entries.get(subscriber)
        if value is None:
            return None
        if self._lease_until != math.inf and time.monotonic() >= self._lease_until:
            self.disable()
            return None
        self._entries.move_to_end(subscriber)
        self.hits += 1
        return value

    def begin(self, subscriber: str) -> Ticket:
        load = self._pending.get(subscriber)
        if load is None:
            load = self._pending[subscriber] = _Load()
        load.count += 1
        return Ticket(
            subscriber=subscriber, generation=self._generation, version=load.version, load=load
        )

    def fill(
        self, ticket: Ticket, value: Mapping[str, ConsentRecord]
    ) -> Mapping[str, ConsentRecord]:
        """Keep ``value`` if the ticket is still good; returns it as a read-only mapping."""
        frozen = value if isinstance(value, MappingProxyType) else MappingProxyType(dict(value))
        if (
            ticket.generation == self._generation
            and ticket.version == ticket.load.version
            and self._max_entries > 0
            and self.enabled
        ):
            self._entries[ticket.subscriber] = frozen
            self._entries.move_to_end(ticket.subscriber)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return frozen

    def release(self, ticket: Ticket) -> None:
        """End a load (whether or not it filled); call it in a ``finally``."""
        load = ticket.load
        load.count -= 1
        if load.count <= 0 and self._pending.get(ticket.subscriber) is load:
            del self._pending[ticket.subscriber]

    def invalidate(self, subscriber: str) -> None:
        self._entries.pop(subscriber, None)
        load = self._pending.get(subscriber)
        if load is not None:
            load.version += 1

    def clear(self) -> None:
        self._entries.clear()
        self._generation += 1

    def disable(self) -> None:
        """Stop answering and keeping anything until ``enable``."""
        self._lease_until = -math.inf
        self.clear()

    def enable(self, lease_s: float | None = None) -> None:
        """Start answering again, empty, for ``lease_s`` seconds (None: until disabled)."""
        self.clear()
        self._lease_until = math.inf if lease_s is None else time.monotonic() + lease_s

    def extend(self, lease_s: float | None) -> None:
        """Prolong the lease of an enabled cache (a sign of life of the invalidation channel)."""
        if lease_s is None:
            self._lease_until = math.inf
        elif self._lease_until != -math.inf:
            self._lease_until = time.monotonic() + lease_s


class SeenCache:
    """Positive-only, bounded memory of (subscriber, campaign) footer marks."""

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], None] = OrderedDict()

    def get(self, subscriber: str, campaign: str) -> bool | None:
        key = (subscriber, campaign)
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        return None

    def add(self, subscriber: str, campaign: str) -> None:
        if self._max_entries <= 0:
            return
        key = (subscriber, campaign)
        self._entries[key] = None
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
