"""Consent domain values: states, scopes, events. Pure data, no I/O.

The current state of a (scope, subscriber) pair is derived from its events (see ``fold``);
stores keep that projection for fast lookup and must keep it equal to ``fold(history)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class ConsentState(StrEnum):
    UNKNOWN = "unknown"
    PENDING = "pending"  # opt-in requested, answer awaited
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    BLOCKED = "blocked"


class Actor(StrEnum):
    """Who caused a change: recorded for the compliance officer."""

    KEYWORD = "keyword"  # a subscriber's MO matched a keyword or phrase
    ADMIN = "admin"  # staff through the CLI
    API = "api"  # the admin HTTP API
    LINK = "link"  # the signed web opt-out link
    IMPORT = "import"  # CSV import
    POLICY = "policy"  # the gateway itself (e.g. opt-in requested under require_opt_in)


class MatchType(StrEnum):
    """How an MO's words were recognised."""

    NONE = "none"
    KEYWORD = "keyword"  # the whole message is a keyword of a family
    PHRASE = "phrase"  # the optional plain-language tier ("please stop texting me")
    ANY_MESSAGE = "any_message"  # re-opt-in on any message, where the campaign allows it
    # The answer to a revoke-all confirmation that asked which messages to stop (ALL, a list
    # or a campaign): recorded against the business's opt-out it narrows or confirms.
    CLARIFY = "clarify"


class ScopeKind(StrEnum):
    """How far a STOP reaches (PRODUCT.md section 3)."""

    NUMBER = "number"  # only the sender number the STOP was sent to
    CAMPAIGN = "campaign"  # every number of the campaign
    ACCOUNT = "account"  # everything of the client account (system_id)
    LIST = "list"  # one per-campaign list, chosen by service_type
    # Every campaign of one business (FCC revoke-all, 47 CFR 64.1200(a)(12)): what an opt-out
    # reaches while the business's revoke_all is in effect.
    BUSINESS = "business"
    GLOBAL = "global"  # blocks: staff-set, reach everything


@dataclass(frozen=True, slots=True)
class Scope:
    """A consent scope, rendered as a stable string key for stores: ``kind:name``.

    Names: NUMBER -> sender E.164 digits; CAMPAIGN -> campaign name; ACCOUNT -> system_id;
    LIST -> ``campaign/list``; BUSINESS -> business name; GLOBAL -> ``*``.
    """

    kind: ScopeKind
    name: str

    @property
    def key(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @classmethod
    def parse(cls, key: str) -> Scope:
        kind, sep, name = key.partition(":")
        if not sep or not name:
            raise ValueError(f"not a scope key: {key!r}")
        return cls(ScopeKind(kind), name)


GLOBAL_SCOPE = Scope(ScopeKind.GLOBAL, "*")


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentEvent:
    """One change of consent, as the audit trail records it. Never updated, never deleted."""

    event_id: str  # unique (uuid4 hex), assigned by whoever creates the event
    at: float  # seconds since the epoch (UTC)
    subscriber: str  # E.164 digits, no '+'
    scope: str  # Scope.key
    state: ConsentState  # the state this event moves the pair to
    actor: Actor
    match: MatchType = MatchType.NONE
    words: str | None = None  # the words received (MO text), or the staff's reason
    sender: str | None = None  # the number the subscriber wrote to / was written from
    campaign: str | None = None
    system_id: str | None = None  # the client account
    smsc_message_id: str | None = None
    instance: str | None = None  # the gateway instance that recorded it
    # Who, beyond the actor kind: the staff member (OS user or --actor) for the CLI, the token's
    # name for the API, ``FILE:LINE`` for an import. None for a subscriber's own keyword.
    by: str | None = None
    # Idempotency: a second append with the same dedup_key is a no-op (retransmitted MO).
    dedup_key: str | None = None
    # A revoke-all opt-out whose confirmation asked which messages to stop: answers narrow it
    # until then (seconds since the epoch); None when nothing was asked.
    clarify_until: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsentRecord:
    """The current state of one (scope, subscriber) pair: the projection of its events."""

    subscriber: str
    scope: str
    state: ConsentState
    updated_at: float
    last_event_id: str


def fold(events: Iterable[ConsentEvent]) -> dict[tuple[str, str], ConsentRecord]:
    """Project events (in append order) to current records keyed by (scope, subscriber)."""
    current: dict[tuple[str, str], ConsentRecord] = {}
    for event in events:
        current[(event.scope, event.subscriber)] = ConsentRecord(
            subscriber=event.subscriber,
            scope=event.scope,
            state=event.state,
            updated_at=event.at,
            last_event_id=event.event_id,
        )
    return current


class AddressKind(StrEnum):
    """What a normalised SMPP address is (consent/numbers.py decides)."""

    E164 = "e164"  # a phone number: ``value`` is its E.164 digits, no '+'
    SHORT_CODE = "short_code"  # TON network-specific / abbreviated, or too short for a number
    ALPHANUMERIC = "alphanumeric"  # letters: a name, not a number
    # Digits that no country's numbering allows (wrong length, no such country code):
    # ``value`` is the digits without leading zeros. A campaign's sender may be one (test
    # ranges such as 1-555-0100); as an MT destination it is refused, since nobody can say
    # which handset an SMSC's cleaning would make of it.
    IMPOSSIBLE = "impossible"
    # Not readable as an address at all (characters such as '#', '*', ';' among the digits):
    # ``value`` is the address as given. An MT to or from it is refused (fail closed); an MO
    # from it changes nothing, since no MT can reach it either.
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsAddress:
    """A normalised source_addr / destination_addr: the consent key and what kind of thing it is."""

    kind: AddressKind
    value: str  # the consent key: E.164 digits, short-code digits, or the alphanumeric text
    # False when the peer labelled the number alphanumeric (TON 5): it is that subscriber for
    # consent, but may be an application's sender ID, so it gets no auto-reply.
    replyable: bool = True

    @property
    def is_number(self) -> bool:
        """A handset number (E.164), as opposed to a short code or a name."""
        return self.kind is AddressKind.E164

    @property
    def accepts_auto_reply(self) -> bool:
        """Only real handset numbers get confirmations, so two auto-responders cannot loop."""
        return self.kind is AddressKind.E164 and self.replyable

    @property
    def is_subscriber(self) -> bool:
        """Something consent is kept for: a number or a short code (never a name)."""
        return self.kind in _SUBSCRIBER_KINDS


_SUBSCRIBER_KINDS = frozenset({AddressKind.E164, AddressKind.SHORT_CODE})
