"""Splitting text into message parts, framing them, and reassembling received parts.

Capacities per part (SMPP carries GSM 7-bit unpacked, so they count septets, not octets):

===========  ========  ==================  ===================
alphabet     one part  8-bit reference     16-bit ref / SAR
===========  ========  ==================  ===================
GSM 7-bit    160       153 septets         152 septets
8-bit        140       134 octets          133 octets
UCS-2        70        67 code units       66 code units
===========  ========  ==================  ===================

Other UDH elements (e.g. port addressing) reduce every part's capacity by their octets (for
7-bit, the whole UDH is counted in septets, fill bits included). SAR parts are sized as if the
SMSC adds a 16-bit reference element, the larger of the two it may choose. Parts are cut on
character boundaries only: a GSM escape pair and a UTF-16 surrogate pair are never split, and a
combining sequence (accent, emoji modifier, ZWJ sequence, flag) is kept whole where that costs
little.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from gateway.text import gsm7, ucs2
from gateway.text.dcs import Alphabet, decode_as, encode_text
from gateway.text.gsm7 import TextEncodeError, TextError
from gateway.text.udh import EMPTY_UDH, Concat, Sar, Udh, septets_for_udh

T = TypeVar("T")


class ConcatKind(StrEnum):
    """How a long message is carried to the SMSC."""

    CONCAT_8BIT = "udh_8bit"  # UDH IEI 0x00 in every part
    CONCAT_16BIT = "udh_16bit"  # UDH IEI 0x08 in every part
    SAR = "sar"  # sar_* TLVs on every part
    PAYLOAD = "message_payload"  # one PDU with the whole text; the SMSC splits it


CONCAT_8BIT = ConcatKind.CONCAT_8BIT
CONCAT_16BIT = ConcatKind.CONCAT_16BIT
SAR = ConcatKind.SAR
PAYLOAD = ConcatKind.PAYLOAD

USER_DATA_OCTETS = 140
MAX_PARTS = 255  # the count is one octet in the UDH and in sar_total_segments
MAX_PAYLOAD_OCTETS = 0xFFFF  # a TLV length is two octets
# How far back (in characters) a cut may move to keep a combining sequence whole.
_MAX_BACKUP = 10

_CONCAT_IE_OCTETS = {CONCAT_8BIT: 5, CONCAT_16BIT: 6, SAR: 6, PAYLOAD: 5}


class SegmentError(TextError):
    """The text cannot be carried: too many parts, or no room left beside the UDH."""


def _udh_octets(concat: ConcatKind, multipart: bool, extra_udh: Udh) -> int:
    other = extra_udh.without_concat()
    octets = sum(2 + len(ie.data) for ie in other.elements)
    if multipart:
        octets += _CONCAT_IE_OCTETS[concat]
    return octets + 1 if octets else 0


def capacity(
    alphabet: Alphabet,
    concat: ConcatKind = CONCAT_8BIT,
    *,
    multipart: bool,
    extra_udh: Udh = EMPTY_UDH,
) -> int:
    """Units (septets, octets or UTF-16 code units) one part can carry."""
    udh = _udh_octets(concat, multipart, extra_udh)
    if alphabet is Alphabet.GSM7:
        return (USER_DATA_OCTETS * 8) // 7 - septets_for_udh(udh)
    if alphabet is Alphabet.UCS2:
        return (USER_DATA_OCTETS - udh) // 2
    if alphabet.is_text:
        return USER_DATA_OCTETS - udh
    raise TextError(f"no text capacity for {alphabet.value}")


def _widths(text: str, alphabet: Alphabet) -> list[int]:
    """Units each character takes; raises ``TextEncodeError`` on one the alphabet lacks."""
    if alphabet is Alphabet.GSM7:
        widths = [gsm7.septets_of(ch) for ch in text]
        if 0 in widths:
            raise TextEncodeError("gsm7", text, widths.index(0))
        return widths
    if alphabet is Alphabet.UCS2:
        return [ucs2.units_of(ch) for ch in text]
    limit = 0xFF if alphabet is Alphabet.LATIN1 else 0x7F
    if not alphabet.is_text:
        raise TextError(f"cannot split {alphabet.value} as text")
    for i, ch in enumerate(text):
        if ord(ch) > limit:
            raise TextEncodeError(alphabet.value, text, i)
    return [1] * len(text)


def text_len(text: str, alphabet: Alphabet) -> int:
    """Length of ``text`` in ``alphabet``'s units; raises ``TextEncodeError``."""
    return sum(_widths(text, alphabet))


def _is_regional_indicator(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


def _extends(ch: str) -> bool:
    """True for a character that belongs to the one before it."""
    cp = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or cp == 0x200D  # zero-width joiner
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences
        or 0xE0100 <= cp <= 0xE01EF  # variation selectors supplement
    )


def _break_ok(text: str, j: int) -> bool:
    """True when cutting between ``text[j-1]`` and ``text[j]`` keeps user-visible units whole."""
    before, after = text[j - 1], text[j]
    if _extends(after) or before == "\u200d" or (before == "\r" and after == "\n"):
        return False
    if _is_regional_indicator(before) and _is_regional_indicator(after):
        run = 0
        k = j - 1
        while k >= 0 and _is_regional_indicator(text[k]):
            run += 1
            k -= 1
        return run % 2 == 0  # flags are pairs: cut only between pairs
    return True


def _soft_cut(text: str, start: int, i: int) -> int:
    """Where to cut before ``text[i]``: ``i``, or a little earlier to keep a sequence whole."""
    j = i
    while j > start and i - j < _MAX_BACKUP and not _break_ok(text, j):
        j -= 1
    if j == start or not _break_ok(text, j):
        return i
    return j


def _ranges(text: str, widths: Sequence[int], cap: int) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    start = used = i = 0
    while i < len(text):
        if used + widths[i] <= cap:
            used += widths[i]
            i += 1
            continue
        cut = _soft_cut(text, start, i)
        ranges.append((start, cut))
        start = cut
        used = sum(widths[cut:i])
    ranges.append((start, len(text)))
    return ranges


def split(
    text: str,
    alphabet: Alphabet,
    concat: ConcatKind = CONCAT_8BIT,
    extra_udh: Udh = EMPTY_UDH,
) -> list[bytes]:
    """Encode ``text`` into part bodies (no UDH; GSM unpacked); one body if it fits one part.

    ``extra_udh`` holds the other elements every part will carry (a concatenation element in it
    is ignored). ``PAYLOAD`` always gives one body. Raises ``TextEncodeError`` if a character is
    not in ``alphabet``, ``SegmentError`` if the text needs more than 255 parts.
    """
    widths = _widths(text, alphabet)
    if concat is PAYLOAD:
        body = encode_text(text, alphabet)
        if len(body) + extra_udh.without_concat().length > MAX_PAYLOAD_OCTETS:
            raise SegmentError(f"message_payload of {len(body)} octets is too long")
        return [body]
    if sum(widths) <= capacity(alphabet, concat, multipart=False, extra_udh=extra_udh):
        return [encode_text(text, alphabet)]
    cap = capacity(alphabet, concat, multipart=True, extra_udh=extra_udh)
    if cap < 2:
        raise SegmentError("the UDH leaves no room for text")
    ranges = _ranges(text, widths, cap)
    if len(ranges) > MAX_PARTS:
        raise SegmentError(f"{len(ranges)} parts exceed {MAX_PARTS}")
    return [encode_text(text[a:b], alphabet) for a, b in ranges]


def count_segments(
    text: str,
    alphabet: Alphabet,
    concat: ConcatKind = CONCAT_8BIT,
    extra_udh: Udh = EMPTY_UDH,
) -> int:
    """Parts the handset receives; for ``PAYLOAD``, as the SMSC would split with an 8-bit ref."""
    kind = CONCAT_8BIT if concat is PAYLOAD else concat
    return len(split(text, alphabet, kind, extra_udh))


@dataclass(frozen=True, slots=True, kw_only=True)
class Part:
    """One PDU's worth of message: set UDHI in esm_class when ``udhi``, add ``sar`` as TLVs."""

    short_message: bytes
    message_payload: bytes | None = None
    udhi: bool = False
    sar: Sar | None = None


def frame_parts(
    bodies: Sequence[bytes],
    concat: ConcatKind,
    *,
    reference: int,
    extra_udh: Udh = EMPTY_UDH,
) -> list[Part]:
    """Wrap ``split`` bodies for the wire with one ``reference``, count and sequence.

    ``extra_udh`` may be the original message's UDH: its concatenation element is replaced in
    place and the other elements are kept in order in every part.
    """
    if not bodies:
        raise SegmentError("no parts")
    other = extra_udh.without_concat()
    if concat is PAYLOAD:
        if len(bodies) != 1:
            raise SegmentError("message_payload carries exactly one part")
        payload = other.to_bytes() + bodies[0]
        return [Part(short_message=b"", message_payload=payload, udhi=bool(other.elements))]
    if len(bodies) == 1:
        return [Part(short_message=other.to_bytes() + bodies[0], udhi=bool(other.elements))]
    total = len(bodies)
    if total > MAX_PARTS:
        raise SegmentError(f"{total} parts exceed {MAX_PARTS}")
    if concat is SAR:
        return [
            Part(
                short_message=other.to_bytes() + body,
                udhi=bool(other.elements),
                sar=Sar(sar_msg_ref_num=reference, sar_total_segments=total, sar_segment_seqnum=n),
            )
            for n, body in enumerate(bodies, start=1)
        ]
    bits = 8 if concat is CONCAT_8BIT else 16
    return [
        Part(
            short_message=extra_udh.with_concat(
                Concat(reference=reference, total=total, seq=n, ref_bits=bits)
            ).to_bytes()
            + body,
            udhi=True,
        )
        for n, body in enumerate(bodies, start=1)
    ]


# --- reassembly -------------------------------------------------------------------------------

Key = tuple[Hashable, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fragment(Generic[T]):
    seq: int
    body: bytes
    context: T  # whatever the caller needs back (the PDU, its sequence number, ...)


@dataclass(frozen=True, slots=True, kw_only=True)
class Assembly(Generic[T]):
    """The parts of one message held so far, in sequence order (all of them when complete)."""

    key: Key
    total: int
    fragments: tuple[Fragment[T], ...]
    first_seen: float
    deadline: float  # when ``expire`` returns it if it is still incomplete

    @property
    def complete(self) -> bool:
        return len(self.fragments) == self.total

    @property
    def body(self) -> bytes:
        """The part bodies joined: decode this, not each part, to heal a split escape pair."""
        return b"".join(f.body for f in self.fragments)

    def text(self, alphabet: Alphabet) -> str | None:
        """The joined bodies decoded, or None for binary and unknown alphabets."""
        return decode_as(self.body, alphabet)


class AddStatus(StrEnum):
    PENDING = "pending"  # held, more parts to come
    COMPLETE = "complete"  # ``assembly`` holds every part
    DUPLICATE = "duplicate"  # the same part again: not held, ``held`` is the original
    REJECTED = "rejected"  # invalid numbering, or no room even with its own message evicted


@dataclass(frozen=True, slots=True, kw_only=True)
class AddResult(Generic[T]):
    status: AddStatus
    assembly: Assembly[T] | None = None
    # DUPLICATE: the part held first under that number (its context answers the copy too).
    held: Fragment[T] | None = None
    # The incomplete message this part's key named before: another message reuses the key (a
    # wrapped or restarted reference counter). The caller decides its fate.
    superseded: Assembly[T] | None = None
    # Incomplete messages dropped, oldest first, to make room for this part within the bounds;
    # under REJECTED the last is the part's own message (this part is not in it).
    evicted: tuple[Assembly[T], ...] = ()


class _Pending(Generic[T]):
    __slots__ = ("deadline", "first_seen", "fragments", "octets", "total")

    def __init__(self, total: int, first_seen: float, deadline: float) -> None:
        self.total = total
        self.first_seen = first_seen
        self.deadline = deadline
        self.fragments: dict[int, Fragment[T]] = {}
        self.octets = 0

    def freeze(self, key: Key) -> Assembly[T]:
        ordered = tuple(self.fragments[s] for s in sorted(self.fragments))
        return Assembly(
            key=key,
            total=self.total,
            fragments=ordered,
            first_seen=self.first_seen,
            deadline=self.deadline,
        )


class Reassembler(Generic[T]):
    """Collects the parts of concatenated messages under a caller-chosen key.

    Key on (session, source, destination, reference), never the reference alone: peers restart
    their reference counters per session. Bounded in messages, parts and octets held (room is
    made before a part is added, by evicting the oldest messages: the bounds are never
    exceeded) and in age (each message's deadline is fixed when its first part arrives;
    ``expire``). Every part given to ``add`` comes back exactly once: in a complete assembly,
    in an evicted, superseded or expired one, from ``pop`` / ``discard``, or at once as
    DUPLICATE / REJECTED. ``now`` must not go backwards. None as a bound: no bound.
    """

    def __init__(
        self,
        *,
        max_parts: int | None = 10_000,
        max_bytes: int = 2_000_000,
        max_age_s: float = 120.0,
        max_messages: int | None = None,
    ) -> None:
        self._pending: dict[Key, _Pending[T]] = {}  # insertion order is age order
        self._parts = 0
        self._bytes = 0
        self.set_limits(
            max_parts=max_parts, max_bytes=max_bytes, max_age_s=max_age_s, max_messages=max_messages
        )

    def set_limits(
        self,
        *,
        max_parts: int | None,
        max_bytes: int,
        max_age_s: float,
        max_messages: int | None,
    ) -> None:
        """New bounds: they apply from the next ``add`` on; messages held keep their deadline."""
        if max_bytes < 1 or max_age_s <= 0:
            raise ValueError("max_bytes and max_age_s must be positive")
        if (max_parts is not None and max_parts < 1) or (
            max_messages is not None and max_messages < 1
        ):
            raise ValueError("max_parts and max_messages must be positive")
        self._max_parts = max_parts
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._max_messages = max_messages

    def __len__(self) -> int:
        return len(self._pending)

    def __contains__(self, key: Key) -> bool:
        return key in self._pending

    @property
    def parts_held(self) -> int:
        return self._parts

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def get(self, key: Key) -> Assembly[T] | None:
        """The parts held under ``key`` (a snapshot; nothing is removed), or None."""
        pending = self._pending.get(key)
        return None if pending is None else pending.freeze(key)

    def contexts(self) -> Iterator[T]:
        """The context of every part held, oldest message first (read-only: do not add or
        remove while iterating)."""
        for pending in self._pending.values():
            for fragment in pending.fragments.values():
                yield fragment.context

    def pop(self, key: Key) -> Assembly[T] | None:
        """Drop and return the message held under ``key``, or None."""
        return self._remove(key) if key in self._pending else None

    def _remove(self, key: Key) -> Assembly[T]:
        pending = self._pending.pop(key)
        self._parts -= len(pending.fragments)
        self._bytes -= pending.octets
        return pending.freeze(key)

    def _full(self, new_message: bool, octets: int) -> bool:
        """True when one more part of ``octets`` would break a bound."""
        return (
            (
                new_message
                and self._max_messages is not None
                and len(self._pending) >= self._max_messages
            )
            or (self._max_parts is not None and self._parts >= self._max_parts)
            or self._bytes + octets > self._max_bytes
        )

    def add(
        self, key: Key, *, seq: int, total: int, body: bytes, now: float, context: T
    ) -> AddResult[T]:
        """Hold one part; the result says whether its message is now complete."""
        fragment = Fragment(seq=seq, body=body, context=context)
        if not 1 <= seq <= total <= MAX_PARTS or len(body) > self._max_bytes:
            return AddResult(status=AddStatus.REJECTED)
        if total == 1:
            single = Assembly(
                key=key,
                total=1,
                fragments=(fragment,),
                first_seen=now,
                deadline=now + self._max_age_s,
            )
            return AddResult(status=AddStatus.COMPLETE, assembly=single)
        superseded: Assembly[T] | None = None
        pending = self._pending.get(key)
        if pending is not None:
            held = pending.fragments.get(seq)
            if pending.total == total and held is not None and held.body == body:
                return AddResult(status=AddStatus.DUPLICATE, held=held)
            if pending.total != total or held is not None:
                superseded = self._remove(key)
                pending = None
        if pending is not None and len(pending.fragments) + 1 == total:
            # The last part: the message leaves at once, so it needs no room.
            pending.fragments[seq] = fragment
            pending.octets += len(body)
            self._parts += 1
            self._bytes += len(body)
            return AddResult(status=AddStatus.COMPLETE, assembly=self._remove(key))
        evicted: list[Assembly[T]] = []
        while self._pending and self._full(pending is None, len(body)):
            oldest = next(iter(self._pending))
            evicted.append(self._remove(oldest))
            if oldest == key:
                return AddResult(
                    status=AddStatus.REJECTED, superseded=superseded, evicted=tuple(evicted)
                )
        if pending is None:
            pending = _Pending[T](total, now, now + self._max_age_s)
            self._pending[key] = pending
        pending.fragments[seq] = fragment
        pending.octets += len(body)
        self._parts += 1
        self._bytes += len(body)
        return AddResult(status=AddStatus.PENDING, superseded=superseded, evicted=tuple(evicted))

    def expire(self, now: float) -> list[Assembly[T]]:
        """Drop and return the incomplete messages whose deadline has come, oldest first."""
        out: list[Assembly[T]] = []
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if now < pending.deadline:
                break
            out.append(self._remove(key))
        return out

    def next_deadline(self) -> float | None:
        """When ``expire`` next has something to return (arm a timer for it), or None."""
        for pending in self._pending.values():
            return pending.deadline
        return None

    def discard(self, predicate: Callable[[Key], bool]) -> list[Assembly[T]]:
        """Drop and return the messages whose key matches (e.g. every key of a closed session)."""
        return [self._remove(k) for k in [k for k in self._pending if predicate(k)]]
