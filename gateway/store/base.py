"""The consent store interface every backend implements, its errors, and the event codec.

Contract (tests/store/test_contract.py runs it against every backend):

- ``append(event)`` is durable before it returns (see each backend's docstring for what
  "durable" means there). It atomically adds the event to the append-only history and updates
  the current-state projection, so ``current(s)`` always equals ``fold(history(s))``. It returns
  False, and changes nothing, when an event of the same subscriber with the same ``dedup_key``
  was appended before (also across restarts): a retransmitted MO is a no-op. Dedup keys are
  namespaced by subscriber, which is what a retransmission always shares.
- ``current(subscriber)`` is the MT hot path: all scopes of one subscriber, ``{}`` for an
  unknown one. ``cached_current(subscriber)`` answers the same question synchronously from the
  local cache, or returns None on a miss (the caller then awaits ``current``); it never returns
  an answer older than a change that this store object has acknowledged, nor, for the shared
  backends, one that the backend has told it to drop.
- ``footer_seen`` / ``mark_footer_seen`` back footer mode "first"; the first mark wins.
  ``cached_footer_seen`` is True on a local hit and None otherwise (seen marks only ever go
  from false to true, so a positive local answer is never stale).
- ``export()`` yields every current record, ordered by (subscriber, scope);
  ``import_events(events)`` appends events in order with the same rules as ``append`` and returns
  how many were new.
- ``put_message_ids(entries, ttl_s)`` / ``get_message_ids(upstream_id)`` keep, for a while,
  which ids the gateway gave a client for a part it sent upstream under another id (the parts
  of a long MT it answered before the SMSC did, and parts it added itself), so delivery
  receipts carrying the SMSC's id can be shown to the client under its own. A later put for
  the same upstream id replaces the earlier one; ``get`` returns None once ``ttl_s`` has
  passed (entries are also bounded in number, the oldest dropped first). Shared backends
  share them between instances, so a receipt may come back through any of them.
- ``record_count()`` is the number of current (subscriber, scope) records, read in O(1) (a
  counter the backend keeps with every write), so an empty store where a full one belongs is
  visible at a glance (``/readyz``, ``check-config``).
- ``ping()`` proves that the backend answers with real data (it reads what ``record_count``
  reads, not a constant); ``probe()`` proves a full read and write round trip without changing
  consent data (a write to a key or row of its own). The fail-closed guard runs ``probe`` to
  decide that a failed backend works again. ``clear_cache()`` empties the local caches (after
  an outage anything may have changed).
- Every failure of the backend, whatever its kind, raises ``StoreUnavailableError``: connection
  lost, timeout, a lock held too long, disk I/O, a database file removed, replaced, made
  read-only or corrupt, a server refusing a write (out of memory, read-only replica, failed
  background save), undecodable stored data. The proxy answers with a temporary status so
  nothing is lost, and the fail-closed guard (``gateway.store.guard``) stops every answer until
  the backend works again. ``StoreError`` that is not ``StoreUnavailableError`` means misuse: a
  bad URL, a closed store.

``gateway.store.factory.open_store`` wraps every backend in ``FailClosedStore``, so callers
(the daemon, the admin API, the CLI) never see a backend's raw exceptions.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any, Final, Protocol, runtime_checkable

from gateway.consent.model import (
    Actor,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    MatchType,
)
from gateway.errors import GatewayError


class StoreError(GatewayError):
    """Root of the store ring: a store operation failed."""


class StoreUnavailableError(StoreError):
    """The backend cannot be reached or cannot write now; retrying later may succeed."""


class StoreNotFoundError(StoreUnavailableError):
    """There is no store where the URL points (a SQLite file not created yet).

    Only the daemon creates a store (``open_store(..., create=True)``); the CLI and the config
    checker report this instead of creating an empty store in the wrong place.
    """


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class MessageIds:
    """The ids a client was given for one part the gateway sent upstream as ``upstream_id``.

    ``client_ids`` is empty for a part the gateway added (the client never sent it: its receipt
    is not the client's), and holds more than one id when the gateway sent the client's parts
    as fewer parts. ``account`` is the client's account key.
    """

    upstream_id: str
    client_ids: tuple[str, ...]
    account: str


@runtime_checkable
class ConsentStore(Protocol):
    """Consent persistence, shared by the proxy, the admin API and the CLI."""

    async def append(self, event: ConsentEvent) -> bool:
        """Store one event durably; False when its dedup_key was already seen."""
        ...

    async def current(self, subscriber: str) -> Mapping[str, ConsentRecord]:
        """All current records of one subscriber, keyed by scope key."""
        ...

    def cached_current(self, subscriber: str) -> Mapping[str, ConsentRecord] | None:
        """The same answer as ``current`` from the local cache, or None on a miss."""
        ...

    async def history(self, subscriber: str, scope: str | None = None) -> list[ConsentEvent]:
        """The subscriber's events in append order, optionally of one scope only."""
        ...

    async def footer_seen(self, subscriber: str, campaign: str) -> bool:
        """Whether this subscriber has already had the footer of this campaign."""
        ...

    def cached_footer_seen(self, subscriber: str, campaign: str) -> bool | None:
        """True when known locally to have been seen; None means ask ``footer_seen``."""
        ...

    async def mark_footer_seen(self, subscriber: str, campaign: str, at: float) -> None:
        """Record that the footer was sent (durably; the first mark is kept)."""
        ...

    def export(self) -> AsyncIterator[ConsentRecord]:
        """Every current record, ordered by (subscriber, scope), read in batches."""
        ...

    async def import_events(
        self, events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent]
    ) -> int:
        """Append many events in order (batched); returns how many were not duplicates."""
        ...

    async def put_message_ids(self, entries: Iterable[MessageIds], ttl_s: float) -> None:
        """Keep these id mappings for ``ttl_s`` seconds (replacing any for the same upstream id)."""
        ...

    async def get_message_ids(self, upstream_id: str) -> MessageIds | None:
        """The mapping kept for ``upstream_id``, or None (never kept, or expired)."""
        ...

    async def record_count(self) -> int:
        """The number of current (subscriber, scope) records, read in O(1)."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the backend answers with real data."""
        ...

    async def probe(self) -> None:
        """Prove a read and write round trip without changing consent data, or raise
        StoreUnavailableError."""
        ...

    def clear_cache(self) -> None:
        """Empty the local caches: the next answers come from the backend."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the object is unusable afterwards."""
        ...


# --- codec shared by the persistent backends -------------------------------------------------

_EVENT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ConsentEvent))
_ENUM_FIELDS: Final[dict[str, type[Any]]] = {
    "state": ConsentState,
    "actor": Actor,
    "match": MatchType,
}


def event_to_json(event: ConsentEvent) -> str:
    """Serialise an event as a JSON object named by field (new model fields travel along)."""
    body: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        value = getattr(event, name)
        if value is None:
            continue
        body[name] = value.value if name in _ENUM_FIELDS else value
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def event_from_json(text: str | bytes) -> ConsentEvent:
    """Inverse of ``event_to_json``; unknown keys (written by a newer version) are ignored."""
    try:
        raw = json.loads(text)
        kwargs: dict[str, Any] = {}
        for name in _EVENT_FIELDS:
            if name in raw:
                enum = _ENUM_FIELDS.get(name)
                kwargs[name] = enum(raw[name]) if enum is not None else raw[name]
        return ConsentEvent(**kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreUnavailableError(f"undecodable stored event: {exc}") from exc


def record_of(event: ConsentEvent) -> ConsentRecord:
    """The projection row an event leaves behind (the same rule as ``fold``)."""
    return ConsentRecord(
        subscriber=event.subscriber,
        scope=event.scope,
        state=event.state,
        updated_at=event.at,
        last_event_id=event.event_id,
    )


async def iterate(
    events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent],
) -> AsyncIterator[ConsentEvent]:
    """Walk a plain or an async iterable of events alike."""
    if isinstance(events, AsyncIterable):
        async for event in events:
            yield event
    else:
        for event in events:
            yield event


async def batches(
    events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent], size: int
) -> AsyncIterator[list[ConsentEvent]]:
    """Group events into lists of at most ``size``, keeping their order."""
    batch: list[ConsentEvent] = []
    async for event in iterate(events):
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
