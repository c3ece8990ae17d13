"""A minimal, fast SMSC for benchmarks: acknowledges everything, counts what reaches it.

It reads only the 16-byte headers: bind_* gets bind_*_resp OK, submit_sm / data_sm /
submit_multi a prebuilt response (one fixed message id) with only the sequence number patched,
enquire_link its response, unbind its response and then the connection is closed; any other
request a generic_nack. Everything a read carries is answered with a single write. It never
decodes a body, so it stays far faster than the gateway it stands behind and is never the
bottleneck.

Run as ``python -m bench.sink [--port 0]``: prints ``{"port": N}``, then answers ``stats``
(counters since the last ``reset``) and ``reset`` on stdin; exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import time
from collections.abc import Sequence
from typing import cast

from bench import JsonDict, emit, loop_name, run_loop, serve_control
from gateway.smpp import codec
from gateway.smpp.constants import HEADER_LENGTH, RESPONSE_BIT, CommandId, CommandStatus
from gateway.smpp.pdu import (
    BindReceiverResp,
    BindTransceiverResp,
    BindTransmitterResp,
    DataSmResp,
    EnquireLinkResp,
    SubmitMultiResp,
    SubmitSmResp,
    UnbindResp,
)

MAX_PDU_LENGTH = 65536
MESSAGE_ID = "bench-0000000001"
SYSTEM_ID = "bench-sink"

_LENGTH_ID = struct.Struct(">II")
# Plain ints: comparing against IntEnum members costs a method call per PDU.
_SUBMIT_SM = int(CommandId.SUBMIT_SM)
_RESPONSE_BIT = int(RESPONSE_BIT)
_UNBIND = int(CommandId.UNBIND)


def _responses() -> dict[int, tuple[bytes, bytes]]:
    """Prebuilt answers per request command id, split around the sequence number."""
    built = {
        CommandId.BIND_TRANSMITTER: BindTransmitterResp(system_id=SYSTEM_ID),
        CommandId.BIND_RECEIVER: BindReceiverResp(system_id=SYSTEM_ID),
        CommandId.BIND_TRANSCEIVER: BindTransceiverResp(system_id=SYSTEM_ID),
        CommandId.SUBMIT_SM: SubmitSmResp(message_id=MESSAGE_ID),
        CommandId.DATA_SM: DataSmResp(message_id=MESSAGE_ID),
        CommandId.SUBMIT_MULTI: SubmitMultiResp(message_id=MESSAGE_ID),
        CommandId.ENQUIRE_LINK: EnquireLinkResp(),
        CommandId.UNBIND: UnbindResp(),
    }
    out: dict[int, tuple[bytes, bytes]] = {}
    for command_id, pdu in built.items():
        frame = codec.encode(pdu)
        out[int(command_id)] = (frame[:12], frame[16:])
    return out


RESPONSES = _responses()
_SUBMIT_HEAD, _SUBMIT_TAIL = RESPONSES[CommandId.SUBMIT_SM]
_BINDS = frozenset(
    int(c)
    for c in (CommandId.BIND_TRANSMITTER, CommandId.BIND_RECEIVER, CommandId.BIND_TRANSCEIVER)
)


class SinkStats:
    """Counters since the last reset; times are ``time.monotonic()`` of the reads."""

    __slots__ = (
        "binds",
        "connections",
        "first_submit",
        "last_submit",
        "other_requests",
        "responses",
        "submit_sm",
    )

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.connections = 0
        self.binds = 0
        self.submit_sm = 0
        self.other_requests = 0
        self.responses = 0
        self.first_submit = 0.0
        self.last_submit = 0.0

    def as_dict(self) -> JsonDict:
        span = self.last_submit - self.first_submit
        return {
            "connections": self.connections,
            "binds": self.binds,
            "submit_sm": self.submit_sm,
            "other_requests": self.other_requests,
            "responses": self.responses,
            "submit_span_s": span,
            # The first read's messages arrive at first_submit itself, so they are not part of
            # the rate; with thousands of messages the difference is noise.
            "submit_rate": self.submit_sm / span if span > 0 else None,
            "cpu_s": sum(os.times()[:2]),
        }


class SinkProtocol(asyncio.Protocol):
    """One SMSC-side connection."""

    def __init__(self, stats: SinkStats) -> None:
        self._stats = stats
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._unbound = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses, so no isinstance.
        self._transport = cast(asyncio.Transport, transport)
        self._stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        end = len(buf)
        pos = 0
        out: list[bytes | bytearray] = []
        submits = 0
        unpack = _LENGTH_ID.unpack_from
        while end - pos >= HEADER_LENGTH:
            length, command_id = unpack(buf, pos)
            if length < HEADER_LENGTH or length > MAX_PDU_LENGTH:
                self._fail(out, buf, pos)
                return
            if end - pos < length:
                break
            seq = buf[pos + 12 : pos + 16]
            if command_id == _SUBMIT_SM:
                submits += 1
                out += (_SUBMIT_HEAD, seq, _SUBMIT_TAIL)
            elif command_id & _RESPONSE_BIT:
                self._stats.responses += 1
            else:
                self._other(command_id, seq, out)
            pos += length
        if pos:
            del buf[:pos]
        if submits:
            stats = self._stats
            now = time.monotonic()
            if not stats.submit_sm:
                stats.first_submit = now
            stats.last_submit = now
            stats.submit_sm += submits
        transport = self._transport
        if out and transport is not None:
            transport.write(b"".join(out))
            if self._unbound:
                # Like many SMSCs: unbind_resp, then close (after the write is flushed).
                transport.close()

    def _other(self, command_id: int, seq: bytearray, out: list[bytes | bytearray]) -> None:
        self._stats.other_requests += 1
        if command_id in _BINDS:
            self._stats.binds += 1
        elif command_id == _UNBIND:
            self._unbound = True
        answer = RESPONSES.get(command_id)
        if answer is None:
            out.append(
                struct.pack(
                    ">IIII",
                    HEADER_LENGTH,
                    CommandId.GENERIC_NACK,
                    CommandStatus.ESME_RINVCMDID,
                    int.from_bytes(seq, "big"),
                )
            )
        else:
            out += (answer[0], seq, answer[1])

    def _fail(self, out: list[bytes | bytearray], buf: bytearray, pos: int) -> None:
        # The stream cannot be framed any more: answer what came before, then close.
        transport = self._transport
        if transport is not None:
            if out:
                transport.write(b"".join(out))
            transport.close()
        del buf[:]


async def start_sink(host: str, port: int, stats: SinkStats) -> asyncio.Server:
    """A listening sink counting into ``stats`` (in-process; the runner uses ``serve``)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SinkProtocol(stats), host, port, backlog=1024)


async def serve(host: str, port: int) -> None:
    stats = SinkStats()
    server = await start_sink(host, port, stats)
    bound = server.sockets[0].getsockname()[1]
    emit({"port": bound, "pid": os.getpid(), "loop": loop_name()})

    def reset() -> JsonDict:
        stats.reset()
        return {"ok": True}

    try:
        await serve_control({"stats": stats.as_dict, "reset": reset})
    finally:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sink", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    run_loop(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
