"""Faults on either side of the relay: nothing hangs, every request gets exactly one answer.

The SMSC misbehaves through the simulator's fault switches; clients misbehave over a raw socket.
"""

from __future__ import annotations

import asyncio
import select
import struct
import time
from typing import Any

import pytest
import smpplib.client
import smpplib.exceptions

from gateway.app import Gateway
from gateway.proxy.hooks import MtRequest, PassThrough
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from gateway.smpp.constants import CommandId, CommandStatus
from tests.integration.conftest import (
    FAST_SESSION,
    WAIT_S,
    RawEsme,
    bridges,
    free_port,
    running_relay,
    send_raw,
    smpplib_client,
    submit_ok,
)
from tests.support.gateway import running_gateway


def _submit(client: smpplib.client.Client, n: int) -> int:
    sent = client.send_message(
        source_addr="ACME", destination_addr="15551234567", short_message=f"m{n}".encode()
    )
    seq: int = sent.sequence
    return seq


def _send_then_read_until_unbound(port: int, count: int) -> tuple[list[int], list[Any], bool]:
    """Bind, pipeline ``count`` submits, then read every PDU until the gateway unbinds or closes.

    Returns the sequence numbers sent, the responses read, and whether an unbind came.
    """
    with smpplib_client(port) as client:
        client.bind_transmitter(system_id="acme", password="pw")
        sent = [_submit(client, n) for n in range(count)]
        responses: list[Any] = []
        unbound = False
        while True:
            try:
                pdu = client.read_pdu()
            except smpplib.exceptions.ConnectionError:
                break  # closed by the gateway
            if pdu.command == "unbind":
                unbound = True
                send_raw(client, "unbind_resp", sequence=pdu.sequence)
                continue
            responses.append(pdu)
        return sent, responses, unbound


def _one_answer_each(sent: list[int], responses: list[Any]) -> dict[int, int]:
    """Sequence number -> status, checking each request got exactly one submit_sm_resp."""
    assert [r.command for r in responses] == ["submit_sm_resp"] * len(responses)
    assert sorted(r.sequence for r in responses) == sorted(sent)
    return {r.sequence: r.status for r in responses}


HELD = "15550000001"


class _HoldsOne(PassThrough):
    """Relays every MT at once, except those to HELD: their decision waits for ``release``,
    as an MT waits for a store lookup or a frequency cap's reservation."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    def on_mt(self, request: MtRequest) -> None:
        if getattr(request.pdu, "destination_addr", None) != HELD:
            request.forward()
            return
        self.holding.set()

        async def decide() -> None:
            await self.release.wait()
            request.forward()

        request.spawn(decide())


async def _hold_one_then_drop(gw: Gateway, sim: Simulator, hook: _HoldsOne) -> tuple[Any, int, int]:
    """Bind; an MT the hook holds; then one the SMSC takes and drops every connection on.
    Returns the client, the held MT's sequence number and the dropped one's answer status."""
    esme = await RawEsme.bound(gw.port, "acme", p.BindTransmitter)
    held = await esme.send(p.SubmitSm(destination_addr=HELD, short_message=b"held"))
    async with asyncio.timeout(WAIT_S):
        await hook.holding.wait()
    sim.set_faults(drop_after=0)
    dropped = await esme.send(p.SubmitSm(destination_addr="15551234567", short_message=b"m"))
    answer = await esme.read()
    assert isinstance(answer, p.SubmitSmResp)
    assert answer.sequence_number == dropped
    return esme, held, answer.command_status


class TestUpstreamEndsWhileDeciding:
    async def test_the_mt_being_decided_is_answered_before_the_client_is_unbound(
        self, sim: Simulator
    ) -> None:
        """The SMSC drops while a hook still decides an MT: once it decides, that MT gets a
        temporary refusal (no leg carries it), and only then comes the gateway's unbind."""
        hook = _HoldsOne()
        async with running_gateway(
            sim.port, interceptor_factory=lambda _config: hook, session=FAST_SESSION
        ) as gw:
            esme, held, dropped_status = await _hold_one_then_drop(gw, sim, hook)
            try:
                assert dropped_status == CommandStatus.ESME_RSYSERR
                # The upstream leg is gone (its window was just failed): the hook decides now.
                hook.release.set()
                answer = await esme.read()
                assert isinstance(answer, p.SubmitSmResp)
                assert answer.sequence_number == held
                assert answer.command_status == CommandStatus.ESME_RSYSERR
                unbind = await esme.read()
                assert isinstance(unbind, p.Unbind)
                await esme.write(encode(p.UnbindResp(sequence_number=unbind.sequence_number)))
                assert await esme.at_eof()
            finally:
                await esme.close()
        assert [getattr(m.pdu, "destination_addr", None) for m in sim.messages] == ["15551234567"]

    async def test_a_decision_that_never_comes_delays_the_unbind_only_so_long(
        self, sim: Simulator
    ) -> None:
        """A hook that never decides does not keep the client bound: the unbind comes after
        session.unbind_timeout_s, and the held MT never reaches the SMSC."""
        hook = _HoldsOne()
        async with running_gateway(
            sim.port, interceptor_factory=lambda _config: hook, session=FAST_SESSION
        ) as gw:
            esme, _held, _status = await _hold_one_then_drop(gw, sim, hook)
            try:
                unbind = await esme.read()
                assert isinstance(unbind, p.Unbind)
                await esme.write(encode(p.UnbindResp(sequence_number=unbind.sequence_number)))
                assert await esme.at_eof()
                async with asyncio.timeout(WAIT_S):
                    for bridge in bridges(gw):
                        await bridge.wait_closed()
            finally:
                hook.release.set()
                await esme.close()
        assert [getattr(m.pdu, "destination_addr", None) for m in sim.messages] == ["15551234567"]


class TestSmscFaults:
    async def test_smsc_dropping_the_connection_fails_every_outstanding_request(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """When the SMSC drops the link, each outstanding submit gets ESME_RSYSERR, then unbind."""
        # Answers are held back and the link drops on the 20th submit: all 20 are in flight.
        sim.set_faults(drop_after=19, response_delay_s=5.0)
        sent, responses, unbound = await asyncio.to_thread(
            _send_then_read_until_unbound, gateway.port, 20
        )
        statuses = _one_answer_each(sent, responses)
        assert set(statuses.values()) == {CommandStatus.ESME_RSYSERR}
        assert unbound
        assert len(sim.messages) == 20
        async with asyncio.timeout(WAIT_S):
            for bridge in bridges(gateway):
                await bridge.wait_closed()

    async def test_smsc_dropping_mid_stream_answers_every_submit_once(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """Submits before the drop succeed, every later one gets an error: none hangs or is lost."""
        sim.set_faults(drop_after=10)
        sent, responses, unbound = await asyncio.to_thread(
            _send_then_read_until_unbound, gateway.port, 40
        )
        statuses = _one_answer_each(sent, responses)
        ok = [seq for seq in sent if statuses[seq] == CommandStatus.ESME_ROK]
        assert ok == sent[:10]
        # RSYSERR for those in flight upstream; those that crossed the gateway's unbind get
        # RINVBNDSTS today (see the test below).
        assert {statuses[seq] for seq in sent[10:]} == {CommandStatus.ESME_RSYSERR}
        assert unbound

    async def test_submit_crossing_the_gateways_unbind_gets_a_temporary_error(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """A submit the client sent before it read the gateway's unbind is answered with a
        status clients re-queue (ESME_RSYSERR), not a permanent one."""
        sim.set_faults(drop_after=0)

        def cross() -> tuple[list[Any], int]:
            with smpplib_client(gateway.port) as client:
                client.bind_transmitter(system_id="acme", password="pw")
                _submit(client, 1)
                # The gateway has answered (the upstream is gone) and sent its unbind, unread.
                readable, _, _ = select.select([client._socket], [], [], WAIT_S)
                assert readable
                crossing = _submit(client, 2)
                pdus = [client.read_pdu() for _ in range(3)]
                return pdus, crossing

        pdus, crossing = await asyncio.to_thread(cross)
        assert [pdu.command for pdu in pdus] == ["submit_sm_resp", "unbind", "submit_sm_resp"]
        assert pdus[2].sequence == crossing
        assert pdus[0].status == CommandStatus.ESME_RSYSERR
        assert pdus[2].status == CommandStatus.ESME_RSYSERR

    async def test_smsc_never_answering_times_each_request_out(self, sim: Simulator) -> None:
        """With no answer from the SMSC, each submit gets ESME_RSYSERR after response_timeout_s."""
        sim.set_faults(respond=False)
        timeout_s = 0.5
        async with running_relay(
            sim.port, session=FAST_SESSION | {"response_timeout_s": timeout_s}
        ) as gw:

            def pipeline() -> tuple[list[int], list[Any], float]:
                with smpplib_client(gw.port) as client:
                    client.bind_transmitter(system_id="acme", password="pw")
                    started = time.monotonic()
                    sent = [_submit(client, n) for n in range(5)]
                    responses = [client.read_pdu() for _ in range(5)]
                    elapsed = time.monotonic() - started
                    client.unbind()
                    return sent, responses, elapsed

            sent, responses, elapsed = await asyncio.to_thread(pipeline)
        statuses = _one_answer_each(sent, responses)
        assert set(statuses.values()) == {CommandStatus.ESME_RSYSERR}
        assert elapsed >= timeout_s
        assert len(sim.messages) == 5

    async def test_unreachable_smsc_fails_the_bind_with_a_temporary_error(self) -> None:
        """With nothing listening upstream, the client's bind gets ESME_RSYSERR."""
        async with running_relay(free_port()) as gw:
            esme = await RawEsme.connect(gw.port)
            try:
                resp = await esme.request(p.BindTransmitter(system_id="acme", password="pw"))
            finally:
                await esme.close()
        assert (resp.command_id, resp.command_status) == (
            CommandId.BIND_TRANSMITTER_RESP,
            CommandStatus.ESME_RSYSERR,
        )

    async def test_bind_beyond_max_sessions_is_refused(self, sim: Simulator) -> None:
        """Once max_sessions connections are open, a further bind gets ESME_RBINDFAIL."""
        async with running_relay(sim.port, server={"max_sessions": 1}) as gw:
            first = await RawEsme.bound(gw.port, "first")
            second = await RawEsme.connect(gw.port)
            try:
                resp = await second.request(p.BindTransceiver(system_id="second", password="pw"))
                assert await second.at_eof()
                ok = await first.request(p.SubmitSm(destination_addr="1", short_message=b"x"))
                await first.request(p.Unbind())
            finally:
                await first.close()
                await second.close()
        assert (resp.command_id, resp.command_status) == (
            CommandId.BIND_TRANSCEIVER_RESP,
            CommandStatus.ESME_RBINDFAIL,
        )
        assert ok.command_status == CommandStatus.ESME_ROK


def _header(length: int, command_id: int, sequence_number: int) -> bytes:
    return struct.pack(">IIII", length, command_id, 0, sequence_number)


# A submit_sm whose body stops inside service_type (no terminating NUL).
_TRUNCATED = _header(16 + 3, CommandId.SUBMIT_SM, 41) + b"CMT"


class TestMalformedClientInput:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (_header(8, CommandId.SUBMIT_SM, 31), (CommandId.GENERIC_NACK, 0x02, 31)),
            (_header(1_000_000, CommandId.SUBMIT_SM, 32), (CommandId.GENERIC_NACK, 0x02, 32)),
        ],
        ids=["length-below-header", "length-above-maximum"],
    )
    async def test_bad_command_length_is_nacked_and_closed(
        self, data: bytes, expected: tuple[int, int, int], gateway: Gateway
    ) -> None:
        """A command_length out of range gets generic_nack ESME_RINVCMDLEN, then the close."""
        bystander = await RawEsme.bound(gateway.port, "bystander")
        esme = await RawEsme.bound(gateway.port, "broken")
        try:
            await esme.write(data)
            nack = await esme.read()
            assert await esme.at_eof()
        finally:
            await esme.close()
        assert (nack.command_id, nack.command_status, nack.sequence_number) == expected
        assert expected[1] == CommandStatus.ESME_RINVCMDLEN
        await _bystander_still_works(bystander)
        await submit_ok(gateway.port)

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (
                _header(16, 0x00000050, 33),
                (CommandId.GENERIC_NACK, CommandStatus.ESME_RINVCMDID, 33),
            ),
            (_TRUNCATED, (CommandId.SUBMIT_SM_RESP, CommandStatus.ESME_RINVCMDLEN, 41)),
        ],
        ids=["unknown-command-id", "truncated-body"],
    )
    async def test_bad_pdu_is_answered_and_the_session_goes_on(
        self, data: bytes, expected: tuple[int, int, int], sim: Simulator, gateway: Gateway
    ) -> None:
        """An unknown command or an undecodable body is answered with an error; the session
        stays bound and its next submit is relayed."""
        bystander = await RawEsme.bound(gateway.port, "bystander")
        esme = await RawEsme.bound(gateway.port, "sloppy")
        try:
            await esme.write(data)
            resp = await esme.read()
            after = await esme.request(p.SubmitSm(destination_addr="1", short_message=b"ok"))
            await esme.request(p.Unbind())
        finally:
            await esme.close()
        assert (resp.command_id, resp.command_status, resp.sequence_number) == expected
        assert (after.command_id, after.command_status) == (CommandId.SUBMIT_SM_RESP, 0)
        assert [m.system_id for m in sim.messages] == ["sloppy"]  # the bad PDU never went up
        await _bystander_still_works(bystander)

    async def test_submit_before_bind_is_refused(self, sim: Simulator, gateway: Gateway) -> None:
        """submit_sm on an unbound connection gets ESME_RINVBNDSTS and goes nowhere."""
        bystander = await RawEsme.bound(gateway.port, "bystander")
        esme = await RawEsme.connect(gateway.port)
        try:
            await esme.write(encode(p.SubmitSm(destination_addr="1", sequence_number=9)))
            resp = await esme.read()
            bind = await esme.request(p.BindTransmitter(system_id="late", password="pw"))
        finally:
            await esme.close()
        assert (resp.command_id, resp.command_status, resp.sequence_number) == (
            CommandId.SUBMIT_SM_RESP,
            CommandStatus.ESME_RINVBNDSTS,
            9,
        )
        assert bind.command_status == 0  # the connection is still usable
        assert not sim.messages
        await _bystander_still_works(bystander)


async def _bystander_still_works(bystander: RawEsme) -> None:
    try:
        resp = await bystander.request(p.SubmitSm(destination_addr="2", short_message=b"still"))
        assert (resp.command_id, resp.command_status) == (CommandId.SUBMIT_SM_RESP, 0)
        assert isinstance(resp, p.SubmitSmResp)
        assert resp.message_id
        await bystander.request(p.Unbind())
    finally:
        await bystander.close()


class TestSilentPeers:
    async def test_smsc_never_answering_the_bind_fails_it_with_a_temporary_error(self) -> None:
        """An SMSC that accepts the connection but never answers the bind: ESME_RSYSERR."""
        connections: list[asyncio.StreamWriter] = []

        async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            session = FAST_SESSION | {"response_timeout_s": 0.5, "bind_timeout_s": 0.5}
            async with running_relay(port, session=session) as gw:
                esme = await RawEsme.connect(gw.port)
                try:
                    resp = await esme.request(p.BindTransceiver(system_id="acme", password="pw"))
                finally:
                    await esme.close()
        finally:
            for writer in connections:
                writer.close()
            server.close()
            await server.wait_closed()
        assert (resp.command_id, resp.command_status) == (
            CommandId.BIND_TRANSCEIVER_RESP,
            CommandStatus.ESME_RSYSERR,
        )

    async def test_client_never_answering_an_mo_makes_the_smsc_retry_it(
        self, sim: Simulator
    ) -> None:
        """An MO the client leaves unanswered gets ESME_RX_T_APPN (temporary) at the SMSC."""
        async with running_relay(
            sim.port, session=FAST_SESSION | {"response_timeout_s": 0.5}
        ) as gw:
            esme = await RawEsme.bound(gw.port, "acme", p.BindReceiver)
            try:
                sending = asyncio.create_task(
                    sim.send_mo(source="15551234567", destination="12345", text="hi")
                )
                mo = await esme.read()
                assert isinstance(mo, p.DeliverSm)
                status = await sending
                late = encode(p.DeliverSmResp(sequence_number=mo.sequence_number))
                await esme.write(late)  # too late: dropped by the gateway, session goes on
                assert isinstance(await esme.request(p.Unbind()), p.UnbindResp)
            finally:
                await esme.close()
        assert status == CommandStatus.ESME_RX_T_APPN

    async def test_client_vanishing_with_an_mo_outstanding_makes_the_smsc_retry_it(
        self, sim: Simulator, gateway: Gateway
    ) -> None:
        """A client that drops its connection before answering an MO: ESME_RX_T_APPN upstream,
        and the upstream leg is unbound."""
        esme = await RawEsme.bound(gateway.port, "acme", p.BindReceiver)
        (bridge,) = bridges(gateway)
        sending = asyncio.create_task(
            sim.send_mo(source="15551234567", destination="12345", text="hi")
        )
        mo = await esme.read()
        assert isinstance(mo, p.DeliverSm)
        esme.writer.transport.abort()  # no unbind, no answer
        assert await sending == CommandStatus.ESME_RX_T_APPN
        await asyncio.wait_for(bridge.wait_closed(), WAIT_S)
        await sim.wait_until(lambda: not sim.sessions)
        await esme.close()


class TestClientUnbindWithWorkOutstanding:
    @pytest.mark.parametrize("window_size", [100, 5])
    async def test_every_submit_is_answered_before_the_unbind_resp(
        self, window_size: int, sim: Simulator
    ) -> None:
        """A client that unbinds right after 20 submits gets 20 answers, then unbind_resp."""
        sim.set_faults(response_delay_s=0.1)
        session = FAST_SESSION | {"window_size": window_size}
        async with running_relay(sim.port, session=session) as gw:
            esme = await RawEsme.bound(gw.port, "acme", p.BindTransmitter)
            try:
                sent = []
                frames = b""
                for n in range(20):
                    seq = esme.next_sequence()
                    sent.append(seq)
                    frames += encode(
                        p.SubmitSm(
                            destination_addr="15551234567",
                            short_message=f"m{n}".encode(),
                            sequence_number=seq,
                        )
                    )
                unbind_seq = esme.next_sequence()
                await esme.write(frames + encode(p.Unbind(sequence_number=unbind_seq)))
                pdus = [await esme.read() for _ in range(21)]
                assert await esme.at_eof()
            finally:
                await esme.close()
        assert isinstance(pdus[-1], p.UnbindResp)
        assert pdus[-1].sequence_number == unbind_seq
        answers = {pdu.sequence_number: pdu.command_status for pdu in pdus[:-1]}
        assert sorted(answers) == sent
        assert all(isinstance(pdu, p.SubmitSmResp) for pdu in pdus[:-1])
        # Accepted submits must reach the SMSC, not be refused because the client unbinds.
        assert set(answers.values()) == {CommandStatus.ESME_ROK}
        assert len(sim.messages) == 20

    async def test_mo_for_a_client_that_is_unbinding_is_retried_later(self, sim: Simulator) -> None:
        """An MO arriving while the client unbinds (answers still owed) gets ESME_RX_T_APPN."""
        sim.set_faults(response_delay_s=0.3)
        async with running_relay(sim.port) as gw:
            esme = await RawEsme.bound(gw.port, "acme", p.BindTransceiver)
            try:
                seq = await esme.send(p.SubmitSm(destination_addr="1", short_message=b"x"))
                await sim.wait_for(lambda messages: len(messages) == 1)
                unbind_seq = await esme.send(p.Unbind())
                # The submit is still owed an answer, so the upstream leg is still bound.
                status = await sim.send_mo(source="15551234567", destination="1", text="hi")
                resp = await esme.read()
                done = await esme.read()
                assert await esme.at_eof()
            finally:
                await esme.close()
        assert status == CommandStatus.ESME_RX_T_APPN
        assert (resp.command_id, resp.command_status, resp.sequence_number) == (
            CommandId.SUBMIT_SM_RESP,
            0,
            seq,
        )
        assert (done.command_id, done.sequence_number) == (CommandId.UNBIND_RESP, unbind_seq)
