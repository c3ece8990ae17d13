"""The footer rewrite: what goes upstream for an MT that is allowed with a footer. Pure.

``Footers.rewrite`` takes the client's parts of one message (a single PDU, or every part of a
long MT, in sequence order), the campaign and its rendered footer, and returns one value:
``Unchanged`` (forward the parts as they came, with the reason) or ``Rewritten`` (the frames
the SMSC gets, and whose answer each one's answer is).

One message, one pipeline:

1. Never touched (``Unchanged``): binary and unknown codings, empty text, acknowledgements
   (esm_class message type), silent and data-download messages (protocol_id 0x40,
   0x7C-0x7F), app-directed messages (UDH port addressing), a UDH that does not parse, a
   data_sm without message_payload, parts that differ in data_coding or in where the text is,
   text that already says how to opt out (``already_has_opt_out``, or an instruction in the
   campaign's words), an empty footer, and messages the footer would make too long (beyond
   ``max_parts``, or more than one PDU can carry in message_payload).
2. Appended: when the separator and footer, in the message's coding, fit in the room the
   (last) part leaves, the client's octets stay as they are (even octets decoded leniently)
   and the footer's follow; only short_message, sm_length and command_length change
   (``smpp.codec.with_short_message``). Parts before the last go exactly as the client sent
   them. A last part that does not decode back to its own octets alone (it starts inside a
   character the client split) is not appended to: re-segmenting heals it.
3. Re-segmented: otherwise, if the text decodes back to the same octets (else it goes on
   unchanged: the gateway never re-encodes what it cannot write again), the whole text (the
   parts' bodies joined before decoding, which
   heals an escape or a surrogate pair a client split) gets the footer
   (``text.footer.apply_footer``: the coding is kept where the footer can be written in it, a
   segment is added rather than GSM switched to UCS-2) and is split again with one new
   reference: in the client's kind of concatenation for a long message (UDH IEI 0x00 / 0x08
   or the SAR TLVs, other UDH elements kept), in the configured kind for a one-part message
   that grows (message_payload stays message_payload). Every other field and TLV is kept;
   Kannel's more_messages_to_send on all parts but the last stays that way.

Answers: upstream part i answers client part i; an extra part the footer added answers the
gateway only and asks for no receipt; if the footer made the message shorter in parts, the
client's surplus parts share the last upstream part's answer.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Generic, NamedTuple, TypeVar

from gateway.consent.campaign import Campaign
from gateway.consent.keywords import tells_how_to_opt_out
from gateway.messages.content import Content, PartInfo
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode, with_short_message
from gateway.smpp.constants import EsmClass, Tag
from gateway.text.dcs import Alphabet, can_encode, decode_as, encode_text, with_alphabet
from gateway.text.footer import (
    already_has_opt_out,
    apply_footer,
    folded_has_opt_out,
)
from gateway.text.gsm7 import ESCAPE, TextError, ascii_lower
from gateway.text.segment import (
    CONCAT_8BIT,
    CONCAT_16BIT,
    MAX_PARTS,
    PAYLOAD,
    SAR,
    AddStatus,
    Assembly,
    ConcatKind,
    Part,
    Reassembler,
    capacity,
    frame_parts,
)
from gateway.text.udh import IEI_PORT_8BIT, IEI_PORT_16BIT

Message = p.SubmitSm | p.DataSm
# One client part: the frame as the client sent it, its decoded PDU, and its content.
ClientPart = tuple[bytes, Message, Content]
Key = tuple[Hashable, ...]  # names the held parts of one message (``hold_key``)
T = TypeVar("T")

# protocol_id values whose message the subscriber never reads as text: short message type 0
# (silent), ANSI-136 R-DATA, ME data download, ME de-personalisation, (U)SIM data download.
_SILENT_PROTOCOL_IDS: Final = frozenset({0x40, 0x7C, 0x7D, 0x7E, 0x7F})
_PORT_IEIS: Final = frozenset({IEI_PORT_8BIT, IEI_PORT_16BIT})
_SAR_TAGS: Final = frozenset({Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS, Tag.SAR_SEGMENT_SEQNUM})
_MAX_DESTINATIONS: Final = 100_000  # per-destination reference counters kept (LRU)
_MAX_ENCODED: Final = 1_000  # encoded footers kept (footers with links differ per subscriber)
_NOT_CACHED: Final = b"not cached"  # a sentinel compared by identity
# Units one part holds without a UDH (GSM septets, UCS-2 code units, octets).
_ONE_PART: Final = {
    Alphabet.GSM7: 160,
    Alphabet.UCS2: 70,
    Alphabet.LATIN1: 140,
    Alphabet.IA5: 140,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FooterSettings:
    """How footers are written and long messages held: config ``[text]`` and the SMSC's
    default alphabet (``gateway.config.TextConfig`` takes its defaults from here)."""

    default_alphabet: Alphabet = Alphabet.GSM7  # what data_coding 0 means at this SMSC
    concat: ConcatKind = CONCAT_8BIT  # how a one-part message that grows is split
    separator: str = " "  # between the text and the footer
    max_parts: int = MAX_PARTS  # a message the footer would take beyond this stays as it is
    hold_timeout_s: float = 10.0  # parts of one message must all arrive within this
    hold_max_messages: int = 10_000  # incomplete messages held at once (oldest evicted)
    hold_max_bytes: int = 2_000_000  # octets of held message bodies (oldest evicted)

    def __post_init__(self) -> None:
        if self.concat is PAYLOAD:
            raise ValueError("concat must be udh_8bit, udh_16bit or sar")
        if self.hold_timeout_s <= 0 or self.hold_max_messages < 1 or self.hold_max_bytes < 1:
            raise ValueError("hold limits must be positive")


class Why(StrEnum):
    """Why a message goes on as it came."""

    BINARY = "binary"  # a binary or unknown coding
    EMPTY = "empty"  # no text (a data_sm without message_payload has none either)
    ACKNOWLEDGEMENT = "acknowledgement"  # esm_class says it is a delivery / manual ack
    SILENT = "silent"  # protocol_id: silent or data download, never read as text
    APP_DIRECTED = "app_directed"  # UDH port addressing: for an application
    UNPARSED_UDH = "unparsed_udh"  # UDHI set, UDH unreadable: its octets are not ours to shift
    MIXED_PARTS = "mixed_parts"  # parts of one message in different codings or places
    NOT_ROUND_TRIP = "not_round_trip"  # the text does not encode back to the same octets
    HAS_OPT_OUT = "has_opt_out"  # the text already says how to opt out
    NO_FOOTER = "no_footer"  # the footer renders empty
    TOO_LONG = "too_long"  # with the footer, beyond max_parts or one message_payload
    UNENCODABLE = "unencodable"  # the footer cannot be written in the message's coding


@dataclass(frozen=True, slots=True)
class Unchanged:
    """Forward the client's parts as they came."""

    reason: Why


_UNCHANGED: Final = {why: Unchanged(why) for why in Why}


class Unit(NamedTuple):
    """One PDU the SMSC gets, and the client parts (indices) whose answer its answer is; none
    for a part the gateway added. (Named tuples: built for every MT, so cheap to build.)"""

    frame: bytes
    answers: tuple[int, ...]


class Rewritten(NamedTuple):
    """Send these PDUs in order, in place of the client's parts."""

    units: tuple[Unit, ...]
    resegmented: bool  # False: the client's frames, the footer appended to the last


Outcome = Unchanged | Rewritten


def concat_kind(content: Content) -> ConcatKind:
    """The client's kind of concatenation for a part of a long message."""
    concat = content.udh.concat
    if concat is not None and concat.total > 1:
        return CONCAT_8BIT if concat.ref_bits == 8 else CONCAT_16BIT
    return SAR


def holdable(content: Content) -> bool:
    """Whether a part of a long message is worth holding for the footer: text, numbered
    within its count (binary parts and bad numbering go on at once)."""
    part = content.part
    return part is not None and content.alphabet.is_text and 1 <= part.seq <= part.total


def hold_key(conn_id: str, pdu: Message, content: Content, subscriber: str) -> Key:
    """The parts of one message: same connection, source, destination, kind, reference, count."""
    part = content.part
    assert part is not None
    return (
        conn_id,
        pdu.source_addr,
        subscriber,
        concat_kind(content).value,
        part.reference,
        part.total,
    )


class Offer(StrEnum):
    """What became of a part offered to ``Holds``."""

    FORWARD = "forward"  # not held: it goes on as it came
    HELD = "held"  # held, more parts to come
    DUPLICATE = "duplicate"  # a copy of a held part: it gets its original's answer
    COMPLETE = "complete"  # every part is in: the message can be rewritten


@dataclass(frozen=True, slots=True)
class Taken(Generic[T]):
    offer: Offer
    message: Assembly[T] | None = None  # COMPLETE: every part, in sequence order
    original: T | None = None  # DUPLICATE: the held part's context
    # Held messages this part displaced, to go on unchanged, with why: "superseded" (a new
    # message under the same key) or "evicted" (to stay within the bounds).
    released: tuple[tuple[Assembly[T], str], ...] = ()


_FORWARD: Final[Taken[Any]] = Taken(Offer.FORWARD)


class Holds(Generic[T]):
    """The parts of long MTs held until their message is complete (``buffer``, bounded in
    messages, octets and time), and the keys of messages that went on unchanged: evicted,
    expired or released, their late parts pass straight through for ``hold_timeout_s``."""

    __slots__ = ("_released", "_settings", "buffer")

    def __init__(self, settings: FooterSettings) -> None:
        self._settings = settings
        self.buffer: Reassembler[T] = Reassembler(
            max_parts=None,
            max_messages=settings.hold_max_messages,
            max_bytes=settings.hold_max_bytes,
            max_age_s=settings.hold_timeout_s,
        )
        self._released: OrderedDict[Key, float] = OrderedDict()

    def reconfigure(self, settings: FooterSettings) -> None:
        """New bounds for the parts from now on; messages held keep their deadline."""
        self._settings = settings
        self.buffer.set_limits(
            max_parts=None,
            max_messages=settings.hold_max_messages,
            max_bytes=settings.hold_max_bytes,
            max_age_s=settings.hold_timeout_s,
        )

    def offer(self, key: Key, part: PartInfo, body: bytes, now: float, context: T) -> Taken[T]:
        """Hold one part of the message ``key`` names (``context`` comes back with it)."""
        until = self._released.get(key)
        if until is not None:
            if until > now:
                return _FORWARD  # a late part of a message already sent on unchanged
            del self._released[key]
        result = self.buffer.add(
            key, seq=part.seq, total=part.total, body=body, now=now, context=context
        )
        if result.status is AddStatus.DUPLICATE:
            assert result.held is not None
            return Taken(Offer.DUPLICATE, original=result.held.context)
        released: list[tuple[Assembly[T], str]] = []
        if result.superseded is not None:
            released.append((result.superseded, "superseded"))
        for message in result.evicted:
            if message.key != key:
                self._remember(message.key, now)
            released.append((message, "evicted"))
        if result.status is AddStatus.COMPLETE:
            return Taken(Offer.COMPLETE, message=result.assembly, released=tuple(released))
        if result.status is AddStatus.PENDING:
            return Taken(Offer.HELD, released=tuple(released))
        # No room even with its own message evicted: it goes on as it came, like the rest.
        self._remember(key, now)
        return Taken(Offer.FORWARD, released=tuple(released))

    def expire(self, now: float) -> list[Assembly[T]]:
        """The messages whose hold time is over, dropped (they go on unchanged)."""
        expired = self.buffer.expire(now)
        for message in expired:
            self._remember(message.key, now)
        return expired

    def release_all(self, now: float) -> list[Assembly[T]]:
        """Every held message, dropped (they go on unchanged)."""
        messages = self.buffer.discard(lambda _key: True)
        for message in messages:
            self._remember(message.key, now)
        return messages

    def _remember(self, key: Key, now: float) -> None:
        self._released[key] = now + self._settings.hold_timeout_s
        self._released.move_to_end(key)
        while len(self._released) > self._settings.hold_max_messages:
            self._released.popitem(last=False)


class Footers:
    """The footer rewrite, with what it keeps between messages: encoded footers, and the next
    concatenation reference per destination (a counter, never random, so two messages to one
    handset do not share a reference until it wraps). No I/O, no clock."""

    __slots__ = ("_encoded", "_references", "rules")

    def __init__(self, rules: FooterSettings) -> None:
        self.rules = rules
        self._encoded: dict[tuple[str, Alphabet], bytes | None] = {}
        self._references: OrderedDict[str, int] = OrderedDict()

    def reconfigure(self, rules: FooterSettings) -> None:
        self.rules = rules
        self._encoded.clear()  # the separator may have changed

    def rewrite(
        self,
        parts: Sequence[ClientPart],
        campaign: Campaign,
        footer: str | Callable[[], str],
        destination: str,
    ) -> Outcome:
        """What goes upstream for one message (``parts`` in sequence order) with the rendered
        ``footer`` (or what renders it, called only once the text may take one);
        ``destination`` keys the reference counter."""
        if len(parts) == 1:
            one = self.rewrite_one(parts[0], campaign, footer, destination)
            return Rewritten((Unit(one, (0,)),), False) if isinstance(one, bytes) else one
        _, first_pdu, first = parts[0]
        why = _untouchable(first_pdu, first)
        if why is not None:
            return _UNCHANGED[why]
        alphabet = first.alphabet
        if any(
            x.data_coding != first_pdu.data_coding or c.in_payload != first.in_payload
            for _, x, c in parts
        ):
            return _UNCHANGED[Why.MIXED_PARTS]
        body = b"".join(c.body for _, _, c in parts)
        text = decode_as(body, alphabet)
        if text is None:
            return _UNCHANGED[Why.BINARY]
        rendered = footer if isinstance(footer, str) else footer()
        if not rendered:
            return _UNCHANGED[Why.NO_FOOTER]
        if _tells_how_to_opt_out(text, campaign):
            return _UNCHANGED[Why.HAS_OPT_OUT]
        appended = self._append(parts, rendered)
        if appended is not None:
            return appended
        if not _round_trips(body, text, alphabet):
            return _UNCHANGED[Why.NOT_ROUND_TRIP]  # only octets it can write again are re-encoded
        return self._resegment(parts, text, rendered, destination)

    def rewrite_one(
        self,
        part: ClientPart,
        campaign: Campaign,
        footer: str | Callable[[], str],
        destination: str,
    ) -> bytes | Outcome:
        """``rewrite`` of a message in one PDU, the common case: when the footer is appended
        to it, just the frame to send in its place (it answers the client's request)."""
        frame, pdu, content = part
        why = _untouchable(pdu, content)
        if why is not None:
            return _UNCHANGED[why]
        body = content.body
        alphabet = content.alphabet
        # ASCII text (most traffic) is checked lower-cased straight from the octets; it is
        # decoded only if the campaign's check needs it or the message is re-segmented.
        folded = _ascii_folded(body, alphabet)
        text: str | None = None
        if folded is None:
            text = decode_as(body, alphabet)
            if text is None:
                return _UNCHANGED[Why.BINARY]
        rendered = footer if isinstance(footer, str) else footer()
        if not rendered:
            return _UNCHANGED[Why.NO_FOOTER]
        if folded is None:
            assert text is not None
            if _tells_how_to_opt_out(text, campaign):
                return _UNCHANGED[Why.HAS_OPT_OUT]
        elif folded_has_opt_out(folded) or _may_instruct(folded):
            text = decode_as(body, alphabet)
            assert text is not None  # an alphabet _ascii_folded reads is text
            if _tells_how_to_opt_out(text, campaign):
                return _UNCHANGED[Why.HAS_OPT_OUT]
        appended = self._append_to(frame, pdu, content, rendered)
        if appended is not None:
            return appended
        if text is None:
            text = decode_as(body, alphabet)
            assert text is not None  # an alphabet _ascii_folded reads is text
        if not _round_trips(body, text, alphabet):
            return _UNCHANGED[Why.NOT_ROUND_TRIP]
        return self._resegment((part,), text, rendered, destination)

    def _append(self, parts: Sequence[ClientPart], footer: str) -> Rewritten | None:
        """The client's frames with the footer appended to the last part (``_append_to``);
        None when it does not fit there."""
        frame, pdu, content = parts[-1]
        body = content.body
        # A last part that does not round-trip alone starts inside a character the client
        # split: re-segmenting heals it.
        text = decode_as(body, content.alphabet)
        if text is None or not _round_trips(body, text, content.alphabet):
            return None
        patched = self._append_to(frame, pdu, content, footer)
        if patched is None:
            return None
        last = len(parts) - 1
        units = [Unit(f, (i,)) for i, (f, _, _) in enumerate(parts[:last])]
        return Rewritten((*units, Unit(patched, (last,))), False)

    def _append_to(self, frame: bytes, pdu: Message, content: Content, footer: str) -> bytes | None:
        """``frame`` with the encoded separator and footer added to its short_message, when
        that fits the part in the same coding; else None."""
        if content.in_payload or not isinstance(pdu, p.SubmitSm):
            return None
        alphabet = content.alphabet
        body = content.body
        tail = self._encoded_footer(footer, alphabet)
        if tail is None or not _appendable(body, alphabet):
            return None
        if content.part is not None:  # the last part of a long message: its concatenation too
            room = capacity(alphabet, concat_kind(content), multipart=True, extra_udh=content.udh)
        elif content.udh.elements:
            room = capacity(alphabet, multipart=False, extra_udh=content.udh)
        else:
            room = _ONE_PART[alphabet]
        size = len(body) + len(tail)
        if (size // 2 if alphabet is Alphabet.UCS2 else size) > room:
            return None
        return with_short_message(frame, pdu, pdu.short_message + tail)

    def _encoded_footer(self, footer: str, alphabet: Alphabet) -> bytes | None:
        """Separator and footer in ``alphabet`` (None if it cannot write them), cached."""
        key = (footer, alphabet)
        value = self._encoded.get(key, _NOT_CACHED)
        if value is not _NOT_CACHED:
            return value
        if len(self._encoded) >= _MAX_ENCODED:
            self._encoded.clear()
        addition = self.rules.separator + footer
        encoded = encode_text(addition, alphabet) if can_encode(addition, alphabet) else None
        self._encoded[key] = encoded
        return encoded

    def _resegment(
        self, parts: Sequence[ClientPart], text: str, footer: str, destination: str
    ) -> Outcome:
        """The whole text with the footer, split again with one new reference."""
        _, first_pdu, first = parts[0]
        alphabet = first.alphabet
        if first.in_payload:
            kind = PAYLOAD
        elif len(parts) == 1:
            kind = self.rules.concat
        else:
            kind = concat_kind(first)
        try:
            result = apply_footer(
                text,
                alphabet,
                footer,
                kind,
                max_parts=self.rules.max_parts,
                separator=self.rules.separator,
                extra_udh=first.udh,
            )
            if result is None:
                return _UNCHANGED[Why.TOO_LONG]
            reference = 0 if len(result.parts) == 1 else self.reference(destination, kind)
            new = frame_parts(result.parts, kind, reference=reference, extra_udh=first.udh)
        except TextError:
            return _UNCHANGED[Why.UNENCODABLE]
        data_coding = first_pdu.data_coding
        if result.alphabet is not alphabet:
            data_coding = with_alphabet(data_coding, result.alphabet)
        # Kannel marks every part but the last with more_messages_to_send: keep that true.
        marks_more = len(parts) > 1 and any(
            x.tlv(Tag.MORE_MESSAGES_TO_SEND) is not None for _, x, _ in parts
        )
        count = len(parts)
        last = len(new) - 1
        units = []
        for i, part in enumerate(new):
            # Part i is client part i's (its fields kept: Kannel asks a receipt for part 1
            # only); a part the gateway adds asks none; if the client sent more parts than
            # the new split needs, its surplus parts share the last part's answer.
            added = i >= count
            if added:
                answers: tuple[int, ...] = ()
            elif i == last:
                answers = tuple(range(i, count))
            else:
                answers = (i,)
            frame = _rebuild(
                parts[min(i, count - 1)][1],
                part,
                data_coding=data_coding,
                in_payload=first.in_payload,
                more=(i < last) if marks_more else None,
                registered_delivery=0 if added else None,
            )
            units.append(Unit(frame, answers))
        return Rewritten(tuple(units), True)

    def reference(self, destination: str, kind: ConcatKind) -> int:
        """The next concatenation reference for ``destination`` (8 bits for ``CONCAT_8BIT``)."""
        previous = self._references.pop(destination, 0)
        value = (previous + 1) & 0xFFFF
        self._references[destination] = value
        if len(self._references) > _MAX_DESTINATIONS:
            self._references.popitem(last=False)
        return value & 0xFF if kind is CONCAT_8BIT else value


# --- helpers ----------------------------------------------------------------------------------


def _untouchable(pdu: Message, content: Content) -> Why | None:
    """Why the gateway may not append to this message's text, or None when it may."""
    if not content.alphabet.is_text:
        return Why.BINARY
    if not content.body or (isinstance(pdu, p.DataSm) and not content.in_payload):
        return Why.EMPTY
    if pdu.esm_class & EsmClass.MESSAGE_TYPE_MASK:
        return Why.ACKNOWLEDGEMENT
    if isinstance(pdu, p.SubmitSm) and pdu.protocol_id in _SILENT_PROTOCOL_IDS:
        return Why.SILENT
    if pdu.esm_class & EsmClass.UDHI:
        if not content.udh.elements:
            return Why.UNPARSED_UDH
        if any(ie.iei in _PORT_IEIS for ie in content.udh.elements):
            return Why.APP_DIRECTED
    return None


def _round_trips(body: bytes, text: str, alphabet: Alphabet) -> bool:
    """True when ``text`` (``body`` decoded) encodes back to ``body``. Without an escape, GSM
    septets and IA5 round-trip exactly when every octet is below 0x80, and Latin-1 always
    does: only the rest pays for encoding again."""
    if alphabet is Alphabet.LATIN1:
        return True
    if alphabet is Alphabet.IA5 or (alphabet is Alphabet.GSM7 and ESCAPE not in body):
        return body.isascii()
    try:
        return encode_text(text, alphabet) == body
    except TextError:
        return False


def _ascii_folded(body: bytes, alphabet: Alphabet) -> str | None:
    """``decode_as(body, alphabet).lower()`` when that text is ASCII, without decoding it
    first (GSM: one table lookup per octet); else None."""
    if alphabet is Alphabet.GSM7:
        folded = ascii_lower(body)
        return folded.decode("ascii") if folded.isascii() else None
    if alphabet is Alphabet.IA5 or alphabet is Alphabet.LATIN1:
        return body.decode("ascii").lower() if body.isascii() else None
    return None


def _may_instruct(folded: str) -> bool:
    """False only when ``keywords.tells_how_to_opt_out`` cannot match the ASCII text that
    ``folded`` is lower-cased: its normalisation of ASCII text only lower-cases, spaces and
    trims, and every instruction it knows starts with one of these verbs."""
    return (
        "reply" in folded
        or "text" in folded
        or "txt" in folded
        or "send" in folded
        or "respond" in folded
        or "type" in folded
    )


def _tells_how_to_opt_out(text: str, campaign: Campaign) -> bool:
    """True when ``text`` already says how to opt out: ``already_has_opt_out``, or an
    instruction in the campaign's words (``keywords.tells_how_to_opt_out``).

    ASCII text (most traffic) is lower-cased once for both checks, and the campaign's check
    runs only when the text holds one of the instruction verbs it looks for ("reply STOP",
    "respond with STOP", ...): its normalisation of ASCII text only lower-cases, spaces and
    trims, so without such a verb it cannot match."""
    if not text.isascii():
        return already_has_opt_out(text) or tells_how_to_opt_out(text, campaign.rules)
    folded = text.lower()
    if folded_has_opt_out(folded):
        return True
    return _may_instruct(folded) and tells_how_to_opt_out(text, campaign.rules)


def _appendable(body: bytes, alphabet: Alphabet) -> bool:
    """True when octets appended to ``body`` cannot join a character it leaves unfinished."""
    if alphabet is Alphabet.GSM7:
        if not body or body[-1] != ESCAPE:
            return True  # the common case, without copying the body
        # An odd run of escapes at the end is a lone escape: it would swallow the separator.
        run = len(body) - len(body.rstrip(b"\x1b"))
        return run % 2 == 0
    if alphabet is Alphabet.UCS2:
        return len(body) % 2 == 0 and not 0xD8 <= body[-2] <= 0xDB  # no lone high surrogate
    return True


def _rebuild(
    template: Message,
    part: Part,
    *,
    data_coding: int,
    in_payload: bool,
    more: bool | None,
    registered_delivery: int | None,
) -> bytes:
    """``template`` carrying ``part``: every other field and TLV kept, in wire order.

    ``more``: None keeps more_messages_to_send as it is; True / False sets / removes it.
    ``registered_delivery``: None keeps the template's.
    """
    if part.message_payload is not None:
        payload: bytes | None = part.message_payload
    else:
        payload = part.short_message if in_payload else None
    sar = dict(part.sar.to_tlvs()) if part.sar is not None else {}
    tlvs: list[p.Tlv] = []
    for tlv in template.tlvs:
        if tlv.tag == Tag.MESSAGE_PAYLOAD and payload is not None:
            tlvs.append(p.Tlv(tlv.tag, payload))
            payload = None
        elif tlv.tag in _SAR_TAGS:
            value = sar.pop(tlv.tag, None)
            if value is not None:
                tlvs.append(p.Tlv(tlv.tag, value))
        elif tlv.tag == Tag.MORE_MESSAGES_TO_SEND and more is not None:
            if more:
                tlvs.append(p.Tlv(tlv.tag, b"\x01"))
                more = None
        else:
            tlvs.append(tlv)
    tlvs.extend(p.Tlv(tag, value) for tag, value in sar.items())
    if more:
        tlvs.append(p.Tlv(Tag.MORE_MESSAGES_TO_SEND, b"\x01"))
    esm_class = template.esm_class & ~EsmClass.UDHI
    if part.udhi:
        esm_class |= EsmClass.UDHI
    receipts = template.registered_delivery if registered_delivery is None else registered_delivery
    if isinstance(template, p.SubmitSm):
        return encode(
            dataclasses.replace(
                template,
                esm_class=esm_class,
                data_coding=data_coding,
                short_message=b"" if in_payload else part.short_message,
                registered_delivery=receipts,
                tlvs=tuple(tlvs),
            )
        )
    return encode(
        dataclasses.replace(
            template,
            esm_class=esm_class,
            data_coding=data_coding,
            registered_delivery=receipts,
            tlvs=tuple(tlvs),
        )
    )
