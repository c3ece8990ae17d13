"""The MT path's decisions, as values the proxy carries out.

``read_mt`` reads what a submit_sm or data_sm's decision needs (the subscriber and sender as
numbers, the campaign, which part of a long message it is); ``settle`` turns the consent
policy's decision and the part memo (``gateway.messages.parts``) into ``Send`` or ``Refuse``:
all parts of a long message get one answer, and a refused part refuses the parts after it.
``refusal_answer`` says how a refusal reaches the client (an error status, or accepted and
reported by a receipt of the gateway's own).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from gateway.consent.campaign import Campaign, CampaignDirectory
from gateway.consent.model import AddressKind, SmsAddress
from gateway.consent.numbers import cached_normalise
from gateway.consent.policy import (
    QUIET_REASONS,
    TEMPORARY_REASONS,
    Allow,
    Reject,
    RejectReason,
    RequestOptIn,
)
from gateway.messages.parts import PartTracker, Route
from gateway.smpp import pdu as p
from gateway.smpp.constants import EsmClass, RegisteredDelivery, Tag

# An MT without a source (the SMSC fills in the account's default), or an MO to no address.
NO_SENDER = SmsAddress(kind=AddressKind.ALPHANUMERIC, value="")
# An MT to no address at all: refused like an unreadable one.
NO_SUBSCRIBER = SmsAddress(kind=AddressKind.UNREADABLE, value="")

MtPdu = p.SubmitSm | p.DataSm


class PartOf(Protocol):
    """Where a PDU sits in a concatenated message (``gateway.messages.content.PartInfo``)."""

    @property
    def reference(self) -> int: ...

    @property
    def total(self) -> int: ...

    @property
    def seq(self) -> int: ...


def may_be_part(pdu: MtPdu) -> bool:
    """Whether the PDU can be a part of a long message (a UDH or the SAR TLVs): only then is
    its content worth reading for the decision."""
    return bool(pdu.esm_class & EsmClass.UDHI) or pdu.tlv(Tag.SAR_MSG_REF_NUM) is not None


class Mt:
    """What an MT's decision needs, read once from the PDU and the client (a plain slotted
    class: built for every MT, so no dataclass machinery)."""

    __slots__ = (
        "account",
        "bound_as",
        "campaign",
        "part",
        "part_key",
        "pdu",
        "sender",
        "subscriber",
    )

    def __init__(
        self,
        pdu: MtPdu,
        subscriber: SmsAddress,
        sender: SmsAddress,
        campaign: Campaign,
        account: str,
        bound_as: str,
        part: PartOf | None,
        part_key: Hashable | None,
    ) -> None:
        self.pdu = pdu
        self.subscriber = subscriber  # NO_SUBSCRIBER when the destination is unreadable
        self.sender = sender
        self.campaign = campaign
        self.account = account  # the client's account key (config.account_match)
        self.bound_as = bound_as  # its system_id as bound
        self.part = part
        self.part_key = part_key  # names the long message; None for a message in one PDU

    def with_pdu(self, pdu: MtPdu) -> Mt:
        """The same message seen through another of its parts."""
        return Mt(
            pdu,
            self.subscriber,
            self.sender,
            self.campaign,
            self.account,
            self.bound_as,
            self.part,
            self.part_key,
        )


def read_mt(
    pdu: MtPdu,
    *,
    conn_id: str,
    account: str,
    bound_as: str,
    default_sender: SmsAddress,
    directory: CampaignDirectory,
    country: str,
    short_max: int,
    part: PartOf | None,
) -> Mt:
    """What the MT's decision needs. ``default_sender`` stands for an empty or unreadable
    source_addr (what the SMSC fills in for the account); ``part`` is where the PDU sits in a
    long message. The part key names the connection, so no memo crosses sessions."""
    subscriber = cached_normalise(
        pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi, country, short_max, False
    )
    sender = (
        cached_normalise(
            pdu.source_addr, pdu.source_addr_ton, pdu.source_addr_npi, country, short_max, False
        )
        or default_sender
    )
    campaign = directory.lookup(sender.value)
    key: tuple[object, ...] | None = None
    if subscriber is None:
        subscriber = NO_SUBSCRIBER
    elif part is not None:
        key = (conn_id, sender.value, subscriber.value, part.reference, part.total)
    return Mt(pdu, subscriber, sender, campaign, account, bound_as, part, key)


@dataclass(frozen=True, slots=True)
class Send:
    """The MT goes upstream: through the footer stage, or as it is."""

    footer: bool


@dataclass(frozen=True, slots=True)
class Refuse:
    """The MT may not go."""

    decision: Reject | RequestOptIn
    # Parts of the same message held by the footer stage were allowed before the change:
    # they go nowhere now, and are refused alike.
    abandon_held: bool = False

    @property
    def reason(self) -> RejectReason:
        return self.decision.reason


# One of each, so the common case allocates nothing.
SEND_PLAIN = Send(footer=False)
SEND_FOOTER = Send(footer=True)


def settle(
    decision: Allow | Reject | RequestOptIn,
    mt: Mt,
    parts: PartTracker,
    now: float,
    *,
    footers: bool,
) -> Send | Refuse:
    """The answer ``mt`` gets for the policy's ``decision``, ``footers`` telling whether a
    footer stage exists. A part of a long message also gets its message's answer: a refusal
    refuses the parts after it, even if the records changed back meanwhile (an "allowed" is
    never remembered: every part is decided afresh), and the route stays the first part's.
    One exception: a message whose earlier parts went inside the sending window is finished
    when the window closes between its parts (quiet hours refuse no part after an allowed one:
    half a message is worse than one sent a minute late); consent is still decided afresh."""
    key = mt.part_key
    if key is None:  # one PDU, one message: the common case
        if not isinstance(decision, Allow):
            return Refuse(decision)
        return SEND_FOOTER if decision.add_footer and footers else SEND_PLAIN
    part = mt.part
    assert part is not None  # a part key is only made for a part
    earlier = parts.get(key, now)
    if earlier is not None and earlier.refusal is not None and isinstance(decision, Allow):
        decision = Reject(reason=earlier.refusal)
    elif (
        earlier is not None
        and earlier.refusal is None
        and isinstance(decision, Reject)
        and decision.reason in QUIET_REASONS
    ):
        decision = Allow(add_footer=earlier.route is Route.FOOTER)
    if isinstance(decision, Allow):
        if earlier is not None:
            footer = earlier.route is Route.FOOTER
        else:
            footer = decision.add_footer and footers
        route = Route.FOOTER if footer else Route.PLAIN
        parts.record(key, part.seq, part.total, now, route=route, refusal=None)
        return SEND_FOOTER if footer else SEND_PLAIN
    route = earlier.route if earlier is not None else Route.PLAIN
    parts.record(key, part.seq, part.total, now, route=route, refusal=decision.reason)
    held = earlier is not None and earlier.route is Route.FOOTER and footers
    return Refuse(decision, abandon_held=held)


class Answer(Enum):
    """How a refused MT is answered."""

    NONE = "none"  # answered already (a held part the footer stage answered): logged only
    REPORT = "report"  # accepted under an id of the gateway's; a receipt may report it
    REJECT = "reject"  # the refusal's error status


def refusal_answer(reason: RejectReason, *, answered: bool, accept_and_report: bool) -> Answer:
    """``answered``: the request was settled already; ``accept_and_report``: the account's
    setting. A temporary refusal (store unavailable, a quiet-hours deferral) is always
    visible, so the client retries."""
    if answered:
        return Answer.NONE
    if accept_and_report and reason not in TEMPORARY_REASONS:
        return Answer.REPORT
    return Answer.REJECT


def wants_receipt(pdu: MtPdu) -> bool:
    """The client asked for a delivery receipt."""
    return bool(pdu.registered_delivery & RegisteredDelivery.SMSC_RECEIPT_MASK)


def accepted_response(pdu: MtPdu, message_id: str) -> p.SubmitSmResp | p.DataSmResp:
    """The answer of an MT accepted under ``message_id``."""
    if isinstance(pdu, p.DataSm):
        return p.DataSmResp(sequence_number=pdu.sequence_number, message_id=message_id)
    return p.SubmitSmResp(sequence_number=pdu.sequence_number, message_id=message_id)
