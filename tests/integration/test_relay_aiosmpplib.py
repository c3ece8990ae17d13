"""aiosmpplib (an asyncio client we did not write) through the gateway to the SMSC simulator."""

from __future__ import annotations

import asyncio

from aiosmpplib import ESME, BindMode, DeliverSm, PhoneNumber, SubmitSm
from aiosmpplib import SubmitSmResp as AioSubmitSmResp

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandId, CommandStatus
from tests.integration.conftest import WAIT_S, GatewayTap, bridges
from tests.support.aiosmpp import Inbox


class TestAiosmpplib:
    async def test_transceiver_submit_receipt_mo_and_unbind(
        self, sim: Simulator, gateway: Gateway, tap: GatewayTap
    ) -> None:
        """aiosmpplib binds TRX, gets its submit answered and receipted, takes an MO, unbinds."""
        hook = Inbox(WAIT_S)
        esme = ESME(
            smsc_host="127.0.0.1",
            smsc_port=gateway.port,
            system_id="aio",
            password="pw",
            bind_mode=BindMode.TRANSCEIVER,
            hook=hook,
            log_level="WARNING",
            socket_timeout=5.0,
        )
        running = asyncio.create_task(esme.start())
        writer = None
        try:
            await esme.broker.enqueue(
                SubmitSm(
                    short_message="Hello through the gateway",
                    source=PhoneNumber("15550009999"),
                    destination=PhoneNumber("15551234567"),
                    log_id="m1",
                )
            )
            resp = await hook.next(AioSubmitSmResp)
            receipt = await hook.next(DeliverSm)
            assert receipt.is_receipt()
            assert receipt.parse_receipt()["id"] == resp.message_id
            assert receipt.log_id == "m1"  # correlated by the message id the SMSC issued

            status = await sim.send_mo(
                source="15551234567", destination="15550009999", text="STOP", system_id="aio"
            )
            mo = await hook.next(DeliverSm)
            assert status == CommandStatus.ESME_ROK
            assert (mo.short_message, mo.is_receipt()) == ("STOP", False)
            (bridge,) = bridges(gateway)
        finally:
            # aiosmpplib drops its StreamWriter after unbind without closing it (a
            # ResourceWarning, an error here): keep it and close it once the ESME is done.
            writer = esme._writer
            await esme.stop()
            await running
            if writer is not None:
                writer.close()
        # aiosmpplib half-closes after its unbind; the gateway still ends both legs.
        await asyncio.wait_for(bridge.wait_closed(), WAIT_S)
        await sim.wait_until(lambda: not sim.sessions)
        (message,) = sim.messages
        assert (message.system_id, message.bind_type, message.text) == (
            "aio",
            "transceiver",
            "Hello through the gateway",
        )
        assert isinstance(message.pdu, p.SubmitSm)
        assert message.message_id == resp.message_id
        assert CommandId.UNBIND in tap.commands("upstream")
        assert CommandId.UNBIND_RESP in tap.commands("client")
