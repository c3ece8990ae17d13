"""Long messages with a footer, for every client pattern, end to end with real client libraries.

Clients: smpplib and aiosmpplib used as libraries, each in both patterns: all parts outstanding
at once, and one part at a time, each sent only after the previous part's answer (the way
jsmpp's submitShortMessage and Cloudhopper's synchronous submit always work), with a 5 s
client timeout. The gateway holds a long message until it is complete, so a client that waits
would be stuck until the hold timeout (10 s here): every part must be answered long before it.
The SMSC (the simulator, sending a receipt for every part that asks for one) must see one
consistent concatenation whose text is the client's plus the footer; the client must get
exactly the receipts for the parts it sent, each under an id it was given, also when the
receipt comes back through a second gateway instance on the same Redis; and a part the SMSC
refuses after the client was answered comes back as a stat:REJECTD receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
from aiosmpplib import ESME, BindMode, OptionalParam, PhoneNumber, SubmitSm

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.simulator.server import ReceivedRequest
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode
from gateway.smpp.constants import Tag
from gateway.text.dcs import Alphabet
from gateway.text.segment import (
    CONCAT_8BIT,
    CONCAT_16BIT,
    SAR,
    ConcatKind,
    frame_parts,
    split,
)
from tests.integration.test_footer_e2e import CAMPAIGNS as FOOTER_CAMPAIGNS
from tests.integration.test_footer_e2e import (
    DEST,
    FOOTER,
    SENDER,
    assert_tshark_consistent,
    check_parts,
)
from tests.support.aiosmpp import Inbox
from tests.support.consent import FAST_SESSION, WAIT_S, simulator
from tests.support.gateway import running_gateway
from tests.support.redis_server import RedisServer

CLIENT_TIMEOUT_S = 5.0  # the client gives up on an answer after this (a common default)
HOLD_S = 10.0  # the gateway's hold timeout: a client waiting for it would time out first
CAMPAIGNS = FOOTER_CAMPAIGNS[:1]  # "acme": footer always, sender SENDER
KINDS = {"udh8": CONCAT_8BIT, "udh16": CONCAT_16BIT, "sar": SAR}


def text_for(alphabet: Alphabet, kind: ConcatKind, *, fits: bool) -> str:
    """A 3-part text whose last part leaves room for the footer, or a full 3-part text (the
    footer then needs a fourth part)."""
    unit = "Plain words " if alphabet is Alphabet.GSM7 else "Ünïcödé ✓ wörds "
    per_part = len(split("x" * 2000, alphabet, kind)[0]) // (2 if alphabet is Alphabet.UCS2 else 1)
    if fits:
        return (unit * 100)[: per_part * 2 + per_part // 3]
    return (unit * 100)[: per_part * 3]


def client_parts(
    text: str, alphabet: Alphabet, kind: ConcatKind, reference: int
) -> list[dict[str, Any]]:
    """The parts as smpplib submit_sm fields, split as a client splits (full parts)."""
    bodies = split(text, alphabet, kind)
    out = []
    for part in frame_parts(bodies, kind, reference=reference):
        fields: dict[str, Any] = {
            "short_message": part.short_message,
            "data_coding": 8 if alphabet is Alphabet.UCS2 else 0,
            "esm_class": 0x40 if part.udhi else 0,
            "registered_delivery": 1,
        }
        if part.sar is not None:
            ref, total, seq = (v for _tag, v in part.sar.to_tlvs())
            fields["sar_msg_ref_num"] = int.from_bytes(ref, "big")
            fields["sar_total_segments"] = total[0]
            fields["sar_segment_seqnum"] = seq[0]
        out.append(fields)
    return out


# --- smpplib in a thread ---------------------------------------------------------------------


@dataclass
class SmpplibRun:
    answers: list[tuple[int, str]] = field(default_factory=list)  # (status, message_id) per part
    waits_s: list[float] = field(default_factory=list)  # time each answer took (one at a time)
    receipts: list[str] = field(default_factory=list)  # receipted_message_id of each receipt


def smpplib_session(
    port: int,
    parts: Sequence[dict[str, Any]],
    *,
    one_at_a_time: bool,
    receipts: int,
    bind: str = "transceiver",
) -> SmpplibRun:
    """Bind (a transceiver by default), send the parts (waiting for each answer, or all at
    once), then read until ``receipts`` receipts are in, and unbind at once. smpplib's socket
    timeout is the client timeout."""
    run = SmpplibRun()
    client = smpplib.client.Client(
        "127.0.0.1", port, timeout=CLIENT_TIMEOUT_S, allow_unknown_opt_params=True
    )
    responses: list[Any] = []
    client.set_message_sent_handler(lambda pdu: responses.append(pdu))

    def on_deliver(pdu: Any) -> None:
        value = pdu.receipted_message_id
        run.receipts.append(bytes(value).rstrip(b"\0").decode() if value else "")

    client.set_message_received_handler(on_deliver)
    client.connect()
    try:
        getattr(client, f"bind_{bind}")(system_id="acme-app", password="pw")
        sent = 0
        for fields in parts:
            started = time.perf_counter()
            client.send_message(
                source_addr_ton=1,
                source_addr_npi=1,
                source_addr=SENDER,
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=DEST,
                **fields,
            )
            sent += 1
            if one_at_a_time:
                while len(responses) < sent:
                    client.read_once()  # raises if no answer within the client timeout
                run.waits_s.append(time.perf_counter() - started)
        while len(responses) < sent or len(run.receipts) < receipts:
            client.read_once()
        run.answers = [(int(r.status), r.message_id.decode()) for r in responses]
        client.unbind()
    finally:
        client.disconnect()
    return run


@contextlib.asynccontextmanager
async def rig(
    *, receipts: bool = True, **sim_faults: Any
) -> AsyncIterator[tuple[Simulator, Gateway]]:
    async with simulator(receipts=receipts) as sim:
        if sim_faults:
            sim.set_faults(**sim_faults)
        async with running_gateway(
            sim.port,
            session=FAST_SESSION,
            store={"url": "memory://"},
            campaigns=CAMPAIGNS,
            text={"hold_timeout_s": HOLD_S},
        ) as gw:
            yield sim, gw


async def received(sim: Simulator, count: int) -> list[ReceivedRequest]:
    messages = await sim.wait_for(lambda m: len(m) >= count, timeout=WAIT_S)
    assert len(messages) == count, [m.pdu for m in messages]
    return messages


def expected_parts(text: str, alphabet: Alphabet, kind: ConcatKind) -> int:
    return len(split(f"{text} {FOOTER}", alphabet, kind))


class TestEveryPatternIsAnsweredAtOnce:
    @pytest.mark.parametrize("fits", [True, False], ids=["footer-fits", "footer-adds-a-part"])
    @pytest.mark.parametrize("alphabet", [Alphabet.GSM7, Alphabet.UCS2], ids=["gsm", "ucs2"])
    @pytest.mark.parametrize("kind", list(KINDS), ids=list(KINDS))
    @pytest.mark.parametrize("one_at_a_time", [True, False], ids=["one-at-a-time", "all-at-once"])
    async def test_smpplib(
        self, kind: str, alphabet: Alphabet, fits: bool, one_at_a_time: bool
    ) -> None:
        """Every part is answered OK within the client's timeout (one at a time: each well
        before the hold timeout); the SMSC gets text + footer as one consistent
        concatenation; the client gets one receipt per part it sent, each under its id."""
        concat = KINDS[kind]
        text = text_for(alphabet, concat, fits=fits)
        parts = client_parts(text, alphabet, concat, reference=0x5A)
        assert len(parts) == 3
        async with rig() as (sim, gw):
            run = await asyncio.to_thread(
                smpplib_session,
                gw.port,
                parts,
                one_at_a_time=one_at_a_time,
                receipts=len(parts),
            )
            total = expected_parts(text, alphabet, concat)
            records = await received(sim, total)
        assert total == (3 if fits else 4)
        assert [status for status, _ in run.answers] == [0, 0, 0]
        if one_at_a_time:
            assert max(run.waits_s) < CLIENT_TIMEOUT_S
        check_parts(records, f"{text} {FOOTER}", concat)
        assert_tshark_consistent(records)
        given = [message_id for _, message_id in run.answers]
        assert len(set(given)) == 3
        assert sorted(run.receipts) == sorted(given)  # one each, none for the added part
        if fits:
            # Parts 1 and 2 went to the SMSC exactly as the client wrote them.
            for record, fields in zip(records[:2], parts[:2], strict=True):
                assert record.pdu.short_message == fields["short_message"]  # type: ignore[union-attr]

    async def test_kannel_asks_a_receipt_for_part_one_only(self) -> None:
        """registered_delivery stays per part what the client asked: with a receipt asked on
        part 1 only, part 1's receipt is the only one, under part 1's id."""
        text = text_for(Alphabet.GSM7, CONCAT_8BIT, fits=False)
        parts = client_parts(text, Alphabet.GSM7, CONCAT_8BIT, reference=7)
        for fields in parts[1:]:
            fields["registered_delivery"] = 0
        async with rig() as (sim, gw):
            run = await asyncio.to_thread(
                smpplib_session, gw.port, parts, one_at_a_time=True, receipts=1
            )
            records = await received(sim, 4)
        assert [r.pdu.registered_delivery for r in records] == [1, 0, 0, 0]  # type: ignore[attr-defined]
        assert run.receipts == [run.answers[0][1]]


# --- aiosmpplib --------------------------------------------------------------------------------


def aio_parts(text: str, reference: int) -> list[SubmitSm]:
    """aiosmpplib submit_sm for each SAR part of ``text`` (the library sends SAR TLVs)."""
    bodies = split(text, Alphabet.GSM7, SAR)
    total = len(bodies)
    out = []
    for i, body in enumerate(bodies, start=1):
        out.append(
            SubmitSm(
                short_message=body.decode("ascii"),
                source=PhoneNumber(f"+{SENDER}"),
                destination=PhoneNumber(f"+{DEST}"),
                log_id=f"part-{i}",
                encoding="gsm0338",
                optional_params=[
                    OptionalParam(Tag.SAR_MSG_REF_NUM, reference),
                    OptionalParam(Tag.SAR_TOTAL_SEGMENTS, total),
                    OptionalParam(Tag.SAR_SEGMENT_SEQNUM, i),
                ],
            )
        )
    return out


class Recorder(Inbox):
    """aiosmpplib's hook, also keeping every submit_sm_resp as it came off the wire: the
    library reports only one answer for the parts of a message (its segment correlator)."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(wait_s)
        self.answers: list[p.SubmitSmResp] = []
        self.receipts: list[p.DeliverSm] = []
        self._changed = asyncio.Event()

    async def received(self, smpp_message: Any, pdu: bytes, client_id: str) -> None:
        decoded = decode(pdu)
        if isinstance(decoded, p.SubmitSmResp):
            self.answers.append(decoded)
        elif isinstance(decoded, p.DeliverSm):
            self.receipts.append(decoded)
        self._changed.set()
        await super().received(smpp_message, pdu, client_id)

    async def wait_for(self, condition: Any) -> None:
        async with asyncio.timeout(self.wait_s):  # the client's own timeout
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_answers(self, count: int) -> None:
        await self.wait_for(lambda: len(self.answers) >= count)

    def receipt_ids(self) -> list[str]:
        """The receipted_message_id of every receipt received (as on the wire)."""
        out = []
        for receipt in self.receipts:
            value = receipt.tlv(Tag.RECEIPTED_MESSAGE_ID) or b""
            out.append(value.rstrip(b"\0").decode())
        return out


@contextlib.asynccontextmanager
async def aio_esme(
    port: int, bind_mode: BindMode = BindMode.TRANSCEIVER
) -> AsyncIterator[tuple[ESME, Recorder]]:
    hook = Recorder(wait_s=CLIENT_TIMEOUT_S)
    esme = ESME(
        smsc_host="127.0.0.1",
        smsc_port=port,
        system_id="acme-app",
        password="pw",
        bind_mode=bind_mode,
        hook=hook,
        log_level="WARNING",
        socket_timeout=CLIENT_TIMEOUT_S,
    )
    running = asyncio.create_task(esme.start())
    try:
        yield esme, hook
    finally:
        writer = esme._writer
        await esme.stop()
        await running
        if writer is not None:
            writer.close()


class TestAiosmpplib:
    @pytest.mark.parametrize("fits", [True, False], ids=["footer-fits", "footer-adds-a-part"])
    @pytest.mark.parametrize("one_at_a_time", [True, False], ids=["one-at-a-time", "all-at-once"])
    async def test_sar_parts(self, fits: bool, one_at_a_time: bool) -> None:
        """aiosmpplib's SAR parts, each sent once the previous one's answer came or all
        together: each answered within the client's timeout, text + footer at the SMSC, one
        receipt per part under the id it was given."""
        text = text_for(Alphabet.GSM7, SAR, fits=fits)
        async with rig() as (sim, gw), aio_esme(gw.port) as (esme, hook):
            parts = aio_parts(text, reference=0x0102)
            for i, part in enumerate(parts, start=1):
                await esme.broker.enqueue(part)
                if one_at_a_time:
                    await hook.wait_answers(i)
            await hook.wait_answers(len(parts))
            records = await received(sim, expected_parts(text, Alphabet.GSM7, SAR))
            await hook.wait_for(lambda: len(hook.receipts) >= len(parts))
        assert [a.command_status for a in hook.answers] == [0] * len(parts)
        check_parts(records, f"{text} {FOOTER}", SAR)
        given = sorted(a.message_id or "" for a in hook.answers)
        assert len(set(given)) == len(parts)
        assert sorted(hook.receipt_ids()) == given


# --- receipts through another instance, and refusals -----------------------------------------


class TestReceipts:
    @pytest.mark.redis
    async def test_receipts_through_a_second_instance(self, redis_server: RedisServer) -> None:
        """Parts answered by gateway A; the SMSC's receipts come back through gateway B on the
        same Redis (the account's receiver is bound there): under the ids A gave."""
        url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"
        text = text_for(Alphabet.GSM7, CONCAT_8BIT, fits=False)
        parts = client_parts(text, Alphabet.GSM7, CONCAT_8BIT, reference=9)
        sections: dict[str, Any] = {
            "session": FAST_SESSION,
            "store": {"url": url},
            "campaigns": CAMPAIGNS,
            "text": {"hold_timeout_s": HOLD_S},
        }
        async with simulator(receipts=True) as sim:
            sim.set_faults(receipt_delay_s=1.0)  # after A stored the ids, as with a real SMSC
            async with (
                running_gateway(sim.port, gateway={"instance": "gw-a"}, **sections) as a,
                running_gateway(sim.port, gateway={"instance": "gw-b"}, **sections) as b,
                aio_esme(b.port) as (_receiver, hook),
            ):
                run = await asyncio.to_thread(
                    smpplib_session,
                    a.port,
                    parts,
                    one_at_a_time=True,
                    receipts=0,
                    bind="transmitter",
                )
                await received(sim, 4)
                await hook.wait_for(lambda: len(hook.receipts) >= len(parts))
        given = sorted(message_id for _, message_id in run.answers)
        assert sorted(hook.receipt_ids()) == given

    async def test_interleaved_messages_over_a_transmitter_receipts_on_a_receiver(self) -> None:
        """Parts of two messages interleaved, one at a time, over a transmitter, while the
        receipts come back on a receiver session of the same account: every part answered,
        both messages whole at the SMSC, every receipt under an id the client was given."""
        first = text_for(Alphabet.GSM7, CONCAT_8BIT, fits=True)
        second = text_for(Alphabet.UCS2, CONCAT_16BIT, fits=False)
        a = client_parts(first, Alphabet.GSM7, CONCAT_8BIT, reference=21)
        b = client_parts(second, Alphabet.UCS2, CONCAT_16BIT, reference=0x2222)
        interleaved = [part for pair in zip(a, b, strict=True) for part in pair]
        async with rig() as (sim, gw), aio_esme(gw.port, BindMode.RECEIVER) as (_rx, hook):
            run = await asyncio.to_thread(
                smpplib_session,
                gw.port,
                interleaved,
                one_at_a_time=True,
                receipts=0,
                bind="transmitter",
            )
            records = await received(sim, 3 + 4)
            await hook.wait_for(lambda: len(hook.receipts) >= len(interleaved))
        assert [status for status, _ in run.answers] == [0] * 6
        by_ref = [r for r in records if r.pdu.short_message[:1] == b"\x05"]  # type: ignore[attr-defined]
        rest = [r for r in records if r not in by_ref]
        check_parts(by_ref, f"{first} {FOOTER}", CONCAT_8BIT)
        check_parts(rest, f"{second} {FOOTER}", CONCAT_16BIT)
        assert sorted(hook.receipt_ids()) == sorted(mid for _, mid in run.answers)

    async def test_ids_are_stored_although_the_client_left_at_once(self) -> None:
        """A client that unbinds right after its last answer: the id mappings of its parts
        still reach the store (they belong to the gateway, not to the client's session)."""
        text = text_for(Alphabet.GSM7, CONCAT_8BIT, fits=False)
        parts = client_parts(text, Alphabet.GSM7, CONCAT_8BIT, reference=12)
        async with rig() as (sim, gw):
            run = await asyncio.to_thread(
                smpplib_session, gw.port, parts, one_at_a_time=True, receipts=0, bind="transmitter"
            )
            records = await received(sim, 4)
            assert gw.footers is not None
            await gw.footers.drain()
            assert gw.store is not None
            stored = [await gw.store.get_message_ids(r.message_id or "") for r in records]
        given = [message_id for _, message_id in run.answers]
        early = [m.client_ids for m in stored[:2] if m is not None]
        assert early == [(given[0],), (given[1],)]  # parts 1 and 2 were answered early
        assert stored[3] is not None
        assert stored[3].client_ids == ()  # the part the gateway added

    async def test_receipt_is_retried_while_the_store_is_down(self, tmp_path: Path) -> None:
        """A receipt whose id the gateway cannot look up (the store is down) gets
        ESME_RX_T_APPN, so the SMSC delivers it again; once the store is back it is relayed."""
        state = tmp_path / "state"
        async with (
            simulator() as sim,
            running_gateway(
                sim.port,
                session=FAST_SESSION,
                store={"url": f"sqlite:{state}/consent.db?recovery_interval_s=0.05"},
                campaigns=CAMPAIGNS,
            ) as gw,
            aio_esme(gw.port) as (_esme, hook),
        ):
            await sim.wait_for(lambda _m: bool(sim.bound("acme-app", receiving=True)), WAIT_S)
            receipt = {
                "source": DEST,
                "destination": SENDER,
                "system_id": "acme-app",
                "esm_class": 0x04,
                "text": "id:SMSC1 sub:001 dlvrd:001 stat:DELIVRD err:000 text:",
                "tlvs": (p.Tlv(Tag.RECEIPTED_MESSAGE_ID, b"SMSC1\0"),),
            }
            state.rename(tmp_path / "away")
            assert await sim.send_mo(**receipt) == 0x64
            (tmp_path / "away").rename(state)
            assert gw.store is not None
            await gw.store.wait_healthy(WAIT_S)  # type: ignore[attr-defined]
            assert await sim.send_mo(**receipt) == 0
            await hook.wait_for(lambda: len(hook.receipts) == 1)
        assert hook.receipt_ids() == ["SMSC1"]

    async def test_refused_part_comes_back_as_rejectd(self) -> None:
        """The SMSC refuses part 2 after the client was answered for it: the client gets a
        stat:REJECTD receipt under part 2's id (and the others' normal receipts)."""
        text = text_for(Alphabet.GSM7, CONCAT_8BIT, fits=True)
        parts = client_parts(text, Alphabet.GSM7, CONCAT_8BIT, reference=11)
        async with rig(refuse_after=1) as (sim, gw):
            run = await asyncio.to_thread(
                smpplib_session, gw.port, parts, one_at_a_time=True, receipts=3
            )
            records = await sim.wait_for(lambda m: len(m) >= 3, timeout=WAIT_S)
        assert [status for status, _ in run.answers] == [0, 0, 0]
        assert [r.message_id is not None for r in records] == [True, False, True]
        assert sorted(run.receipts) == sorted(mid for _, mid in run.answers)
        assert gw.metrics.mt_parts_failed_total.labels("smsc refused")._value.get() == 1
