"""The fast paths of the MT text checks give exactly what the general code gives."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from gateway.consent import keywords
from gateway.consent.keywords import normalise_text
from gateway.text import footer, gsm7
from gateway.text.footer import already_has_opt_out

# Words the opt-out patterns are made of, so generated texts often come near to matching.
_FRAGMENTS = (
    "reply",
    "text",
    "txt",
    "send",
    "stop",
    "STOP",
    "stop all",
    "unsubscribe",
    "unsub",
    "opt-out",
    "opt out",
    "optout",
    "arrêt",
    "ARRET",
    "end",
    "quit",
    "cancel",
    "remove",
    "revoke",
    "to",
    "2",
    "=",
    "http://x.example/",
    "www.",
    "non-stop",
    "with the word",
    '"',
    "\u201c",
    "'",
    ".",
    ":",
    "!",
    "-",
    "_",
    " ",
    "\t",
    "\ufeff",
    "\uff33",
)
_TEXTS = st.lists(st.sampled_from(_FRAGMENTS) | st.text(max_size=4), max_size=12).map("".join)
_ASCII = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=40)


def _decode_loop(data: bytes) -> str:
    """The septet-by-septet decoder, the reference for the table fast path."""
    out: list[str] = []
    for b in data:
        out.append("\ufffd" if b > 0x7F else gsm7._BASIC[b])
    return "".join(out)


def _has_opt_out_slow(text: str) -> bool:
    """``already_has_opt_out`` without its shortcuts."""
    folded = unicodedata.normalize("NFKC", text).translate(footer._QUOTES).casefold()
    return any(p.search(folded) for p in footer._OPT_OUT_PATTERNS)


class TestGsm7DecodeFastPath:
    @given(st.binary(max_size=200).map(lambda b: b.replace(b"\x1b", b"")))
    def test_escape_free_data_decodes_as_the_loop_does(self, data: bytes) -> None:
        """Octets without an escape decode one character each, U+FFFD for the high ones."""
        assert gsm7.decode(data) == _decode_loop(data)

    @given(st.binary(max_size=200))
    def test_any_data_decodes_with_or_without_escapes(self, data: bytes) -> None:
        """Data with escapes still takes the lenient loop (escape pairs read as one char)."""
        text = gsm7.decode(data)
        if b"\x1b" not in data:
            assert len(text) == len(data)
        else:
            assert len(text) < len(data) or data.endswith(b"\x1b")

    def test_text_round_trips(self) -> None:
        """Encoded basic-table text without escapes decodes back to itself."""
        assert gsm7.decode(gsm7.encode("Hello @ 5$ ÄÖ")) == "Hello @ 5$ ÄÖ"


class TestNormaliseAsciiFastPath:
    def test_ascii_hyphens_are_the_fast_paths(self) -> None:
        """The fast path replaces "-" and "_": exactly the ASCII members of the hyphen set."""
        assert {h for h in keywords._HYPHENS if h.isascii()} == {"-", "_"}

    @given(_ASCII)
    def test_ascii_text_normalises_as_the_general_path(self, text: str) -> None:
        """ASCII text gets the same normal form as the step-by-step Unicode path."""
        assert normalise_text(text) == keywords._normalise_unicode(text)

    @given(_TEXTS)
    def test_keyword_like_text_normalises_as_the_general_path(self, text: str) -> None:
        """Texts made of keyword fragments, ASCII or not, normalise as the general path."""
        assert normalise_text(text) == keywords._normalise_unicode(text)

    def test_ascii_keyword_is_normalised(self) -> None:
        """Punctuation, case, hyphens and inner spacing read as in the documented steps."""
        assert normalise_text("  Opt-Out!!\t ") == "opt out"


class TestAlreadyHasOptOutShortcuts:
    @given(_TEXTS)
    def test_matches_the_plain_pattern_search(self, text: str) -> None:
        """The ASCII and hint shortcuts never change the answer."""
        assert already_has_opt_out(text) == _has_opt_out_slow(text)

    @given(_ASCII)
    def test_ascii_matches_the_plain_pattern_search(self, text: str) -> None:
        """Arbitrary ASCII text gets the answer the full search gives."""
        assert already_has_opt_out(text) == _has_opt_out_slow(text)

    def test_fullwidth_and_accented_instructions_are_found(self) -> None:
        """Non-ASCII instructions still pass through NFKC and casefold."""
        assert already_has_opt_out("Reply \uff33\uff34\uff2f\uff30 to end")
        assert already_has_opt_out("Répondez: text ARRÊT")

    def test_plain_text_has_none(self) -> None:
        """A message without any opt-out word needs no pattern search and has no opt-out."""
        assert not already_has_opt_out("ACME: your order 4711 has shipped. Thx")


class TestAsciiLowerFromOctets:
    @given(st.binary(max_size=200))
    def test_ascii_lower_is_the_decoded_text_lowered_when_ascii(self, data: bytes) -> None:
        """The table gives the decoded text lower-cased exactly when that text is ASCII."""
        folded = gsm7.ascii_lower(data)
        text = gsm7.decode(data)
        assert folded.isascii() == (text.isascii() and b"\x1b" not in data)
        if folded.isascii():
            assert folded.decode("ascii") == text.lower()

    @given(_TEXTS.filter(gsm7.can_encode))
    def test_encoded_fragments_fold_as_their_text(self, text: str) -> None:
        """Keyword-like GSM text, encoded, folds to its own lower-cased form when ASCII."""
        data = gsm7.encode(text)
        folded = gsm7.ascii_lower(data)
        if text.isascii() and b"\x1b" not in data:
            assert folded.decode("ascii") == text.lower()
        else:
            assert not folded.isascii()
