"""smpplib (a client we did not write) through the gateway to the bundled SMSC simulator.

smpplib is synchronous: each blocking client step runs in a thread (asyncio.to_thread) so the
gateway and the simulator, on the test's loop, keep serving. smpplib numbers its first PDU 2.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import smpplib.client
import smpplib.exceptions

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import CommandId, CommandStatus
from tests.integration.conftest import (
    FAST_SESSION,
    WAIT_S,
    GatewayTap,
    RawEsme,
    bridges,
    collect,
    running_relay,
    send_raw,
    sent_frames,
    smpplib_client,
    without_sequence,
)

BIND_FIELDS = {
    "system_id": "acme-app",
    "password": "s3cret",
    "system_type": "VMA",
    "address_range": "^1555",
}


def _submit(client: smpplib.client.Client, text: str = "hello", **fields: Any) -> Any:
    return client.send_message(
        source_addr="ACME", destination_addr="15551234567", short_message=text.encode(), **fields
    )


class TestBind:
    @pytest.mark.parametrize("kind", ["transmitter", "receiver", "transceiver"])
    async def test_bind_is_relayed_byte_exact(
        self, kind: str, sim: Simulator, gateway: Gateway
    ) -> None:
        """A bind reaches the SMSC byte-exact but for the sequence number, and its answer binds."""

        def bind() -> tuple[Any, list[bytes]]:
            with smpplib_client(gateway.port) as client:
                resp = getattr(client, f"bind_{kind}")(**BIND_FIELDS)
                frames = sent_frames(client)
                client.unbind()
                return resp, frames

        resp, frames = await asyncio.to_thread(bind)
        assert (resp.command, resp.status, resp.system_id) == (f"bind_{kind}_resp", 0, b"SIM")
        assert resp.sequence == 2
        (record,) = [r for r in sim.requests if r.command == f"bind_{kind}"]
        assert without_sequence(record.frame) == without_sequence(frames[0])
        assert isinstance(record.pdu, p.BindRequest)
        assert (record.pdu.system_id, record.pdu.password) == ("acme-app", "s3cret")
        assert (record.pdu.system_type, record.pdu.address_range) == ("VMA", "^1555")
        assert record.bind_type == kind

    async def test_failed_upstream_bind_fails_the_client_bind_with_its_status(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """The SMSC's bind error reaches the client as is; the client may then bind again."""
        sim.set_faults(bind_status=CommandStatus.ESME_RINVPASWD)

        def bind_twice() -> tuple[int, Any]:
            with smpplib_client(gateway.port) as client:
                with pytest.raises(smpplib.exceptions.PDUError) as failed:
                    client.bind_transmitter(system_id="acme", password="wrong")
                sim.reset_faults()  # a plain attribute swap: safe from this thread
                resp = client.bind_transmitter(system_id="acme", password="right")
                client.unbind()
                return failed.value.args[1], resp

        status, resp = await asyncio.to_thread(bind_twice)
        assert status == CommandStatus.ESME_RINVPASWD
        assert (resp.command, resp.status) == ("bind_transmitter_resp", 0)


class TestTraffic:
    async def test_submit_is_answered_with_the_smsc_message_id(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """submit_sm_resp carries the simulator's message_id and the client's sequence number."""

        def submit() -> tuple[Any, Any]:
            with smpplib_client(gateway.port) as client:
                client.bind_transmitter(system_id="acme", password="pw")
                sent = _submit(client)
                resp = client.read_pdu()
                client.unbind()
                return sent, resp

        sent, resp = await asyncio.to_thread(submit)
        (message,) = sim.messages
        assert (resp.command, resp.status) == ("submit_sm_resp", 0)
        assert resp.sequence == sent.sequence
        assert resp.message_id.decode() == message.message_id
        assert message.text == "hello"

    @pytest.mark.parametrize("kind", ["receiver", "transceiver"])
    async def test_mo_reaches_the_client_and_its_answer_reaches_the_smsc(
        self, kind: str, sim: Simulator, gateway: Gateway
    ) -> None:
        """An MO from the SMSC reaches an RX / TRX client, and its deliver_sm_resp goes back."""
        with smpplib_client(gateway.port) as client:
            received = collect(client)
            await asyncio.to_thread(getattr(client, f"bind_{kind}"), system_id="acme", password="x")
            reading = asyncio.create_task(asyncio.to_thread(client.read_once))
            status = await sim.send_mo(
                source="+15551234567", destination="12345", text="STOP", system_id="acme"
            )
            await reading
            await asyncio.to_thread(client.unbind)
        assert status == CommandStatus.ESME_ROK
        (mo,) = received
        assert (mo.command, mo.short_message, mo.source_addr) == (
            "deliver_sm",
            b"STOP",
            b"15551234567",
        )

    async def test_delivery_receipt_reaches_the_client(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """A receipt the SMSC sends for a submit reaches the transceiver that submitted it."""

        def submit_and_receive() -> tuple[Any, list[Any]]:
            with smpplib_client(gateway.port) as client:
                received = collect(client)
                client.bind_transceiver(system_id="acme", password="pw")
                _submit(client, registered_delivery=1)
                resp = client.read_pdu()
                client.read_once()
                client.unbind()
                return resp, received

        resp, received = await asyncio.to_thread(submit_and_receive)
        (receipt,) = received
        assert receipt.esm_class == 0x04
        assert receipt.receipted_message_id == resp.message_id
        assert receipt.short_message.startswith(b"id:" + resp.message_id + b" ")

    async def test_unknown_and_vendor_tlvs_reach_the_smsc_byte_exact(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """A submit_sm with unknown and vendor TLVs is relayed unchanged but for the sequence."""
        tlvs = (
            p.Tlv(0x1400, b"vendor-specific"),  # SMSC vendor range
            p.Tlv(0x0999, b"\x01\x02\x03"),  # reserved, unknown to everybody
            p.Tlv(0x3FFF, b""),  # empty value
            p.Tlv(0x0204, b"\x00\x07"),  # user_message_reference, standard
        )
        submit = p.SubmitSm(
            source_addr="ACME",
            destination_addr="15551234567",
            short_message=b"tlvs",
            sequence_number=77,
            tlvs=tlvs,
        )
        frame = encode(submit)
        esme = await RawEsme.bound(gateway.port)
        try:
            await esme.write(frame)
            resp = await esme.read()
            await esme.request(p.Unbind())
        finally:
            await esme.close()
        (message,) = sim.messages
        assert (resp.command_id, resp.command_status, resp.sequence_number) == (
            CommandId.SUBMIT_SM_RESP,
            0,
            77,
        )
        assert without_sequence(message.frame) == without_sequence(frame)
        assert message.pdu.tlvs == tlvs


class TestKeepAlive:
    async def test_client_enquire_link_is_answered_by_the_gateway(
        self, sim: Simulator, gateway: Gateway, tap: GatewayTap
    ) -> None:
        """enquire_link from the client is answered by the gateway and not relayed upstream."""

        def enquire() -> tuple[Any, Any]:
            with smpplib_client(gateway.port) as client:
                client.bind_transmitter(system_id="acme", password="pw")
                sent = send_raw(client, "enquire_link")
                resp = client.read_pdu()
                client.unbind()
                return sent, resp

        sent, resp = await asyncio.to_thread(enquire)
        assert (resp.command, resp.status, resp.sequence) == ("enquire_link_resp", 0, sent.sequence)
        assert CommandId.ENQUIRE_LINK not in tap.commands("upstream")
        assert CommandId.ENQUIRE_LINK_RESP in tap.commands("client")

    async def test_gateway_keepalive_on_an_idle_upstream_is_answered(
        self, sim: Simulator, tap: GatewayTap
    ) -> None:
        """On an idle upstream leg the gateway sends enquire_link and the SMSC answers each."""
        session = FAST_SESSION | {"enquire_link_interval_s": 0.2, "response_timeout_s": 2}
        async with running_relay(sim.port, session=session) as gw:
            with smpplib_client(gw.port) as client:
                await asyncio.to_thread(client.bind_transceiver, system_id="acme", password="pw")
                # The client leg gets keep-alives too: smpplib answers them in read_once.
                answering = asyncio.create_task(asyncio.to_thread(_answer_pdus, client, 3))

                def upstream_keepalives_answered() -> int:
                    (up,) = [log for log in tap.conns if log.leg == "upstream"]
                    return sum(
                        1
                        for way, f in up.events
                        if way == "in" and decode(f).command_id == CommandId.ENQUIRE_LINK_RESP
                    )

                await tap.wait_until(lambda: upstream_keepalives_answered() >= 3)
                await answering
                (bridge,) = bridges(gw)
                assert bridge.upstream is not None
                assert bridge.upstream.session.state.name == "BOUND_TRX"
                await asyncio.to_thread(client.unbind)
        sent_up = [c for c in tap.commands("upstream") if c == CommandId.ENQUIRE_LINK]
        assert len(sent_up) >= 3


def _answer_pdus(client: smpplib.client.Client, count: int) -> None:
    for _ in range(count):
        client.read_once()


class TestUnbind:
    async def test_client_unbind_unbinds_the_upstream_leg(
        self, sim: Simulator, gateway: Gateway, tap: GatewayTap
    ) -> None:
        """unbind from the client is answered and the upstream leg is unbound and closed."""
        with smpplib_client(gateway.port) as client:
            await asyncio.to_thread(client.bind_transmitter, system_id="acme", password="pw")
            await sim.wait_until(lambda: len(sim.bound("acme")) == 1)
            (bridge,) = bridges(gateway)
            resp = await asyncio.to_thread(client.unbind)
            assert (resp.command, resp.status) == ("unbind_resp", 0)
            await asyncio.wait_for(bridge.wait_closed(), WAIT_S)
            await sim.wait_until(lambda: not sim.sessions)
        assert tap.commands("upstream")[-1] == CommandId.UNBIND
        assert not bridges(gateway)

    async def test_smsc_unbind_unbinds_the_client(self, sim: Simulator, gateway: Gateway) -> None:
        """When the SMSC unbinds (simulator stop), the client gets an unbind and the leg ends."""
        with smpplib_client(gateway.port) as client:
            await asyncio.to_thread(client.bind_transceiver, system_id="acme", password="pw")
            await sim.wait_until(lambda: len(sim.bound("acme")) == 1)
            (bridge,) = bridges(gateway)
            stopping = asyncio.create_task(sim.stop())
            unbind = await asyncio.to_thread(client.read_pdu)
            assert unbind.command == "unbind"
            await asyncio.to_thread(send_raw, client, "unbind_resp", sequence=unbind.sequence)
            await stopping
            with pytest.raises(smpplib.exceptions.ConnectionError):
                await asyncio.to_thread(client.read_pdu)  # the gateway closed the connection
        await asyncio.wait_for(bridge.wait_closed(), WAIT_S)
        assert not bridges(gateway)


def _pipeline(port: int, count: int) -> tuple[list[int], list[Any]]:
    """Send ``count`` submits without reading, then read ``count`` responses."""
    with smpplib_client(port) as client:
        client.bind_transmitter(system_id="bulk", password="pw")
        sent = [_submit(client, f"m{n}").sequence for n in range(count)]
        responses = [client.read_pdu() for _ in range(count)]
        client.unbind()
        return sent, responses


class TestWindow:
    @pytest.mark.parametrize("window_size", [100, 10])
    async def test_one_hundred_outstanding_submits_are_all_answered(
        self, window_size: int, sim: Simulator, tap: GatewayTap
    ) -> None:
        """100 pipelined submits all get one answer each, and upstream never exceeds the window."""
        # A small delay at the SMSC lets requests pile up, so the window is really tested.
        sim.set_faults(response_delay_s=0.02)
        session = FAST_SESSION | {"window_size": window_size}
        async with running_relay(sim.port, session=session) as gw:
            sent, responses = await asyncio.to_thread(_pipeline, gw.port, 100)
        assert [r.command for r in responses] == ["submit_sm_resp"] * 100
        assert all(r.status == 0 for r in responses)
        assert sorted(r.sequence for r in responses) == sorted(sent)
        ids = [r.message_id.decode() for r in responses]
        assert len(set(ids)) == 100
        assert len(sim.messages) == 100
        assert set(ids) == {m.message_id for m in sim.messages}
        worst = tap.max_outstanding("upstream", CommandId.SUBMIT_SM)
        assert worst <= window_size
        if window_size < 100:
            assert worst == window_size  # the window did fill: back-pressure was exercised
