"""User Data Header (GSM 03.40 9.2.3.24) and the SMPP ``sar_*`` TLV values.

A UDH is ``UDHL`` (one octet: the length of what follows) and information elements
``IEI IEL data``. Concatenation is IEI 0x00 (8-bit reference) or 0x08 (16-bit reference), and it
may sit anywhere among the elements: never assume ``05 00 03`` at offset 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.text.gsm7 import TextError

IEI_CONCAT_8BIT = 0x00
IEI_CONCAT_16BIT = 0x08
IEI_PORT_8BIT = 0x04
IEI_PORT_16BIT = 0x05

# SMPP 3.4 TLV tags (copied as ints: the text package does not import gateway.smpp).
TAG_SAR_MSG_REF_NUM = 0x020C
TAG_SAR_TOTAL_SEGMENTS = 0x020E
TAG_SAR_SEGMENT_SEQNUM = 0x020F


class UdhError(TextError):
    """A UDH (or a concatenation value) is malformed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InformationElement:
    iei: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.iei <= 0xFF or len(self.data) > 0xFF:
            raise UdhError(f"information element 0x{self.iei:02X} out of range")

    def to_bytes(self) -> bytes:
        return bytes((self.iei, len(self.data))) + self.data


@dataclass(frozen=True, slots=True, kw_only=True)
class Concat:
    """Concatenation: ``reference`` shared by all parts, ``total`` parts, this one is ``seq``."""

    reference: int
    total: int
    seq: int
    ref_bits: int = 8

    def __post_init__(self) -> None:
        if self.ref_bits not in (8, 16):
            raise UdhError(f"ref_bits must be 8 or 16, got {self.ref_bits}")
        if not 0 <= self.reference < (1 << self.ref_bits):
            raise UdhError(f"reference {self.reference} does not fit {self.ref_bits} bits")
        if not 1 <= self.seq <= self.total <= 0xFF:
            raise UdhError(f"bad concatenation seq {self.seq} of {self.total}")

    def to_element(self) -> InformationElement:
        if self.ref_bits == 8:
            data = bytes((self.reference, self.total, self.seq))
            return InformationElement(iei=IEI_CONCAT_8BIT, data=data)
        data = self.reference.to_bytes(2, "big") + bytes((self.total, self.seq))
        return InformationElement(iei=IEI_CONCAT_16BIT, data=data)

    @classmethod
    def from_element(cls, ie: InformationElement) -> Concat | None:
        """The concatenation an element carries; None if it is not one or is invalid.

        GSM 03.40 tells a receiver to ignore an element with a zero count or a sequence number
        out of range, so an invalid one is "not concatenated" rather than an error.
        """
        if ie.iei == IEI_CONCAT_8BIT and len(ie.data) == 3:
            ref, bits, total, seq = ie.data[0], 8, ie.data[1], ie.data[2]
        elif ie.iei == IEI_CONCAT_16BIT and len(ie.data) == 4:
            ref, bits = int.from_bytes(ie.data[:2], "big"), 16
            total, seq = ie.data[2], ie.data[3]
        else:
            return None
        if not 1 <= seq <= total:
            return None
        return cls(reference=ref, total=total, seq=seq, ref_bits=bits)


def _is_concat(ie: InformationElement) -> bool:
    return ie.iei in (IEI_CONCAT_8BIT, IEI_CONCAT_16BIT)


@dataclass(frozen=True, slots=True, kw_only=True)
class Udh:
    elements: tuple[InformationElement, ...] = ()

    def to_bytes(self) -> bytes:
        """``UDHL`` and the elements; empty when there are no elements (no UDH at all)."""
        if not self.elements:
            return b""
        body = b"".join(ie.to_bytes() for ie in self.elements)
        if len(body) > 0xFF:
            raise UdhError(f"UDH of {len(body)} octets is too long")
        return bytes((len(body),)) + body

    @property
    def length(self) -> int:
        """Octets the UDH takes in the message, UDHL included (0 without elements)."""
        if not self.elements:
            return 0
        return 1 + sum(2 + len(ie.data) for ie in self.elements)

    @property
    def concat(self) -> Concat | None:
        """The first valid concatenation element, wherever it sits."""
        for ie in self.elements:
            if _is_concat(ie):
                found = Concat.from_element(ie)
                if found is not None:
                    return found
        return None

    def without_concat(self) -> Udh:
        """The other elements, in order."""
        return Udh(elements=tuple(ie for ie in self.elements if not _is_concat(ie)))

    def with_concat(self, concat: Concat) -> Udh:
        """This UDH with its concatenation element replaced in place (appended if none).

        Any further concatenation element (a peer's mistake) is dropped, so parts carry one.
        """
        new = concat.to_element()
        out: list[InformationElement] = []
        placed = False
        for ie in self.elements:
            if _is_concat(ie):
                if not placed:
                    out.append(new)
                    placed = True
            else:
                out.append(ie)
        if not placed:
            out.append(new)
        return Udh(elements=tuple(out))


EMPTY_UDH = Udh()


def parse_udh(message: bytes) -> tuple[Udh, bytes]:
    """Split a message whose UDHI is set into its UDH and the rest; raises ``UdhError``."""
    if not message:
        raise UdhError("UDHI set but the message is empty")
    udhl = message[0]
    if udhl + 1 > len(message):
        raise UdhError(f"UDHL {udhl} exceeds the message of {len(message)} octets")
    elements: list[InformationElement] = []
    i, end = 1, 1 + udhl
    while i < end:
        if i + 2 > end:
            raise UdhError(f"information element header cut at octet {i}")
        iei, iel = message[i], message[i + 1]
        if i + 2 + iel > end:
            raise UdhError(f"information element 0x{iei:02X} overruns the UDH")
        elements.append(InformationElement(iei=iei, data=message[i + 2 : i + 2 + iel]))
        i += 2 + iel
    return Udh(elements=tuple(elements)), message[end:]


def septets_for_udh(udh_length: int) -> int:
    """Septets a UDH of ``udh_length`` octets occupies in 7-bit user data (fill bits included)."""
    return (udh_length * 8 + 6) // 7


def fill_bits_for_udh(udh_length: int) -> int:
    """Fill bits between a UDH of ``udh_length`` octets and the first septet (0..6)."""
    return (7 - (udh_length * 8) % 7) % 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Sar:
    """The values of the ``sar_msg_ref_num`` / ``sar_total_segments`` / ``sar_segment_seqnum``
    TLVs (2, 1 and 1 octets)."""

    sar_msg_ref_num: int
    sar_total_segments: int
    sar_segment_seqnum: int

    def __post_init__(self) -> None:
        if not 0 <= self.sar_msg_ref_num <= 0xFFFF:
            raise UdhError(f"sar_msg_ref_num {self.sar_msg_ref_num} out of range")
        if not 1 <= self.sar_segment_seqnum <= self.sar_total_segments <= 0xFF:
            raise UdhError(
                f"bad SAR segment {self.sar_segment_seqnum} of {self.sar_total_segments}"
            )

    @classmethod
    def from_bytes(cls, msg_ref_num: bytes, total_segments: bytes, segment_seqnum: bytes) -> Sar:
        """From the three TLV values; raises ``UdhError`` on a wrong size or value."""
        if len(msg_ref_num) != 2 or len(total_segments) != 1 or len(segment_seqnum) != 1:
            raise UdhError("sar_* TLV values have the wrong length")
        return cls(
            sar_msg_ref_num=int.from_bytes(msg_ref_num, "big"),
            sar_total_segments=total_segments[0],
            sar_segment_seqnum=segment_seqnum[0],
        )

    def to_tlvs(self) -> tuple[tuple[int, bytes], ...]:
        """``(tag, value)`` pairs in tag order, ready for the PDU's TLV list."""
        return (
            (TAG_SAR_MSG_REF_NUM, self.sar_msg_ref_num.to_bytes(2, "big")),
            (TAG_SAR_TOTAL_SEGMENTS, bytes((self.sar_total_segments,))),
            (TAG_SAR_SEGMENT_SEQNUM, bytes((self.sar_segment_seqnum,))),
        )

    def to_concat(self) -> Concat:
        return Concat(
            reference=self.sar_msg_ref_num,
            total=self.sar_total_segments,
            seq=self.sar_segment_seqnum,
            ref_bits=16,
        )

    @classmethod
    def from_concat(cls, concat: Concat) -> Sar:
        return cls(
            sar_msg_ref_num=concat.reference,
            sar_total_segments=concat.total,
            sar_segment_seqnum=concat.seq,
        )
