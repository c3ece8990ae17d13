"""data_coding to alphabet, and text decode / encode per data_coding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text.dcs import (
    Alphabet,
    alphabet_for,
    can_encode,
    decode_as,
    decode_text,
    encode_text,
    message_class,
    with_alphabet,
)
from gateway.text.gsm7 import TextEncodeError, TextError

G, L, U, A, B, X = (
    Alphabet.GSM7,
    Alphabet.LATIN1,
    Alphabet.UCS2,
    Alphabet.IA5,
    Alphabet.BINARY,
    Alphabet.UNKNOWN,
)


class TestAlphabetFor:
    @pytest.mark.parametrize(
        ("data_coding", "expected"),
        [
            (0x00, G),
            (0x01, A),
            (0x02, B),
            (0x03, L),
            (0x04, B),
            (0x05, X),
            (0x06, X),
            (0x07, X),
            (0x08, U),
            (0x09, X),
            (0x0A, X),
            (0x0B, X),
            (0x0D, X),
            (0x0E, X),
            (0x0F, X),
            (0x10, G),
            (0x11, G),
            (0x14, B),
            (0x18, U),
            (0x1C, X),
            (0x20, X),
            (0x38, X),
            (0x40, G),
            (0x48, U),
            (0x55, B),
            (0x60, X),
            (0x80, X),
            (0xBF, X),
            (0xC0, G),
            (0xD3, G),
            (0xE0, U),
            (0xF0, G),
            (0xF3, G),
            (0xF4, B),
            (0xF7, B),
            (0xF8, X),
        ],
        ids=lambda v: f"0x{v:02X}" if isinstance(v, int) else v.value,
    )
    def test_table(self, data_coding: int, expected: Alphabet) -> None:
        """SMPP values below 0x10 and the GSM 03.38 coding groups above map as specified."""
        assert alphabet_for(data_coding) is expected

    def test_smsc_default_is_configurable(self) -> None:
        """data_coding 0 is whatever the SMSC default is configured to be."""
        assert alphabet_for(0, Alphabet.LATIN1) is Alphabet.LATIN1
        assert alphabet_for(0x03, Alphabet.IA5) is Alphabet.LATIN1

    @given(st.integers(min_value=0, max_value=255))
    def test_every_value_has_an_alphabet(self, data_coding: int) -> None:
        """No data_coding value raises; text alphabets are exactly the four known ones."""
        a = alphabet_for(data_coding)
        assert a.is_text == (a in (G, L, U, A))

    def test_message_class(self) -> None:
        """The message class is read from the general group with bit 4 and from group 0xF."""
        assert message_class(0x00) is None
        assert message_class(0x10) == 0
        assert message_class(0x13) == 3
        assert message_class(0x03) is None
        assert message_class(0x0B) is None
        assert message_class(0x08) is None
        assert message_class(0xF1) == 1
        assert message_class(0x42) is None
        assert message_class(0xC0) is None


class TestWithAlphabet:
    @pytest.mark.parametrize(
        ("data_coding", "alphabet", "expected"),
        [
            (0x00, U, 0x08),
            (0x00, G, 0x00),
            (0x03, L, 0x03),
            (0x03, U, 0x08),
            (0x01, U, 0x08),
            (0xF1, U, 0x19),
            (0x11, U, 0x19),
            (0x10, G, 0x10),
            (0x40, U, 0x48),
            (0xD2, U, 0xE2),
            (0xE2, G, 0xD2),
            (0x08, G, 0x00),
        ],
    )
    def test_table(self, data_coding: int, alphabet: Alphabet, expected: int) -> None:
        """A rewrite keeps what the data_coding said (class, group) and changes the alphabet."""
        assert with_alphabet(data_coding, alphabet) == expected
        assert alphabet_for(expected) is alphabet

    def test_binary_is_refused(self) -> None:
        """Nothing is ever rewritten into a binary coding."""
        with pytest.raises(TextError):
            with_alphabet(0x00, Alphabet.BINARY)


class TestDecodeEncode:
    def test_decode_text_per_coding(self) -> None:
        """Each text coding decodes its own bytes; binary and unknown give None."""
        assert decode_text(b"\x00\x1b\x65", 0x00) == "@€"
        assert decode_text(b"caf\xe9", 0x03) == "café"
        assert decode_text(b"caf\xe9", 0x00, Alphabet.LATIN1) == "café"
        assert decode_text(b"STOP", 0x01) == "STOP"
        assert decode_text(b"\xff", 0x01) == "\ufffd"
        assert decode_text(bytes.fromhex("00530054004f0050"), 0x08) == "STOP"
        assert decode_text(b"STOP", 0x04) is None
        assert decode_text(b"STOP", 0xF4) is None
        assert decode_text(b"STOP", 0x24) is None
        assert decode_as(b"x", Alphabet.UNKNOWN) is None

    @given(st.text(alphabet=st.characters(max_codepoint=0xFF)))
    def test_latin1_round_trip(self, text: str) -> None:
        """decode(encode(s)) == s over Latin-1."""
        assert decode_text(encode_text(text, L), 0x03) == text

    @given(st.text(alphabet=st.characters(max_codepoint=0x7F)))
    def test_ia5_round_trip(self, text: str) -> None:
        """decode(encode(s)) == s over IA5 / ASCII."""
        assert decode_text(encode_text(text, A), 0x01) == text

    @given(st.text())
    def test_ucs2_round_trip(self, text: str) -> None:
        """decode(encode(s)) == s over UCS-2, surrogate pairs included."""
        assert decode_text(encode_text(text, U), 0x08) == text

    def test_encode_outside_alphabet_raises(self) -> None:
        """Latin-1 and IA5 raise TextEncodeError at the first character they lack."""
        with pytest.raises(TextEncodeError) as info:
            encode_text("a€", L)
        assert info.value.position == 1
        with pytest.raises(TextEncodeError):
            encode_text("é", A)
        with pytest.raises(TextError):
            encode_text("x", B)

    def test_can_encode(self) -> None:
        """can_encode agrees with what each alphabet holds."""
        assert can_encode("€", G)
        assert not can_encode("€", L)
        assert can_encode("é", L)
        assert not can_encode("é", A)
        assert can_encode("😀", U)
        assert not can_encode("a", B)
