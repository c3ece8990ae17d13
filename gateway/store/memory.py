"""In-process reference store: the contract in its plainest form, and the test double.

Durability: none. Everything lives in this object and is gone when the process ends, so the
factory offers it only as ``memory://`` for tests and demonstrations. Every answer is served
from memory, so ``cached_current`` never misses.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from types import MappingProxyType

from gateway.consent.caps import CapReservation, CapVerdict, reserve_all, trim
from gateway.consent.model import ConsentEvent, ConsentRecord
from gateway.store.base import (
    MAX_REPLIES_PER_SUBSCRIBER,
    ImportChange,
    ImportOutcome,
    MessageIds,
    ReplyRecord,
    ResumedImports,
    StoreError,
    check_import_changes,
    iterate,
    record_of,
)
from gateway.store.cache import EMPTY

# Message-id mappings kept at most (the oldest go first).
MAX_MESSAGE_IDS = 1_000_000


class MemoryStore:
    """ConsentStore kept in dictionaries."""

    def __init__(
        self,
        *,
        max_message_ids: int = MAX_MESSAGE_IDS,
        max_replies: int = MAX_REPLIES_PER_SUBSCRIBER,
    ) -> None:
        if max_replies < 1:
            raise StoreError("memory: max_replies must be at least 1")
        # Each subscriber's mapping is replaced, never mutated, so handed-out answers stay fixed.
        self._current: dict[str, Mapping[str, ConsentRecord]] = {}
        self._history: dict[str, list[ConsentEvent]] = {}
        self._dedup: set[tuple[str, str]] = set()
        self._footer: dict[tuple[str, str], float] = {}
        # (subscriber, counter key) -> token -> when sent (frequency caps).
        self._sends: dict[tuple[str, str], dict[str, float]] = {}
        self._records = 0
        self._message_ids: OrderedDict[str, tuple[float, MessageIds]] = OrderedDict()
        self._max_message_ids = max_message_ids
        # subscriber -> reply_id -> record, in the order recorded (the newest max_replies).
        self._replies: dict[str, OrderedDict[str, ReplyRecord]] = {}
        self._max_replies = max_replies
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")

    def _append(self, event: ConsentEvent) -> bool:
        if event.dedup_key is not None:
            key = (event.subscriber, event.dedup_key)
            if key in self._dedup:
                return False
            self._dedup.add(key)
        self._history.setdefault(event.subscriber, []).append(event)
        updated = dict(self._current.get(event.subscriber, EMPTY))
        self._records += event.scope not in updated
        updated[event.scope] = record_of(event)
        self._current[event.subscriber] = MappingProxyType(updated)
        return True

    async def append(self, event: ConsentEvent) -> bool:
        self._check_open()
        return self._append(event)

    async def current(self, subscriber: str) -> Mapping[str, ConsentRecord]:
        self._check_open()
        return self._current.get(subscriber, EMPTY)

    def cached_current(self, subscriber: str) -> Mapping[str, ConsentRecord] | None:
        return self._current.get(subscriber, EMPTY)

    async def history(self, subscriber: str, scope: str | None = None) -> list[ConsentEvent]:
        self._check_open()
        events = self._history.get(subscriber, [])
        return [e for e in events if scope is None or e.scope == scope]

    async def footer_seen(self, subscriber: str, campaign: str) -> bool:
        self._check_open()
        return (subscriber, campaign) in self._footer

    def cached_footer_seen(self, subscriber: str, campaign: str) -> bool | None:
        return True if (subscriber, campaign) in self._footer else None

    async def mark_footer_seen(self, subscriber: str, campaign: str, at: float) -> None:
        self._check_open()
        self._footer.setdefault((subscriber, campaign), at)

    async def reserve_send(
        self, subscriber: str, key: str, token: str, *, limit: int, window_s: float, now: float
    ) -> CapVerdict:
        reservation = CapReservation(subscriber, key, token, limit, window_s, now)
        return (await self.reserve_sends([reservation]))[0]

    async def reserve_sends(self, batch: Sequence[CapReservation]) -> list[CapVerdict]:
        self._check_open()
        sends = self._sends
        return reserve_all(lambda subscriber, key: sends.setdefault((subscriber, key), {}), batch)

    async def release_send(self, subscriber: str, key: str, token: str) -> None:
        self._check_open()
        self._sends.get((subscriber, key), {}).pop(token, None)

    async def sends_counted(self, subscriber: str, key: str, window_s: float, now: float) -> int:
        self._check_open()
        sends = self._sends.get((subscriber, key))
        if sends is None:
            return 0
        trim(sends, now, window_s)
        return len(sends)

    async def export(self) -> AsyncIterator[ConsentRecord]:
        self._check_open()
        for subscriber in sorted(self._current):
            records = self._current[subscriber]
            for scope in sorted(records):
                yield records[scope]

    async def import_events(
        self, events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent]
    ) -> int:
        self._check_open()
        appended = 0
        async for event in iterate(events):
            appended += self._append(event)
        return appended

    async def current_many(
        self, subscribers: Iterable[str]
    ) -> dict[str, Mapping[str, ConsentRecord]]:
        self._check_open()
        return {s: self._current.get(s, EMPTY) for s in subscribers}

    async def history_many(self, subscribers: Iterable[str]) -> dict[str, list[ConsentEvent]]:
        self._check_open()
        return {s: list(self._history.get(s, ())) for s in subscribers}

    async def import_changes(self, changes: Sequence[ImportChange]) -> ImportOutcome:
        """Checked first, then applied with no await in between: nothing can fail midway."""
        self._check_open()
        check_import_changes(changes)
        conflicts: set[str] = set()
        for change in changes:
            record = self._current.get(change.event.subscriber, EMPTY).get(change.event.scope)
            if (None if record is None else record.last_event_id) != change.expected:
                conflicts.add(change.event.event_id)
        for change in changes:
            if change.event.event_id not in conflicts:
                self._append(change.event)
        return ImportOutcome(appended=len(changes) - len(conflicts), conflicts=frozenset(conflicts))

    async def resume_imports(self) -> ResumedImports:
        self._check_open()
        return ResumedImports()  # an import is applied in one step: never left half done

    async def put_message_ids(self, entries: Iterable[MessageIds], ttl_s: float) -> None:
        self._check_open()
        expires = time.monotonic() + ttl_s
        for entry in entries:
            self._message_ids.pop(entry.upstream_id, None)
            self._message_ids[entry.upstream_id] = (expires, entry)
        while len(self._message_ids) > self._max_message_ids:
            self._message_ids.popitem(last=False)

    async def get_message_ids(self, upstream_id: str) -> MessageIds | None:
        self._check_open()
        found = self._message_ids.get(upstream_id)
        if found is None:
            return None
        expires, entry = found
        if expires <= time.monotonic():
            del self._message_ids[upstream_id]
            return None
        return entry

    async def record_reply(self, reply: ReplyRecord) -> bool:
        self._check_open()
        kept = self._replies.setdefault(reply.subscriber, OrderedDict())
        if reply.reply_id in kept:
            return False
        kept[reply.reply_id] = reply
        while len(kept) > self._max_replies:
            kept.popitem(last=False)
        return True

    async def replies(self, subscriber: str) -> list[ReplyRecord]:
        self._check_open()
        return list(self._replies.get(subscriber, {}).values())

    async def record_count(self) -> int:
        self._check_open()
        return self._records

    async def ping(self) -> None:
        self._check_open()

    async def probe(self) -> None:
        self._check_open()

    def clear_cache(self) -> None:
        pass  # everything is the backend itself: there is no cache to drop

    async def close(self) -> None:
        self._closed = True
