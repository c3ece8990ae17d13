"""STOP in every form a handset or an SMSC sends it, end to end through the gateway.

The SMSC is the bundled simulator, the client application smpplib (aiosmpplib in one test), the
store a SQLite file: an MO STOP gets exactly one confirmation at the SMSC, the next MT to that
number is refused with the documented status (0x45 by default) and nothing for that number
reaches the SMSC afterwards.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiosmpplib import ESME, BindMode, DeliverSm, PhoneNumber, SubmitSm
from aiosmpplib import SubmitSmResp as AioSubmitSmResp

from gateway.consent.model import ConsentState
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from tests.support.aiosmpp import Inbox
from tests.support.consent import (
    BYSTANDER,
    NUMBER_1,
    OPT_IN_REPLY,
    OPT_OUT_REPLY,
    SUBSCRIBER,
    WAIT_S,
    Rig,
    acme_campaigns,
    concat_parts,
    consent_gateway,
    consent_rig,
    simulator,
    texts_to,
    wait_texts,
)

OPTED_OUT = 0x45
UDHI = 0x40
FULLWIDTH_STOP = "\uff33\uff34\uff2f\uff30"


async def assert_opted_out(rig: Rig, subscriber: str = SUBSCRIBER) -> None:
    """Exactly one confirmation reached the SMSC, the next MT is refused, nothing else left."""
    assert await wait_texts(rig.sim, subscriber, 1) == [OPT_OUT_REPLY]
    assert await rig.mt(subscriber) == OPTED_OUT
    await rig.flows()
    assert texts_to(rig.sim, subscriber) == [OPT_OUT_REPLY]


class TestStopWordings:
    @pytest.mark.parametrize("text", ["Stop.", " stop ", "STOP", "stop!", "Unsubscribe", "quit"])
    async def test_gsm_text(self, tmp_path: Path, text: str) -> None:
        """A STOP-family word with any case, padding or punctuation opts out; the MO is
        still forwarded to the client."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo(text) == 0
            await assert_opted_out(rig)
            assert rig.esme.mo_texts() == [text.encode()]

    async def test_fullwidth_in_ucs2(self, tmp_path: Path) -> None:
        """Fullwidth 'STOP' (U+FF33 ...) in UCS-2 (data_coding 8) is STOP after NFKC."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo(FULLWIDTH_STOP, data_coding=8) == 0
            await assert_opted_out(rig)
            assert rig.esme.mo_texts() == [FULLWIDTH_STOP.encode("utf-16-be")]

    async def test_ucs2_with_zero_width_space(self, tmp_path: Path) -> None:
        """'Stop' in UCS-2 with a zero-width space in it opts out."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("St\u200bop", data_coding=8) == 0
            await assert_opted_out(rig)

    @pytest.mark.parametrize("esm_class", [0x03, 0x80, 0x43])
    async def test_mode_and_feature_bits_do_not_hide_a_stop(
        self, tmp_path: Path, esm_class: int
    ) -> None:
        """esm_class bits outside the message type (mode 0x03, reply path 0x80) leave a STOP a
        STOP: receipts are told apart with the 0x3C mask, not by equality."""
        async with consent_rig(tmp_path) as rig:
            body = bytes([5, 0, 3, 1, 1, 1]) + b"STOP" if esm_class & UDHI else b"STOP"
            assert await rig.mo(short_message=body, esm_class=esm_class) == 0
            await assert_opted_out(rig)


class TestStopCarriers:
    async def test_deliver_sm_message_payload(self, tmp_path: Path) -> None:
        """STOP in message_payload of a deliver_sm (empty short_message) opts out."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP", payload=True) == 0
            await assert_opted_out(rig)
            (mo,) = rig.esme.received
            assert bytes(mo.message_payload) == b"STOP"

    async def test_data_sm(self, tmp_path: Path) -> None:
        """STOP as a data_sm MO (text in message_payload) opts out; the client gets the data_sm."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("stop", command="data_sm") == 0
            await assert_opted_out(rig)
            (mo,) = rig.esme.received
            assert mo.command == "data_sm"

    async def test_stop_split_over_two_parts(self, tmp_path: Path) -> None:
        """'ST' + 'OP' in two concatenated deliver_sm parts is reassembled and opts out once."""
        async with consent_rig(tmp_path) as rig:
            first, second = concat_parts([b"ST", b"OP"], reference=0x42)
            assert await rig.mo(short_message=first, esm_class=UDHI) == 0
            # Half a keyword is not a keyword: nothing happened yet.
            assert texts_to(rig.sim, SUBSCRIBER) == []
            assert await rig.mt() == 0
            assert await rig.mo(short_message=second, esm_class=UDHI) == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 2) == ["hello", OPT_OUT_REPLY]
            assert await rig.mt() == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == ["hello", OPT_OUT_REPLY]
            # Both parts still reach the client, as the SMSC sent them.
            assert [bytes(b) for b in rig.esme.mo_texts()] == [first, second]

    async def test_phrase_split_over_two_ucs2_parts(self, tmp_path: Path) -> None:
        """'please stop' in two UCS-2 parts opts out with the phrase tier on (recorded as a
        phrase)."""
        campaigns = acme_campaigns(phrase_tier=True)
        async with consent_rig(tmp_path, campaigns=campaigns) as rig:
            parts = concat_parts(
                ["please s".encode("utf-16-be"), "top".encode("utf-16-be")], reference=7
            )
            for part in parts:
                assert await rig.mo(short_message=part, esm_class=UDHI, data_coding=8) == 0
            await assert_opted_out(rig)
            assert rig.gw.store is not None
            (event,) = await rig.gw.store.history(SUBSCRIBER)
            assert (event.state, event.match.value, event.words) == (
                ConsentState.OPTED_OUT,
                "phrase",
                "please stop",
            )

    async def test_phrase_needs_the_phrase_tier(self, tmp_path: Path) -> None:
        """Without the phrase tier, 'please stop' changes nothing: keywords are whole messages."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("please stop") == 0
            assert await rig.mt() == 0
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == ["hello"]


class TestStopOnce:
    async def test_resent_stop_gets_one_confirmation(self, tmp_path: Path) -> None:
        """The SMSC's resend of the same STOP is acknowledged but confirmed only once."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("STOP") == 0
            await assert_opted_out(rig)
            assert rig.gw.store is not None
            assert len(await rig.gw.store.history(SUBSCRIBER)) == 1

    async def test_same_words_after_another_change_are_a_new_message(self, tmp_path: Path) -> None:
        """STOP, START, STOP, START in the same words within the dedup window: each is a new
        message, not the SMSC's resend of the earlier one, so each changes consent and is
        confirmed; a resend of the last STOP (nothing changed since) is still acted on once."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("START") == 0
            assert await rig.mt(text="one") == 0
            assert await rig.mo("STOP") == 0  # was taken for a resend: acknowledged, not stored
            assert await rig.mo("STOP") == 0  # the SMSC's resend of it
            assert await rig.mt(text="two") == OPTED_OUT
            assert await rig.mo("START") == 0
            assert await rig.mt(text="three") == 0
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [
                OPT_OUT_REPLY,
                OPT_IN_REPLY,
                "one",
                OPT_OUT_REPLY,
                OPT_IN_REPLY,
                "three",
            ]
            assert rig.gw.store is not None
            states = [e.state for e in await rig.gw.store.history(SUBSCRIBER)]
            assert states == [ConsentState.OPTED_OUT, ConsentState.OPTED_IN] * 2

    async def test_second_stop_later_gets_no_second_confirmation(self, tmp_path: Path) -> None:
        """A different STOP word from an opted-out subscriber is recorded, not confirmed again."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("Unsubscribe") == 0
            await assert_opted_out(rig)
            assert rig.gw.store is not None
            assert len(await rig.gw.store.history(SUBSCRIBER)) == 2  # the audit keeps both


class TestNotAStop:
    @pytest.mark.parametrize("esm_class", [0x04, 0x08, 0x10, 0x18, 0x20])
    async def test_receipt_types_are_never_keywords(self, tmp_path: Path, esm_class: int) -> None:
        """A receipt or acknowledgement whose text is 'STOP' changes nothing."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP", esm_class=esm_class) == 0
            assert await rig.mt() == 0
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == ["hello"]
            assert rig.gw.store is not None
            assert await rig.gw.store.current(SUBSCRIBER) == {}

    async def test_real_receipt_echoing_stop(self, tmp_path: Path) -> None:
        """The SMSC's receipt for an MT reading 'STOP' (text:STOP) is forwarded and changes
        nothing."""
        async with consent_rig(tmp_path, receipts=True) as rig:
            assert await rig.mt(text="STOP", registered_delivery=1) == 0
            await rig.esme.wait_until(lambda: len(rig.esme.receipts()) == 1)
            (receipt,) = rig.esme.receipts()
            assert b"text:STOP" in bytes(receipt.short_message)
            assert await rig.mt(text="still allowed") == 0
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == ["STOP", "still allowed"]

    async def test_no_reply_to_an_alphanumeric_sender(self, tmp_path: Path) -> None:
        """STOP from an alphanumeric sender is forwarded, nothing is replied or recorded."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP", source="ACMEBANK") == 0
            await rig.flows()
            assert [m.text for m in rig.sim.messages] == ["marker"]
            assert rig.esme.mo_texts() == [b"STOP"]

    @pytest.mark.parametrize(("source", "ton"), [("72345", 0), ("72345", 3), ("1234", 6)])
    async def test_no_reply_to_a_short_code(self, tmp_path: Path, source: str, ton: int) -> None:
        """STOP from a short code gets no auto-reply (two auto-responders must not loop)."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP", source=source, source_addr_ton=ton) == 0
            await rig.flows()
            assert [m.text for m in rig.sim.messages] == ["marker"]
            assert rig.esme.mo_texts() == [b"STOP"]


class TestOneSubscriber:
    @pytest.mark.parametrize(
        ("mo_source", "mo_ton"),
        [("+15551234567", 1), ("15551234567", 1), ("5551234567", 2)],
    )
    async def test_every_spelling_is_one_subscriber(
        self, tmp_path: Path, mo_source: str, mo_ton: int
    ) -> None:
        """A STOP from one spelling of the number refuses MTs to every other spelling."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP", source=mo_source, source_addr_ton=mo_ton) == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            (reply,) = [m for m in rig.sim.messages if m.text == OPT_OUT_REPLY]
            # The confirmation goes back to the address as the SMSC wrote it (the simulator
            # drops a '+' and says TON international instead).
            assert isinstance(reply.pdu, p.SubmitSm)
            assert (reply.pdu.destination_addr, reply.pdu.dest_addr_ton) == (
                mo_source.lstrip("+"),
                mo_ton,
            )
            for destination, ton in [("+15551234567", 1), ("15551234567", 1), ("5551234567", 2)]:
                assert await rig.mt(destination, dest_addr_ton=ton) == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY]


# --- aiosmpplib ------------------------------------------------------------------------------


class TestAiosmpplib:
    async def test_stop_then_refused_submit(self, tmp_path: Path) -> None:
        """aiosmpplib gets the STOP forwarded and its next submit to that number refused 0x45."""
        async with (
            simulator() as sim,
            consent_gateway(sim.port, f"sqlite:{tmp_path}/c.db", campaigns=acme_campaigns()) as gw,
        ):
            hook = Inbox(WAIT_S)
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
                await _submit(esme, BYSTANDER, "first")
                assert (await hook.next(AioSubmitSmResp)).command_status == 0
                status = await sim.send_mo(
                    source=SUBSCRIBER, destination=NUMBER_1, text="Stop", system_id="aio"
                )
                assert status == 0
                mo = await hook.next(DeliverSm)
                assert (mo.short_message, mo.is_receipt()) == ("Stop", False)
                await _submit(esme, SUBSCRIBER, "after the stop")
                assert (await hook.next(AioSubmitSmResp)).command_status == OPTED_OUT
                await _submit(esme, BYSTANDER, "marker")
                assert (await hook.next(AioSubmitSmResp)).command_status == 0
                await sim.wait_for(lambda msgs: any(m.text == "marker" for m in msgs))
            finally:
                writer = esme._writer  # aiosmpplib leaves it open after unbind
                await esme.stop()
                await running
                if writer is not None:
                    writer.close()
            assert texts_to(sim, SUBSCRIBER) == [OPT_OUT_REPLY]
            await _no_sessions(sim)


async def _submit(esme: ESME, destination: str, text: str) -> None:
    await esme.broker.enqueue(
        SubmitSm(
            short_message=text,
            source=PhoneNumber(NUMBER_1),
            destination=PhoneNumber(destination),
            log_id=text,
        )
    )


async def _no_sessions(sim: Simulator) -> None:
    await sim.wait_until(lambda: not sim.sessions, timeout=WAIT_S)
