"""Auto-replies as values: their PDUs, and the per-subscriber hourly limit with time passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.model import AddressKind, SmsAddress
from gateway.consent.policy import AutoReply
from gateway.messages.replies import WINDOW_S, ReplyLimiter, reply_pdus
from gateway.smpp import pdu as p
from gateway.smpp.constants import DataCoding, EsmClass
from gateway.text.dcs import Alphabet, alphabet_for, decode_as
from gateway.text.udh import parse_udh

SUB = SmsAddress(kind=AddressKind.E164, value="15551234567")
SHORT = SmsAddress(kind=AddressKind.SHORT_CODE, value="12345")


def reply(text: str, source: SmsAddress = SHORT) -> AutoReply:
    return AutoReply(text=text, source=source, destination=SUB, campaign="acme")


def text_of(pdus: list[p.SubmitSm]) -> str:
    """The text the parts carry, reassembled in order."""
    out = []
    for pdu in pdus:
        body = pdu.short_message
        if pdu.esm_class & EsmClass.UDHI:
            _, body = parse_udh(body)
        decoded = decode_as(body, alphabet_for(pdu.data_coding))
        assert decoded is not None
        out.append(decoded)
    return "".join(out)


class TestReplyPdus:
    """The parts of an auto-reply."""

    def test_answers_from_the_number_written_to(self) -> None:
        """With an MO, the reply goes from its destination to its source, TON/NPI kept."""
        mo = p.DeliverSm(
            source_addr_ton=2,
            source_addr_npi=1,
            source_addr="5551234567",
            dest_addr_ton=3,
            dest_addr_npi=0,
            destination_addr="12345",
        )
        (pdu,) = reply_pdus(reply("OK"), mo, default_alphabet=Alphabet.GSM7, reference=1)
        assert (pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr) == (3, 0, "12345")
        assert (pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr) == (
            2,
            1,
            "5551234567",
        )

    def test_without_an_mo_numbers_are_international(self) -> None:
        """An opt-in request (no MO) writes E.164 numbers as international/ISDN."""
        (pdu,) = reply_pdus(reply("OK"), None, default_alphabet=Alphabet.GSM7, reference=1)
        assert (pdu.source_addr_ton, pdu.source_addr_npi) == (0, 0)  # a short code: unknown
        assert (pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr) == (1, 1, SUB.value)

    def test_alphabet_choice(self) -> None:
        """GSM 7-bit when it fits and is the SMSC default, else Latin-1, else UCS-2."""

        def coding(text: str, default: Alphabet = Alphabet.GSM7) -> int:
            return reply_pdus(reply(text), None, default_alphabet=default, reference=1)[
                0
            ].data_coding

        assert coding("Reply STOP") == DataCoding.SMSC_DEFAULT
        assert coding("Reply STOP", Alphabet.LATIN1) == DataCoding.LATIN1
        assert coding("Réponse ü ¿") == DataCoding.SMSC_DEFAULT
        assert coding("Ça ý þ") == DataCoding.LATIN1
        assert coding("Stop ✓") == DataCoding.UCS2

    @given(
        st.text(
            alphabet=st.sampled_from("abc XYZ 019 é€[]{}✓"),
            min_size=1,
            max_size=400,
        ),
        st.integers(0, 255),
    )
    def test_parts_carry_the_whole_text_under_one_reference(self, text: str, ref: int) -> None:
        """For any text, the parts reassemble to it; several parts share ``reference``."""
        pdus = reply_pdus(reply(text), None, default_alphabet=Alphabet.GSM7, reference=ref)
        assert text_of(pdus) == text
        if len(pdus) > 1:
            concats = [parse_udh(x.short_message)[0].concat for x in pdus]
            assert [(c.reference, c.total, c.seq) for c in concats if c] == [
                (ref, len(pdus), i + 1) for i in range(len(pdus))
            ]
        else:
            assert not pdus[0].esm_class & EsmClass.UDHI


class TestReplyLimiter:
    """At most ``limit`` replies per subscriber in any hour."""

    def test_limit_then_window(self) -> None:
        """The limit refuses the next reply until the oldest one is an hour old."""
        limits = ReplyLimiter()
        assert [limits.allow("a", float(t), 2) for t in (0, 1, 2)] == [True, True, False]
        assert limits.allow("b", 2.0, 2)  # per subscriber
        assert not limits.allow("a", WINDOW_S - 1.0, 2)
        assert limits.allow("a", WINDOW_S + 0.5, 2)

    def test_noted_replies_count(self) -> None:
        """An opt-out confirmation (sent whatever the limit) uses up the allowance too."""
        limits = ReplyLimiter()
        limits.note("a", 0.0)
        assert limits.allow("a", 1.0, 2)
        assert not limits.allow("a", 2.0, 2)

    def test_bounded_in_subscribers(self) -> None:
        """Past the bound, subscribers with no recent reply are forgotten."""
        limits = ReplyLimiter(max_subscribers=3)
        for name in "abc":
            limits.allow(name, 0.0, 1)
        limits.allow("a", WINDOW_S + 1, 1)  # empties b's and c's windows only when read
        for name in "bc":
            limits.allow(name, WINDOW_S + 2, 0)  # limit 0: read (emptied), nothing added
        limits.allow("d", WINDOW_S + 3, 1)
        assert len(limits) <= 3
        assert not limits.allow("a", WINDOW_S + 4, 1)  # the busy one is remembered

    @given(
        st.lists(st.floats(0, 4 * WINDOW_S, allow_nan=False), max_size=40),
        st.integers(0, 5),
    )
    def test_never_more_than_the_limit_in_an_hour(self, times: list[float], limit: int) -> None:
        """For any request times, the allowed ones never exceed ``limit`` in a window."""
        limits = ReplyLimiter()
        allowed = [t for t in sorted(times) if limits.allow("s", t, limit)]
        for t in allowed:
            assert len([u for u in allowed if t - WINDOW_S <= u <= t]) <= limit
