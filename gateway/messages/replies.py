"""Auto-replies (STOP / START / HELP confirmations, opt-in requests): their PDUs, and the
per-subscriber rate limit.

``reply_pdus`` writes a reply as the ``submit_sm`` parts the gateway sends itself, answering
from the address the subscriber wrote to (TON/NPI kept) when there is an MO to answer.
``ReplyLimiter`` keeps the times of the replies each subscriber got in the last hour, bounded;
the time is passed in.
"""

from __future__ import annotations

from collections import deque

from gateway.consent.model import AddressKind, SmsAddress
from gateway.consent.policy import AutoReply
from gateway.smpp import pdu as p
from gateway.smpp.constants import DataCoding, EsmClass, Npi, Ton
from gateway.text import gsm7
from gateway.text.dcs import Alphabet
from gateway.text.segment import CONCAT_8BIT, capacity, frame_parts, split, text_len

WINDOW_S = 3600.0
DEFAULT_MAX_SUBSCRIBERS = 100_000
# How many quiet subscribers one pass over the bound forgets.
_FORGET_BATCH = 10_000


class ReplyLimiter:
    """At most ``limit`` auto-replies per subscriber in any hour."""

    __slots__ = ("_max", "_sent")

    def __init__(self, max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS) -> None:
        self._max = max_subscribers
        self._sent: dict[str, deque[float]] = {}

    def __len__(self) -> int:
        return len(self._sent)

    def allow(self, subscriber: str, now: float, limit: int) -> bool:
        """Whether ``subscriber`` may get one more reply now; if so it is counted."""
        sent = self._sent.setdefault(subscriber, deque())
        while sent and sent[0] < now - WINDOW_S:
            sent.popleft()
        if len(sent) >= limit:
            return False
        sent.append(now)
        if len(self._sent) > self._max:  # bounded: forget the quietest subscribers
            for key in [k for k, v in self._sent.items() if not v][:_FORGET_BATCH]:
                del self._sent[key]
        return True

    def note(self, subscriber: str, now: float) -> None:
        """A reply that goes whatever the limit (an opt-out confirmation) counts all the same."""
        self._sent.setdefault(subscriber, deque()).append(now)


def _ton_npi(address: SmsAddress) -> tuple[int, int, str]:
    if address.kind is AddressKind.E164:
        return (Ton.INTERNATIONAL, Npi.ISDN, address.value)
    return (Ton.UNKNOWN, Npi.UNKNOWN, address.value)


def reply_coding(text: str, default_alphabet: Alphabet) -> tuple[Alphabet, DataCoding]:
    """How a reply is written: GSM 7-bit (data_coding 0) when that is the SMSC's default
    alphabet and the text fits it, else Latin-1, else UCS-2."""
    if default_alphabet is Alphabet.GSM7 and gsm7.can_encode(text):
        return Alphabet.GSM7, DataCoding.SMSC_DEFAULT
    if all(ord(c) < 256 for c in text):
        return Alphabet.LATIN1, DataCoding.LATIN1
    return Alphabet.UCS2, DataCoding.UCS2


def one_part_problem(text: str, default_alphabet: Alphabet) -> str | None:
    """Why ``text`` would not go as one part (CWTA: a keyword reply is at most 160
    characters), or None: "172 GSM characters, at most 160 (one segment)"."""
    alphabet, _ = reply_coding(text, default_alphabet)
    units = text_len(text, alphabet)
    room = capacity(alphabet, multipart=False)
    if units <= room:
        return None
    name = {Alphabet.GSM7: "GSM", Alphabet.LATIN1: "Latin-1", Alphabet.UCS2: "UCS-2"}[alphabet]
    why = ""
    if alphabet is not Alphabet.GSM7:
        if default_alphabet is not Alphabet.GSM7:
            why = "; the SMSC's default alphabet is not GSM 7-bit"
        else:
            odd = next(ch for ch in text if not gsm7.can_encode(ch))
            why = f"; {odd!r} is not in the GSM 7-bit alphabet"
    return f"{units} {name} characters, at most {room} (one segment{why})"


def reply_pdus(
    reply: AutoReply,
    mo: p.Pdu | None,
    *,
    default_alphabet: Alphabet,
    reference: int,
) -> list[p.SubmitSm]:
    """The parts of ``reply`` (concatenated under ``reference`` when it needs more than one),
    in GSM 7-bit when the SMSC's default alphabet is that and the text fits, else Latin-1,
    else UCS-2. ``mo`` is the message answered, if any."""
    if isinstance(mo, p.DeliverSm | p.DataSm):
        # Answer from the address the subscriber wrote to, as they wrote it (TON/NPI kept).
        src = (mo.dest_addr_ton, mo.dest_addr_npi, mo.destination_addr)
        dst = (mo.source_addr_ton, mo.source_addr_npi, mo.source_addr)
    else:
        src = _ton_npi(reply.source)
        dst = _ton_npi(reply.destination)
    text = reply.text
    alphabet, data_coding = reply_coding(text, default_alphabet)
    parts = frame_parts(split(text, alphabet, CONCAT_8BIT), CONCAT_8BIT, reference=reference)
    return [
        p.SubmitSm(
            source_addr_ton=src[0],
            source_addr_npi=src[1],
            source_addr=src[2],
            dest_addr_ton=dst[0],
            dest_addr_npi=dst[1],
            destination_addr=dst[2],
            esm_class=EsmClass.UDHI if part.udhi else 0,
            data_coding=data_coding,
            short_message=part.short_message,
        )
        for part in parts
    ]
