"""The opt-out footer: detection, rendering, and rewriting the message to carry it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.text import gsm7
from gateway.text.dcs import Alphabet, decode_as
from gateway.text.footer import already_has_opt_out, apply_footer, render_footer
from gateway.text.gsm7 import TextError
from gateway.text.segment import (
    CONCAT_8BIT,
    CONCAT_16BIT,
    PAYLOAD,
    SAR,
    ConcatKind,
    capacity,
)
from gateway.text.udh import EMPTY_UDH, InformationElement, Udh

GSM_CHARS = gsm7.decode(bytes(i for i in range(128) if i != gsm7.ESCAPE)) + "€{}[]~|^\\"
FOOTER = "Reply STOP to opt out"


def rejoin(parts: tuple[bytes, ...], alphabet: Alphabet) -> str:
    return decode_as(b"".join(parts), alphabet) or ""


class TestAlreadyHasOptOut:
    @pytest.mark.parametrize(
        "text",
        [
            "Sale today! Reply STOP to opt out",
            "reply stop to end",
            "Text STOP to 12345 to unsubscribe",
            "txt STOP",
            "Msg&data rates may apply. Txt STOP=stop",
            "Reply with the word STOP",
            "Reply \u201cSTOP\u201d to cancel",
            "Reply 'stop'",
            "STOP to opt-out",
            "Send STOP2END",
            "To opt out, visit acme.example",
            "to unsubscribe visit our site",
            "Unsubscribe: https://acme.example/u/123",
            "Opt out at www.acme.example",
            "Manage: https://acme.example/unsubscribe?id=9",
            "Reply END to stop receiving messages",
            "Reply CANCEL.",
            "REPLY OPTOUT",
            "Répondez ARRÊT? Reply ARRET",
            "\uff32\uff45\uff50\uff4c\uff59 \uff33\uff34\uff2f\uff30",  # fullwidth
        ],
    )
    def test_instructions_are_found(self, text: str) -> None:
        """Common ways of telling the reader how to opt out are recognised, in any case."""
        assert already_has_opt_out(text)

    @pytest.mark.parametrize(
        "text",
        [
            "Non-stop deals all weekend!",
            "Nonstop flights to Paris",
            "Stop by our store today",
            "Don't stop believing",
            "We send end-of-month statements",
            "We will text cancellation notices",
            "Your bus stops at 5th street",
            "Reply HELP for help",
            "Your code is 1234",
            "",
        ],
    )
    def test_no_false_positives(self, text: str) -> None:
        """Ordinary uses of stop, end or cancel are not opt-out instructions."""
        assert not already_has_opt_out(text)


class TestRenderFooter:
    def test_placeholders(self) -> None:
        """{brand} and {link} are filled in."""
        assert render_footer("{brand}: STOP to opt out, {link}", "ACME", "https://a.example/x") == (
            "ACME: STOP to opt out, https://a.example/x"
        )

    def test_missing_link_is_dropped_with_its_space(self) -> None:
        """Without a link, {link} and the blank before it disappear."""
        assert render_footer("{brand}: Reply STOP to opt out {link}", "ACME", None) == (
            "ACME: Reply STOP to opt out"
        )

    def test_other_braces_are_left_alone(self) -> None:
        """A template with other braces is not treated as a format string."""
        assert render_footer("{brand} {x} {0}", "A") == "A {x} {0}"


class TestApplyFooter:
    def test_fits_in_the_same_part(self) -> None:
        """A short GSM message with a GSM footer stays one GSM part."""
        res = apply_footer("Sale today", Alphabet.GSM7, FOOTER, CONCAT_8BIT)
        assert res is not None
        assert res.alphabet is Alphabet.GSM7
        assert res.parts == (gsm7.encode("Sale today " + FOOTER),)
        assert not res.segments_added
        assert (res.segments_before, res.segments_after) == (1, 1)

    def test_adds_a_segment_rather_than_switching(self) -> None:
        """A GSM message that overflows with a GSM footer grows a part and stays GSM."""
        text = "a" * 150
        res = apply_footer(text, Alphabet.GSM7, FOOTER, CONCAT_8BIT)
        assert res is not None
        assert res.alphabet is Alphabet.GSM7
        assert res.segments_added
        assert len(res.parts) == 2
        assert rejoin(res.parts, Alphabet.GSM7) == text + " " + FOOTER

    def test_switches_to_ucs2_only_when_the_footer_needs_it(self) -> None:
        """A footer with a character outside GSM 03.38 turns the message into UCS-2."""
        res = apply_footer("Sale", Alphabet.GSM7, "Reply STOP \u2013 ACME\u2122", CONCAT_8BIT)
        assert res is not None
        assert res.alphabet is Alphabet.UCS2
        assert rejoin(res.parts, Alphabet.UCS2) == "Sale Reply STOP \u2013 ACME\u2122"

    def test_latin1_switches_for_a_euro_sign(self) -> None:
        """Latin-1 lacks the euro sign, so a footer with one needs UCS-2."""
        res = apply_footer("Prix", Alphabet.LATIN1, "STOP: 0,10 €", CONCAT_8BIT)
        assert res is not None
        assert res.alphabet is Alphabet.UCS2

    def test_ucs2_stays_ucs2(self) -> None:
        """A UCS-2 message keeps its coding."""
        res = apply_footer("Привет 😀", Alphabet.UCS2, FOOTER, CONCAT_8BIT)
        assert res is not None
        assert res.alphabet is Alphabet.UCS2
        assert rejoin(res.parts, Alphabet.UCS2) == "Привет 😀 " + FOOTER

    def test_newline_separator(self) -> None:
        """The separator is configurable, e.g. a newline."""
        res = apply_footer("Hi", Alphabet.GSM7, FOOTER, CONCAT_8BIT, separator="\n")
        assert res is not None
        assert res.text == "Hi\n" + FOOTER

    def test_empty_message_gets_the_footer_alone(self) -> None:
        """An empty body becomes just the footer, without a leading separator."""
        res = apply_footer("", Alphabet.GSM7, FOOTER, CONCAT_8BIT)
        assert res is not None
        assert res.text == FOOTER

    def test_too_many_parts_is_none(self) -> None:
        """When the footer would push the message beyond max_parts, nothing is rewritten."""
        assert apply_footer("a" * 300, Alphabet.GSM7, FOOTER, CONCAT_8BIT, max_parts=2) is None
        assert apply_footer("a" * 306, Alphabet.GSM7, FOOTER, CONCAT_8BIT) is not None
        assert apply_footer("a" * (153 * 255 - 5), Alphabet.GSM7, FOOTER, CONCAT_8BIT) is None

    def test_payload_stays_one_body(self) -> None:
        """A message_payload message stays one body; segments are counted as the SMSC splits."""
        res = apply_footer("a" * 300, Alphabet.GSM7, FOOTER, PAYLOAD)
        assert res is not None
        assert len(res.parts) == 1
        assert (res.segments_before, res.segments_after) == (2, 3)
        assert res.segments_added
        assert apply_footer("a" * 0xFFF0, Alphabet.LATIN1, FOOTER, PAYLOAD) is None

    def test_other_udh_elements_reduce_room(self) -> None:
        """Parts keep room for the other UDH elements they will carry."""
        port = Udh(elements=(InformationElement(iei=0x05, data=bytes(4)),))
        res = apply_footer("a" * 140, Alphabet.GSM7, FOOTER, CONCAT_8BIT, extra_udh=port)
        assert res is not None
        cap = capacity(Alphabet.GSM7, CONCAT_8BIT, multipart=True, extra_udh=port)
        assert all(len(p) <= cap for p in res.parts)

    def test_binary_is_refused(self) -> None:
        """Binary messages never get a footer."""
        with pytest.raises(TextError):
            apply_footer("x", Alphabet.BINARY, FOOTER, CONCAT_8BIT)

    def test_golden_message_with_opt_out_gets_no_footer(self) -> None:
        """The caller's decision: 'Reply STOP to opt out' in the text means no footer is added."""
        text = "ACME: 20% off today. Reply STOP to opt out"
        assert already_has_opt_out(text)

    @given(
        st.text(alphabet=st.sampled_from(GSM_CHARS), max_size=500),
        st.sampled_from([FOOTER, "ACME: txt STOP {x}", "Reply STOP \u2192 quit", "Stop? 😀"]),
        st.sampled_from([CONCAT_8BIT, CONCAT_16BIT, SAR, PAYLOAD]),
        st.sampled_from([" ", "\n"]),
    )
    def test_reassembles_to_original_plus_footer(
        self, text: str, footer: str, kind: ConcatKind, sep: str
    ) -> None:
        """Joining the new parts gives the original, the separator and the footer."""
        res = apply_footer(text, Alphabet.GSM7, footer, kind, separator=sep)
        assert res is not None
        expected = f"{text}{sep}{footer}" if text else footer
        assert rejoin(res.parts, res.alphabet) == expected
        assert res.alphabet is (Alphabet.GSM7 if gsm7.can_encode(footer) else Alphabet.UCS2)
        assert res.segments_after >= res.segments_before
        if kind is not PAYLOAD:
            assert len(res.parts) == res.segments_after
            multipart = len(res.parts) > 1
            cap = capacity(res.alphabet, kind, multipart=multipart, extra_udh=EMPTY_UDH)
            unit = 2 if res.alphabet is Alphabet.UCS2 else 1
            assert all(len(p) // unit <= cap for p in res.parts)
