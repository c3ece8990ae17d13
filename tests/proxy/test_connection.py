"""SmppConnection over real loopback TCP: what one read of many PDUs costs in writes."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from gateway.proxy.connection import SmppConnection
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.events import Event, RequestReceived
from gateway.smpp.framing import FrameBuffer
from gateway.smpp.session import Role, Session, SessionConfig

SUBMITS = 200


class _CountingTransport:
    """Passes everything to the real transport, counting the writes."""

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Answerer:
    """A handler that answers the bind and every submit_sm at once, as the simulator does."""

    def __init__(self) -> None:
        self.reads = 0
        self.transport: _CountingTransport | None = None

    def handle_events(self, conn: SmppConnection, events: list[Event]) -> None:
        self.reads += 1
        for event in events:
            assert isinstance(event, RequestReceived)
            request = event.pdu
            if isinstance(request, p.BindTransceiver):
                response: p.Pdu = p.BindTransceiverResp(system_id="smsc")
            else:
                assert isinstance(request, p.SubmitSm)
                response = p.SubmitSmResp(message_id=f"id-{request.sequence_number}")
            conn.session.send_response(encode(response), conn.loop.time(), request.sequence_number)

    def connection_lost(self, conn: SmppConnection, exc: Exception | None) -> None:
        pass

    def writing_paused(self, conn: SmppConnection, paused: bool) -> None:
        pass


async def test_one_write_per_read_of_many_pdus() -> None:
    """Answers to a read of many submit_sm leave in one write: never more writes than reads,
    and every submit_sm gets its own answer, in order."""
    loop = asyncio.get_running_loop()
    handler = _Answerer()

    def serve() -> SmppConnection:
        conn = SmppConnection(
            Session(Role.SMSC, SessionConfig(), loop.time()), leg="client", loop=loop,
            handler=handler,
        )  # fmt: skip

        def counted(connected: SmppConnection) -> None:
            handler.transport = _CountingTransport(connected.transport)
            connected.transport = handler.transport  # type: ignore[assignment]

        conn.on_connected = counted
        return conn

    server = await loop.create_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        frames = FrameBuffer()

        async def read_frames(count: int) -> list[bytes]:
            got: list[bytes] = []
            while len(got) < count:
                frames.feed(await asyncio.wait_for(reader.read(65536), 10))
                got += frames.frames()
            return got

        writer.write(encode(p.BindTransceiver(system_id="esme", sequence_number=1)))
        (bind_resp,) = await read_frames(1)
        assert isinstance(decode(bind_resp), p.BindTransceiverResp)
        batch = b"".join(
            encode(p.SubmitSm(sequence_number=n, destination_addr=f"1202555{n:04d}"))
            for n in range(2, 2 + SUBMITS)
        )
        writer.write(batch)  # one write: the gateway reads it in as few reads as TCP allows
        answers = [decode(frame) for frame in await read_frames(SUBMITS)]
        assert [a.sequence_number for a in answers] == list(range(2, 2 + SUBMITS))
        assert all(
            isinstance(a, p.SubmitSmResp) and a.message_id == f"id-{a.sequence_number}"
            for a in answers
        )
        assert handler.transport is not None
        assert 2 <= handler.transport.writes <= handler.reads < SUBMITS
    finally:
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()


def test_answers_are_the_frames_patched_in_place() -> None:
    """A relayed answer goes out as the frame with only its sequence number changed."""
    session = Session(Role.SMSC, SessionConfig(), 0.0)
    session.receive_data(encode(p.BindTransmitter(system_id="a", sequence_number=1)), 0.0)
    session.send_response(encode(p.BindTransmitterResp(system_id="s", sequence_number=1)), 0.0)
    session.data_to_send()
    session.receive_data(encode(p.SubmitSm(sequence_number=0x01020304)), 0.0)
    relayed = encode(p.SubmitSmResp(sequence_number=9, message_id="abc"))
    session.send_response(relayed, 0.0, 0x01020304)
    out = session.data_to_send()
    assert out[:12] + out[16:] == relayed[:12] + relayed[16:]
    assert struct.unpack_from(">I", out, 12) == (0x01020304,)
