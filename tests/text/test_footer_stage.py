"""The footer stage (gateway/proxy/footer.py) on a fake bridge: what goes upstream, who is answered.

The fake bridge records every frame the stage sends upstream (the client's request forwarded, or
a request of the gateway's own) and every answer the client gets; ``FakeBridge.smsc_answers`` plays
the SMSC, answering what is outstanding in order with message ids m1, m2, ...
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Any, cast

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.consent.campaign import Campaign, FooterMode, Keywords, WordList
from gateway.consent.model import AddressKind, SmsAddress
from gateway.messages.content import content_of
from gateway.messages.footer import FooterSettings
from gateway.proxy.footer import FooterStage
from gateway.proxy.hooks import ClientInfo, LegPair, MtRequest, ResponseCallback
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode, error_response
from gateway.smpp.constants import CommandStatus, EsmClass, Tag
from gateway.store.memory import MemoryStore
from gateway.telemetry import logs
from gateway.text import gsm7
from gateway.text.dcs import Alphabet, decode_as, encode_text
from gateway.text.segment import (
    CONCAT_8BIT,
    CONCAT_16BIT,
    SAR,
    ConcatKind,
    capacity,
    frame_parts,
    split,
)
from gateway.text.udh import EMPTY_UDH, InformationElement, Udh

SUBSCRIBER = SmsAddress(kind=AddressKind.E164, value="15551234567")
FOOTER = "ACME: Reply STOP to opt out"
TIMEOUT = 30.0


def campaign(
    footer: FooterMode = FooterMode.ALWAYS, text: str = "{brand}: Reply STOP to opt out"
) -> Campaign:
    return Campaign(name="acme", brand="ACME", footer=footer, footer_text=text)


ALWAYS = campaign()


# --- the fake bridge --------------------------------------------------------------------------


@dataclasses.dataclass
class Sent:
    """One request that went upstream."""

    frame: bytes
    request: MtRequest | None = None  # set when it is the client's request, forwarded
    transform: Callable[[bytes], bytes] | None = None
    callback: ResponseCallback | None = None  # set when it is the gateway's own
    answered: bool = False

    @property
    def pdu(self) -> p.SubmitSm:
        pdu = decode(self.frame)
        assert isinstance(pdu, p.SubmitSm)
        return pdu


class FakeBridge:
    """What MtRequest needs of its LegPair, recording instead of sending."""

    def __init__(self, conn_id: str = "c1") -> None:
        self.conn_id = conn_id
        self.client_info = ClientInfo(
            conn_id=conn_id, system_id="app", system_type="", bind_type="transceiver", peer=""
        )
        self.closed = False
        self.upstream: list[Sent] = []
        self.answers: dict[int, list[bytes]] = {}  # client sequence_number -> responses
        self.can_originate = True
        self.tasks: list[asyncio.Task[Any]] = []
        self._ids = 0

    # LegPair API used by MtRequest ---------------------------------------------------------
    @property
    def client_gone(self) -> bool:
        return self.closed

    def forward_mt(
        self, request: MtRequest, frame: bytes, transform: Callable[[bytes], bytes] | None
    ) -> None:
        self.upstream.append(Sent(frame=frame, request=request, transform=transform))

    def respond_client(self, response: p.Pdu | bytes, sequence_number: int) -> None:
        frame = response if isinstance(response, bytes) else encode(response)
        self.answers.setdefault(sequence_number, []).append(frame)

    def reject_client(self, command_id: int, sequence_number: int, status: int) -> None:
        self.respond_client(error_response(command_id, sequence_number, status), sequence_number)

    def originate_upstream(self, pdu: p.Pdu | bytes, on_response: ResponseCallback) -> bool:
        if not self.can_originate:
            return False
        frame = pdu if isinstance(pdu, bytes) else encode(pdu)
        self.upstream.append(Sent(frame=frame, callback=on_response))
        return True

    def spawn(self, coro: object, on_failure: Callable[[], None] | None = None) -> None:
        del on_failure  # the stage's own tasks handle their errors
        self.tasks.append(asyncio.ensure_future(cast("Any", coro)))

    # the SMSC -----------------------------------------------------------------------------
    def smsc_answers(self, status: Callable[[int], int] = lambda _i: 0) -> None:
        """Answer every unanswered upstream request, in order; ``status(i)`` per request."""
        for i, sent in enumerate(self.upstream):
            if sent.answered:
                continue
            sent.answered = True
            self._ids += 1
            code = status(i)
            resp: p.Pdu = p.SubmitSmResp(
                command_status=code,
                sequence_number=99,
                message_id=f"m{self._ids}" if code == 0 else None,
            )
            if isinstance(decode(sent.frame), p.DataSm):
                resp = p.DataSmResp(
                    command_status=code,
                    sequence_number=99,
                    message_id=f"m{self._ids}" if code == 0 else None,
                )
            frame = encode(resp)
            if sent.request is not None:
                out = frame if sent.transform is None else sent.transform(frame)
                self.respond_client(out, sent.request.sequence_number)
            else:
                assert sent.callback is not None
                sent.callback(resp, frame)

    def smsc_silent(self) -> None:
        """No response ever comes (the bridge reports a timeout to its own requests)."""
        for sent in self.upstream:
            if not sent.answered:
                sent.answered = True
                if sent.callback is not None:
                    sent.callback(None, None)
                else:
                    assert sent.request is not None
                    self.reject_client(
                        sent.request.pdu.command_id,
                        sent.request.sequence_number,
                        CommandStatus.ESME_RSYSERR,
                    )

    # observations -------------------------------------------------------------------------
    def answer(self, sequence_number: int) -> p.Pdu:
        """The one answer the client got for ``sequence_number``."""
        frames = self.answers.get(sequence_number, [])
        assert len(frames) == 1, f"{len(frames)} answers to {sequence_number}"
        return decode(frames[0])

    def message_id(self, sequence_number: int) -> str | None:
        resp = self.answer(sequence_number)
        assert isinstance(resp, p.SubmitSmResp | p.DataSmResp)
        return resp.message_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def stage(store: MemoryStore, clock: Clock) -> Iterator[FooterStage]:
    s = FooterStage(store=store, settings=FooterSettings(hold_timeout_s=TIMEOUT), clock=clock)
    yield s
    s.close()


@pytest.fixture
def bridge() -> FakeBridge:
    return FakeBridge()


_seq = iter(range(1, 1_000_000))


def submit(
    stage: FooterStage,
    bridge: FakeBridge,
    pdu: p.SubmitSm | p.DataSm,
    camp: Campaign = ALWAYS,
) -> MtRequest:
    """Hand ``pdu`` (with a fresh sequence number) to the stage as the enforcer would."""
    pdu = dataclasses.replace(pdu, sequence_number=next(_seq))
    request = MtRequest(cast("LegPair", bridge), pdu, encode(pdu))
    stage.submit(request, pdu, camp, SUBSCRIBER)
    return request


def sm(
    text: str = "", *, data_coding: int = 0, alphabet: Alphabet = Alphabet.GSM7, **kw: Any
) -> p.SubmitSm:
    fields: dict[str, Any] = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": "15550100",
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": SUBSCRIBER.value,
        "registered_delivery": 1,
        "data_coding": data_coding,
        "short_message": encode_text(text, alphabet) if text else b"",
    }
    fields.update(kw)
    return p.SubmitSm(**fields)


def body_text(pdu: p.SubmitSm | p.DataSm, default: Alphabet = Alphabet.GSM7) -> str:
    content = content_of(pdu, default)
    text = decode_as(content.body, content.alphabet)
    assert text is not None
    return text


def joined_text(pdus: Sequence[p.SubmitSm | p.DataSm], default: Alphabet = Alphabet.GSM7) -> str:
    contents = [content_of(x, default) for x in pdus]
    text = decode_as(b"".join(c.body for c in contents), contents[0].alphabet)
    assert text is not None
    return text


def client_parts(
    text: str,
    kind: ConcatKind,
    *,
    reference: int = 7,
    alphabet: Alphabet = Alphabet.GSM7,
    data_coding: int = 0,
    udh: Udh = EMPTY_UDH,
    **kw: Any,
) -> list[p.SubmitSm]:
    """A long message split the way a client library does it."""
    bodies = split(text, alphabet, kind, udh)
    parts = frame_parts(bodies, kind, reference=reference, extra_udh=udh)
    out = []
    for part in parts:
        tlvs = tuple(p.Tlv(tag, value) for tag, value in part.sar.to_tlvs()) if part.sar else ()
        out.append(
            sm(
                data_coding=data_coding,
                esm_class=EsmClass.UDHI if part.udhi else 0,
                short_message=part.short_message,
                tlvs=tlvs + kw.pop("extra_tlvs", ()),
                **kw,
            )
        )
    return out


def concat_of(pdu: p.SubmitSm | p.DataSm) -> tuple[int, int, int, int]:
    """(reference bits, reference, total, seq) of a part, from its UDH or SAR TLVs."""
    content = content_of(pdu)
    concat = content.udh.concat
    if concat is not None:
        return (concat.ref_bits, concat.reference, concat.total, concat.seq)
    ref, total, seq = (
        pdu.tlv(Tag.SAR_MSG_REF_NUM),
        pdu.tlv(Tag.SAR_TOTAL_SEGMENTS),
        pdu.tlv(Tag.SAR_SEGMENT_SEQNUM),
    )
    assert ref is not None
    assert total is not None
    assert seq is not None
    return (0, int.from_bytes(ref, "big"), total[0], seq[0])


def assert_consistent(pdus: Sequence[p.SubmitSm | p.DataSm], bits: int) -> None:
    """One reference and count, sequence 1..n, and every part within its capacity."""
    concats = [concat_of(x) for x in pdus]
    assert {c[0] for c in concats} == {bits}
    assert len({c[1] for c in concats}) == 1
    assert [c[2] for c in concats] == [len(pdus)] * len(pdus)
    assert [c[3] for c in concats] == list(range(1, len(pdus) + 1))
    for x in pdus:
        content = content_of(x)
        concat_elements = [ie for ie in content.udh.elements if ie.iei in (0x00, 0x08)]
        assert len(concat_elements) == (0 if bits == 0 else 1)
        kind = {8: CONCAT_8BIT, 16: CONCAT_16BIT, 0: SAR}[bits]
        cap = capacity(content.alphabet, kind, multipart=True, extra_udh=content.udh)
        units = len(content.body) // (2 if content.alphabet is Alphabet.UCS2 else 1)
        assert units <= cap


# --- one part ---------------------------------------------------------------------------------


class TestSinglePart:
    def test_footer_fits_one_part_and_every_other_field_is_kept(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A short GSM message is forwarded as one PDU: text + footer, all else byte-equal."""
        vendor = p.Tlv(0x1401, b"\x01\x02")
        original = sm("Your code is 1234", service_type="CMT", priority_flag=1, tlvs=(vendor,))
        request = submit(stage, bridge, original)
        (sent,) = bridge.upstream
        assert sent.request is request
        out = sent.pdu
        assert body_text(out) == f"Your code is 1234 {FOOTER}"
        assert dataclasses.replace(out, short_message=original.short_message) == (
            dataclasses.replace(original, sequence_number=request.sequence_number)
        )
        bridge.smsc_answers()
        assert bridge.message_id(request.sequence_number) == "m1"

    async def test_gsm_message_grows_a_segment_instead_of_switching_to_ucs2(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """150 GSM characters + footer become two 8-bit-UDH parts, still GSM; the client's
        request is answered with the first part's message id and the extra one is consumed."""
        text = "A" * 150
        request = submit(stage, bridge, sm(text))
        pdus = [s.pdu for s in bridge.upstream]
        assert len(pdus) == 2
        assert bridge.upstream[0].request is request  # part 1 is the client's request
        assert bridge.upstream[1].callback is not None  # part 2 is the gateway's own
        assert all(x.data_coding == 0 for x in pdus)
        assert_consistent(list(pdus), 8)
        assert joined_text(list(pdus)) == f"{text} {FOOTER}"
        bridge.smsc_answers()
        assert bridge.message_id(request.sequence_number) == "m1"
        assert list(bridge.answers) == [request.sequence_number]

    def test_references_count_up_per_destination(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """Each message that grows gets the destination's next reference, not a random one."""
        refs = []
        for _ in range(3):
            bridge.upstream.clear()
            submit(stage, bridge, sm("B" * 150))
            refs.append(concat_of(bridge.upstream[0].pdu)[1])
        assert refs == [refs[0], refs[0] + 1, refs[0] + 2]

    @pytest.mark.parametrize("kind", [CONCAT_16BIT, SAR])
    def test_growth_uses_the_configured_concatenation(
        self, store: MemoryStore, clock: Clock, bridge: FakeBridge, kind: ConcatKind
    ) -> None:
        """With [text] concat set, a growing message is split with a 16-bit reference or SAR."""
        stage = FooterStage(store=store, settings=FooterSettings(concat=kind), clock=clock)
        submit(stage, bridge, sm("C" * 155))
        pdus = [s.pdu for s in bridge.upstream]
        assert_consistent(list(pdus), 16 if kind is CONCAT_16BIT else 0)
        assert joined_text(list(pdus)) == f"{'C' * 155} {FOOTER}"
        if kind is SAR:
            assert not any(x.esm_class & EsmClass.UDHI for x in pdus)

    @pytest.mark.parametrize("prefix", range(145, 153))
    def test_extension_characters_at_the_boundary_are_never_split(
        self, stage: FooterStage, bridge: FakeBridge, prefix: int
    ) -> None:
        """Escape pairs (€, {, ...) around the part boundary stay whole in one part."""
        text = "x" * prefix + "€{}[]~|^\\" * 2
        submit(stage, bridge, sm(text))
        pdus = [s.pdu for s in bridge.upstream]
        for x in pdus:
            body = content_of(x).body
            assert not body.endswith(bytes([gsm7.ESCAPE])) or body.endswith(b"\x1b\x1b")
            assert body_text(x) == gsm7.decode(body)
        assert joined_text(list(pdus)) == f"{text} {FOOTER}"
        if len(pdus) > 1:
            assert_consistent(list(pdus), 8)

    def test_ucs2_with_emoji_keeps_surrogate_pairs_whole(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A UCS-2 message with emoji stays UCS-2; no part ends inside a surrogate pair."""
        text = "Sale 😀 " * 9 + "🎉"
        submit(stage, bridge, sm(text, data_coding=8, alphabet=Alphabet.UCS2))
        pdus = [s.pdu for s in bridge.upstream]
        assert len(pdus) == 2
        assert all(x.data_coding == 8 for x in pdus)
        for x in pdus:
            body = content_of(x).body
            assert not 0xD8 <= body[-2] <= 0xDB  # no high surrogate last
        assert joined_text(list(pdus)) == f"{text} {FOOTER}"
        assert_consistent(list(pdus), 8)

    def test_footer_outside_the_alphabet_switches_to_ucs2(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A footer GSM cannot write makes the message UCS-2 (data_coding 8)."""
        camp = campaign(text="{brand} ✓ Reply STOP to opt out")
        submit(stage, bridge, sm("Hello"), camp)
        (sent,) = bridge.upstream
        assert sent.pdu.data_coding == 8
        assert body_text(sent.pdu) == "Hello ACME ✓ Reply STOP to opt out"

    def test_latin1_smsc_default(self, store: MemoryStore, bridge: FakeBridge) -> None:
        """data_coding 0 is decoded and re-encoded as Latin-1 when that is the SMSC default."""
        stage = FooterStage(store=store, settings=FooterSettings(default_alphabet=Alphabet.LATIN1))
        submit(stage, bridge, sm("Café ñ", alphabet=Alphabet.LATIN1))
        (sent,) = bridge.upstream
        assert sent.pdu.data_coding == 0
        assert sent.pdu.short_message == f"Café ñ {FOOTER}".encode("latin-1")

    @pytest.mark.parametrize(
        "text",
        [
            "Sale today! Reply STOP to opt out",
            "Deals: txt STOP to 12345",
            "Opt out: https://a.example/u",
        ],
    )
    def test_text_that_already_says_how_to_opt_out_is_untouched(
        self, stage: FooterStage, bridge: FakeBridge, text: str
    ) -> None:
        """No footer when the message already tells the reader how to opt out."""
        request = submit(stage, bridge, sm(text))
        (sent,) = bridge.upstream
        assert sent.frame == request.frame

    @pytest.mark.parametrize("text", ["Reply HALT to end", "Text halt now", "Réply… Reply HALT ✓"])
    def test_campaign_opt_out_words_count_as_instructions(
        self, stage: FooterStage, bridge: FakeBridge, text: str
    ) -> None:
        """A campaign's own opt-out word after "reply"/"text" is an instruction too."""
        words = Keywords(opt_out=WordList(words=("halt",)))
        camp = dataclasses.replace(ALWAYS, keywords=words)
        alphabet = Alphabet.GSM7 if gsm7.can_encode(text) else Alphabet.UCS2
        request = submit(
            stage,
            bridge,
            sm(text, alphabet=alphabet, data_coding=0 if alphabet is Alphabet.GSM7 else 8),
            camp,
        )
        assert bridge.upstream[0].frame == request.frame
        submit(stage, bridge, sm("Halt the presses"), camp)
        assert body_text(bridge.upstream[1].pdu) == f"Halt the presses {FOOTER}"

    def test_client_octets_are_kept_when_the_footer_is_appended(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """The one-part fast path appends to the client's octets, even ones decoded leniently,
        and the frame stays a valid encoding of the result."""
        original = sm(short_message=b"Hi \x80 there", tlvs=(p.Tlv(0x1401, b"v"),))
        submit(stage, bridge, original)
        (sent,) = bridge.upstream
        assert sent.pdu.short_message == b"Hi \x80 there" + gsm7.encode(f" {FOOTER}")
        assert encode(sent.pdu) == sent.frame

    @pytest.mark.parametrize("data_coding", [0x02, 0x04, 0xF5, 0x05, 0x24])
    def test_binary_and_unknown_codings_are_never_touched(
        self, stage: FooterStage, bridge: FakeBridge, data_coding: int
    ) -> None:
        """8-bit data, compressed and unsupported codings are forwarded byte-exact."""
        request = submit(stage, bridge, sm(data_coding=data_coding, short_message=b"\x00\x01abc"))
        (sent,) = bridge.upstream
        assert sent.frame == request.frame

    @pytest.mark.parametrize(
        "changes",
        [
            {"protocol_id": 0x40},  # silent SMS
            {"protocol_id": 0x7F},  # SIM data download
            {"esm_class": 0x08},  # delivery acknowledgement
            {"esm_class": EsmClass.UDHI, "short_message": b"\x06\x05\x04\x0b\x84\x23\xf0hi"},
            {"esm_class": EsmClass.UDHI, "short_message": b"\x09\x00hi"},  # broken UDH
            {"short_message": b""},
            {"short_message": b"\x1b"},  # lone escape: does not decode back to itself
        ],
    )
    def test_messages_not_read_as_text_are_untouched(
        self, stage: FooterStage, bridge: FakeBridge, changes: dict[str, Any]
    ) -> None:
        """Silent, data-download, acknowledgement, port-addressed and undecodable MTs pass as is."""
        request = submit(stage, bridge, sm("hello", **changes))
        (sent,) = bridge.upstream
        assert sent.frame == request.frame

    def test_other_udh_elements_are_kept(self, stage: FooterStage, bridge: FakeBridge) -> None:
        """A one-part message with a non-concatenation UDH element keeps it, UDHI set."""
        udh = Udh(elements=(InformationElement(iei=0x0A, data=b"\x00\x05\x01\x00"),))
        submit(stage, bridge, sm(esm_class=EsmClass.UDHI, short_message=udh.to_bytes() + b"Hi"))
        (sent,) = bridge.upstream
        content = content_of(sent.pdu)
        assert content.udh == udh
        assert sent.pdu.esm_class & EsmClass.UDHI
        assert body_text(sent.pdu) == f"Hi {FOOTER}"

    def test_message_payload_stays_in_message_payload(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A long submit_sm in message_payload stays one PDU, the footer inside the TLV."""
        text = "Z" * 400
        pdu = sm(tlvs=(p.Tlv(0x1401, b"v"), p.Tlv(Tag.MESSAGE_PAYLOAD, text.encode())))
        submit(stage, bridge, pdu)
        (sent,) = bridge.upstream
        out = sent.pdu
        assert out.short_message == b""
        assert [t.tag for t in out.tlvs] == [0x1401, Tag.MESSAGE_PAYLOAD]
        assert out.tlv(Tag.MESSAGE_PAYLOAD) == f"{text} {FOOTER}".encode()

    def test_data_sm_payload(self, stage: FooterStage, bridge: FakeBridge) -> None:
        """data_sm's message_payload gets the footer; the client gets the data_sm_resp."""
        pdu = p.DataSm(
            source_addr="15550100",
            destination_addr=SUBSCRIBER.value,
            data_coding=8,
            tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, encode_text("Привет", Alphabet.UCS2)),),
        )
        request = submit(stage, bridge, pdu)
        (sent,) = bridge.upstream
        out = decode(sent.frame)
        assert isinstance(out, p.DataSm)
        assert decode_as(out.tlv(Tag.MESSAGE_PAYLOAD) or b"", Alphabet.UCS2) == f"Привет {FOOTER}"
        bridge.smsc_answers()
        assert isinstance(bridge.answer(request.sequence_number), p.DataSmResp)

    def test_link_placeholder(self, store: MemoryStore, bridge: FakeBridge) -> None:
        """{link} is filled from link_for, and dropped cleanly when there is no link."""
        camp = campaign(text="{brand}: opt out {link}")
        without = FooterStage(store=store)
        submit(without, bridge, sm("Hi"), camp)
        with_link = FooterStage(
            store=store, link_for=lambda _c, s: f"https://x.example/o/{s.value}"
        )
        submit(with_link, bridge, sm("Hi"), camp)
        texts = [body_text(s.pdu) for s in bridge.upstream]
        assert texts == ["Hi ACME: opt out", "Hi ACME: opt out https://x.example/o/15551234567"]

    def test_refused_extra_part_is_logged(self, stage: FooterStage, bridge: FakeBridge) -> None:
        """An extra part the SMSC refuses is logged; the client keeps its OK."""
        request = submit(stage, bridge, sm("D" * 155))
        with structlog.testing.capture_logs() as captured:
            bridge.smsc_answers(lambda i: 0 if i == 0 else CommandStatus.ESME_RMSGQFUL)
        assert bridge.message_id(request.sequence_number) == "m1"
        (entry,) = [e for e in captured if e["event"] == logs.MT_PART_REFUSED]
        assert entry["command_status"] == "ESME_RMSGQFUL"

    async def test_first_mode_marks_the_footer_seen_once_accepted(
        self, stage: FooterStage, bridge: FakeBridge, store: MemoryStore
    ) -> None:
        """Mode "first": the subscriber is marked as having seen the footer after the SMSC's OK."""
        camp = campaign(FooterMode.FIRST)
        submit(stage, bridge, sm("Hi"), camp)
        bridge.smsc_answers(lambda _i: CommandStatus.ESME_RTHROTTLED)
        await stage.drain()
        assert not await store.footer_seen(SUBSCRIBER.value, "acme")
        submit(stage, bridge, sm("Hi again"), camp)
        bridge.smsc_answers()
        await stage.drain()
        assert await store.footer_seen(SUBSCRIBER.value, "acme")

    async def test_first_mode_marks_after_the_last_part_of_a_grown_message(
        self, stage: FooterStage, bridge: FakeBridge, store: MemoryStore
    ) -> None:
        """The mark waits for the part that carries the footer (the last one)."""
        submit(stage, bridge, sm("E" * 155), campaign(FooterMode.FIRST))
        bridge.smsc_answers(lambda i: 0 if i == 0 else CommandStatus.ESME_RMSGQFUL)
        await stage.drain()
        assert not await store.footer_seen(SUBSCRIBER.value, "acme")  # part 1 was fine
        submit(stage, bridge, sm("E" * 155), campaign(FooterMode.FIRST))
        bridge.smsc_answers()
        await stage.drain()
        assert await store.footer_seen(SUBSCRIBER.value, "acme")


# --- held parts -------------------------------------------------------------------------------

LONG = " ".join(f"word{i}" for i in range(60))  # 3 parts of GSM, also with the footer


class TestHeldParts:
    async def test_three_parts_are_held_then_resegmented(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """Nothing leaves until the last part is in; then every part goes with one new
        reference, client part i answered with upstream part i's message id."""
        parts = client_parts(LONG, CONCAT_8BIT, reference=200)
        assert len(parts) == 3
        requests = [submit(stage, bridge, parts[0]), submit(stage, bridge, parts[1])]
        assert not bridge.upstream
        assert not bridge.answers
        assert stage.held_messages == 1
        requests.append(submit(stage, bridge, parts[2]))
        assert stage.held_messages == 0
        pdus = [s.pdu for s in bridge.upstream]
        assert_consistent(list(pdus), 8)
        assert joined_text(list(pdus)) == f"{LONG} {FOOTER}"
        bridge.smsc_answers()
        ids = [bridge.message_id(r.sequence_number) for r in requests]
        assert ids == [f"m{i}" for i in range(1, 4)]
        assert len(bridge.answers) == 3

    async def test_parts_in_any_order(self, stage: FooterStage, bridge: FakeBridge) -> None:
        """Parts arriving out of order are put back in sequence order."""
        parts = client_parts(LONG, CONCAT_8BIT)
        requests = {i: submit(stage, bridge, parts[i]) for i in (2, 0, 1)}
        pdus = [s.pdu for s in bridge.upstream]
        assert joined_text(list(pdus)) == f"{LONG} {FOOTER}"
        bridge.smsc_answers()
        assert bridge.message_id(requests[0].sequence_number) == "m1"
        assert bridge.message_id(requests[2].sequence_number) == "m3"

    async def test_an_added_part_is_answered_to_the_gateway_only(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A message with full parts grows a part: the client's two parts get parts 1 and 2."""
        text = "F" * 306  # two full 8-bit-reference parts
        parts = client_parts(text, CONCAT_8BIT)
        requests = [submit(stage, bridge, x) for x in parts]
        pdus = [s.pdu for s in bridge.upstream]
        assert len(pdus) == 3
        assert_consistent(list(pdus), 8)
        bridge.smsc_answers()
        assert [bridge.message_id(r.sequence_number) for r in requests] == ["m1", "m2"]
        assert len(bridge.answers) == 2

    async def test_sixteen_bit_reference_and_other_elements_are_kept(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """16-bit-reference parts stay 16-bit; another UDH element stays in every part."""
        other = Udh(elements=(InformationElement(iei=0x0A, data=b"\x00\x05\x01\x00"),))
        parts = client_parts(LONG, CONCAT_16BIT, reference=0xBEEF, udh=other)
        for x in parts:
            submit(stage, bridge, x)
        pdus = [s.pdu for s in bridge.upstream]
        assert_consistent(list(pdus), 16)
        for x in pdus:
            assert content_of(x).udh.without_concat() == other
        assert joined_text(list(pdus)) == f"{LONG} {FOOTER}"

    async def test_sar_stays_sar(self, stage: FooterStage, bridge: FakeBridge) -> None:
        """SAR parts are re-segmented with new SAR values, TLVs in place, no UDH."""
        parts = client_parts(LONG, SAR, reference=0x1234)
        for x in parts:
            submit(stage, bridge, x)
        pdus = [s.pdu for s in bridge.upstream]
        assert_consistent(list(pdus), 0)
        assert not any(x.esm_class & EsmClass.UDHI for x in pdus)
        assert joined_text(list(pdus)) == f"{LONG} {FOOTER}"

    async def test_ucs2_parts_split_inside_a_surrogate_pair_are_healed(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """Parts are joined before decoding, so a pair a client cut in two is whole again."""
        text = "x" * 66 + "😀" + "y" * 40
        raw = encode_text(text, Alphabet.UCS2)
        bodies = [raw[:134], raw[134:]]  # cuts the emoji's surrogate pair
        parts = frame_parts(bodies, CONCAT_8BIT, reference=3)
        for part in parts:
            submit(
                stage,
                bridge,
                sm(data_coding=8, esm_class=EsmClass.UDHI, short_message=part.short_message),
            )
        pdus = [s.pdu for s in bridge.upstream]
        assert joined_text(list(pdus)) == f"{text} {FOOTER}"

    async def test_kannel_more_messages_to_send_stays_true(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """more_messages_to_send marks every part but the last, also when a part was added;
        only part 1 keeps Kannel's receipt request."""
        text = "G" * 306
        parts = client_parts(text, CONCAT_8BIT)
        parts[0] = dataclasses.replace(parts[0], tlvs=(p.Tlv(Tag.MORE_MESSAGES_TO_SEND, b"\x01"),))
        parts[1] = dataclasses.replace(parts[1], registered_delivery=0)
        for x in parts:
            submit(stage, bridge, x)
        pdus = [s.pdu for s in bridge.upstream]
        assert [x.tlv(Tag.MORE_MESSAGES_TO_SEND) for x in pdus] == [b"\x01", b"\x01", None]
        assert [x.registered_delivery for x in pdus] == [1, 0, 0]

    async def test_footer_that_fits_goes_in_the_last_part(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """When the footer fits the room the last part leaves, parts 1..N-1 go byte for byte as
        the client sent them and the footer is appended to part N."""
        bodies = [gsm7.encode("Hello "), gsm7.encode("there")]
        requests = [
            submit(stage, bridge, sm(esm_class=0x40, short_message=part.short_message))
            for part in frame_parts(bodies, CONCAT_8BIT, reference=9)
        ]
        first, last = bridge.upstream
        assert first.frame[16:] == requests[0].frame[16:]
        assert joined_text([first.pdu, last.pdu]) == f"Hello there {FOOTER}"
        bridge.smsc_answers()
        assert [bridge.message_id(r.sequence_number) for r in requests] == ["m1", "m2"]

    async def test_surplus_client_parts_share_the_last_answer(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A short text a client sent in two parts, whose footer needs UCS-2, goes as one
        re-coded part; both client parts get its answer."""
        bodies = [gsm7.encode("Hello "), gsm7.encode("there")]
        cyrillic = campaign(text="{brand}: СТОП to opt out")
        requests = [
            submit(stage, bridge, sm(esm_class=0x40, short_message=part.short_message), cyrillic)
            for part in frame_parts(bodies, CONCAT_8BIT, reference=9)
        ]
        (sent,) = bridge.upstream
        assert not sent.pdu.esm_class & EsmClass.UDHI
        assert body_text(sent.pdu) == "Hello there ACME: СТОП to opt out"
        bridge.smsc_answers()
        assert [bridge.message_id(r.sequence_number) for r in requests] == ["m1", "m1"]

    async def test_no_response_from_the_smsc_fails_every_part(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """If the SMSC never answers, each client part gets ESME_RSYSERR (clients retry it)."""
        requests = [submit(stage, bridge, x) for x in client_parts(LONG, CONCAT_8BIT)]
        bridge.smsc_silent()
        for r in requests:
            assert bridge.answer(r.sequence_number).command_status == CommandStatus.ESME_RSYSERR

    async def test_upstream_down_fails_every_part(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """If the upstream leg cannot take the parts, each client part gets ESME_RSYSERR."""
        bridge.can_originate = False
        requests = [submit(stage, bridge, x) for x in client_parts(LONG, CONCAT_8BIT)]
        for r in requests:
            assert bridge.answer(r.sequence_number).command_status == CommandStatus.ESME_RSYSERR

    async def test_lost_part_releases_the_rest_unchanged_after_the_hold_time(
        self, stage: FooterStage, bridge: FakeBridge, clock: Clock
    ) -> None:
        """Parts 1 and 3 without 2: at the hold time they go as they came, both answered, logged;
        part 2 arriving later passes straight through."""
        parts = client_parts(LONG, CONCAT_8BIT)
        first, third = submit(stage, bridge, parts[0]), submit(stage, bridge, parts[2])
        clock.now += TIMEOUT - 0.5
        assert stage.expire() == 0
        clock.now += 1
        with structlog.testing.capture_logs() as captured:
            assert stage.expire() == 1
        assert [s.frame for s in bridge.upstream] == [first.frame, third.frame]
        (entry,) = [e for e in captured if e["event"] == logs.MT_HOLD_EXPIRED]
        assert (entry["reason"], entry["segments"], entry["received"]) == ("timeout", 3, 2)
        late = submit(stage, bridge, parts[1])
        assert bridge.upstream[-1].frame == late.frame
        assert stage.held_messages == 0
        bridge.smsc_answers()
        assert {bridge.message_id(r.sequence_number) for r in (first, third, late)} == {
            "m1",
            "m2",
            "m3",
        }

    async def test_duplicate_part_gets_its_originals_answer(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A part sent twice goes upstream once; both copies get the same message id."""
        parts = client_parts(LONG, CONCAT_8BIT)
        first = submit(stage, bridge, parts[0])
        again = submit(stage, bridge, parts[0])
        rest = [submit(stage, bridge, x) for x in parts[1:]]
        assert len(bridge.upstream) == 3
        bridge.smsc_answers()
        assert bridge.message_id(first.sequence_number) == "m1"
        assert bridge.message_id(again.sequence_number) == "m1"
        assert [bridge.message_id(r.sequence_number) for r in rest] == ["m2", "m3"]

    async def test_duplicate_of_an_expired_hold_gets_its_originals_answer(
        self, stage: FooterStage, bridge: FakeBridge, clock: Clock
    ) -> None:
        """A held duplicate is answered together with its original when the hold expires."""
        parts = client_parts(LONG, CONCAT_8BIT)
        first, again = submit(stage, bridge, parts[0]), submit(stage, bridge, parts[0])
        clock.now += TIMEOUT
        stage.expire()
        assert len(bridge.upstream) == 1
        bridge.smsc_answers()
        assert bridge.message_id(first.sequence_number) == bridge.message_id(again.sequence_number)

    async def test_disconnect_drops_the_hold_unanswered(
        self, stage: FooterStage, bridge: FakeBridge, clock: Clock
    ) -> None:
        """A client gone while its parts are held: nothing is sent and nothing answered."""
        parts = client_parts(LONG, CONCAT_8BIT)
        submit(stage, bridge, parts[0])
        other = FakeBridge("c2")
        submit(stage, other, parts[0])
        stage.on_closed("c1")
        assert stage.held_messages == 1  # the other connection's hold stays
        clock.now += TIMEOUT
        other.closed = True  # gone too, without on_closed: found at expiry
        stage.expire()
        assert not bridge.upstream
        assert not other.upstream
        assert not bridge.answers
        assert not other.answers
        assert stage.held_messages == 0

    async def test_parts_of_different_connections_are_not_mixed(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """The same reference from two sessions is two messages (peers restart counters)."""
        parts = client_parts(LONG, CONCAT_8BIT)
        other = FakeBridge("c2")
        for x in parts[:2]:
            submit(stage, bridge, x)
            submit(stage, other, x)
        assert stage.held_messages == 2
        submit(stage, other, parts[2])
        assert not bridge.upstream
        assert len(other.upstream) == 3

    async def test_oldest_message_is_evicted_at_the_message_bound(
        self, store: MemoryStore, clock: Clock, bridge: FakeBridge
    ) -> None:
        """Over hold_max_messages, the oldest held message goes on unchanged, answered."""
        stage = FooterStage(store=store, settings=FooterSettings(hold_max_messages=1), clock=clock)
        a = client_parts(LONG, CONCAT_8BIT, reference=1)
        b = client_parts(LONG, CONCAT_8BIT, reference=2)
        first = submit(stage, bridge, a[0])
        submit(stage, bridge, b[0])
        assert [s.frame for s in bridge.upstream] == [first.frame]
        assert stage.held_messages == 1
        submit(stage, bridge, a[1])  # a late part of the evicted message: straight through
        assert len(bridge.upstream) == 2
        stage.close()

    async def test_oldest_message_is_evicted_at_the_byte_bound(
        self, store: MemoryStore, clock: Clock, bridge: FakeBridge
    ) -> None:
        """Over hold_max_bytes, the oldest held message goes on unchanged."""
        stage = FooterStage(store=store, settings=FooterSettings(hold_max_bytes=200), clock=clock)
        a = client_parts(LONG, CONCAT_8BIT, reference=1)
        b = client_parts(LONG, CONCAT_8BIT, reference=2)
        first = submit(stage, bridge, a[0])
        submit(stage, bridge, b[0])
        assert [s.frame for s in bridge.upstream] == [first.frame]
        assert stage.held_bytes == len(content_of(b[0]).body)
        stage.close()

    async def test_binary_parts_pass_at_once(self, stage: FooterStage, bridge: FakeBridge) -> None:
        """Concatenated 8-bit data is never held or touched."""
        parts = frame_parts([b"\x01" * 134, b"\x02" * 10], CONCAT_8BIT, reference=5)
        requests = [
            submit(stage, bridge, sm(data_coding=4, esm_class=0x40, short_message=x.short_message))
            for x in parts
        ]
        assert [s.frame for s in bridge.upstream] == [r.frame for r in requests]

    async def test_long_text_with_opt_out_is_sent_as_it_came(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """A long message that already says "Reply STOP" is held, then sent unchanged."""
        text = LONG + " Reply STOP to opt out"
        requests = [submit(stage, bridge, x) for x in client_parts(text, CONCAT_8BIT)]
        assert [s.frame for s in bridge.upstream] == [r.frame for r in requests]

    async def test_new_message_under_a_held_key_releases_the_old_one(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """The same part number with other content under the same key is a new message (a
        restarted reference counter): the old one goes on unchanged, the new one is held."""
        old = client_parts(LONG, CONCAT_8BIT, reference=4)
        new = client_parts(LONG.upper(), CONCAT_8BIT, reference=4)
        first = submit(stage, bridge, old[0])
        submit(stage, bridge, new[0])
        assert [s.frame for s in bridge.upstream] == [first.frame]
        for x in new[1:]:
            submit(stage, bridge, x)
        pdus = [s.pdu for s in bridge.upstream[1:]]
        assert joined_text(pdus) == f"{LONG.upper()} {FOOTER}"

    async def test_release_all_sends_held_parts_on(
        self, stage: FooterStage, bridge: FakeBridge
    ) -> None:
        """Shutdown: held parts go on unchanged, so their clients get answers."""
        first = submit(stage, bridge, client_parts(LONG, CONCAT_8BIT)[0])
        stage.release_all()
        assert [s.frame for s in bridge.upstream] == [first.frame]

    @settings(max_examples=40, deadline=None)
    @given(
        text=st.text(
            alphabet=st.sampled_from([*"abcXYZ 0123.,€{}[]^~|\\", "é", "😀", "ж"]),
            min_size=140,
            max_size=500,
        ),
        kind=st.sampled_from([CONCAT_8BIT, CONCAT_16BIT, SAR]),
    )
    def test_any_long_text_comes_out_whole_and_consistent(
        self, text: str, kind: ConcatKind
    ) -> None:
        """Whatever the text and concatenation, the SMSC's parts reassemble to text + footer,
        consistently numbered, each within its capacity, in the client's kind."""
        alphabet = Alphabet.GSM7 if gsm7.can_encode(text) else Alphabet.UCS2
        dc = 0 if alphabet is Alphabet.GSM7 else 8

        async def scenario() -> list[p.SubmitSm | p.DataSm]:
            stage = FooterStage(store=MemoryStore())
            bridge = FakeBridge()
            parts = client_parts(text, kind, alphabet=alphabet, data_coding=dc)
            for x in parts:
                submit(stage, bridge, x)
            stage.close()
            return [s.pdu for s in bridge.upstream]

        pdus = asyncio.run(scenario())
        assert joined_text(pdus) == f"{text} {FOOTER}"
        if len(pdus) > 1:
            assert_consistent(pdus, {CONCAT_8BIT: 8, CONCAT_16BIT: 16, SAR: 0}[kind])
