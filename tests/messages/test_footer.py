"""The footer rewrite as one pure call: what goes upstream, and whose answer is whose."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consent.campaign import Campaign, FooterMode, Keywords, WordList
from gateway.messages import footer as footer_module
from gateway.messages.content import PartInfo, content_of
from gateway.messages.footer import (
    ClientPart,
    Footers,
    FooterSettings,
    Holds,
    Offer,
    Rewritten,
    Unchanged,
    Why,
    hold_key,
    holdable,
)
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import EsmClass, Tag
from gateway.text.dcs import Alphabet, decode_as, encode_text
from gateway.text.segment import CONCAT_8BIT, CONCAT_16BIT, SAR, ConcatKind, frame_parts, split
from gateway.text.udh import EMPTY_UDH, InformationElement, Udh

CAMPAIGN = Campaign(
    name="acme",
    brand="ACME",
    footer=FooterMode.ALWAYS,
    footer_text="{brand}: Reply STOP to opt out",
)
FOOTER = "ACME: Reply STOP to opt out"
DEST = "15551234567"
LONG = " ".join(f"word{i}" for i in range(60))  # 3 GSM parts with an 8-bit reference


def sm(text: str = "", *, alphabet: Alphabet = Alphabet.GSM7, **kw: Any) -> p.SubmitSm:
    fields: dict[str, Any] = {
        "sequence_number": 9,
        "source_addr": "15550100",
        "destination_addr": DEST,
        "registered_delivery": 1,
        "data_coding": {Alphabet.GSM7: 0, Alphabet.UCS2: 8, Alphabet.LATIN1: 3}[alphabet],
        "short_message": encode_text(text, alphabet) if text else b"",
    }
    fields.update(kw)
    return p.SubmitSm(**fields)


def piece(pdu: p.SubmitSm | p.DataSm, default: Alphabet = Alphabet.GSM7) -> ClientPart:
    return (encode(pdu), pdu, content_of(pdu, default))


def long_parts(
    text: str,
    kind: ConcatKind,
    *,
    alphabet: Alphabet = Alphabet.GSM7,
    udh: Udh = EMPTY_UDH,
    reference: int = 7,
    bodies: Sequence[bytes] | None = None,
    **kw: Any,
) -> list[ClientPart]:
    """A long message split the way a client library does it (or into ``bodies``)."""
    split_bodies = list(bodies) if bodies is not None else split(text, alphabet, kind, udh)
    out = []
    for part in frame_parts(split_bodies, kind, reference=reference, extra_udh=udh):
        tlvs = tuple(p.Tlv(t, v) for t, v in part.sar.to_tlvs()) if part.sar else ()
        pdu = sm(
            alphabet=alphabet,
            esm_class=EsmClass.UDHI if part.udhi else 0,
            short_message=part.short_message,
            tlvs=tlvs + kw.get("extra_tlvs", ()),
        )
        out.append(piece(pdu))
    return out


def footers(**kw: Any) -> Footers:
    return Footers(FooterSettings(**kw))


def rewrite(
    parts: Sequence[ClientPart], f: Footers | None = None, campaign: Campaign = CAMPAIGN
) -> Rewritten:
    outcome = (f or footers()).rewrite(parts, campaign, lambda: FOOTER, DEST)
    assert isinstance(outcome, Rewritten), outcome
    return outcome


def unchanged(parts: Sequence[ClientPart], campaign: Campaign = CAMPAIGN, **kw: Any) -> Why:
    outcome = footers(**kw).rewrite(parts, campaign, lambda: FOOTER, DEST)
    assert isinstance(outcome, Unchanged), outcome
    return outcome.reason


def sent(outcome: Rewritten) -> list[p.SubmitSm]:
    pdus = [decode(unit.frame) for unit in outcome.units]
    assert all(isinstance(x, p.SubmitSm) for x in pdus)
    return [x for x in pdus if isinstance(x, p.SubmitSm)]


def joined(pdus: Sequence[p.SubmitSm | p.DataSm]) -> str:
    contents = [content_of(x) for x in pdus]
    text = decode_as(b"".join(c.body for c in contents), contents[0].alphabet)
    assert text is not None
    return text


def concat(pdu: p.SubmitSm) -> tuple[int, int, int, int]:
    """(reference bits, reference, total, seq) from the UDH, or (0, ...) from the SAR TLVs."""
    c = content_of(pdu).udh.concat
    if c is not None:
        return (c.ref_bits, c.reference, c.total, c.seq)
    ref, total, seq = (
        pdu.tlv(t) for t in (Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS, Tag.SAR_SEGMENT_SEQNUM)
    )
    assert ref is not None
    assert total is not None
    assert seq is not None
    return (0, int.from_bytes(ref, "big"), total[0], seq[0])


class TestSinglePart:
    def test_gsm_footer_is_appended_to_the_clients_octets(self) -> None:
        """GSM text that fits with the footer: one unit, the client's frame with the footer's
        septets after its own, answered by the client's part."""
        pdu = sm("Your code is 1234", tlvs=(p.Tlv(0x1401, b"\x01"),))
        out = rewrite([piece(pdu)])
        assert not out.resegmented
        (unit,) = out.units
        assert unit.answers == (0,)
        assert decode(unit.frame) == dataclasses.replace(
            pdu, short_message=pdu.short_message + encode_text(f" {FOOTER}", Alphabet.GSM7)
        )

    def test_ucs2(self) -> None:
        """UCS-2 text keeps its coding; the footer follows in UTF-16BE."""
        (x,) = sent(rewrite([piece(sm("Привет", alphabet=Alphabet.UCS2))]))
        assert x.data_coding == 8
        assert x.short_message == encode_text(f"Привет {FOOTER}", Alphabet.UCS2)

    def test_latin1(self) -> None:
        """Latin-1 text (data_coding 3) keeps its coding."""
        (x,) = sent(rewrite([piece(sm("Café ouvert", alphabet=Alphabet.LATIN1))]))
        assert (x.data_coding, x.short_message) == (3, f"Café ouvert {FOOTER}".encode("latin-1"))

    def test_latin1_smsc_default(self) -> None:
        """data_coding 0 read as Latin-1 where the SMSC says so."""
        pdu = sm(short_message="Grüße".encode("latin-1"))
        out = footers(default_alphabet=Alphabet.LATIN1).rewrite(
            [piece(pdu, Alphabet.LATIN1)], CAMPAIGN, lambda: FOOTER, DEST
        )
        assert isinstance(out, Rewritten)
        (x,) = sent(out)
        assert x.short_message == f"Grüße {FOOTER}".encode("latin-1")

    def test_footer_that_forces_a_new_segment(self) -> None:
        """140 GSM characters plus the footer: two parts with one fresh reference; the first
        is the client's, the second the gateway's own and asks no receipt."""
        out = rewrite([piece(sm("x" * 140))])
        assert out.resegmented
        first, second = sent(out)
        assert [u.answers for u in out.units] == [(0,), ()]
        assert concat(first) == (8, 1, 2, 1)
        assert concat(second) == (8, 1, 2, 2)
        assert (first.registered_delivery, second.registered_delivery) == (1, 0)
        assert joined([first, second]) == "x" * 140 + " " + FOOTER
        assert first.data_coding == second.data_coding == 0  # GSM stays GSM

    @pytest.mark.parametrize(("kind", "bits"), [(CONCAT_8BIT, 8), (CONCAT_16BIT, 16), (SAR, 0)])
    def test_growth_uses_the_configured_concatenation(self, kind: ConcatKind, bits: int) -> None:
        """A one-part message that grows is split in the configured kind."""
        pdus = sent(rewrite([piece(sm("y" * 150))], footers(concat=kind)))
        assert [concat(x)[0] for x in pdus] == [bits, bits]

    def test_references_count_up_per_destination(self) -> None:
        """Each grown message to a destination gets the next reference."""
        f = footers()
        refs = [concat(sent(rewrite([piece(sm("z" * 150))], f))[0])[1] for _ in range(3)]
        assert refs == [1, 2, 3]

    def test_footer_outside_the_alphabet_switches_to_ucs2(self) -> None:
        """A footer GSM cannot write makes the message UCS-2 (data_coding 8)."""
        out = footers().rewrite([piece(sm("Hello"))], CAMPAIGN, lambda: "ACME: Ответьте STOP", DEST)
        assert isinstance(out, Rewritten)
        (x,) = sent(out)
        assert x.data_coding == 8
        assert joined([x]) == "Hello ACME: Ответьте STOP"

    def test_message_payload_stays_in_message_payload(self) -> None:
        """Text in message_payload gets the footer there; short_message stays empty."""
        pdu = sm(tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, b"a" * 300),))
        (x,) = sent(rewrite([piece(pdu)]))
        assert x.short_message == b""
        assert x.tlv(Tag.MESSAGE_PAYLOAD) == b"a" * 300 + encode_text(f" {FOOTER}", Alphabet.GSM7)

    def test_data_sm_payload(self) -> None:
        """A data_sm's message_payload gets the footer."""
        pdu = p.DataSm(
            sequence_number=3,
            destination_addr=DEST,
            tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, b"hello"),),
        )
        out = rewrite([piece(pdu)])
        (unit,) = out.units
        x = decode(unit.frame)
        assert isinstance(x, p.DataSm)
        assert x.tlv(Tag.MESSAGE_PAYLOAD) == encode_text(f"hello {FOOTER}", Alphabet.GSM7)

    def test_other_udh_elements_are_kept(self) -> None:
        """A UDH without concatenation (here a national language shift) stays in front."""
        udh = Udh(elements=(InformationElement(iei=0x24, data=b"\x01"),))
        pdu = sm(esm_class=EsmClass.UDHI, short_message=udh.to_bytes() + b"Hi")
        (x,) = sent(rewrite([piece(pdu)]))
        content = content_of(x)
        assert content.udh.elements == udh.elements
        assert content.body == encode_text(f"Hi {FOOTER}", Alphabet.GSM7)


class TestUnchanged:
    @pytest.mark.parametrize("data_coding", [4, 0xF6, 0x0C])
    def test_binary_and_unknown_codings(self, data_coding: int) -> None:
        """8-bit data, SIM data and reserved codings are never touched."""
        assert unchanged([piece(sm(data_coding=data_coding, short_message=b"\x01\x02"))]) is (
            Why.BINARY
        )

    def test_empty_text(self) -> None:
        """No text: nothing to add a footer to."""
        assert unchanged([piece(sm())]) is Why.EMPTY

    def test_data_sm_without_payload(self) -> None:
        """A data_sm carries its text in message_payload only; without it there is none."""
        assert unchanged([piece(p.DataSm(destination_addr=DEST))]) is Why.EMPTY

    def test_acknowledgement(self) -> None:
        """esm_class message type bits: an acknowledgement, not a message."""
        assert unchanged([piece(sm("ok", esm_class=0x08))]) is Why.ACKNOWLEDGEMENT

    @pytest.mark.parametrize("pid", [0x40, 0x7C, 0x7D, 0x7E, 0x7F])
    def test_silent_and_data_download(self, pid: int) -> None:
        """protocol_id says the subscriber never reads it."""
        assert unchanged([piece(sm("x", protocol_id=pid))]) is Why.SILENT

    def test_app_directed(self) -> None:
        """UDH port addressing: for an application on the handset."""
        udh = Udh(elements=(InformationElement(iei=0x05, data=b"\x0b\x84\x23\xf0"),))
        pdu = sm(esm_class=EsmClass.UDHI, short_message=udh.to_bytes() + b"hi")
        assert unchanged([piece(pdu)]) is Why.APP_DIRECTED

    def test_unparsed_udh(self) -> None:
        """UDHI with a UDH that does not parse: its octets are not ours to shift."""
        pdu = sm(esm_class=EsmClass.UDHI, short_message=b"\x09\x00\x03hello")
        assert unchanged([piece(pdu)]) is Why.UNPARSED_UDH

    def test_already_has_opt_out(self) -> None:
        """Text that says how to opt out needs no footer."""
        assert unchanged([piece(sm("Sale today. Reply STOP to end"))]) is Why.HAS_OPT_OUT

    def test_campaign_words_count_as_instructions(self) -> None:
        """An instruction in the campaign's own opt-out words counts too."""
        camp = Campaign(
            name="c",
            brand="B",
            footer_text="{brand}: Reply STOP to opt out",
            keywords=Keywords(opt_out=WordList(words=("basta",))),
        )
        assert unchanged([piece(sm("Offerte! Reply BASTA"))], camp) is Why.HAS_OPT_OUT

    def test_empty_footer(self) -> None:
        """A footer that renders empty adds nothing."""
        out = footers().rewrite([piece(sm("hi"))], CAMPAIGN, lambda: "", DEST)
        assert out == Unchanged(Why.NO_FOOTER)

    def test_too_long(self) -> None:
        """A message the footer would take beyond max_parts goes as the client wrote it."""
        assert unchanged([piece(sm("x" * 155))], max_parts=1) is Why.TOO_LONG

    def test_payload_too_long(self) -> None:
        """More than one message_payload can carry."""
        pdu = sm(tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, b"a" * 0xFFF0),))
        assert unchanged([piece(pdu)]) is Why.TOO_LONG

    def test_not_round_trip_is_not_re_encoded(self) -> None:
        """Octets decoded leniently are appended to when the footer fits, never re-encoded."""
        fits = sm(short_message=b"Hi \x80 there")
        (x,) = sent(rewrite([piece(fits)]))
        assert x.short_message.startswith(b"Hi \x80 there")
        grows = sm(short_message=b"\x80" * 150)
        assert unchanged([piece(grows)]) is Why.NOT_ROUND_TRIP

    def test_mixed_parts(self) -> None:
        """Parts of one message in different codings are not joined."""
        parts = long_parts(LONG, CONCAT_8BIT)
        frame, pdu, _ = parts[1]
        odd = dataclasses.replace(pdu, data_coding=1)
        parts[1] = (frame, odd, content_of(odd))
        assert unchanged(parts) is Why.MIXED_PARTS


class TestLongMessages:
    def test_footer_that_fits_goes_in_the_last_part(self) -> None:
        """Room left in the last part: parts before it go as the client sent them."""
        parts = long_parts(LONG, CONCAT_8BIT)
        out = rewrite(parts)
        assert not out.resegmented
        assert [u.answers for u in out.units] == [(0,), (1,), (2,)]
        assert [u.frame for u in out.units[:2]] == [f for f, _, _ in parts[:2]]
        assert joined(sent(out)) == f"{LONG} {FOOTER}"

    @pytest.mark.parametrize(("kind", "bits"), [(CONCAT_8BIT, 8), (CONCAT_16BIT, 16), (SAR, 0)])
    def test_resegmented_in_the_clients_kind_with_one_new_reference(
        self, kind: ConcatKind, bits: int
    ) -> None:
        """Full parts: the whole text is split again in the client's kind, one new reference."""
        text = "a" * 300
        parts = long_parts(text, kind, reference=200)
        out = rewrite(parts, footers(concat=CONCAT_8BIT))
        pdus = sent(out)
        concats = [concat(x) for x in pdus]
        assert {c[0] for c in concats} == {bits}
        assert len({c[1] for c in concats}) == 1
        assert concats[0][1] != 200
        assert [c[3] for c in concats] == list(range(1, len(pdus) + 1))
        assert joined(pdus) == f"{text} {FOOTER}"

    def test_an_added_part_answers_the_gateway_only(self) -> None:
        """A part the footer adds answers no client part and asks no receipt."""
        parts = long_parts("b" * 306, CONCAT_8BIT)  # two full parts
        out = rewrite(parts)
        assert [u.answers for u in out.units] == [(0,), (1,), ()]
        assert sent(out)[2].registered_delivery == 0

    def test_fewer_parts_after_the_rewrite(self) -> None:
        """A client that split small: its surplus parts share the last upstream answer."""
        parts = long_parts("", CONCAT_8BIT, bodies=[b"c" * 10, b"c" * 10, b"c" * 140])
        out = rewrite(parts)
        assert out.resegmented
        assert [u.answers for u in out.units] == [(0,), (1, 2)]
        assert joined(sent(out)) == f"{'c' * 160} {FOOTER}"

    def test_other_udh_elements_are_kept_in_every_part(self) -> None:
        """Elements beside the 16-bit reference (a language shift) stay in each new part."""
        udh = Udh(elements=(InformationElement(iei=0x25, data=b"\x01"),))
        parts = long_parts("d" * 300, CONCAT_16BIT, udh=udh)
        client = [ie.iei for ie in parts[0][2].udh.elements]
        assert sorted(client) == [0x08, 0x25]
        for x in sent(rewrite(parts)):
            assert [ie.iei for ie in content_of(x).udh.elements] == client

    def test_sar_tlvs_replaced_in_place(self) -> None:
        """SAR parts keep their TLVs (new reference and count) and every other TLV."""
        vendor = p.Tlv(0x1401, b"v")
        parts = long_parts("e" * 300, SAR, extra_tlvs=(vendor,))
        pdus = sent(rewrite(parts))
        for x in pdus:
            assert vendor in x.tlvs
            assert x.esm_class & EsmClass.UDHI == 0

    def test_kannel_more_messages_to_send(self) -> None:
        """more_messages_to_send on all parts but the last stays so after re-segmenting."""
        more = p.Tlv(Tag.MORE_MESSAGES_TO_SEND, b"\x01")
        parts = long_parts("f" * 306, CONCAT_8BIT, extra_tlvs=(more,))
        pdus = sent(rewrite(parts))
        assert [x.tlv(Tag.MORE_MESSAGES_TO_SEND) for x in pdus] == [b"\x01", b"\x01", None]

    def test_surrogate_pair_split_by_the_client_is_healed(self) -> None:
        """A last part starting inside a surrogate pair is not appended to: re-segmented."""
        text = "g" * 66 + "😀" + "h" * 20
        units = encode_text(text, Alphabet.UCS2)
        bodies = [units[:134], units[134:]]  # cut between the two halves of the emoji
        parts = long_parts("", CONCAT_8BIT, alphabet=Alphabet.UCS2, bodies=bodies)
        out = rewrite(parts)
        assert out.resegmented
        assert joined(sent(out)) == f"{text} {FOOTER}"

    @settings(max_examples=60, deadline=None)
    @given(
        st.text(alphabet="abcdefghij €{}", min_size=161, max_size=900),
        st.sampled_from([CONCAT_8BIT, CONCAT_16BIT, SAR]),
    )
    def test_any_long_text_is_whole_and_every_client_part_answered_once(
        self, text: str, kind: ConcatKind
    ) -> None:
        """Whatever the text, the rewrite carries text + footer, and each client part is
        answered by exactly one upstream part."""
        parts = long_parts(text, kind)
        out = rewrite(parts)
        assert joined(sent(out)) == f"{text} {FOOTER}"
        answered = [i for u in out.units for i in u.answers]
        assert sorted(answered) == list(range(len(parts)))


class TestHolds:
    def offer(self, holds: Holds[int], part: ClientPart, now: float, ctx: int) -> Any:
        _, pdu, content = part
        assert holdable(content)
        assert content.part is not None
        key = hold_key("c1", pdu, content, DEST)
        return holds.offer(key, content.part, content.body, now, ctx)

    def test_parts_complete_in_sequence_order(self) -> None:
        """Parts in any order: COMPLETE with every context, sequence order."""
        holds: Holds[int] = Holds(FooterSettings())
        parts = long_parts(LONG, CONCAT_8BIT)
        assert self.offer(holds, parts[2], 0, 3).offer is Offer.HELD
        assert self.offer(holds, parts[0], 0, 1).offer is Offer.HELD
        done = self.offer(holds, parts[1], 0, 2)
        assert done.offer is Offer.COMPLETE
        assert [f.context for f in done.message.fragments] == [1, 2, 3]

    def test_duplicate_returns_the_original(self) -> None:
        """A copy of a held part comes back with its original's context."""
        holds: Holds[int] = Holds(FooterSettings())
        parts = long_parts(LONG, CONCAT_8BIT)
        self.offer(holds, parts[0], 0, 1)
        dup = self.offer(holds, parts[0], 1, 99)
        assert (dup.offer, dup.original) == (Offer.DUPLICATE, 1)

    def test_late_parts_of_an_expired_message_pass_for_the_hold_time(self) -> None:
        """After expiry the message's later parts go straight through, then are held again."""
        holds: Holds[int] = Holds(FooterSettings(hold_timeout_s=10))
        parts = long_parts(LONG, CONCAT_8BIT)
        self.offer(holds, parts[0], 0, 1)
        assert [m.key for m in holds.expire(9.9)] == []
        (expired,) = holds.expire(10)
        assert [f.context for f in expired.fragments] == [1]
        assert self.offer(holds, parts[1], 15, 2).offer is Offer.FORWARD
        assert self.offer(holds, parts[1], 20, 2).offer is Offer.HELD

    def test_eviction_releases_the_oldest(self) -> None:
        """Over hold_max_messages the oldest message is released "evicted"; its late parts
        pass."""
        holds: Holds[int] = Holds(FooterSettings(hold_max_messages=1))
        a = long_parts(LONG, CONCAT_8BIT, reference=1)
        b = long_parts(LONG, CONCAT_8BIT, reference=2)
        self.offer(holds, a[0], 0, 1)
        taken = self.offer(holds, b[0], 0, 2)
        assert taken.offer is Offer.HELD
        assert [(m.fragments[0].context, why) for m, why in taken.released] == [(1, "evicted")]
        assert self.offer(holds, a[1], 1, 3).offer is Offer.FORWARD

    def test_superseded_message_is_released(self) -> None:
        """Other content under a held key and number: the old message is released."""
        holds: Holds[int] = Holds(FooterSettings())
        old = long_parts(LONG, CONCAT_8BIT, reference=4)
        new = long_parts(LONG.upper(), CONCAT_8BIT, reference=4)
        self.offer(holds, old[0], 0, 1)
        taken = self.offer(holds, new[0], 0, 2)
        assert taken.offer is Offer.HELD
        assert [why for _, why in taken.released] == ["superseded"]

    def test_release_all_remembers_the_keys(self) -> None:
        """Shutdown: every held message is returned and its late parts pass."""
        holds: Holds[int] = Holds(FooterSettings())
        parts = long_parts(LONG, CONCAT_8BIT)
        self.offer(holds, parts[0], 0, 1)
        assert len(holds.release_all(0)) == 1
        assert self.offer(holds, parts[1], 1, 2).offer is Offer.FORWARD

    def test_binary_parts_and_bad_numbering_are_not_holdable(self) -> None:
        """Only text parts numbered within their count are held."""
        binary = sm(
            data_coding=4, esm_class=EsmClass.UDHI, short_message=b"\x05\x00\x03\x01\x02\x01ab"
        )
        bad = sm(esm_class=EsmClass.UDHI, short_message=b"\x05\x00\x03\x01\x02\x03ab")
        assert not holdable(content_of(binary))
        assert not holdable(content_of(bad))
        assert holdable(content_of(long_parts(LONG, CONCAT_8BIT)[0][1]))


def test_part_info_is_what_holds_reads() -> None:
    """hold_key names connection, source, destination, kind, reference and count."""
    _, pdu, content = long_parts(LONG, CONCAT_16BIT, reference=513)[0]
    assert content.part == PartInfo(513, 3, 1)
    assert hold_key("c9", pdu, content, DEST) == ("c9", "15550100", DEST, "udh_16bit", 513, 3)


class TestAsciiFoldedFastPath:
    @given(
        st.binary(max_size=80),
        st.sampled_from((Alphabet.GSM7, Alphabet.IA5, Alphabet.LATIN1, Alphabet.UCS2)),
    )
    def test_folded_is_the_decoded_text_lowered(self, body: bytes, alphabet: Alphabet) -> None:
        """Read from the octets or not at all: never other than the decoded text, lowered."""
        folded = footer_module._ascii_folded(body, alphabet)
        text = decode_as(body, alphabet)
        assert text is not None
        if folded is not None:
            assert folded == text.lower()
            assert text.isascii()
        elif alphabet is not Alphabet.UCS2:
            assert not text.isascii() or (alphabet is Alphabet.GSM7 and b"\x1b" in body)

    @pytest.mark.parametrize(
        "text",
        ["Sale today. Reply STOP to end", "Sale today, to opt out visit x", "Text QUIT to stop"],
    )
    def test_ascii_text_with_an_instruction_is_unchanged(self, text: str) -> None:
        """GSM text that says how to opt out gets no footer on the octet path either."""
        assert unchanged([piece(sm(text))]) is Why.HAS_OPT_OUT
