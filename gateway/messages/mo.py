"""The MO path's pieces the consent policy leaves to the relay.

Keyword to decision is ``gateway.consent.policy.decide_mo``. What the relay adds is here: the
event id that makes the SMSC's resend of an MO a duplicate the store drops (``mo_event_key``),
the key a long MO's parts are reassembled under, the answer of an MO the gateway acts on
itself, and ``Unreplied``: MOs whose reply is owed by their resend. The time is passed in.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping

from gateway.consent.model import ConsentEvent, ConsentRecord
from gateway.consent.policy import MoDecision
from gateway.smpp import pdu as p

DEFAULT_MAX_UNREPLIED = 10_000


def mo_digest(
    *, system_id: str, subscriber: str, recipient: str, text: str, now: float, window_s: float
) -> str:
    """The MO's words, who sent them to which number, and the dedup window they fall in:
    within one window the same digest is the SMSC's resend (``mo_event_key`` decides)."""
    bucket = int(now // window_s)
    return hashlib.sha256(
        b"\0".join(
            (
                system_id.encode(),
                subscriber.encode(),
                recipient.encode(),
                text.encode("utf-8", "surrogatepass"),
                str(bucket).encode(),
            )
        )
    ).hexdigest()[:32]


def mo_event_key(digest: str, records: Mapping[str, ConsentRecord]) -> str:
    """The event id, and dedup key, of an MO's consent event: the first half of the MO's
    ``digest`` (words, subscriber, number, time window), then a digest of the subscriber's
    latest record before it. When that latest record is an event with this MO's first half,
    nothing changed since this MO was stored: it is the SMSC's resend, and gets that event's
    key (the store drops it). After any other change the same words make a new key: a new
    message (a STOP after a START after a STOP is acted on, never taken for a resend)."""
    head = digest[:16]
    latest = max(records.values(), key=lambda r: (r.updated_at, r.last_event_id), default=None)
    if latest is not None and latest.last_event_id.startswith(head):
        return latest.last_event_id
    before = "" if latest is None else latest.last_event_id
    return head + hashlib.sha256(f"{digest}\0{before}".encode()).hexdigest()[:16]


def mo_part_key(
    conn_id: str, subscriber: str, recipient: str, reference: int
) -> tuple[object, ...]:
    """What a long MO's parts are reassembled under: one session, one sender, one number."""
    return (conn_id, subscriber, recipient, reference)


def mo_response(pdu: p.Pdu) -> p.DeliverSmResp | p.DataSmResp:
    """The answer of an MO the gateway acts on itself (the client never sees it)."""
    if isinstance(pdu, p.DataSm):
        return p.DataSmResp(sequence_number=pdu.sequence_number, message_id="")
    return p.DeliverSmResp(sequence_number=pdu.sequence_number, message_id="")


class Unreplied:
    """MOs whose events may have been stored although the store reported a failure, so their
    reply was never sent. When the SMSC's retry turns out a duplicate (its decision may even
    differ now: a repeat STOP), the original decision's reply is sent then. Bounded in count
    and age (the dedup window)."""

    __slots__ = ("_decisions", "_max_age_s", "_max_entries")

    def __init__(self, max_age_s: float, max_entries: int = DEFAULT_MAX_UNREPLIED) -> None:
        self._max_age_s = max_age_s
        self._max_entries = max_entries
        self._decisions: OrderedDict[tuple[str, str], tuple[float, MoDecision]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._decisions)

    def add(self, decision: MoDecision, now: float) -> None:
        """``decision``'s reply is owed to whichever resend of its events comes first."""
        for event in decision.events:
            if event.dedup_key is not None:
                self._decisions[(event.subscriber, event.dedup_key)] = (now, decision)
        while len(self._decisions) > self._max_entries:
            self._decisions.popitem(last=False)

    def take(self, events: tuple[ConsentEvent, ...], now: float) -> MoDecision | None:
        """The decision whose reply one of ``events`` still owes (once), or None."""
        oldest = now - self._max_age_s
        while self._decisions and next(iter(self._decisions.values()))[0] < oldest:
            self._decisions.popitem(last=False)
        found = None
        for event in events:
            key = (event.subscriber, event.dedup_key or "")
            entry = self._decisions.pop(key, None) if event.dedup_key is not None else None
            if entry is not None:
                found = entry[1]
        return found
