"""UCS-2 as UTF-16BE with surrogate pairs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.text import ucs2


class TestUcs2:
    @given(st.text())
    def test_round_trip(self, text: str) -> None:
        """decode(encode(s)) == s for any text without lone surrogates."""
        assert ucs2.decode(ucs2.encode(text)) == text

    @given(st.text())
    def test_unit_len_counts_code_units(self, text: str) -> None:
        """unit_len is the encoded length in 16-bit units."""
        assert ucs2.unit_len(text) * 2 == len(ucs2.encode(text))

    def test_emoji_is_a_surrogate_pair(self) -> None:
        """A character beyond the BMP is written as a surrogate pair and counts two units."""
        assert ucs2.encode("😀") == bytes.fromhex("D83DDE00")
        assert ucs2.unit_len("a😀") == 3
        assert ucs2.units_of("😀") == 2

    def test_lone_surrogate_is_replaced(self) -> None:
        """A high surrogate without its pair decodes to U+FFFD, the rest intact."""
        assert ucs2.decode(bytes.fromhex("D83D0041")) == "\ufffdA"

    def test_odd_trailing_octet_is_replaced(self) -> None:
        """An odd octet at the end decodes to U+FFFD instead of failing."""
        assert ucs2.decode(b"\x00A\x00") == "A\ufffd"

    def test_lone_surrogate_in_text_still_encodes(self) -> None:
        """Every str is writable in UCS-2, so it can always be the fallback coding."""
        assert ucs2.encode("\ud83d") == bytes.fromhex("D83D")
