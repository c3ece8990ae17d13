"""UDH parsing and building, concatenation elements, SAR TLV values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text.udh import (
    EMPTY_UDH,
    TAG_SAR_MSG_REF_NUM,
    TAG_SAR_SEGMENT_SEQNUM,
    TAG_SAR_TOTAL_SEGMENTS,
    Concat,
    InformationElement,
    Sar,
    Udh,
    UdhError,
    fill_bits_for_udh,
    parse_udh,
    septets_for_udh,
)

elements = st.builds(
    InformationElement,
    iei=st.integers(min_value=0, max_value=255),
    data=st.binary(max_size=20),
)


class TestParse:
    def test_concat_8bit_at_offset_zero(self) -> None:
        """05 00 03 ref total seq is an 8-bit concatenation; the rest is the body."""
        udh, body = parse_udh(bytes.fromhex("050003A50302") + b"hello")
        assert body == b"hello"
        assert udh.concat == Concat(reference=0xA5, total=3, seq=2, ref_bits=8)
        assert udh.length == 6

    def test_concat_16bit(self) -> None:
        """06 08 04 refHi refLo total seq is a 16-bit concatenation."""
        udh, body = parse_udh(bytes.fromhex("060804BEEF0201") + b"x")
        assert udh.concat == Concat(reference=0xBEEF, total=2, seq=1, ref_bits=16)
        assert body == b"x"

    def test_concat_after_port_addressing_is_found_and_kept(self) -> None:
        """A concatenation element after a 16-bit port element is found, and a rebuilt UDH
        keeps the port element first."""
        raw = bytes.fromhex("0B05040B8423F00003A50201")
        udh, body = parse_udh(raw + b"wap")
        assert body == b"wap"
        assert udh.concat == Concat(reference=0xA5, total=2, seq=1)
        rebuilt = udh.with_concat(Concat(reference=0x11, total=3, seq=3))
        assert rebuilt.to_bytes() == bytes.fromhex("0B05040B8423F00003110303")
        assert rebuilt.without_concat().to_bytes() == bytes.fromhex("0605040B8423F0")

    def test_invalid_concat_element_is_ignored(self) -> None:
        """A concatenation element with count 0, seq 0 or seq > total is not concatenation."""
        for raw in ("050003010000", "050003010200", "050003010203", "0400020102"):
            udh, _ = parse_udh(bytes.fromhex(raw))
            assert udh.concat is None

    @pytest.mark.parametrize(
        "raw",
        ["", "06000301", "0100", "05000401020304", "020003"],
        ids=["empty", "udhl-too-long", "ie-header-cut", "ie-overruns", "ie-overruns-udhl"],
    )
    def test_malformed_raises(self, raw: str) -> None:
        """A UDH whose lengths do not add up raises UdhError."""
        with pytest.raises(UdhError):
            parse_udh(bytes.fromhex(raw))

    @given(st.lists(elements, min_size=1, max_size=8), st.binary(max_size=30))
    def test_build_parse_round_trip(self, ies: list[InformationElement], body: bytes) -> None:
        """parse_udh(Udh(...).to_bytes() + body) gives back the elements and the body."""
        udh = Udh(elements=tuple(ies))
        raw = udh.to_bytes()
        assert len(raw) == udh.length
        assert parse_udh(raw + body) == (udh, body)

    @given(st.binary(max_size=40))
    def test_parse_raises_only_udh_error(self, raw: bytes) -> None:
        """Arbitrary bytes either parse or raise UdhError."""
        try:
            udh, body = parse_udh(raw)
        except UdhError:
            return
        assert udh.to_bytes() + body == raw or (raw[:1] == b"\x00" and body == raw[1:])


class TestBuild:
    def test_with_concat_appends_when_absent(self) -> None:
        """An element list without concatenation gets it at the end."""
        udh = Udh(elements=(InformationElement(iei=0x05, data=bytes(4)),))
        built = udh.with_concat(Concat(reference=0x1234, total=2, seq=1, ref_bits=16))
        assert built.elements[0].iei == 0x05
        assert built.elements[1] == InformationElement(iei=0x08, data=bytes.fromhex("12340201"))

    def test_with_concat_keeps_a_single_concat_element(self) -> None:
        """A UDH carrying two concatenation elements is rebuilt with one, at the first's place."""
        raw = bytes.fromhex("0F000301020104020000080401020201")
        udh, _ = parse_udh(raw)
        built = udh.with_concat(Concat(reference=9, total=2, seq=2))
        assert [ie.iei for ie in built.elements] == [0x00, 0x04]

    def test_empty_udh_is_no_bytes(self) -> None:
        """A UDH without elements is absent from the message."""
        assert EMPTY_UDH.to_bytes() == b""
        assert EMPTY_UDH.length == 0

    def test_oversize_element_and_udh_raise(self) -> None:
        """Element data over 255 octets, or a UDH over 255, cannot be built."""
        with pytest.raises(UdhError):
            InformationElement(iei=0x20, data=bytes(256))
        big = InformationElement(iei=0x20, data=bytes(200))
        with pytest.raises(UdhError):
            Udh(elements=(big, big)).to_bytes()

    @pytest.mark.parametrize(
        ("reference", "total", "seq", "bits"),
        [
            (256, 2, 1, 8),
            (-1, 2, 1, 8),
            (0x10000, 2, 1, 16),
            (1, 2, 3, 8),
            (1, 0, 0, 8),
            (1, 2, 1, 7),
        ],
    )
    def test_concat_validates(self, reference: int, total: int, seq: int, bits: int) -> None:
        """A reference beyond its bits or a sequence outside 1..total is refused."""
        with pytest.raises(UdhError):
            Concat(reference=reference, total=total, seq=seq, ref_bits=bits)


class TestSeptetAlignment:
    @pytest.mark.parametrize(
        ("octets", "septets", "fill"),
        [(0, 0, 0), (6, 7, 1), (7, 8, 0), (12, 14, 2), (13, 15, 1), (1, 2, 6)],
    )
    def test_udh_in_septets(self, octets: int, septets: int, fill: int) -> None:
        """A UDH occupies ceil(octets*8/7) septets, padded with fill bits to a septet boundary."""
        assert septets_for_udh(octets) == septets
        assert fill_bits_for_udh(octets) == fill
        assert octets * 8 + fill == septets * 7


class TestSar:
    def test_bytes_round_trip(self) -> None:
        """SAR values come from and go to TLV values of 2, 1 and 1 octets."""
        sar = Sar.from_bytes(b"\x12\x34", b"\x03", b"\x02")
        assert sar == Sar(sar_msg_ref_num=0x1234, sar_total_segments=3, sar_segment_seqnum=2)
        assert sar.to_tlvs() == (
            (TAG_SAR_MSG_REF_NUM, b"\x12\x34"),
            (TAG_SAR_TOTAL_SEGMENTS, b"\x03"),
            (TAG_SAR_SEGMENT_SEQNUM, b"\x02"),
        )

    def test_tags_are_the_smpp_ones(self) -> None:
        """The tags are 0x020C, 0x020E and 0x020F as in SMPP 3.4."""
        assert (TAG_SAR_MSG_REF_NUM, TAG_SAR_TOTAL_SEGMENTS, TAG_SAR_SEGMENT_SEQNUM) == (
            0x020C,
            0x020E,
            0x020F,
        )

    def test_concat_conversion(self) -> None:
        """SAR and a 16-bit concatenation element carry the same numbers."""
        sar = Sar(sar_msg_ref_num=700, sar_total_segments=4, sar_segment_seqnum=4)
        concat = sar.to_concat()
        assert concat == Concat(reference=700, total=4, seq=4, ref_bits=16)
        assert Sar.from_concat(concat) == sar

    @pytest.mark.parametrize(
        "values",
        [
            (b"\x00", b"\x01", b"\x01"),
            (b"\x00\x01", b"\x00", b"\x00"),
            (b"\x00\x01", b"\x02", b"\x03"),
            (b"\x00\x01", b"\x01\x00", b"\x01"),
        ],
    )
    def test_invalid_values_raise(self, values: tuple[bytes, bytes, bytes]) -> None:
        """Wrong sizes and sequence numbers outside 1..total raise UdhError."""
        with pytest.raises(UdhError):
            Sar.from_bytes(*values)

    def test_reference_beyond_16_bits_raises(self) -> None:
        """sar_msg_ref_num is two octets."""
        with pytest.raises(UdhError):
            Sar(sar_msg_ref_num=0x10000, sar_total_segments=1, sar_segment_seqnum=1)
