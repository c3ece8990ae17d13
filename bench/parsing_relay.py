"""A minimal parsing relay: the least per-message work a consent proxy does, in plain Python.

A second reference beside the byte relay (bench/relay.py). It frames the client's stream,
gives every request a sequence number of its own towards the SMSC (and restores the client's
on the response), reads the destination of each submit_sm, looks it up in a dict of
opted-out numbers (answering ESME_RSUBMITFAIL itself for one), and appends a footer to the
short_message when it fits in one GSM 7-bit part. It does nothing else: no validation, no
session state, no store, no metrics, no logs, no concatenation, no timers. What the gateway
spends above this is the price of doing the job properly; what this spends above the byte
relay is the price of Python touching every message at all.

Run as ``python -m bench.parsing_relay --upstream HOST:PORT [--port 0]``: prints
``{"port": N}``, answers ``stats`` on stdin; exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable, Sequence
from typing import Final

from bench import JsonDict
from bench.relay import Side, relay_main, start_pairs

SUBMIT_SM: Final = 0x00000004
SUBMIT_SM_RESP: Final = 0x80000004
ESME_RSUBMITFAIL: Final = 0x45
FOOTER: Final = b" Reply STOP to opt out"
MAX_OCTETS: Final = 160  # one GSM 7-bit part, one octet per character unpacked
_HEADER: Final = struct.Struct(">IIII")
# The numbers this relay refuses; the load generator's destinations are not among them, so
# every message pays the lookup and goes through.
OPTED_OUT: Final[dict[bytes, bool]] = {b"19995550000": True}


class Stats:
    __slots__ = ("connections", "refused", "submits")

    def __init__(self) -> None:
        self.connections = 0
        self.submits = 0
        self.refused = 0

    def as_dict(self) -> JsonDict:
        return {
            "connections": self.connections,
            "submits": self.submits,
            "refused": self.refused,
            "cpu_s": sum(os.times()[:2]),
        }


def _cstring_end(body: bytes, start: int) -> int:
    """The index just past the NUL ending the C-octet string at ``start``."""
    return body.index(b"\x00", start) + 1


def rewrite_submit(body: bytes) -> tuple[bytes, bytes]:
    """(destination_addr, body with the footer appended when it fits) of a submit_sm body."""
    at = _cstring_end(body, 0) + 2  # service_type, source TON and NPI
    at = _cstring_end(body, at) + 2  # source_addr, destination TON and NPI
    dest_end = _cstring_end(body, at)
    destination = body[at : dest_end - 1]
    at = dest_end + 3  # esm_class, protocol_id, priority_flag
    at = _cstring_end(body, at)  # schedule_delivery_time
    at = _cstring_end(body, at) + 4  # validity_period, registered_delivery .. sm_default_msg_id
    data_coding = body[at - 2]
    length = body[at]
    if data_coding != 0 or length + len(FOOTER) > MAX_OCTETS:
        return destination, body
    end = at + 1 + length
    rewritten = body[:at] + bytes((length + len(FOOTER),)) + body[at + 1 : end] + FOOTER
    return destination, rewritten + body[end:]


class _Side(Side):
    """One side of a relayed connection, reading frame by frame."""

    def __init__(self, stats: Stats, *, upstream: bool) -> None:
        super().__init__(upstream=upstream)
        self.stats = stats
        if not upstream:
            stats.connections += 1
        self.buffer = b""
        # Shared by both sides of one connection: our sequence -> the client's.
        self.sequences: dict[int, int] = {}
        self.next_sequence = 1

    def attach(self, peer: Side) -> None:
        if self.upstream and isinstance(peer, _Side):
            self.sequences = peer.sequences  # the client's map: one per relayed connection
        super().attach(peer)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        forward: list[bytes] = []
        back: list[bytes] = []
        at = 0
        while len(buffer) - at >= 16:
            length, command, status, sequence = _HEADER.unpack_from(buffer, at)
            if len(buffer) - at < length:
                break
            frame = buffer[at : at + length]
            at += length
            if self.upstream:
                forward.append(self._from_smsc(frame, command, status, sequence))
            else:
                self._from_client(frame, command, status, sequence, forward, back)
        self.buffer = buffer[at:]
        if forward:
            self.write_peer(b"".join(forward))
        if back and self.transport is not None:
            self.transport.write(b"".join(back))

    def _from_client(
        self,
        frame: bytes,
        command: int,
        status: int,
        sequence: int,
        forward: list[bytes],
        back: list[bytes],
    ) -> None:
        if command & 0x80000000:  # a response to the SMSC's request: as it is
            forward.append(frame)
            return
        body = frame[16:]
        if command == SUBMIT_SM:
            self.stats.submits += 1
            destination, body = rewrite_submit(body)
            if OPTED_OUT.get(destination):
                self.stats.refused += 1
                back.append(_HEADER.pack(17, SUBMIT_SM_RESP, ESME_RSUBMITFAIL, sequence) + b"\0")
                return
        ours = self.next_sequence
        self.next_sequence = ours + 1 if ours < 0x7FFFFFFF else 1
        self.sequences[ours] = sequence
        forward.append(_HEADER.pack(16 + len(body), command, status, ours) + body)

    def _from_smsc(self, frame: bytes, command: int, status: int, sequence: int) -> bytes:
        if not command & 0x80000000:  # the SMSC's own request: as it is
            return frame
        theirs = self.sequences.pop(sequence, None)
        if theirs is None:
            return frame
        return _HEADER.pack(len(frame), command, status, theirs) + frame[16:]


async def start(
    host: str, port: int, upstream_host: str, upstream_port: int, stats: Stats
) -> asyncio.Server:
    return await start_pairs(
        host, port, upstream_host, upstream_port, lambda up: _Side(stats, upstream=up)
    )


async def _start(
    host: str, port: int, upstream_host: str, upstream_port: int
) -> tuple[asyncio.Server, Callable[[], JsonDict]]:
    stats = Stats()
    return await start(host, port, upstream_host, upstream_port, stats), stats.as_dict


def main(argv: Sequence[str] | None = None) -> int:
    return relay_main(argv, "python -m bench.parsing_relay", __doc__ or "", _start)


if __name__ == "__main__":
    raise SystemExit(main())
