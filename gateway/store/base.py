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
- ``current_many(subscribers)`` / ``history_many(subscribers)`` answer ``current`` /
  ``history`` for many subscribers at once, read in batches (a query or a pipeline per few
  hundred subscribers, never a round trip each): every subscriber asked for is a key of the
  answer, with ``{}`` / ``[]`` where it has nothing. Neither goes through the local cache.
- ``import_changes(changes)`` is the all-or-nothing import (``consent import``): each
  ``ImportChange`` is an event (no ``dedup_key``) and the ``last_event_id`` its (subscriber,
  scope) had when the change was planned (None: no record). Every change whose pair still has
  that record is appended, in order, and the others are not (their event ids come back as
  ``conflicts``: the record changed meanwhile, and the newer change stays), all in one step:
  when the call raises, none of them was appended (Redis: see its docstring for the interval
  after its commit point, which ``resume_imports`` completes). At most one change per pair.
  ``resume_imports()`` completes imports that passed their commit point but were cut off
  before they were applied in full, and returns how many events that appended (always 0 for
  the backends that commit an import in one transaction).
- ``put_message_ids(entries, ttl_s)`` / ``get_message_ids(upstream_id)`` keep, for a while,
  which ids the gateway gave a client for a part it sent upstream under another id (the parts
  of a long MT it answered before the SMSC did, and parts it added itself), so delivery
  receipts carrying the SMSC's id can be shown to the client under its own. A later put for
  the same upstream id replaces the earlier one; ``get`` returns None once ``ttl_s`` has
  passed (entries are also bounded in number, the oldest dropped first). Shared backends
  share them between instances, so a receipt may come back through any of them.
- ``record_reply(reply)`` keeps one ``ReplyRecord``: an auto-reply the gateway sent (or could
  not send) to a subscriber, linked to the consent event it confirms (``event_id``; None for a
  HELP answer, which changes no consent), with the text, the addresses it went to and from,
  when it was submitted and what the SMSC answered (status, message ids, when), or why it got
  no answer. Durable like ``append``, but not consent data: it changes no current record,
  counts in no ``record_count``, publishes no invalidation and drops no cache. It returns
  False, changing nothing, when a reply of the same subscriber with the same ``reply_id`` is
  kept already.
  ``replies(subscriber)`` returns the subscriber's records in the order they were recorded;
  a backend keeps at least the newest ``MAX_REPLIES_PER_SUBSCRIBER`` of each subscriber
  (its ``max_replies`` option) and drops older ones beyond that, oldest first.
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
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final, Protocol, runtime_checkable

from gateway.consent.caps import CapReservation, CapVerdict
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


# Auto-reply records kept per subscriber by default (the oldest beyond this are dropped).
MAX_REPLIES_PER_SUBSCRIBER: Final = 1000


class ReplyKind(StrEnum):
    """What an auto-reply was (``ReplyRecord.kind``; stored as text, so new kinds need no
    migration)."""

    OPT_OUT_CONFIRMATION = "opt_out_confirmation"
    LIST_OPT_OUT_CONFIRMATION = "list_opt_out_confirmation"
    ALREADY_OPTED_OUT = "already_opted_out"  # a repeated STOP's answer
    OPT_IN_CONFIRMATION = "opt_in_confirmation"
    OPT_IN_REQUEST = "opt_in_request"
    HELP = "help"


class ReplyOutcome(StrEnum):
    """What became of an auto-reply."""

    ACCEPTED = "accepted"  # the SMSC answered every part with ESME_ROK
    REFUSED = "refused"  # the SMSC answered (a part) with an error status
    NO_ANSWER = "no_answer"  # submitted, but no answer came (timeout, session lost)
    NOT_SENT = "not_sent"  # never submitted: no session could carry it, or the rate limit


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ReplyRecord:
    """One auto-reply (a confirmation, a HELP answer, an opt-in request) and what the SMSC
    said to it: the evidence that a subscriber's STOP was confirmed, and when."""

    reply_id: str  # unique (uuid4 hex)
    event_id: str | None  # the consent event it answers (the MO's); None for HELP
    subscriber: str  # E.164 digits: whom it was sent to
    kind: str  # a ReplyKind value
    text: str  # the text sent, as the gateway wrote it (all parts)
    source: str  # source_addr as submitted: the number the subscriber wrote to
    destination: str  # destination_addr as submitted: the subscriber, as the SMSC wrote it
    at: float  # when it was submitted (for NOT_SENT: when the gateway gave up), epoch seconds
    outcome: ReplyOutcome
    command_status: int | None = None  # the SMSC's status (the first error of any part), or None
    status: str | None = None  # that status by name (ESME_ROK, ESME_RSUBMITFAIL; hex if unnamed)
    message_ids: tuple[str, ...] = ()  # the SMSC's message id of each part it accepted
    answered_at: float | None = None  # when the (last) answer came; None without an answer
    parts: int = 1  # submit_sm PDUs it took
    campaign: str | None = None
    system_id: str | None = None  # the client account it was sent for
    carrier: str | None = None  # the session it went over: a client's conn id, "service-bind"
    words: str | None = None  # the MO's words, for a reply without an event (HELP)
    error: str | None = None  # why NOT_SENT / NO_ANSWER, in words
    instance: str | None = None  # the gateway instance that sent it


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ImportChange:
    """One event of an all-or-nothing import and the record it was planned against.

    ``expected`` is the ``last_event_id`` of the current record of the event's (subscriber,
    scope) when the change was decided, None when there was no record: the event is appended
    only if that is still so (compare and set), so a change made meanwhile (a STOP that
    arrived during the import) is never overwritten by an older import, and an import run
    twice, or retried after a failure, appends nothing the second time.
    """

    event: ConsentEvent
    expected: str | None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ImportOutcome:
    """What ``import_changes`` did: events appended, and those refused because their record
    changed after the change was planned."""

    appended: int
    conflicts: frozenset[str] = frozenset()  # event ids


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ResumedImports:
    """What ``resume_imports`` completed: ``appended`` events applied now, and ``events``, every
    event of the completed imports that is in the store, those applied before the cut-off
    included. None of them was reported as a change yet (the import that began them failed):
    the audit trail records them from here."""

    appended: int = 0
    events: tuple[ConsentEvent, ...] = ()


def check_import_changes(changes: Sequence[ImportChange]) -> None:
    """The preconditions of ``import_changes``, checked before anything is written."""
    pairs: set[tuple[str, str]] = set()
    for change in changes:
        event = change.event
        if event.dedup_key is not None:
            raise StoreError("import_changes: imported events carry no dedup_key")
        pair = (event.subscriber, event.scope)
        if pair in pairs:
            raise StoreError(f"import_changes: two changes of {event.scope} for one subscriber")
        pairs.add(pair)


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

    async def reserve_send(
        self, subscriber: str, key: str, token: str, *, limit: int, window_s: float, now: float
    ) -> CapVerdict:
        """A frequency cap's atomic check-and-count: one message ``token`` to ``subscriber``
        under counter ``key`` (``gateway.consent.caps.reserve``), race-free across instances.
        The same as a ``reserve_sends`` of one."""
        ...

    async def reserve_sends(self, batch: Sequence[CapReservation]) -> list[CapVerdict]:
        """``reserve_send`` for each of ``batch`` in order, in one backend call (one writer
        transaction, one Redis round trip per node), one verdict each: each check-and-count is
        atomic per subscriber and counter across instances, and a later reservation of the
        batch sees the earlier ones (``gateway.consent.caps.reserve_all``). Every verdict is
        committed when it returns. On a failure it raises and no verdict is given; some of the
        batch may have been counted then (on a Redis Cluster, by the nodes that answered):
        erring on the side of sending less."""
        ...

    async def release_send(self, subscriber: str, key: str, token: str) -> None:
        """Take back a reservation (the SMSC refused the message: it was not sent)."""
        ...

    async def sends_counted(self, subscriber: str, key: str, window_s: float, now: float) -> int:
        """The messages counted under ``key`` in the window ending ``now`` (for staff)."""
        ...

    def export(self) -> AsyncIterator[ConsentRecord]:
        """Every current record, ordered by (subscriber, scope), read in batches."""
        ...

    async def import_events(
        self, events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent]
    ) -> int:
        """Append many events in order (batched); returns how many were not duplicates."""
        ...

    async def current_many(
        self, subscribers: Iterable[str]
    ) -> dict[str, Mapping[str, ConsentRecord]]:
        """``current`` of many subscribers, read in batches (not through the local cache)."""
        ...

    async def history_many(self, subscribers: Iterable[str]) -> dict[str, list[ConsentEvent]]:
        """``history`` of many subscribers, read in batches."""
        ...

    async def import_changes(self, changes: Sequence[ImportChange]) -> ImportOutcome:
        """Append every change whose record is still the expected one, all or nothing."""
        ...

    async def resume_imports(self) -> ResumedImports:
        """Complete imports cut off after their commit point."""
        ...

    async def put_message_ids(self, entries: Iterable[MessageIds], ttl_s: float) -> None:
        """Keep these id mappings for ``ttl_s`` seconds (replacing any for the same upstream id)."""
        ...

    async def get_message_ids(self, upstream_id: str) -> MessageIds | None:
        """The mapping kept for ``upstream_id``, or None (never kept, or expired)."""
        ...

    async def record_reply(self, reply: ReplyRecord) -> bool:
        """Keep an auto-reply record durably; False when its reply_id was recorded before."""
        ...

    async def replies(self, subscriber: str) -> list[ReplyRecord]:
        """The subscriber's auto-reply records in the order recorded (the newest kept)."""
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


_REPLY_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ReplyRecord))


def reply_to_json(reply: ReplyRecord) -> str:
    """Serialise an auto-reply record as a JSON object named by field (None fields left out)."""
    body: dict[str, Any] = {}
    for name in _REPLY_FIELDS:
        value = getattr(reply, name)
        if value is None:
            continue
        if name == "outcome":
            value = value.value
        elif name == "message_ids":
            value = list(value)
        body[name] = value
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def reply_from_json(text: str | bytes) -> ReplyRecord:
    """Inverse of ``reply_to_json``; unknown keys (written by a newer version) are ignored."""
    try:
        raw = json.loads(text)
        kwargs: dict[str, Any] = {name: raw[name] for name in _REPLY_FIELDS if name in raw}
        kwargs.setdefault("event_id", None)  # required, but left out of the JSON when None
        kwargs["outcome"] = ReplyOutcome(kwargs["outcome"])
        ids = kwargs.get("message_ids", [])
        kwargs["message_ids"] = tuple(ids) if isinstance(ids, list) else None
        reply = ReplyRecord(**kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise StoreUnavailableError(f"undecodable stored auto-reply record: {exc}") from exc
    if reply.message_ids is None or not all(isinstance(i, str) for i in reply.message_ids):
        raise StoreUnavailableError("undecodable stored auto-reply record: bad message_ids")
    return reply


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
