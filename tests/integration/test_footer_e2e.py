"""Opt-out footers end to end: clients -> gateway (consent on, memory store) -> SMSC simulator.

What the SMSC received is checked part by part twice: with our codec (the text reassembled from
the parts is the original + " " + footer; one reference, count and sequence; each part within its
capacity) and with Wireshark's dissector (clean, and its own view of sm_length, the UDH octets and
the SAR values agrees). Clients: smpplib (splits long text itself with an 8-bit UDH), aiosmpplib
(long text in message_payload), and a raw client on our codec for 16-bit references, SAR, binary
and lost parts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import smpplib.consts
import smpplib.gsm
from aiosmpplib import ESME, BindMode, PhoneNumber, SubmitSm
from aiosmpplib import SubmitSmResp as AioSubmitSmResp

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.simulator.server import ReceivedRequest
from gateway.smpp import pdu as p
from gateway.smpp.constants import EsmClass, Tag
from gateway.smpp.session import SessionConfig
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
from gateway.text.udh import parse_udh
from tests.integration.conftest import FAST_SESSION, WAIT_S, RawEsme, bridges, smpplib_client
from tests.support.aiosmpp import Inbox
from tests.support.gateway import running_gateway
from tests.support.sim import running_simulator
from tests.support.tshark import assert_clean, tshark_path

SENDER = "15550001111"  # campaign "acme", footer always
FIRST_SENDER = "15550002222"  # campaign "acme-first", footer first
DEST = "15551234567"
FOOTER = "ACME: Reply STOP to opt out"
HOLD_S = 0.5
CAMPAIGNS = [
    {
        "name": "acme",
        "brand": "ACME",
        "numbers": [f"+{SENDER}"],
        "footer": "always",
        "footer_text": "{brand}: Reply STOP to opt out",
    },
    {
        "name": "acme-first",
        "brand": "ACME",
        "numbers": [f"+{FIRST_SENDER}"],
        "footer": "first",
        "footer_text": "{brand}: Reply STOP to opt out",
    },
]
needs_tshark = pytest.mark.skipif(tshark_path() is None, reason="tshark is not installed")


@pytest.fixture
async def smsc() -> AsyncIterator[Simulator]:
    """The SMSC, without receipts (clients here read responses only)."""
    async with running_simulator(
        control_port=None, receipts=False, session_config=SessionConfig(unbind_timeout_s=1.0)
    ) as sim:
        yield sim


@pytest.fixture
async def gw(smsc: Simulator) -> AsyncIterator[Gateway]:
    """A consent gateway with the footer campaigns and a short hold time."""
    async with running_gateway(
        smsc.port,
        session=FAST_SESSION,
        campaigns=CAMPAIGNS,
        text={"hold_timeout_s": HOLD_S},
    ) as gateway:
        yield gateway


@contextlib.asynccontextmanager
async def raw(gw: Gateway) -> AsyncIterator[RawEsme]:
    esme = await RawEsme.bound(gw.port, "acme-app")
    try:
        yield esme
    finally:
        await esme.close()


def mt(sender: str = SENDER, **fields: Any) -> p.SubmitSm:
    base: dict[str, Any] = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": sender,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": DEST,
    }
    base.update(fields)
    return p.SubmitSm(**base)


async def send_all(esme: RawEsme, pdus: Sequence[p.Pdu]) -> list[p.Pdu]:
    """Send every PDU, then read their responses; returned in the order sent."""
    seqs = [await esme.send(x) for x in pdus]
    got: dict[int, p.Pdu] = {}
    while len(got) < len(seqs):
        resp = await esme.read()
        got[resp.sequence_number] = resp
    return [got[s] for s in seqs]


def parts_of(text: str, kind: ConcatKind, alphabet: Alphabet, reference: int) -> list[p.SubmitSm]:
    """A long message split as a client would, in ``kind``."""
    bodies = split(text, alphabet, kind)
    data_coding = 8 if alphabet is Alphabet.UCS2 else 0
    out = []
    for part in frame_parts(bodies, kind, reference=reference):
        tlvs = tuple(p.Tlv(t, v) for t, v in part.sar.to_tlvs()) if part.sar else ()
        out.append(
            mt(
                esm_class=EsmClass.UDHI if part.udhi else 0,
                data_coding=data_coding,
                short_message=part.short_message,
                tlvs=tlvs,
            )
        )
    return out


async def received(sim: Simulator, count: int) -> list[ReceivedRequest]:
    """Wait until the SMSC has ``count`` messages; fail on more."""
    messages = await sim.wait_for(lambda m: len(m) >= count, timeout=WAIT_S)
    assert len(messages) == count, [m.pdu for m in messages]
    return messages


def _resp(status: int, message_id: str) -> p.SubmitSmResp:
    return p.SubmitSmResp(command_status=status, message_id=message_id)


async def assert_answers(
    gw: Gateway, answers: Sequence[p.Pdu], records: list[ReceivedRequest]
) -> None:
    """Client part i was answered OK with the SMSC's id for part i, or (answered before the
    SMSC saw it) with an id of the gateway's own that receipts for part i are mapped to (once
    the SMSC's answer, which follows its record of the part, has reached the gateway)."""
    assert gw.footers is not None
    ids = gw.footers.receipt_ids
    for answer, record in zip(answers, records, strict=False):
        assert answer.command_status == 0, answer
        assert isinstance(answer, p.SubmitSmResp | p.DataSmResp)
        if answer.message_id != record.message_id:
            upstream = record.message_id
            assert upstream is not None
            # The simulator and the gateway share this loop: a few turns carry the answer.
            for _ in range(1000):
                if ids.local(upstream) is not None:
                    break
                await asyncio.sleep(0)
            mapped = ids.local(upstream)
            assert mapped is not None, (answer, upstream)
            assert answer.message_id in mapped.client_ids


def message_pdu(record: ReceivedRequest) -> p.SubmitSm | p.DataSm:
    assert isinstance(record.pdu, p.SubmitSm | p.DataSm)
    return record.pdu


def body_and_alphabet(pdu: p.SubmitSm | p.DataSm) -> tuple[bytes, bytes, Alphabet]:
    """(UDH octets, body, alphabet) of one received part, by our codec."""
    payload = pdu.tlv(Tag.MESSAGE_PAYLOAD)
    raw_message = payload if payload is not None else getattr(pdu, "short_message", b"")
    alphabet = Alphabet.UCS2 if pdu.data_coding == 8 else Alphabet.GSM7
    if pdu.esm_class & EsmClass.UDHI:
        udh, body = parse_udh(raw_message)
        return udh.to_bytes(), body, alphabet
    return b"", raw_message, alphabet


def check_parts(records: Sequence[ReceivedRequest], expected_text: str, kind: ConcatKind) -> None:
    """Our codec: the parts rejoin to ``expected_text``, numbered consistently, within capacity."""
    pdus = [message_pdu(r) for r in records]
    pieces = [body_and_alphabet(x) for x in pdus]
    alphabet = pieces[0][2]
    assert decode_as(b"".join(b for _, b, _ in pieces), alphabet) == expected_text
    if len(pdus) == 1:
        return
    concats = []
    for x, (udh_octets, body, _) in zip(pdus, pieces, strict=True):
        if kind is SAR:
            ref, total, seq = (
                x.tlv(Tag.SAR_MSG_REF_NUM),
                x.tlv(Tag.SAR_TOTAL_SEGMENTS),
                x.tlv(Tag.SAR_SEGMENT_SEQNUM),
            )
            assert ref is not None
            assert total is not None
            assert seq is not None
            concats.append((int.from_bytes(ref, "big"), total[0], seq[0]))
        else:
            udh, _ = parse_udh(udh_octets)
            concat = udh.concat
            assert concat is not None
            assert concat.ref_bits == (8 if kind is CONCAT_8BIT else 16)
            concats.append((concat.reference, concat.total, concat.seq))
        cap = capacity(alphabet, kind, multipart=True)
        assert len(body) // (2 if alphabet is Alphabet.UCS2 else 1) <= cap
    assert len({c[0] for c in concats}) == 1
    assert [c[1:] for c in concats] == [(len(pdus), i) for i in range(1, len(pdus) + 1)]


def tshark_concat(records: Sequence[ReceivedRequest]) -> list[tuple[int, int, int]]:
    """Wireshark's view: clean frames, sm_length right; (reference, total, seq) per part read
    from the octets it shows (UDH) or its SAR fields; (0, 1, 1) for a one-part message."""
    dissected = assert_clean([r.frame for r in records])
    out = []
    for d in dissected:
        shown = d.get("message")
        message = bytes.fromhex(shown.replace(":", "")) if shown else b""
        assert int(d.get("sm_length") or "0") == len(message)
        if d.get("sar_msg_ref_num") is not None:
            out.append(
                (
                    int(d.get("sar_msg_ref_num") or "0"),
                    int(d.get("sar_total_segments") or "0"),
                    int(d.get("sar_segment_seqnum") or "0"),
                )
            )
            continue
        if int(d.get("esm.submit.features") or "0", 16) & 0x01:  # UDHI
            # Walk the information elements by hand (not with our parser).
            end, i, found = 1 + message[0], 1, None
            while i < end:
                iei, iel = message[i], message[i + 1]
                data = message[i + 2 : i + 2 + iel]
                if iei == 0x00:
                    found = (data[0], data[1], data[2])
                elif iei == 0x08:
                    found = (int.from_bytes(data[:2], "big"), data[2], data[3])
                i += 2 + iel
            assert found is not None
            out.append(found)
        else:
            out.append((0, 1, 1))
    return out


def assert_tshark_consistent(records: Sequence[ReceivedRequest]) -> None:
    if tshark_path() is None:
        return
    concats = tshark_concat(records)
    if len(concats) > 1:
        assert len({c[0] for c in concats}) == 1
        assert [c[1:] for c in concats] == [(len(concats), i) for i in range(1, len(concats) + 1)]


def smpplib_send(port: int, messages: list[list[dict[str, Any]]]) -> list[tuple[int, str]]:
    """Bind smpplib, send each message's parts, read every submit_sm_resp; (status, id) each."""
    answers: list[Any] = []
    with smpplib_client(port) as client:
        client.set_message_sent_handler(lambda pdu: answers.append(pdu))
        client.bind_transceiver(system_id="acme-app", password="pw")
        count = 0
        for parts in messages:
            for fields in parts:
                client.send_message(
                    source_addr_ton=1,
                    source_addr_npi=1,
                    source_addr=fields.pop("source_addr", SENDER),
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    destination_addr=DEST,
                    **fields,
                )
                count += 1
        while len(answers) < count:
            client.read_once()
        client.unbind()
    return [(a.status, a.message_id.decode()) for a in answers]


def smpplib_parts(text: str) -> list[dict[str, Any]]:
    """smpplib's own split: GSM (or UCS-2) with an 8-bit UDH reference when long."""
    parts, coding, esm_class = smpplib.gsm.make_parts(text)
    return [{"short_message": x, "data_coding": coding, "esm_class": esm_class} for x in parts]


class TestOnePart:
    async def test_gsm_message_with_footer(self, smsc: Simulator, gw: Gateway) -> None:
        """smpplib's short GSM message reaches the SMSC as one PDU: text + footer."""
        answers = await asyncio.to_thread(smpplib_send, gw.port, [smpplib_parts("Hello Bob")])
        (record,) = await received(smsc, 1)
        check_parts([record], f"Hello Bob {FOOTER}", CONCAT_8BIT)
        assert_tshark_consistent([record])
        assert answers == [(0, record.message_id)]

    async def test_gsm_message_grows_a_segment(self, smsc: Simulator, gw: Gateway) -> None:
        """150 GSM characters + footer: two GSM parts with one reference; the client's single
        request is answered with the first part's message id."""
        text = "Lorem ipsum " * 12 + "dolor!"
        answers = await asyncio.to_thread(smpplib_send, gw.port, [smpplib_parts(text)])
        records = await received(smsc, 2)
        assert all(message_pdu(r).data_coding == 0 for r in records)
        check_parts(records, f"{text} {FOOTER}", CONCAT_8BIT)
        assert_tshark_consistent(records)
        assert answers == [(0, records[0].message_id)]

    async def test_extension_characters_at_the_boundary(self, smsc: Simulator, gw: Gateway) -> None:
        """Escape pairs where the split falls stay whole, and the text rejoins exactly."""
        text = "x" * 150 + "{€}[~]"
        async with raw(gw) as esme:
            (resp,) = await send_all(esme, [mt(short_message=encode_text(text, Alphabet.GSM7))])
        records = await received(smsc, 2)
        for r in records:
            _, body, _ = body_and_alphabet(message_pdu(r))
            assert not body.endswith(b"\x1b")
        check_parts(records, f"{text} {FOOTER}", CONCAT_8BIT)
        assert_tshark_consistent(records)
        assert resp.command_status == 0

    async def test_ucs2_with_emoji(self, smsc: Simulator, gw: Gateway) -> None:
        """A UCS-2 message with emoji stays UCS-2 and rejoins exactly (surrogates whole)."""
        text = "Happy birthday 🎂🎉 " * 3 + "Grüße 😀"
        answers = await asyncio.to_thread(smpplib_send, gw.port, [smpplib_parts(text)])
        records = await received(smsc, 2)
        assert all(message_pdu(r).data_coding == 8 for r in records)
        check_parts(records, f"{text} {FOOTER}", CONCAT_8BIT)
        assert_tshark_consistent(records)
        assert [a[0] for a in answers] == [0]

    async def test_message_payload_from_aiosmpplib(self, smsc: Simulator, gw: Gateway) -> None:
        """aiosmpplib's long text in message_payload stays one PDU, footer in the payload."""
        text = "This is a long notice. " * 12
        hook = Inbox()
        esme = ESME(
            smsc_host="127.0.0.1",
            smsc_port=gw.port,
            system_id="aio",
            password="pw",
            bind_mode=BindMode.TRANSCEIVER,
            hook=hook,
            log_level="WARNING",
            socket_timeout=5.0,
        )
        running = asyncio.create_task(esme.start())
        try:
            await esme.broker.enqueue(
                SubmitSm(
                    short_message=text,
                    source=PhoneNumber(f"+{SENDER}"),
                    destination=PhoneNumber(f"+{DEST}"),
                    log_id="m1",
                )
            )
            resp = await hook.next(AioSubmitSmResp)
        finally:
            writer = esme._writer
            await esme.stop()
            await running
            if writer is not None:
                writer.close()
        (record,) = await received(smsc, 1)
        pdu = message_pdu(record)
        assert pdu.tlv(Tag.MESSAGE_PAYLOAD) is not None
        check_parts([record], f"{text} {FOOTER}", CONCAT_8BIT)
        assert_tshark_consistent([record])
        assert resp.message_id == record.message_id

    async def test_binary_message_untouched(self, smsc: Simulator, gw: Gateway) -> None:
        """8-bit data reaches the SMSC byte-exact."""
        original = mt(data_coding=4, short_message=bytes(range(100)))
        async with raw(gw) as esme:
            await send_all(esme, [original])
        (record,) = await received(smsc, 1)
        assert dataclasses.replace(message_pdu(record), sequence_number=0) == original

    async def test_text_with_opt_out_instructions_untouched(
        self, smsc: Simulator, gw: Gateway
    ) -> None:
        """A message that already says "Reply STOP" gets no second instruction."""
        text = "Flash sale today only. Reply STOP to end"
        await asyncio.to_thread(smpplib_send, gw.port, [smpplib_parts(text)])
        (record,) = await received(smsc, 1)
        assert record.text == text

    async def test_first_mode_adds_the_footer_once_per_subscriber(
        self, smsc: Simulator, gw: Gateway
    ) -> None:
        """Footer "first": the subscriber's first message has it, once accepted the next not."""
        async with raw(gw) as esme:
            await send_all(esme, [mt(FIRST_SENDER, short_message=b"One")])
            assert gw.store is not None
            async with asyncio.timeout(WAIT_S):
                # The mark is stored by a task after the SMSC's OK: yield until it has run.
                while not await gw.store.footer_seen(DEST, "acme-first"):  # noqa: ASYNC110
                    await asyncio.sleep(0)
            await send_all(esme, [mt(FIRST_SENDER, short_message=b"Two")])
        records = await received(smsc, 2)
        assert [r.text for r in records] == [f"One {FOOTER}", "Two"]


class TestConcatenated:
    async def test_three_part_message_from_smpplib(self, smsc: Simulator, gw: Gateway) -> None:
        """smpplib's 3-part message (random 8-bit reference) is re-segmented with one new
        reference; client part i gets upstream part i's message id."""
        text = " ".join(f"item{i}" for i in range(64))
        parts = smpplib_parts(text)
        assert len(parts) == 3
        answers = await asyncio.to_thread(smpplib_send, gw.port, [parts])
        records = await received(smsc, len(split(f"{text} {FOOTER}", Alphabet.GSM7)))
        assert len(records) == 4  # the footer added a part
        check_parts(records, f"{text} {FOOTER}", CONCAT_8BIT)
        assert_tshark_consistent(records)
        await assert_answers(gw, [_resp(status, mid) for status, mid in answers], records)

    @pytest.mark.parametrize(
        ("kind", "alphabet"),
        [(CONCAT_8BIT, Alphabet.UCS2), (CONCAT_16BIT, Alphabet.GSM7), (SAR, Alphabet.GSM7)],
    )
    async def test_concatenation_kind_is_kept(
        self, smsc: Simulator, gw: Gateway, kind: ConcatKind, alphabet: Alphabet
    ) -> None:
        """8-bit, 16-bit and SAR parts come out in the same kind, consistently numbered; a full
        last part grows one more, answered to the gateway only."""
        text = ("Ünïcödé ✓ " if alphabet is Alphabet.UCS2 else "Plain text ") * 20
        parts = parts_of(text, kind, alphabet, reference=0xF2)
        async with raw(gw) as esme:
            answers = await send_all(esme, parts)
        records = await received(smsc, len(split(f"{text} {FOOTER}", alphabet, kind)))
        check_parts(records, f"{text} {FOOTER}", kind)
        assert_tshark_consistent(records)
        if kind is SAR:
            assert not any(message_pdu(r).esm_class & EsmClass.UDHI for r in records)
        await assert_answers(gw, answers, records)

    async def test_lost_part_is_forwarded_unchanged_after_the_hold_time(
        self, smsc: Simulator, gw: Gateway
    ) -> None:
        """Parts 1 and 3 of 3, part 2 never sent: after the hold time both go as they came and
        both are answered."""
        parts = parts_of("lost " * 80, CONCAT_8BIT, Alphabet.GSM7, reference=77)
        assert len(parts) == 3
        async with raw(gw) as esme:
            answers = await send_all(esme, [parts[0], parts[2]])  # at once, by the gateway
            records = await received(smsc, 2)  # at the hold timeout, the client still there
            await assert_answers(gw, answers, records)
        assert [dataclasses.replace(message_pdu(r), sequence_number=0) for r in records] == [
            parts[0],
            parts[2],
        ]
        assert [a.command_status for a in answers] == [0, 0]
        assert gw.footers is not None
        assert gw.footers.held_messages == 0

    async def test_disconnect_while_held_sends_nothing(self, smsc: Simulator, gw: Gateway) -> None:
        """A client that leaves with parts held (answered at once) has them dropped: they
        never reach the SMSC (nothing can carry them once its session is gone)."""
        parts = parts_of("gone " * 80, CONCAT_8BIT, Alphabet.GSM7, reference=5)
        footers = gw.footers
        assert footers is not None
        async with raw(gw) as esme:
            first, _sync = await send_all(esme, [parts[0], mt(short_message=b"sync")])
            assert first.command_status == 0  # answered at once, with the gateway's own id
            assert footers.held_messages == 1
            (bridge,) = bridges(gw)
        await asyncio.wait_for(bridge.wait_closed(), WAIT_S)
        footers.expire(asyncio.get_running_loop().time() + HOLD_S)  # due now, client gone
        assert footers.held_messages == 0
        (record,) = await received(smsc, 1)
        assert record.text == f"sync {FOOTER}"
