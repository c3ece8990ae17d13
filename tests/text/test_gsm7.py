"""GSM 03.38 default alphabet: encode, decode, lengths and 7-bit packing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text import gsm7
from gateway.text.gsm7 import TextEncodeError, TextError

BASIC = gsm7.decode(bytes(i for i in range(128) if i != gsm7.ESCAPE))
EXTENSION = "".join(sorted(gsm7.EXTENSION_CHARACTERS))
gsm_text = st.text(alphabet=st.sampled_from(BASIC + EXTENSION))
septets = st.binary().map(lambda b: bytes(x & 0x7F for x in b))


class TestTables:
    def test_basic_table_has_127_distinct_characters(self) -> None:
        """Every septet but the escape maps to its own character."""
        assert len(BASIC) == 127
        assert len(set(BASIC)) == 127

    def test_known_code_points(self) -> None:
        """A few fixed points of the table are where TS 23.038 puts them."""
        assert gsm7.encode("@£$¥\n\rΔ_ ¡¿àÄ§") == bytes(
            [0x00, 0x01, 0x02, 0x03, 0x0A, 0x0D, 0x10, 0x11, 0x20, 0x40, 0x60, 0x7F, 0x5B, 0x5F]
        )

    def test_extension_characters_are_escape_pairs(self) -> None:
        """The extension table writes form feed, ^ { } \\ [ ~ ] | and the euro sign after 1B."""
        assert gsm7.encode("\x0c^{}\\[~]|€") == bytes.fromhex(
            "1B0A 1B14 1B28 1B29 1B2F 1B3C 1B3D 1B3E 1B40 1B65".replace(" ", "")
        )
        assert frozenset("\x0c^{}\\[~]|€") == gsm7.EXTENSION_CHARACTERS


class TestEncodeDecode:
    @given(gsm_text)
    def test_round_trip(self, text: str) -> None:
        """decode(encode(s)) == s for any text over the alphabet and its extension."""
        assert gsm7.decode(gsm7.encode(text)) == text

    @given(gsm_text)
    def test_septet_len_matches_encoding(self, text: str) -> None:
        """septet_len counts what encode writes: two septets per extension character."""
        assert gsm7.septet_len(text) == len(gsm7.encode(text))
        assert gsm7.can_encode(text)

    def test_unencodable_character_raises_typed_error(self) -> None:
        """A character outside the alphabet raises TextEncodeError naming its position."""
        with pytest.raises(TextEncodeError) as info:
            gsm7.encode("ab\u2019c")
        assert info.value.position == 2
        assert info.value.character == "\u2019"
        assert isinstance(info.value, TextError)
        assert isinstance(info.value, ValueError)

    def test_can_encode_rejects_outside_characters(self) -> None:
        """Lowercase c-cedilla, emoji and smart quotes are not GSM 7-bit."""
        assert not gsm7.can_encode("ç")
        assert not gsm7.can_encode("hi 😀")
        with pytest.raises(TextEncodeError):
            gsm7.septet_len("“quoted”")

    def test_trailing_lone_escape_is_a_space(self) -> None:
        """A message ending in a lone escape decodes with a space in its place."""
        assert gsm7.decode(b"STOP\x1b") == "STOP "

    def test_unknown_extension_code_falls_back_to_basic_table(self) -> None:
        """An escape before an undefined code shows the basic-table character (TS 23.038)."""
        assert gsm7.decode(b"\x1b\x41") == "A"

    def test_double_escape_is_a_space(self) -> None:
        """1B 1B, reserved for a further extension table, shows a space."""
        assert gsm7.decode(b"a\x1b\x1bb") == "a b"

    def test_high_bit_octets_are_replaced(self) -> None:
        """Octets that are not septets decode to U+FFFD instead of failing."""
        assert gsm7.decode(b"a\xe9") == "a\ufffd"
        assert gsm7.decode(b"\x1b\xff") == "\ufffd"

    @given(st.binary())
    def test_decode_never_fails(self, data: bytes) -> None:
        """Any octet string decodes to some text."""
        assert isinstance(gsm7.decode(data), str)


class TestPacking:
    def test_known_vector(self) -> None:
        """'hellohello' packs to the classic E8329BFD4697D9EC37."""
        packed = gsm7.pack(gsm7.encode("hellohello"))
        assert packed == bytes.fromhex("E8329BFD4697D9EC37")
        assert gsm7.unpack(packed, 10) == gsm7.encode("hellohello")

    def test_fill_bit_after_six_octet_udh(self) -> None:
        """With one fill bit the first septet starts at bit 1 of the first octet."""
        assert gsm7.pack(b"\x7f", fill_bits=1) == bytes([0xFE])
        assert gsm7.unpack(bytes([0xFE]), 1, fill_bits=1) == b"\x7f"

    @given(septets, st.integers(min_value=0, max_value=6))
    def test_round_trip_with_fill_bits(self, data: bytes, fill: int) -> None:
        """unpack(pack(s, fill), len(s), fill) == s, in the fewest octets."""
        packed = gsm7.pack(data, fill_bits=fill)
        assert len(packed) == (fill + 7 * len(data) + 7) // 8
        assert gsm7.unpack(packed, len(data), fill_bits=fill) == data

    def test_pack_rejects_non_septets_and_bad_fill(self) -> None:
        """Octets above 0x7F and fill bits outside 0..6 are errors."""
        with pytest.raises(TextError):
            gsm7.pack(b"\x80")
        with pytest.raises(TextError):
            gsm7.pack(b"a", fill_bits=7)
        with pytest.raises(TextError):
            gsm7.unpack(b"a", 1, fill_bits=-1)

    def test_unpack_rejects_count_beyond_data(self) -> None:
        """Asking for more septets than the octets hold is an error."""
        with pytest.raises(TextError):
            gsm7.unpack(bytes(7), 9)
        assert len(gsm7.unpack(bytes(7), 8)) == 8
