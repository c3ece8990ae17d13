"""What the gateway writes on both legs, checked by Wireshark's SMPP dissector.

A representative session (binds of every type and a refused one, submits with TLVs, data_sm,
query_sm, an unknown command, receipts, MOs, keep-alives both ways, unbinds from either side)
runs through the relay; every frame the gateway wrote, per leg, must dissect without malformed
packets or expert warnings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode, int_tlv
from gateway.smpp.constants import CommandId, CommandStatus, EsmClass, Tag
from tests.integration.conftest import (
    FAST_SESSION,
    GatewayTap,
    RawEsme,
    running_relay,
)
from tests.support.tshark import assert_clean, tshark_path

pytestmark = [
    pytest.mark.tshark,
    pytest.mark.skipif(tshark_path() is None, reason="tshark is not installed"),
]

KEEPALIVE_S = 0.3


async def _answer_keepalive(esme: RawEsme) -> None:
    """Wait for the gateway's enquire_link on an idle client leg and answer it."""
    before = esme.keepalives_answered
    frame = await esme.read_frame()
    ping = p.EnquireLink(sequence_number=int.from_bytes(frame[12:16], "big"))
    assert frame == encode(ping), frame.hex()
    await esme.write(encode(p.EnquireLinkResp(sequence_number=ping.sequence_number)))
    esme.keepalives_answered = before + 1


async def _deliveries(esme: RawEsme, count: int) -> list[p.DeliverSm]:
    """Read ``count`` deliver_sm, answering each."""
    received = []
    for _ in range(count):
        pdu = await esme.read()
        assert isinstance(pdu, p.DeliverSm), pdu
        await esme.write(encode(p.DeliverSmResp(sequence_number=pdu.sequence_number)))
        received.append(pdu)
    return received


def _standard(commands: list[int]) -> Iterator[str]:
    for cid in commands:
        try:
            yield CommandId(cid).name
        except ValueError:
            yield hex(cid)


class TestWire:
    async def test_every_frame_the_gateway_writes_dissects_clean(
        self, sim: Simulator, tap: GatewayTap
    ) -> None:
        """Every frame written on the client and upstream legs passes Wireshark's dissector."""
        session = FAST_SESSION | {"enquire_link_interval_s": KEEPALIVE_S}
        async with running_relay(sim.port, session=session) as gw:
            # A refused bind: a bare bind_resp with an error status goes back to the client.
            sim.set_faults(bind_status=CommandStatus.ESME_RINVPASWD)
            refused = await RawEsme.connect(gw.port)
            resp = await refused.request(p.BindReceiver(system_id="acme", password="bad"))
            assert resp.command_status == CommandStatus.ESME_RINVPASWD
            await refused.close()
            sim.reset_faults()

            rx = await RawEsme.bound(gw.port, "acme", p.BindReceiver)
            tx = await RawEsme.bound(gw.port, "acme", p.BindTransmitter)
            trx = await RawEsme.bound(gw.port, "other", p.BindTransceiver)

            # Submits with a receipt requested, unknown and vendor TLVs, and a UCS-2 text.
            submit = await tx.request(
                p.SubmitSm(
                    source_addr="ACME",
                    destination_addr="15551234567",
                    registered_delivery=1,
                    short_message=b"Your code is 123456",
                    tlvs=(
                        int_tlv(Tag.USER_MESSAGE_REFERENCE, 7, 2),
                        p.Tlv(0x1400, b"vendor"),
                        p.Tlv(0x0999, b"\x01\x02"),
                    ),
                )
            )
            assert isinstance(submit, p.SubmitSmResp)
            assert submit.command_status == 0
            ucs2 = await tx.request(
                p.SubmitSm(
                    source_addr="ACME",
                    destination_addr="15551234568",
                    data_coding=0x08,
                    short_message="Grüße".encode("utf-16-be"),
                )
            )
            assert ucs2.command_status == 0
            data = await tx.request(
                p.DataSm(
                    source_addr="ACME",
                    destination_addr="15551234569",
                    tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, b"payload text"),),
                )
            )
            assert data.command_status == 0
            query = await tx.request(p.QuerySm(message_id=submit.message_id or ""))
            assert query.command_status == 0
            # An unknown command: the gateway's own generic_nack.
            nack = await tx.request(p.RawPdu(command_id=0x00000050, body=b""))
            assert (nack.command_id, nack.command_status) == (
                CommandId.GENERIC_NACK,
                CommandStatus.ESME_RINVCMDID,
            )

            # The receipt for the first submit reaches the receiver of the same account.
            (receipt,) = await _deliveries(rx, 1)
            assert receipt.esm_class & EsmClass.DELIVERY_RECEIPT

            # MOs: GSM text to the receiver, UCS-2 to the transceiver.
            mo_rx = asyncio.create_task(
                sim.send_mo(
                    source="+15551234567", destination="12345", text="HELP", system_id="acme"
                )
            )
            await _deliveries(rx, 1)
            assert await mo_rx == 0
            mo_trx = asyncio.create_task(
                sim.send_mo(
                    source="+15551234567",
                    destination="12345",
                    text="Привет",
                    data_coding=0x08,
                    system_id="other",
                )
            )
            await _deliveries(trx, 1)
            assert await mo_trx == 0

            # Client enquire_link, answered by the gateway.
            pong = await trx.request(p.EnquireLink())
            assert isinstance(pong, p.EnquireLinkResp)
            # The gateway's own keep-alives, on an idle client leg and upstream.
            await _answer_keepalive(trx)
            await tap.wait_until(
                lambda: (
                    CommandId.ENQUIRE_LINK in tap.commands("upstream")
                    and CommandId.ENQUIRE_LINK_RESP in tap.commands("upstream", "in")
                )
            )

            # Unbind from a client, then from the SMSC side for the others.
            assert isinstance(await tx.request(p.Unbind()), p.UnbindResp)
            await tx.close()
            stopping = asyncio.create_task(sim.stop())
            for esme in (rx, trx):
                unbind = await esme.read()
                assert isinstance(unbind, p.Unbind)
                await esme.write(encode(p.UnbindResp(sequence_number=unbind.sequence_number)))
                assert await esme.at_eof()
                await esme.close()
            await stopping

        for leg in ("client", "upstream"):
            frames = tap.frames(leg)
            assert frames, leg
            assert_clean(frames)
        client_cmds = set(_standard(tap.commands("client")))
        upstream_cmds = set(_standard(tap.commands("upstream")))
        assert {
            "BIND_RECEIVER_RESP",
            "BIND_TRANSMITTER_RESP",
            "BIND_TRANSCEIVER_RESP",
            "SUBMIT_SM_RESP",
            "DATA_SM_RESP",
            "QUERY_SM_RESP",
            "GENERIC_NACK",
            "DELIVER_SM",
            "ENQUIRE_LINK",
            "ENQUIRE_LINK_RESP",
            "UNBIND",
            "UNBIND_RESP",
        } <= client_cmds
        assert {
            "BIND_RECEIVER",
            "BIND_TRANSMITTER",
            "BIND_TRANSCEIVER",
            "SUBMIT_SM",
            "DATA_SM",
            "QUERY_SM",
            "DELIVER_SM_RESP",
            "ENQUIRE_LINK",
            "UNBIND",
            "UNBIND_RESP",
        } <= upstream_cmds
