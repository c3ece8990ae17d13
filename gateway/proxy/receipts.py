"""Delivery receipts under the ids the client was given.

The footer stage answers some parts of a long MT before the SMSC has seen them (so a client
that waits for each answer is never kept waiting), with message ids of the gateway's own, and
it sends parts of its own (a footer that needs another part). The SMSC's receipts carry the
SMSC's ids. ``ReceiptIds`` keeps the mapping (upstream id -> the client's ids, or none for a
part the client never sent): in a local LRU for the receipts that come back through this
process, and in the consent store (with a time-to-live) for those that come back over another
session or through another gateway instance.

Reading the id a receipt is for, rewriting a receipt for another id and writing the
gateway's own receipts are pure: ``gateway.messages.receipts``.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from gateway.store.base import ConsentStore, MessageIds

DEFAULT_TTL_S: Final = 2 * 24 * 3600.0
DEFAULT_LOCAL_ENTRIES: Final = 100_000


def new_message_id() -> str:
    """A message id of the gateway's own: 18 decimal digits, so clients that keep ids as
    64-bit integers (or parse them as hex) read it as well as any SMSC's."""
    return f"{uuid.uuid4().int % 10**18:018d}"


class ReceiptIds:
    """Upstream id -> the client's ids, locally (LRU, bounded) and in the consent store."""

    __slots__ = ("_local", "_max_local", "_store", "ttl_s")

    def __init__(
        self,
        store: ConsentStore,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_local: int = DEFAULT_LOCAL_ENTRIES,
    ) -> None:
        self._store = store
        self.ttl_s = ttl_s
        self._max_local = max_local
        self._local: OrderedDict[str, tuple[float, MessageIds]] = OrderedDict()

    def remember(self, entries: Iterable[MessageIds]) -> None:
        """Keep these mappings in this process (at once: a receipt may come back quickly)."""
        expires = time.monotonic() + self.ttl_s
        for entry in entries:
            self._local.pop(entry.upstream_id, None)
            self._local[entry.upstream_id] = (expires, entry)
        while len(self._local) > self._max_local:
            self._local.popitem(last=False)

    async def persist(self, entries: Iterable[MessageIds]) -> None:
        """Keep these mappings in the store, for the other sessions and instances (raises
        what the store raises)."""
        batch = list(entries)
        if batch:
            await self._store.put_message_ids(batch, self.ttl_s)

    async def keep(self, entries: Iterable[MessageIds]) -> None:
        """``remember`` and ``persist``."""
        batch = list(entries)
        self.remember(batch)
        await self.persist(batch)

    def local(self, upstream_id: str) -> MessageIds | None:
        """The mapping if this process made it (and it has not expired); no I/O."""
        found = self._local.get(upstream_id)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            del self._local[upstream_id]
            return None
        return found[1]

    async def lookup(self, upstream_id: str) -> MessageIds | None:
        """The mapping made by any instance, or None (raises what the store raises)."""
        found = self.local(upstream_id)
        if found is not None:
            return found
        return await self._store.get_message_ids(upstream_id)
