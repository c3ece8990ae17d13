"""Fixtures and helpers for the end-to-end relay tests: simulator, gateway, clients, wire tap.

Everything runs over real loopback sockets: the bundled SMSC simulator is the SMSC, an
in-process gateway relays to it, and real client libraries (smpplib in a thread, aiosmpplib on
the loop) or a raw socket client built on our codec talk to the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import smpplib.client
import smpplib.smpp

from gateway.app import Gateway
from gateway.proxy.bridge import Bridge
from gateway.proxy.connection import SmppConnection
from gateway.proxy.hooks import PassThrough
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import RESPONSE_BIT
from gateway.smpp.session import SessionConfig
from tests.support.gateway import running_gateway
from tests.support.sim import running_simulator

# Short timers keep the suite fast; tests that exercise a timer set their own.
FAST_SESSION: dict[str, Any] = {
    "response_timeout_s": 5,
    "enquire_link_interval_s": 30,
    "bind_timeout_s": 5,
    "unbind_timeout_s": 1,
}
SIM_SESSION = SessionConfig(unbind_timeout_s=1.0, bind_timeout_s=5.0)
WAIT_S = 10.0  # upper bound for any single awaited event


def without_sequence(frame: bytes) -> bytes:
    """The frame with its sequence_number zeroed: what a relay must keep byte-exact."""
    return frame[:12] + b"\0\0\0\0" + frame[16:]


def split_frames(data: bytes) -> list[bytes]:
    """Cut a byte stream of whole PDUs into frames."""
    frames = []
    pos = 0
    while pos + 4 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        frames.append(data[pos : pos + length])
        pos += length
    return frames


def free_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- fixtures ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_relay(upstream_port: int, **sections: dict[str, Any]) -> AsyncIterator[Gateway]:
    """An in-process gateway as a plain transparent proxy (no consent processing)."""
    sections.setdefault("session", FAST_SESSION)
    async with running_gateway(
        upstream_port, interceptor_factory=lambda _config: PassThrough(), **sections
    ) as gw:
        yield gw


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The SMSC: the bundled simulator with receipts on, no HTTP control endpoint."""
    async with running_simulator(
        control_port=None, receipts=True, session_config=SIM_SESSION
    ) as simulator:
        yield simulator


@pytest.fixture
async def gateway(sim: Simulator) -> AsyncIterator[Gateway]:
    """A pass-through gateway relaying to ``sim``, with short timers."""
    async with running_relay(sim.port) as gw:
        yield gw


@pytest.fixture
def tap(monkeypatch: pytest.MonkeyPatch) -> GatewayTap:
    """Records what the gateway's own connections write and read (not the simulator's)."""
    wire = GatewayTap()
    wire.install(monkeypatch)
    return wire


# --- wire tap -----------------------------------------------------------------------------------


@dataclasses.dataclass
class ConnLog:
    """One gateway connection: every frame written ("out") and read ("in"), in loop order."""

    leg: str
    events: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)
    _rx: bytearray = dataclasses.field(default_factory=bytearray)

    def frames(self, direction: str) -> list[bytes]:
        return [frame for way, frame in self.events if way == direction]


class GatewayTap:
    """Taps the gateway's connections only (the in-process simulator uses SmppConnection too,
    which a tap keyed on the leg name alone would mix into the client leg)."""

    def __init__(self) -> None:
        self.conns: list[ConnLog] = []
        self._changed = asyncio.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        made = SmppConnection.connection_made
        received = SmppConnection.data_received
        logs: dict[int, ConnLog] = {}
        tap = self

        def connection_made(conn: SmppConnection, transport: Any) -> None:
            if isinstance(conn.handler, Bridge):
                log = ConnLog(conn.leg)
                logs[id(conn)] = log
                tap.conns.append(log)
                transport = _Tapped(transport, tap, log)
            made(conn, transport)

        def data_received(conn: SmppConnection, data: bytes) -> None:
            log = logs.get(id(conn))
            if log is not None:
                log._rx += data
                while len(log._rx) >= 4:
                    (length,) = struct.unpack_from(">I", log._rx)
                    if length < 16 or len(log._rx) < length:
                        break
                    log.events.append(("in", bytes(log._rx[:length])))
                    del log._rx[:length]
                tap.notify()
            received(conn, data)

        monkeypatch.setattr(SmppConnection, "connection_made", connection_made)
        monkeypatch.setattr(SmppConnection, "data_received", data_received)

    def notify(self) -> None:
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()

    def frames(self, leg: str, direction: str = "out") -> list[bytes]:
        """Frames of every connection of ``leg`` in one direction, connection after connection."""
        return [f for log in self.conns if log.leg == leg for f in log.frames(direction)]

    def commands(self, leg: str, direction: str = "out") -> list[int]:
        return [struct.unpack_from(">I", f, 4)[0] for f in self.frames(leg, direction)]

    def max_outstanding(self, leg: str, command_id: int) -> int:
        """The most ``command_id`` requests written on a connection of ``leg`` before their
        responses were read, over the whole run."""
        worst = 0
        for log in self.conns:
            if log.leg != leg:
                continue
            outstanding = 0
            for way, frame in log.events:
                cid = struct.unpack_from(">I", frame, 4)[0]
                if way == "out" and cid == command_id:
                    outstanding += 1
                    worst = max(worst, outstanding)
                elif way == "in" and cid == command_id | RESPONSE_BIT:
                    outstanding -= 1
        return worst

    async def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()


class _Tapped(asyncio.Transport):
    """Delegates to the real transport, logging every write as frames."""

    def __init__(self, inner: asyncio.Transport, tap: GatewayTap, log: ConnLog) -> None:
        super().__init__()
        self._inner = inner
        self._tap = tap
        self._log = log

    def write(self, data: Any) -> None:
        # The gateway writes whole PDUs only (one batch of frames per flush).
        self._log.events.extend(("out", f) for f in split_frames(bytes(data)))
        self._tap.notify()
        self._inner.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()

    def get_write_buffer_size(self) -> int:
        return self._inner.get_write_buffer_size()


# --- smpplib ------------------------------------------------------------------------------------


class _RecordingSocket:
    """Wraps smpplib's socket to keep every byte the client wrote (the frames it sent)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.sent = bytearray()

    def sendall(self, data: bytes) -> None:
        self.sent += data
        self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


@contextlib.contextmanager
def smpplib_client(port: int, timeout: float = 5.0) -> Iterator[smpplib.client.Client]:
    """A connected smpplib client whose writes are recorded (``sent_frames``); the socket is
    closed on exit (no unbind: tests do that)."""
    client = smpplib.client.Client(
        "127.0.0.1", port, timeout=timeout, allow_unknown_opt_params=True
    )
    client.connect()
    client._socket = _RecordingSocket(client._socket)
    try:
        yield client
    finally:
        client.disconnect()


def sent_frames(client: smpplib.client.Client) -> list[bytes]:
    """Every frame this smpplib client has written so far."""
    sock = client._socket
    assert isinstance(sock, _RecordingSocket)
    return split_frames(bytes(sock.sent))


def collect(client: smpplib.client.Client) -> list[Any]:
    """Make ``read_once`` keep every deliver_sm (it answers each with deliver_sm_resp OK)."""
    received: list[Any] = []
    client.set_message_received_handler(lambda pdu: received.append(pdu))
    return received


def send_raw(
    client: smpplib.client.Client, command: str, sequence: int | None = None, **fields: Any
) -> Any:
    """Send any PDU smpplib knows; returns it (its ``sequence`` is the one sent)."""
    pdu = smpplib.smpp.make_pdu(command, client=client, **fields)
    if sequence is not None:
        pdu.sequence = sequence  # a response: smpplib would otherwise use its own counter
    client.send_pdu(pdu)
    return pdu


# --- raw client -------------------------------------------------------------------------------


class RawEsme:
    """A bare ESME over asyncio streams using our codec: for malformed input and PDUs the
    libraries cannot send (unknown TLVs, broken framing)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sequence = 0
        self.keepalives_answered = 0

    @classmethod
    async def connect(cls, port: int) -> RawEsme:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @classmethod
    async def bound(
        cls, port: int, system_id: str = "raw", bind: type[p.BindRequest] = p.BindTransceiver
    ) -> RawEsme:
        esme = await cls.connect(port)
        response = await esme.request(bind(system_id=system_id, password="pw"))
        assert response.command_status == 0, response
        return esme

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, pdu: p.Pdu) -> int:
        """Send with the next sequence number; returns it."""
        seq = self.next_sequence()
        await self.write(encode(dataclasses.replace(pdu, sequence_number=seq)))
        return seq

    async def request(self, pdu: p.Pdu) -> p.Pdu:
        """Send and read the next PDU (the caller knows nothing else is coming)."""
        await self.send(pdu)
        return await self.read()

    async def read_frame(self) -> bytes:
        async with asyncio.timeout(WAIT_S):
            head = await self.reader.readexactly(4)
            (length,) = struct.unpack(">I", head)
            return head + await self.reader.readexactly(length - 4)

    async def read(self) -> p.Pdu:
        """The next PDU; the gateway's enquire_link is answered on the way, as a client must."""
        while True:
            pdu = decode(await self.read_frame())
            if not isinstance(pdu, p.EnquireLink):
                return pdu
            await self.write(encode(p.EnquireLinkResp(sequence_number=pdu.sequence_number)))
            self.keepalives_answered += 1

    async def at_eof(self) -> bool:
        """True once the gateway closed the connection (waits for it)."""
        async with asyncio.timeout(WAIT_S):
            return await self.reader.read(1) == b""

    async def close(self) -> None:
        self.writer.close()
        # The gateway may have reset it first: closed either way.
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def submit_ok(port: int, system_id: str = "bystander") -> str:
    """Bind a fresh raw client, submit one message, unbind; returns the message id."""
    esme = await RawEsme.bound(port, system_id)
    try:
        resp = await esme.request(p.SubmitSm(destination_addr="15550000000", short_message=b"x"))
        assert isinstance(resp, p.SubmitSmResp)
        assert resp.command_status == 0
        assert resp.message_id
        unbind = await esme.request(p.Unbind())
        assert isinstance(unbind, p.UnbindResp)
        return resp.message_id
    finally:
        await esme.close()


def bridges(gw: Gateway) -> list[Bridge]:
    return list(gw.listener.bridges)
