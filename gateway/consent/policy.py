"""Consent decisions as values: what an MT gets, what an MO changes and triggers.

Pure: the caller passes the subscriber's current records, the time and an event-id factory, and
gets back decisions (never exceptions) to act on: store the events durably first, then send the
auto-reply, then answer the peer.

How the records of several scopes combine (``effective_state``). An MT is checked against every
scope it falls under (``scopes_for``): global, account, campaign, number and list. A BLOCKED record
anywhere wins. Otherwise the most recent non-unknown record wins, and on a tie the more protective
one (opted-out over pending over opted-in). "Most recent" is what makes a subscriber's own words
behave as they expect: STOPALL (account) after START to one number stops that number too, and START
to one number after STOPALL lets that number's messages through while the rest of the account stays
stopped. Timestamps come from the gateway instances' clocks, so instances must keep them in sync
(NTP); a tie is resolved towards not sending.

MO rules (``decide_mo``), in order:

- Delivery receipts (esm_class & 0x3C in 0x04, 0x08, 0x10, 0x18, 0x20) are never keywords.
- Alphanumeric and unreadable senders change nothing: no MT can reach them (an MT to such an
  address is refused, see ``address_refusal``). Short codes are recorded under their digits, but
  no auto-reply ever goes to them, nor to anything but an E.164 number the peer did not label
  alphanumeric, so two auto-responders cannot loop.
- A blocked subscriber's MO is acknowledged and not forwarded; an opt-out in it is still recorded
  (the audit trail keeps the subscriber's words); nothing else is acted on, and nothing is replied.
- STOP family -> opted_out in the campaign's scope (number / campaign / account); STOPALL -> the
  account. While the campaign's business has revoke-all in effect (at ``now``), a STOP -> the
  business (FCC revoke-all); its confirmation may ask which messages to stop, and an answer
  within the window (``clarifying``) narrows it to a list or the campaign, or keeps all. A list
  word -> that list only. Exactly one confirmation per opt-out: a STOP from a
  subscriber already opted out towards this sender is recorded again (audit trail) but gets no
  second confirmation (only the ``already_opted_out`` reply, which is off by default).
- START family -> opted_in in the campaign's scope (completes a pending opt-in); never lifts a
  block; nothing is recorded or replied when the subscriber is already opted in (a conversational
  "yes" must not trigger a confirmation).
- HELP family -> the help reply, no state change, also for opted-out subscribers (CTIA).
- A keyword's reply is written in the keyword's language (``KeywordMatch.language``: ARRET and
  AIDE get the French texts, STOP and HELP the English ones; ``Replies.choose``); the replies
  to anything but a keyword are English.
- Any other message: re-opts in an opted-out subscriber when the campaign's rule is
  ``any_message``; from an unknown subscriber, records pending and sends the opt-in request under
  ``inbound_unknown = request_opt_in``, or records consent under ``outbound_unknown = block``
  (the subscriber wrote first, so the conversation may go on).

A retransmitted deliver_sm yields the same events with the same ``dedup_key``; the caller sends the
reply only when the store says the events were new. The opt-in request of ``require_opt_in`` is
keyed the same way (one per subscriber and scope), so MTs in flight together ask once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache

from gateway.consent import hours as quiet
from gateway.consent import revoke
from gateway.consent.campaign import Campaign, FooterMode, InboundUnknown, OutboundUnknown, ReOptIn
from gateway.consent.keywords import ENGLISH, KeywordFamily, KeywordMatch, match, normalise_text
from gateway.consent.model import (
    GLOBAL_SCOPE,
    Actor,
    AddressKind,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    MatchType,
    Scope,
    ScopeKind,
    SmsAddress,
)
from gateway.consent.numbers import Place, place

# esm_class bits 2-5 (mask 0x3C): the message types that are receipts / acknowledgements, not MO.
ESM_CLASS_TYPE_MASK = 0x3C
RECEIPT_TYPES = frozenset({0x04, 0x08, 0x10, 0x18, 0x20})

GLOBAL_KEY = GLOBAL_SCOPE.key

EventIdFactory = Callable[[], str]


def is_delivery_receipt(esm_class: int) -> bool:
    """True when a deliver_sm / data_sm carries a receipt or an acknowledgement, not an MO."""
    return (esm_class & ESM_CLASS_TYPE_MASK) in RECEIPT_TYPES


# --- reasons and their command_status ----------------------------------------------------------


class RejectReason(StrEnum):
    OPTED_OUT = "opted_out"
    BLOCKED = "blocked"
    PENDING = "pending"  # opt-in requested, not answered yet
    NO_CONSENT = "no_consent"  # the campaign needs consent the subscriber never gave
    # The destination cannot be read as a subscriber (junk characters, a name, a distribution
    # list): nobody can say whose handset it reaches, so it may not be messaged (fail closed).
    UNREADABLE_ADDRESS = "unreadable_address"
    # The source cannot be read (so its campaign and scopes are unknown), or it is a campaign's
    # number and the client's account is not one the campaign allows to send from it.
    UNREADABLE_SENDER = "unreadable_sender"
    SENDER_NOT_ALLOWED = "sender_not_allowed"
    STORE_UNAVAILABLE = "store_unavailable"  # not a policy outcome: the caller's, for the table
    # Outside the campaign's sending window in the recipient's time zone (gateway.consent.hours):
    # refused for good, or deferred (a temporary status, so the client retries later).
    QUIET_HOURS = "quiet_hours"
    QUIET_HOURS_DEFERRED = "quiet_hours_deferred"
    # The campaign's frequency cap is reached for this subscriber (gateway.consent.caps).
    FREQUENCY_CAPPED = "frequency_capped"


# Reasons about consent itself: distinct, permanent statuses (RejectStatuses.problems).
CONSENT_REASONS = (
    RejectReason.OPTED_OUT,
    RejectReason.BLOCKED,
    RejectReason.PENDING,
    RejectReason.NO_CONSENT,
)


# The refusals of the sending window (a long message begun inside it is finished).
QUIET_REASONS = frozenset({RejectReason.QUIET_HOURS, RejectReason.QUIET_HOURS_DEFERRED})

# Refusals the client should retry: their status must be one clients re-queue, and they are
# never answered "accepted" (accept and report would lose the message).
TEMPORARY_REASONS = frozenset({RejectReason.STORE_UNAVAILABLE, RejectReason.QUIET_HOURS_DEFERRED})


# Kannel re-queues these for ever with its default settings (FIELD-NOTES); the same set as
# gateway.smpp.constants.RETRIED_BY_CLIENTS, repeated because consent does not import smpp.
CLIENT_RETRY_STATUSES = frozenset({0x08, 0x14, 0x58, 0x64})


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectStatuses:
    """command_status per reason; every field may be overridden from config.

    The defaults are standard SMPP 3.4 codes (vendor codes break strict client decoders, e.g.
    the smpp.pdu library under Jasmin), distinct per reason so a client can tell them apart, and
    permanent for every consent reason so nothing is retried against a subscriber's wish:

    - opted_out 0x45 ESME_RSUBMITFAIL: what SMS firewalls answer for do-not-disturb numbers, so
      clients already file it as "do not send", without implying a bad address;
    - blocked 0x0B ESME_RINVDSTADR: staff decided this address gets nothing; clients that drop
      invalid destinations from their lists do the right thing;
    - pending 0x65 ESME_RX_P_APPN and no_consent 0x66 ESME_RX_R_APPN: application-level permanent
      refusals; the client should not retry, the subscriber's opt-in is what changes the answer;
    - store_unavailable 0x14 ESME_RMSGQFUL: temporary, Kannel and most clients re-queue it, so a
      store outage delays messages instead of losing them (0x58 would also make them throttle);
    - unreadable_address 0x0B ESME_RINVDSTADR: an address that is no subscriber is an invalid
      destination, permanently; it may share blocked's value (both say "never to this address"),
      the log's ``reason`` tells them apart;
    - sender_not_allowed 0x0A ESME_RINVSRCADR: a source the client may not use (another account's
      campaign number) or cannot be read; also for an unreadable source;
    - quiet_hours 0x61 ESME_RINVSCHED ("invalid scheduled delivery time": not at this time),
      permanent: the client drops the message or reschedules it itself;
    - quiet_hours_deferred 0x14 ESME_RMSGQFUL, temporary: clients re-queue it and retry (Kannel
      every ``sms-resend-freq`` seconds). Not 0x58 ESME_RTHROTTLED: on that Kannel also stops
      sending anything on the bind for 15 seconds, transactional messages included;
    - frequency_capped 0x61 ESME_RINVSCHED, permanent like quiet_hours and for the same reason:
      the message may go later, when the window has rolled on, and only the application knows
      whether it still should; a temporary code would be resent by Kannel every minute against
      a cap that lasts up to a day. The log, metric and audit ``reason`` tell it from quiet hours.
    """

    opted_out: int = 0x45
    blocked: int = 0x0B
    pending: int = 0x65
    no_consent: int = 0x66
    store_unavailable: int = 0x14
    unreadable_address: int = 0x0B
    sender_not_allowed: int = 0x0A
    quiet_hours: int = 0x61
    quiet_hours_deferred: int = 0x14
    frequency_capped: int = 0x61

    def status(self, reason: RejectReason) -> int:
        if reason is RejectReason.UNREADABLE_SENDER:
            return self.sender_not_allowed
        return int(getattr(self, reason.value))

    def problems(self) -> list[str]:
        """What makes this table unsafe, one message per problem naming the key (empty: fine)."""
        found: list[str] = []
        permanent = (
            *CONSENT_REASONS,
            RejectReason.UNREADABLE_ADDRESS,
            RejectReason.SENDER_NOT_ALLOWED,
            RejectReason.QUIET_HOURS,
            RejectReason.FREQUENCY_CAPPED,
        )
        for reason in permanent:
            value = self.status(reason)
            if value == 0:
                found.append(f"{reason.value}: 0 is ESME_ROK, the message would look sent")
            elif value in CLIENT_RETRY_STATUSES:
                found.append(
                    f"{reason.value}: 0x{value:02X} is retried by clients (Kannel re-queues it);"
                    " a refusal for consent or an address must be permanent"
                )
        values = [self.status(r) for r in CONSENT_REASONS]
        if len(set(values)) != len(values):
            found.append("consent reasons must have distinct command_status values")
        if self.store_unavailable not in CLIENT_RETRY_STATUSES:
            found.append(
                f"store_unavailable: 0x{self.store_unavailable:02X} is permanent for clients;"
                " use 0x14 or 0x58 so the message is retried, not lost"
            )
        if self.quiet_hours_deferred not in CLIENT_RETRY_STATUSES:
            found.append(
                f"quiet_hours_deferred: 0x{self.quiet_hours_deferred:02X} is permanent for"
                " clients; use 0x14 (or 0x58) so the message is retried when the window opens"
            )
        return found


DEFAULT_REJECT_STATUSES = RejectStatuses()


# --- decision values ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AutoReply:
    """A message the gateway sends itself (to the subscriber, from the number written to)."""

    text: str
    source: SmsAddress  # the campaign's number
    destination: SmsAddress  # the subscriber (always an E.164 number)
    campaign: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Allow:
    add_footer: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Reject:
    reason: RejectReason
    scope: str | None = None  # the scope key whose record decided, for logs and the audit
    closed: quiet.Closed | None = None  # quiet hours: the rule, zone and local time


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOptIn:
    """Refuse this MT as pending, record the pending state and send the opt-in request."""

    events: tuple[ConsentEvent, ...]
    reply: AutoReply
    reason: RejectReason = RejectReason.PENDING


MtDecision = Allow | Reject | RequestOptIn

_ALLOW_FOOTER = Allow(add_footer=True)
_ALLOW_PLAIN = Allow(add_footer=False)


class MoAction(StrEnum):
    """What an MO amounted to (the ``decision`` field of the log event)."""

    RECEIPT = "receipt"
    IGNORED_SENDER = "ignored_sender"  # alphanumeric: not a subscriber
    BLOCKED_SENDER = "blocked_sender"
    OPTED_OUT = "opted_out"
    REPEAT_OPT_OUT = "repeat_opt_out"
    LIST_OPTED_OUT = "list_opted_out"
    REPEAT_LIST_OPT_OUT = "repeat_list_opt_out"
    OPTED_IN = "opted_in"
    ALREADY_OPTED_IN = "already_opted_in"
    HELP = "help"
    REOPTED_IN = "reopted_in"  # any_message re-opt-in
    OPT_IN_REQUESTED = "opt_in_requested"  # inbound_unknown = request_opt_in
    CONSENTED_BY_MESSAGE = "consented_by_message"  # outbound_unknown = block: wrote first
    # Answers to the revoke-all confirmation that asked which messages to stop.
    CLARIFIED_ALL = "clarified_all"  # ALL: the business-wide opt-out stands
    CLARIFIED_NARROWED = "clarified_narrowed"  # a list or a campaign: only that is stopped
    NONE = "none"  # an ordinary message


@dataclass(frozen=True, slots=True, kw_only=True)
class MoDecision:
    action: MoAction
    forward: bool  # pass the MO on to the client (False: acknowledge it ourselves)
    # The subscriber's effective state towards this sender (or this list, for a list word) once
    # ``events`` are stored.
    state_after: ConsentState
    events: tuple[ConsentEvent, ...] = ()
    reply: AutoReply | None = None
    match: KeywordMatch | None = None


# --- scopes ------------------------------------------------------------------------------------


@lru_cache(maxsize=16_384)
def _scopes(
    campaign: Campaign, sender: str, system_id: str, service_type: str, legacy: str = ""
) -> tuple[tuple[Scope, ...], tuple[str, ...]]:
    scopes = [
        GLOBAL_SCOPE,
        Scope(ScopeKind.ACCOUNT, system_id),
        campaign.campaign_scope,
        Scope(ScopeKind.NUMBER, sender),
    ]
    if campaign.business_scope is not None:
        # One key more whatever the date: business records exist only once revoke-all was in
        # effect for an opt-out, so the date is decided when the opt-out is recorded, not here.
        scopes.append(campaign.business_scope)
    if legacy and legacy != system_id:
        # Account records written before system_ids were folded (see account_key) still count.
        scopes.append(Scope(ScopeKind.ACCOUNT, legacy))
    list_name = campaign.list_by_service_type.get(service_type)
    if list_name is not None:
        scopes.append(campaign.list_scope(list_name))
    return tuple(scopes), tuple(s.key for s in scopes)


def scopes_for(
    campaign: Campaign, sender: str, system_id: str, service_type: str = "", legacy: str = ""
) -> tuple[Scope, ...]:
    """Every scope an MT from ``sender`` (normalised value) must be checked against.

    ``system_id`` is the account key (``account_key``); ``legacy`` the system_id as bound,
    whose account records (from before keys were folded) are checked too."""
    return _scopes(campaign, sender, system_id, service_type, legacy)[0]


def scope_keys(
    campaign: Campaign, sender: str, system_id: str, service_type: str = "", legacy: str = ""
) -> tuple[str, ...]:
    """``scopes_for`` as store keys (memoised: this runs for every MT)."""
    return _scopes(campaign, sender, system_id, service_type, legacy)[1]


def stop_scope(campaign: Campaign, sender: str, system_id: str) -> Scope:
    """Where a STOP (and START) written to ``sender`` is recorded, per the campaign's scope.

    A START after a revoke-all opt-out is recorded here too, so it re-subscribes this campaign
    only (it is newer than the business record, see ``effective_state``): consent given to one
    campaign is consent to that campaign, the rest of the business stays stopped."""
    if campaign.scope is ScopeKind.NUMBER:
        return Scope(ScopeKind.NUMBER, sender)
    if campaign.scope is ScopeKind.ACCOUNT:
        return Scope(ScopeKind.ACCOUNT, system_id)
    return campaign.campaign_scope


_RANK = {
    ConsentState.OPTED_IN: 1,
    ConsentState.PENDING: 2,
    ConsentState.OPTED_OUT: 3,
}


def effective_state(
    keys: tuple[str, ...], records: Mapping[str, ConsentRecord]
) -> tuple[ConsentState, str | None]:
    """The state that governs a message, and the scope key that decided it (see module doc)."""
    best: ConsentRecord | None = None
    for key in keys:
        record = records.get(key)
        if record is None:
            continue
        state = record.state
        if state is ConsentState.BLOCKED:
            return state, key
        if state is ConsentState.UNKNOWN:
            continue
        if (
            best is None
            or record.updated_at > best.updated_at
            or (record.updated_at == best.updated_at and _RANK[state] > _RANK[best.state])
        ):
            best = record
    if best is None:
        return ConsentState.UNKNOWN, None
    return best.state, best.scope


# --- MT ----------------------------------------------------------------------------------------


def decide_mt(
    *,
    campaign: Campaign,
    subscriber: SmsAddress,
    sender: SmsAddress,
    system_id: str,
    service_type: str,
    records: Mapping[str, ConsentRecord],
    now: float,
    new_event_id: EventIdFactory,
    footer_seen: bool = False,
    instance: str | None = None,
    bound_as: str = "",
    addresses_checked: bool = False,
    country: str = "US",
) -> MtDecision:
    """What an MT to ``subscriber`` from ``sender`` gets.

    ``system_id`` is the client's account key (``account_key``), ``bound_as`` its system_id as
    bound when that differs. ``records`` are the subscriber's current records by scope key (at
    least those of ``scope_keys(campaign, sender.value, system_id, service_type, bound_as)``).
    ``footer_seen`` says whether this subscriber has already had this campaign's footer (footer
    mode ``first``). ``new_event_id`` is called only when an event is made (require_opt_in).
    ``addresses_checked``: the caller has just had ``address_refusal`` say None for these
    addresses (the MT path does, before it reads any record); otherwise it is checked here.
    Consent decides first (a refusal for consent is permanent and says more); an MT consent
    lets through (or that would ask for the opt-in) is then held to the campaign's quiet hours
    at wall time ``now`` (``country``: the default country, where a short code is).
    """
    if not addresses_checked:
        refused = address_refusal(campaign, subscriber, sender, system_id)
        if refused is not None:
            return Reject(reason=refused)
    state, key = effective_state(
        _scopes(campaign, sender.value, system_id, service_type, bound_as)[1], records
    )
    if state is ConsentState.OPTED_OUT:
        return Reject(reason=RejectReason.OPTED_OUT, scope=key)
    if state is ConsentState.BLOCKED:
        return Reject(reason=RejectReason.BLOCKED, scope=key)
    policy = campaign.outbound_unknown
    if state is ConsentState.OPTED_IN or policy is OutboundUnknown.ALLOW:
        if campaign.hours is not None:
            held = quiet_refusal(campaign.hours, subscriber, now, country)
            if held is not None:
                return held
        return _allow(campaign, footer_seen)
    if state is ConsentState.PENDING:
        return Reject(reason=RejectReason.PENDING, scope=key)
    if policy is OutboundUnknown.BLOCK:
        return Reject(reason=RejectReason.NO_CONSENT)
    # require_opt_in on an unknown subscriber: ask once (the pending record stops a second ask).
    text = campaign.reply(campaign.replies.opt_in_request)
    if not text or not subscriber.accepts_auto_reply:
        return Reject(reason=RejectReason.NO_CONSENT)
    if campaign.hours is not None:
        # The opt-in request is a message of the campaign too: not at night either.
        held = quiet_refusal(campaign.hours, subscriber, now, country)
        if held is not None:
            return held
    target = stop_scope(campaign, sender.value, system_id)
    event = ConsentEvent(
        event_id=new_event_id(),
        at=now,
        subscriber=subscriber.value,
        scope=target.key,
        state=ConsentState.PENDING,
        actor=Actor.POLICY,
        sender=sender.value,
        campaign=campaign.name,
        system_id=system_id,
        instance=instance,
        # MTs in flight together (a client's window, every part of a long MT, another
        # instance) all see "unknown" and all decide to ask; the store keeps the first request
        # and the caller sends only that one. A pending record never goes back to unknown, so
        # the key never needs to expire.
        dedup_key=f"opt-in-request:{target.key}",
    )
    reply = AutoReply(text=text, source=sender, destination=subscriber, campaign=campaign.name)
    return RequestOptIn(events=(event,), reply=reply)


_UNSEEN = object()
QUIET_MEMO_SIZE = 65_536


def quiet_refusal(
    hours: quiet.QuietHours, subscriber: SmsAddress, now: float, country: str
) -> Reject | None:
    """The quiet-hours refusal of an MT to ``subscriber`` at wall time ``now``, or None.

    Memoised per subscriber and minute (in ``hours.memo``, bounded): windows are in whole
    minutes and zone offsets too, so the verdict cannot change within one minute of UTC. This
    is the seam for the other sending rules that depend on the subscriber and the time (a
    frequency cap would be checked here, on counts the caller passes in)."""
    key = (subscriber.value, int(now // 60))
    memo = hours.memo
    found = memo.get(key, _UNSEEN)
    if found is _UNSEEN:
        if len(memo) >= QUIET_MEMO_SIZE:
            memo.clear()
        found = memo[key] = _quiet_verdict(hours, subscriber, country, key[1])
    return found  # type: ignore[return-value]


def _quiet_verdict(
    hours: quiet.QuietHours, subscriber: SmsAddress, country: str, minute: int
) -> Reject | None:
    where = place(
        subscriber.value,
        short_code=subscriber.kind is AddressKind.SHORT_CODE,
        default_country=country,
        subdivision=hours.needs_subdivision,
    )
    # The verdict depends on the place and the minute only: numbers of one area code share it.
    key = (where, minute)
    by_place = hours.by_place
    verdict = by_place.get(key, _UNSEEN)
    if verdict is _UNSEEN:
        if len(by_place) >= QUIET_MEMO_SIZE:
            by_place.clear()
        verdict = by_place[key] = _closed_verdict(hours, where, minute)
    return verdict  # type: ignore[return-value]


def _closed_verdict(hours: quiet.QuietHours, where: Place, minute: int) -> Reject | None:
    found = quiet.closed(hours, where, minute * 60.0)
    if found is None:
        return None
    if hours.action is quiet.QuietAction.DEFER:
        return Reject(reason=RejectReason.QUIET_HOURS_DEFERRED, closed=found)
    return Reject(reason=RejectReason.QUIET_HOURS, closed=found)


def address_refusal(
    campaign: Campaign, subscriber: SmsAddress | None, sender: SmsAddress | None, system_id: str
) -> RejectReason | None:
    """Why an MT may not go whatever the consent records say, or None.

    The destination must be a subscriber (a number or a short code); the source must be
    readable (an empty one is the SMSC's default sender for the account: ``sender`` None) and,
    when it is a number of a campaign that names its accounts, be sent by one of them.
    """
    if subscriber is None or not subscriber.is_subscriber:
        return RejectReason.UNREADABLE_ADDRESS
    if sender is not None and sender.kind is AddressKind.UNREADABLE:
        return RejectReason.UNREADABLE_SENDER
    if campaign.accounts and system_id not in campaign.accounts:
        return RejectReason.SENDER_NOT_ALLOWED
    return None


def _allow(campaign: Campaign, footer_seen: bool) -> Allow:
    mode = campaign.footer
    if mode is FooterMode.ALWAYS or (mode is FooterMode.FIRST and not footer_seen):
        return _ALLOW_FOOTER
    return _ALLOW_PLAIN


# --- MO ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _MoContext:
    campaign: Campaign
    subscriber: SmsAddress
    recipient: SmsAddress
    system_id: str
    text: str
    now: float
    new_event_id: EventIdFactory
    instance: str | None
    smsc_message_id: str | None
    dedup_key: str | None

    def event(
        self,
        scope: Scope,
        state: ConsentState,
        match_type: MatchType,
        actor: Actor,
        *,
        second: bool = False,
        clarify_until: float | None = None,
    ) -> ConsentEvent:
        dedup_key = self.dedup_key
        if second and dedup_key is not None:
            dedup_key = f"{dedup_key}/2"  # the second event of one decision
        return ConsentEvent(
            event_id=self.new_event_id(),
            at=self.now,
            subscriber=self.subscriber.value,
            scope=scope.key,
            state=state,
            actor=actor,
            match=match_type,
            words=self.text,
            sender=self.recipient.value,
            campaign=self.campaign.name,
            system_id=self.system_id,
            smsc_message_id=self.smsc_message_id,
            instance=self.instance,
            dedup_key=dedup_key,
            clarify_until=clarify_until,
        )

    def reply(self, name: str, language: str = ENGLISH, list_name: str = "") -> AutoReply | None:
        """The campaign's reply ``name`` to a keyword of ``language`` (CWTA: ARRET is answered
        in French, STOP in English), or None when it is off or the sender takes no reply."""
        return self.reply_text(self.campaign.reply_in(name, language, list_name))

    def reply_text(self, text: str) -> AutoReply | None:
        if not text or not self.subscriber.accepts_auto_reply:
            return None
        return AutoReply(
            text=text,
            source=self.recipient,
            destination=self.subscriber,
            campaign=self.campaign.name,
        )


def decide_mo(
    *,
    text: str,
    subscriber: SmsAddress,
    recipient: SmsAddress,
    campaign: Campaign,
    system_id: str,
    records: Mapping[str, ConsentRecord],
    is_receipt: bool,
    now: float,
    new_event_id: EventIdFactory,
    instance: str | None = None,
    smsc_message_id: str | None = None,
    dedup_key: str | None = None,
    bound_as: str = "",
    clarifying: ConsentEvent | None = None,
) -> MoDecision:
    """What an MO (decoded, reassembled ``text``) from ``subscriber`` to ``recipient`` does.

    ``clarifying``: the business opt-out whose confirmation asked which messages to stop and
    whose window is still open (``gateway.consent.revoke.pending_clarification``), if any.

    ``system_id`` is the receiving client's account key, ``bound_as`` its system_id as bound.
    ``records`` are the subscriber's current records by scope key (at least those of
    ``scope_keys(campaign, recipient.value, system_id, "", bound_as)`` plus the campaign's
    list scopes). Each decision makes at most one event, except an answer that narrows a
    revoke-all opt-out (two).
    """
    keys = _scopes(campaign, recipient.value, system_id, "", bound_as)[1]
    state, _ = effective_state(keys, records)
    if is_receipt:
        return MoDecision(action=MoAction.RECEIPT, forward=True, state_after=state)
    found = match(text, campaign.rules)
    if not subscriber.is_subscriber:
        # A name or an unreadable address: no MT can reach it (they are refused), so there is
        # no consent to keep for it.
        return MoDecision(
            action=MoAction.IGNORED_SENDER, forward=True, state_after=state, match=found
        )
    ctx = _MoContext(
        campaign=campaign,
        subscriber=subscriber,
        recipient=recipient,
        system_id=system_id,
        text=text,
        now=now,
        new_event_id=new_event_id,
        instance=instance,
        smsc_message_id=smsc_message_id,
        dedup_key=dedup_key,
    )
    if state is ConsentState.BLOCKED:
        events: tuple[ConsentEvent, ...] = ()
        if found is not None and found.family in (
            KeywordFamily.OPT_OUT,
            KeywordFamily.LIST_OPT_OUT,
        ):
            events = (_opt_out_event(ctx, found),)
        return MoDecision(
            action=MoAction.BLOCKED_SENDER,
            forward=False,
            state_after=ConsentState.BLOCKED,
            events=events,
            match=found,
        )
    if clarifying is not None:
        answered = _clarify_answer(ctx, found, clarifying)
        if answered is not None:
            return answered
    if found is None:
        return _non_keyword(ctx, state)
    forward = campaign.forward_keywords
    if found.family is KeywordFamily.OPT_OUT:
        return _opt_out(ctx, found, state, records, forward)
    if found.family is KeywordFamily.LIST_OPT_OUT:
        return _list_opt_out(ctx, found, keys, records, forward)
    if found.family is KeywordFamily.OPT_IN:
        if state is ConsentState.OPTED_IN:
            return MoDecision(
                action=MoAction.ALREADY_OPTED_IN, forward=forward, state_after=state, match=found
            )
        target = stop_scope(campaign, recipient.value, system_id)
        return MoDecision(
            action=MoAction.OPTED_IN,
            forward=forward,
            state_after=ConsentState.OPTED_IN,
            events=(ctx.event(target, ConsentState.OPTED_IN, found.match, Actor.KEYWORD),),
            reply=ctx.reply("opt_in", found.language),
            match=found,
        )
    return MoDecision(
        action=MoAction.HELP,
        forward=forward,
        state_after=state,
        reply=ctx.reply("help", found.language),
        match=found,
    )


def revoke_all_scope(campaign: Campaign, now: float) -> Scope | None:
    """The business scope a STOP to ``campaign`` is recorded in at wall time ``now``, or None
    when the campaign has no business or its revoke-all is not (yet) in effect."""
    rules = campaign.business_rules
    if rules is None or not rules.revoke_all(now):
        return None
    return rules.scope


def _opt_out_scope(ctx: _MoContext, found: KeywordMatch) -> Scope:
    if found.list_name is not None:
        # The subscriber's words name the list: that is the scope they chose, as an answer
        # to the clarifying confirmation would be.
        return ctx.campaign.list_scope(found.list_name)
    if found.reaches_account:
        return Scope(ScopeKind.ACCOUNT, ctx.system_id)
    business = revoke_all_scope(ctx.campaign, ctx.now)
    if business is not None:
        return business
    return stop_scope(ctx.campaign, ctx.recipient.value, ctx.system_id)


def _opt_out_event(ctx: _MoContext, found: KeywordMatch) -> ConsentEvent:
    return ctx.event(_opt_out_scope(ctx, found), ConsentState.OPTED_OUT, found.match, Actor.KEYWORD)


def _opt_out(
    ctx: _MoContext,
    found: KeywordMatch,
    state: ConsentState,
    records: Mapping[str, ConsentRecord],
    forward: bool,
) -> MoDecision:
    event = _opt_out_event(ctx, found)
    # A repeat changes nothing the subscriber could notice: already opted out towards this
    # sender and, for STOPALL (and a revoke-all STOP), already opted out that widely.
    repeat = state is ConsentState.OPTED_OUT
    if repeat and (found.reaches_account or event.scope.startswith("business:")):
        wide = records.get(event.scope)
        repeat = wide is not None and wide.state is ConsentState.OPTED_OUT
    reply = ctx.reply("already_opted_out" if repeat else "opt_out", found.language)
    if not repeat and event.scope.startswith("business:"):
        asked = _ask_which(ctx, event, found)
        if asked is not None:
            event, reply = asked
    return MoDecision(
        action=MoAction.REPEAT_OPT_OUT if repeat else MoAction.OPTED_OUT,
        forward=forward,
        state_after=ConsentState.OPTED_OUT,
        events=(event,),
        reply=reply,
        match=found,
    )


def _list_opt_out(
    ctx: _MoContext,
    found: KeywordMatch,
    keys: tuple[str, ...],
    records: Mapping[str, ConsentRecord],
    forward: bool,
) -> MoDecision:
    event = _opt_out_event(ctx, found)
    list_state, _ = effective_state((*keys, event.scope), records)
    repeat = list_state is ConsentState.OPTED_OUT
    return MoDecision(
        action=MoAction.REPEAT_LIST_OPT_OUT if repeat else MoAction.LIST_OPTED_OUT,
        forward=forward,
        state_after=ConsentState.OPTED_OUT,
        events=(event,),
        reply=ctx.reply(
            "already_opted_out" if repeat else "list_opt_out", found.language, found.list_name or ""
        ),
        match=found,
    )


def _non_keyword(ctx: _MoContext, state: ConsentState) -> MoDecision:
    campaign = ctx.campaign
    target = stop_scope(campaign, ctx.recipient.value, ctx.system_id)
    if state is ConsentState.OPTED_OUT and campaign.reopt_in is ReOptIn.ANY_MESSAGE:
        return MoDecision(
            action=MoAction.REOPTED_IN,
            forward=True,
            state_after=ConsentState.OPTED_IN,
            events=(
                ctx.event(target, ConsentState.OPTED_IN, MatchType.ANY_MESSAGE, Actor.KEYWORD),
            ),
            reply=ctx.reply("opt_in"),
        )
    if state is ConsentState.UNKNOWN:
        if campaign.inbound_unknown is InboundUnknown.REQUEST_OPT_IN:
            reply = ctx.reply("opt_in_request")
            if reply is not None:
                return MoDecision(
                    action=MoAction.OPT_IN_REQUESTED,
                    forward=True,
                    state_after=ConsentState.PENDING,
                    events=(ctx.event(target, ConsentState.PENDING, MatchType.NONE, Actor.POLICY),),
                    reply=reply,
                )
        elif campaign.outbound_unknown is OutboundUnknown.BLOCK:
            return MoDecision(
                action=MoAction.CONSENTED_BY_MESSAGE,
                forward=True,
                state_after=ConsentState.OPTED_IN,
                events=(
                    ctx.event(target, ConsentState.OPTED_IN, MatchType.ANY_MESSAGE, Actor.KEYWORD),
                ),
            )
    return MoDecision(action=MoAction.NONE, forward=True, state_after=state)


# --- staff -------------------------------------------------------------------------------------


def block(
    *,
    subscriber: str,
    now: float,
    event_id: str,
    actor: Actor,
    reason: str | None = None,
    instance: str | None = None,
) -> ConsentEvent:
    """Staff block: GLOBAL becomes BLOCKED, which also means opted out of everything."""
    return ConsentEvent(
        event_id=event_id,
        at=now,
        subscriber=subscriber,
        scope=GLOBAL_KEY,
        state=ConsentState.BLOCKED,
        actor=actor,
        words=reason,
        instance=instance,
    )


def unblock(
    *,
    subscriber: str,
    records: Mapping[str, ConsentRecord],
    now: float,
    event_id: str,
    actor: Actor,
    reason: str | None = None,
    instance: str | None = None,
) -> ConsentEvent | None:
    """Staff unblock: GLOBAL goes back to OPTED_OUT (unblocking never opts in); None if not blocked.

    The subscriber then receives messages again only after opting in (START, or an opt-in by
    staff at a scope), which is newer than this event.
    """
    current = records.get(GLOBAL_KEY)
    if current is None or current.state is not ConsentState.BLOCKED:
        return None
    return ConsentEvent(
        event_id=event_id,
        at=now,
        subscriber=subscriber,
        scope=GLOBAL_KEY,
        state=ConsentState.OPTED_OUT,
        actor=actor,
        words=reason,
        instance=instance,
    )


# --- FCC revoke-all: the confirmation that asks which messages to stop -------------------------


def _ask_which(
    ctx: _MoContext, event: ConsentEvent, found: KeywordMatch
) -> tuple[ConsentEvent, AutoReply] | None:
    """The business opt-out marked as asking, and the question as its one confirmation; None
    when the business has no clarify option or no question can be sent to this subscriber.

    The FCC lets the confirmation ask which messages the person wants to stop, and only that:
    no persuasion, and no further message once it is answered or its window ends."""
    rules = ctx.campaign.business_rules
    clarify = rules.clarify if rules is not None else None
    if clarify is None or not clarify.reply:
        return None
    template = revoke.question(clarify, found.language)
    text = ctx.campaign.reply(template).replace(
        "{choices}", ", ".join(revoke.choices(ctx.campaign))
    )
    reply = ctx.reply_text(text)
    if reply is None:
        return None  # nobody to ask: the opt-out simply stands for all
    return replace(event, clarify_until=ctx.now + clarify.window_s), reply


def _clarify_answer(
    ctx: _MoContext, found: KeywordMatch | None, clarifying: ConsentEvent
) -> MoDecision | None:
    """An answer to the open question (ALL, a list of the campaign, the campaign itself), or
    None when the MO is no answer (it is then decided as any other MO). No reply either way."""
    campaign = ctx.campaign
    rules = campaign.business_rules
    if rules is None or rules.clarify is None or campaign.business_scope is None:
        return None
    if clarifying.campaign != campaign.name:
        # The question named this campaign's choices; words to another campaign's number
        # answer nothing (a "b" there must not lift a STOP written to a).
        return None
    business = campaign.business_scope
    words = normalise_text(ctx.text)
    target: Scope | None = None
    if found is not None and found.family is KeywordFamily.LIST_OPT_OUT and found.list_name:
        target = campaign.list_scope(found.list_name)
    elif words in {normalise_text(w) for w in rules.clarify.all_words}:
        event = ctx.event(business, ConsentState.OPTED_OUT, MatchType.CLARIFY, Actor.KEYWORD)
        return MoDecision(
            action=MoAction.CLARIFIED_ALL,
            forward=campaign.forward_keywords,
            state_after=ConsentState.OPTED_OUT,
            events=(event,),
        )
    else:
        for lst in campaign.lists:
            if words == normalise_text(lst.name):
                target = campaign.list_scope(lst.name)
                break
        else:
            if words == normalise_text(campaign.name):
                target = campaign.campaign_scope
    if target is None:
        return None
    # The narrower opt-out first: if the store fails between the two, the business record
    # still stops everything and the SMSC's resend completes the answer.
    narrower = ctx.event(target, ConsentState.OPTED_OUT, MatchType.CLARIFY, Actor.KEYWORD)
    # UNKNOWN, not OPTED_IN: the business record stops deciding, so what was true before the
    # STOP (an older campaign opt-out, a missing opt-in) decides again.
    lifted = ctx.event(
        business, ConsentState.UNKNOWN, MatchType.CLARIFY, Actor.KEYWORD, second=True
    )
    return MoDecision(
        action=MoAction.CLARIFIED_NARROWED,
        forward=campaign.forward_keywords,
        state_after=ConsentState.OPTED_OUT,
        events=(narrower, lifted),
        match=found,
    )
