"""The upstream dialler on real sockets: reaching the SMSC, binding, and reading its answer."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from structlog.testing import capture_logs

from gateway.config import Secret, ServiceBindConfig
from gateway.proxy.connection import SmppConnection
from gateway.proxy.service import ServiceLink
from gateway.proxy.upstream import Dialler, ProxySettings, bind_status
from gateway.smpp import events as ev
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandId, CommandStatus
from gateway.smpp.session import SessionConfig
from gateway.smpp.state import BindState
from gateway.telemetry import logs
from tests.support.sim import running_simulator

_HEADER = struct.Struct(">IIII")


def settings(port: int) -> ProxySettings:
    return ProxySettings(
        upstream_host="127.0.0.1",
        upstream_port=port,
        upstream_ssl=None,
        upstream_server_hostname=None,
        connect_timeout_s=2.0,
        client_session=SessionConfig(),
        upstream_session=SessionConfig(),
        max_unanswered=1000,
        stall_timeout_s=60.0,
        partial_pdu_timeout_s=30.0,
    )


class Recorder:
    """A connection handler that keeps every event."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self.got = asyncio.Event()

    def handle_events(self, conn: SmppConnection, events: list[ev.Event]) -> None:
        self.events += events
        self.got.set()

    def connection_lost(self, conn: SmppConnection, exc: Exception | None) -> None:
        return None

    def writing_paused(self, conn: SmppConnection, paused: bool) -> None:
        return None


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def nacking_smsc() -> AsyncIterator[tuple[int, list[int]]]:
    """An SMSC that answers every PDU with generic_nack status 0; yields its port and the
    count of connections it accepted (one list item each)."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while True:
                header = await reader.readexactly(16)
                length, _cid, _status, seq = _HEADER.unpack(header)
                await reader.readexactly(length - 16)
                writer.write(_HEADER.pack(16, CommandId.GENERIC_NACK, 0, seq))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], accepted
    finally:
        server.close()
        await server.wait_closed()


class TestBindStatus:
    def test_answers(self) -> None:
        """A bind_resp gives its status; a generic_nack is a failed bind even with status 0."""
        ok = p.BindTransmitterResp(command_status=0, sequence_number=1, system_id="smsc")
        refused = p.BindTransmitterResp(
            command_status=CommandStatus.ESME_RINVPASWD, sequence_number=1
        )
        assert bind_status(ok) == CommandStatus.ESME_ROK
        assert bind_status(refused) == CommandStatus.ESME_RINVPASWD
        assert bind_status(p.GenericNack(command_status=0, sequence_number=1)) == (
            CommandStatus.ESME_RBINDFAIL
        )
        nack = p.GenericNack(command_status=CommandStatus.ESME_RINVCMDLEN, sequence_number=1)
        assert bind_status(nack) == CommandStatus.ESME_RINVCMDLEN


class TestDialler:
    async def test_unreachable_smsc_is_none_and_logged(self) -> None:
        """Nothing listening: connect gives None and logs upstream_connect_failed with the
        address."""
        port = closed_port()
        dialler = Dialler(settings(port), asyncio.get_running_loop())
        with capture_logs() as captured:
            conn = await dialler.connect(Recorder(), leg="upstream", log=logs.get_logger())
        assert conn is None
        (line,) = [c for c in captured if c["event"] == logs.UPSTREAM_CONNECT_FAILED]
        assert line["upstream"] == f"127.0.0.1:{port}"
        assert line["error"]

    async def test_connects_and_binds(self) -> None:
        """Against the simulator: the bind's answer comes back with its context, bound."""
        async with running_simulator() as sim:
            recorder = Recorder()
            dialler = Dialler(settings(sim.port), asyncio.get_running_loop())
            conn = await dialler.connect(recorder, leg="upstream", log=logs.get_logger())
            assert conn is not None
            context = object()
            dialler.bind(conn, p.BindTransmitter(system_id="acct", password="pw"), context)
            await asyncio.wait_for(recorder.got.wait(), 5)
            responses = [e for e in recorder.events if isinstance(e, ev.ResponseReceived)]
            assert [r.context for r in responses] == [context]
            assert bind_status(responses[0].pdu) == CommandStatus.ESME_ROK
            assert conn.session.state is BindState.BOUND_TX
            conn.close("test over")


class TestServiceLink:
    async def test_nacked_bind_is_failed_and_retried(self) -> None:
        """A service bind answered with generic_nack (status 0) is a failed bind: the link is
        not bound, logs bind_failed and dials again after its backoff."""
        async with nacking_smsc() as (port, accepted):
            link = ServiceLink(
                settings=settings(port),
                bind=ServiceBindConfig(system_id="gw", password=Secret("p", value="pw")),
            )
            with capture_logs() as captured:
                link.start()
                try:
                    # The second dial comes after the link's backoff: bounded, not counted out
                    # in polls (a loaded machine took longer than a hundred of them).
                    async with asyncio.timeout(10):
                        while len(accepted) < 2:  # noqa: ASYNC110 (a list the fake SMSC fills)
                            await asyncio.sleep(0.01)
                    assert not link.bound
                    assert not await link.wait_bound(0.01)
                finally:
                    await link.stop()
        assert len(accepted) >= 2
        failed = [c for c in captured if c["event"] == logs.BIND_FAILED]
        assert failed
        assert failed[0]["command_status"] == "ESME_RBINDFAIL"
