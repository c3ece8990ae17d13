"""What a message PDU carries: its body, UDH, concatenation and text. Pure helpers.

The relay reads message content in one place so MT checks, MO keyword detection and footers all
agree on where the text is (``short_message`` or ``message_payload``), how it is coded, and which
part of a long message it is (UDH IEI 0x00 / 0x08 wherever it sits, or the SAR TLVs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

from gateway.smpp import pdu as p
from gateway.smpp.constants import EsmClass, Tag
from gateway.text.dcs import Alphabet, alphabet_for, decode_as
from gateway.text.udh import EMPTY_UDH, Udh, UdhError, parse_udh


@dataclass(frozen=True, slots=True)
class PartInfo:
    """Where this PDU sits in a concatenated message."""

    reference: int
    total: int
    seq: int


class Content(NamedTuple):
    """What a message PDU carries (a named tuple: read for every MT and MO, cheap to build)."""

    body: bytes  # the message octets without the UDH
    udh: Udh
    part: PartInfo | None  # None: a message in one PDU
    alphabet: Alphabet
    in_payload: bool  # the message travels in message_payload, not short_message

    def text(self) -> str | None:
        """The decoded text of this PDU, or None for binary and unknown codings."""
        return decode_as(self.body, self.alphabet)


Message = p.SubmitSm | p.DeliverSm | p.DataSm | p.SubmitMulti

# Plain ints: compared once per TLV of every message.
_PAYLOAD: Final = int(Tag.MESSAGE_PAYLOAD)
_SAR_REF: Final = int(Tag.SAR_MSG_REF_NUM)
_SAR_TOTAL: Final = int(Tag.SAR_TOTAL_SEGMENTS)
_SAR_SEQ: Final = int(Tag.SAR_SEGMENT_SEQNUM)


def content_of(pdu: Message, smsc_default: Alphabet = Alphabet.GSM7) -> Content:
    """Read the content of a message PDU. A malformed UDH counts as body (left untouched)."""
    tlvs = pdu.tlvs
    payload: bytes | None = None
    ref: bytes | None = None
    total: bytes | None = None
    seq: bytes | None = None
    if tlvs:
        # One pass over the TLVs for all four tags (the first of each counts, as ``pdu.tlv``).
        for tlv in tlvs:
            tag = tlv.tag
            if tag == _PAYLOAD:
                if payload is None:
                    payload = tlv.value
            elif tag == _SAR_REF:
                if ref is None:
                    ref = tlv.value
            elif tag == _SAR_TOTAL:
                if total is None:
                    total = tlv.value
            elif tag == _SAR_SEQ and seq is None:
                seq = tlv.value
    in_payload = payload is not None
    raw = payload if payload is not None else getattr(pdu, "short_message", b"")
    udh = EMPTY_UDH
    body = raw
    part: PartInfo | None = None
    if pdu.esm_class & EsmClass.UDHI and raw:
        try:
            udh, body = parse_udh(raw)
        except UdhError:
            udh, body = EMPTY_UDH, raw
        concat = udh.concat
        if concat is not None and concat.total > 1:
            part = PartInfo(concat.reference, concat.total, concat.seq)
    if (
        part is None
        and ref is not None
        and total is not None
        and seq is not None
        and len(total) == 1
        and len(seq) == 1
        and total[0] > 1
    ):
        part = PartInfo(int.from_bytes(ref, "big"), total[0], seq[0])
    return Content(body, udh, part, alphabet_for(pdu.data_coding, smsc_default), in_payload)
