"""content_of: one pass over the TLVs reads what a lookup per tag reads."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.messages.content import PartInfo, content_of
from gateway.smpp import pdu as p
from gateway.smpp.constants import EsmClass, Tag
from gateway.text.dcs import alphabet_for
from gateway.text.udh import EMPTY_UDH, UdhError, parse_udh

_TAGS = (
    Tag.MESSAGE_PAYLOAD,
    Tag.SAR_MSG_REF_NUM,
    Tag.SAR_TOTAL_SEGMENTS,
    Tag.SAR_SEGMENT_SEQNUM,
    Tag.USER_MESSAGE_REFERENCE,
)


def by_lookups(pdu: p.SubmitSm | p.DataSm) -> tuple[bytes, PartInfo | None, bool]:
    """The body, part and place of the text, read with one ``pdu.tlv`` per tag."""
    payload = pdu.tlv(Tag.MESSAGE_PAYLOAD)
    raw = payload if payload is not None else getattr(pdu, "short_message", b"")
    body = raw
    part = None
    if pdu.esm_class & EsmClass.UDHI and raw:
        try:
            udh, body = parse_udh(raw)
        except UdhError:
            udh, body = EMPTY_UDH, raw
        if udh.concat is not None and udh.concat.total > 1:
            part = PartInfo(udh.concat.reference, udh.concat.total, udh.concat.seq)
    ref = pdu.tlv(Tag.SAR_MSG_REF_NUM)
    total = pdu.tlv(Tag.SAR_TOTAL_SEGMENTS)
    seq = pdu.tlv(Tag.SAR_SEGMENT_SEQNUM)
    complete = ref is not None and total is not None and seq is not None
    if part is None and complete and len(total) == 1 and len(seq) == 1 and total[0] > 1:
        part = PartInfo(int.from_bytes(ref, "big"), total[0], seq[0])
    return body, part, payload is not None


tlv_lists = st.lists(
    st.builds(p.Tlv, st.sampled_from(_TAGS), st.binary(max_size=3)),
    max_size=8,
)


@given(
    tlvs=tlv_lists,
    short=st.binary(max_size=12),
    udhi=st.booleans(),
    data_sm=st.booleans(),
    coding=st.sampled_from((0x00, 0x03, 0x04, 0x08)),
)
def test_one_pass_reads_what_lookups_read(
    tlvs: list[p.Tlv], short: bytes, udhi: bool, data_sm: bool, coding: int
) -> None:
    """Any TLVs, repeated tags too (the first counts): the same body, part and place."""
    esm = EsmClass.UDHI if udhi else 0
    pdu: p.SubmitSm | p.DataSm
    if data_sm:
        pdu = p.DataSm(esm_class=esm, data_coding=coding, tlvs=tuple(tlvs))
    else:
        pdu = p.SubmitSm(esm_class=esm, data_coding=coding, short_message=short, tlvs=tuple(tlvs))
    content = content_of(pdu)
    assert (content.body, content.part, content.in_payload) == by_lookups(pdu)
    assert content.alphabet is alphabet_for(coding)


def test_first_sar_tlvs_count() -> None:
    """With SAR TLVs repeated, the first of each names the part."""
    tlvs = (
        p.Tlv(Tag.SAR_MSG_REF_NUM, b"\x00\x07"),
        p.Tlv(Tag.SAR_TOTAL_SEGMENTS, b"\x03"),
        p.Tlv(Tag.SAR_SEGMENT_SEQNUM, b"\x02"),
        p.Tlv(Tag.SAR_MSG_REF_NUM, b"\x00\x09"),
        p.Tlv(Tag.SAR_SEGMENT_SEQNUM, b"\x01"),
    )
    content = content_of(p.SubmitSm(short_message=b"Hi", tlvs=tlvs))
    assert content.part == PartInfo(7, 3, 2)
    assert content.body == b"Hi"
    assert not content.in_payload
