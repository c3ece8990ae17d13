"""Load generator: SMPP client sessions sending submit_sm with a fixed window.

It binds (transmitter or transceiver), optionally sends a warm-up batch that is not measured,
then sends ``--messages`` submit_sm keeping ``--window`` requests outstanding and measures
responses per second from the first write to the last response; with ``--latency`` it also
records each request's round trip (meaningful at window 1). Frames are built once per
destination; sending patches only the sequence number, and every batch of requests that a read
frees goes out in one write.

Messages are realistic for a consent gateway: source 15550100 (international), destinations
cycling over ``--destinations`` numbers, a ~60 character GSM 7-bit text, registered_delivery 1.

``--connections N`` opens N sessions in this one process (to spread over a gateway's workers,
whose kernel-shared listening socket hands each connection to one of them): the messages are
split between them, each keeps ``ceil(window / N)`` outstanding (so the total stays about
``--window``), and the rate is all responses over the time from the first write to the last
response of any session.

Run as ``python -m bench.load --port N [...]``; prints one JSON object (the result) on stdout and
exits 0 when every request was answered in time, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import struct
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from bench import JsonDict, emit, loop_name, run_loop
from gateway.smpp import codec
from gateway.smpp.constants import (
    HEADER_LENGTH,
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
    Npi,
    Ton,
    status_name,
)
from gateway.smpp.pdu import BindTransceiver, BindTransmitter, SubmitSm, Unbind
from gateway.text import gsm7

SOURCE_ADDR = "15550100"
TEXT = "ACME: your order 4711 has shipped and arrives on Tuesday. Thx"
MAX_DESTINATIONS = 10_000

_HEADER = struct.Struct(">IIII")
_SEQ = struct.Struct(">I")
_SUBMIT_SM_RESP = int(CommandId.SUBMIT_SM_RESP)
_GENERIC_NACK = int(CommandId.GENERIC_NACK)
_RESPONSE_BIT = int(RESPONSE_BIT)
# What we answer to requests the peer sends us mid-run (keep-alives, receipts on a transceiver).
_ANSWER_TO = {
    int(CommandId.ENQUIRE_LINK): int(CommandId.ENQUIRE_LINK_RESP),
    int(CommandId.DELIVER_SM): int(CommandId.DELIVER_SM_RESP),
    int(CommandId.UNBIND): int(CommandId.UNBIND_RESP),
}


def destinations(count: int) -> list[str]:
    """``count`` distinct US numbers (E.164 digits) in the 555 range."""
    if not 1 <= count <= MAX_DESTINATIONS:
        raise ValueError(f"destinations must be 1..{MAX_DESTINATIONS}")
    return [f"1202555{i:04d}" for i in range(count)]


def submit_templates(count: int) -> list[tuple[bytes, bytes]]:
    """One submit_sm per destination, split around the sequence number (header bytes 12..16)."""
    return templates_for(destinations(count))


def templates_for(numbers: Sequence[str]) -> list[tuple[bytes, bytes]]:
    """One submit_sm to each of ``numbers``, split around the sequence number."""
    text = gsm7.encode(TEXT)
    out = []
    for number in numbers:
        frame = codec.encode(
            SubmitSm(
                source_addr_ton=Ton.INTERNATIONAL,
                source_addr_npi=Npi.ISDN,
                source_addr=SOURCE_ADDR,
                dest_addr_ton=Ton.INTERNATIONAL,
                dest_addr_npi=Npi.ISDN,
                destination_addr=number,
                registered_delivery=1,
                data_coding=0,
                short_message=text,
            )
        )
        out.append((frame[:12], frame[16:]))
    return out


def percentile(ordered: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of an ascending sequence."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """One measured batch."""

    messages: int
    window: int
    responses: int
    statuses: dict[str, int]
    elapsed_s: float
    cpu_s: float
    latencies_ns: list[int] | None
    timed_out: bool

    def as_dict(self) -> JsonDict:
        out: JsonDict = {
            "messages": self.messages,
            "window": self.window,
            "responses": self.responses,
            "accepted": self.statuses.get("ESME_ROK", 0),
            "statuses": self.statuses,
            "elapsed_s": self.elapsed_s,
            "rate": self.responses / self.elapsed_s if self.elapsed_s > 0 else None,
            "cpu_s": self.cpu_s,
            "timed_out": self.timed_out,
            "latency_us": None,
        }
        lat = self.latencies_ns
        if lat:
            ordered = sorted(lat)
            out["latency_us"] = {
                "p50": percentile(ordered, 50) / 1000,
                "p99": percentile(ordered, 99) / 1000,
                "max": ordered[-1] / 1000,
                "mean": sum(ordered) / len(ordered) / 1000,
                "count": len(ordered),
            }
        return out


class LoadProtocol(asyncio.Protocol):
    """The client side of one SMPP session, driven by ``request`` and ``run``."""

    def __init__(self, templates: list[tuple[bytes, bytes]]) -> None:
        self._templates = templates
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._seq = 1
        self._template = 0
        self._waiters: dict[int, asyncio.Future[int]] = {}  # bind / unbind by sequence number
        self.lost: asyncio.Future[None] = self._loop.create_future()
        # State of the batch in progress.
        self._done: asyncio.Future[None] | None = None
        self._window = 1
        self._remaining = 0
        self._outstanding = 0
        self._responses = 0
        self._target = 0
        self._statuses: Counter[int] = Counter()
        self._sent_at: dict[int, int] | None = None
        self._latencies: list[int] = []
        self._end = 0.0

    # --- asyncio callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses, so no isinstance.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        error = ConnectionError(f"connection closed by the peer ({exc})")
        for fut in (*self._waiters.values(), self._done):
            if fut is not None and not fut.done():
                fut.set_exception(error)
        if not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        end = len(buf)
        pos = 0
        unpack = _HEADER.unpack_from
        sent_at = self._sent_at
        now_ns = time.perf_counter_ns() if sent_at is not None else 0
        answered = 0
        statuses = self._statuses
        replies: list[bytes] = []
        while end - pos >= HEADER_LENGTH:
            length, command_id, status, seq = unpack(buf, pos)
            if length < HEADER_LENGTH:
                # The stream cannot be framed any more; connection_lost fails the batch.
                if self._transport is not None:
                    self._transport.close()
                return
            if end - pos < length:
                break
            pos += length
            if command_id == _SUBMIT_SM_RESP or (
                command_id == _GENERIC_NACK and seq not in self._waiters
            ):
                answered += 1
                statuses[status] += 1
                if sent_at is not None:
                    started = sent_at.pop(seq, None)
                    if started is not None:
                        self._latencies.append(now_ns - started)
            elif command_id & _RESPONSE_BIT:
                waiter = self._waiters.pop(seq, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(status)
            else:
                answer = _ANSWER_TO.get(command_id)
                if answer is None:
                    answer, status = _GENERIC_NACK, CommandStatus.ESME_RINVCMDID
                else:
                    status = CommandStatus.ESME_ROK
                replies.append(_HEADER.pack(HEADER_LENGTH, answer, status, seq))
                if command_id == CommandId.UNBIND and self._done and not self._done.done():
                    self._done.set_exception(ConnectionError("the peer unbound mid-run"))
        if pos:
            del buf[:pos]
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))
        if answered:
            self._responses += answered
            self._outstanding -= answered
            if self._responses >= self._target:
                self._end = time.perf_counter()
                done = self._done
                if done is not None and not done.done():
                    done.set_result(None)
            else:
                self._fill()

    # --- driving ------------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def request(self, frame: bytes, limit_s: float) -> int:
        """Send a control request (bind, unbind) and return its response's command_status."""
        if self._transport is None:
            raise ConnectionError("not connected")
        seq = self._next_seq()
        waiter: asyncio.Future[int] = self._loop.create_future()
        self._waiters[seq] = waiter
        self._transport.write(codec.with_sequence(frame, seq))
        try:
            return await asyncio.wait_for(waiter, limit_s)
        finally:
            self._waiters.pop(seq, None)

    def _fill(self) -> None:
        n = min(self._window - self._outstanding, self._remaining)
        if n <= 0 or self._transport is None:
            return
        templates = self._templates
        count = len(templates)
        index = self._template
        seq = self._seq
        pack = _SEQ.pack
        parts: list[bytes] = []
        sent_at = self._sent_at
        if sent_at is not None:
            now_ns = time.perf_counter_ns()
        for _ in range(n):
            seq += 1
            head, tail = templates[index]
            index += 1
            if index == count:
                index = 0
            parts += (head, pack(seq), tail)
            if sent_at is not None:
                sent_at[seq] = now_ns
        self._seq = seq
        self._template = index
        self._remaining -= n
        self._outstanding += n
        self._transport.write(b"".join(parts))

    async def run(self, messages: int, window: int, limit_s: float, latency: bool) -> RunResult:
        """Send ``messages`` submit_sm with ``window`` outstanding; bounded by ``limit_s``."""
        done: asyncio.Future[None] = self._loop.create_future()
        self._done = done
        self._window = window
        self._remaining = messages
        self._outstanding = 0
        self._responses = 0
        self._target = messages
        self._statuses = Counter()
        self._sent_at = {} if latency else None
        self._latencies = []
        cpu0 = time.process_time()
        start = time.perf_counter()
        self._end = 0.0
        self._fill()
        timed_out = False
        try:
            await asyncio.wait_for(asyncio.shield(done), limit_s)
        except TimeoutError:
            timed_out = True
        finally:
            self._done = None
            self._sent_at = None
        end = self._end if self._end else time.perf_counter()
        return RunResult(
            messages=messages,
            window=window,
            responses=self._responses,
            statuses={status_name(s): n for s, n in sorted(self._statuses.items())},
            elapsed_s=end - start,
            cpu_s=time.process_time() - cpu0,
            latencies_ns=self._latencies if latency else None,
            timed_out=timed_out,
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def generate(args: argparse.Namespace) -> JsonDict:
    loop = asyncio.get_running_loop()
    result: JsonDict = {"ok": False, "error": None, "pid": os.getpid(), "loop": loop_name()}
    templates = submit_templates(args.destinations)
    protos: list[LoadProtocol] = []
    try:
        for _ in range(args.connections):
            _, proto = await asyncio.wait_for(
                loop.create_connection(lambda: LoadProtocol(templates), args.host, args.port),
                args.connect_timeout,
            )
            protos.append(proto)
    except (OSError, TimeoutError) as exc:
        result["error"] = f"connect to {args.host}:{args.port} failed: {exc!r}"
        for proto in protos:
            proto.close()
        return result
    try:
        result["error"] = await _sessions(protos, args, result)
    except (TimeoutError, ConnectionError) as exc:
        result["error"] = repr(exc)
    finally:
        for proto in protos:
            proto.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(asyncio.shield(p.lost) for p in protos)), 5.0)
    result["ok"] = result["error"] is None
    return result


def shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` whole shares (the first ones one larger)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def combined(runs: Sequence[RunResult]) -> RunResult:
    """One result for batches that ran at the same time on several sessions of this process."""
    statuses: Counter[str] = Counter()
    for run in runs:
        statuses.update(run.statuses)
    latencies = [ns for run in runs for ns in run.latencies_ns or ()]
    return RunResult(
        messages=sum(r.messages for r in runs),
        window=sum(r.window for r in runs),
        responses=sum(r.responses for r in runs),
        statuses=dict(sorted(statuses.items())),
        # The batches start in one turn of the loop: the longest spans them all.
        elapsed_s=max(r.elapsed_s for r in runs),
        cpu_s=max(r.cpu_s for r in runs),  # process time: each span counts every session
        latencies_ns=latencies if runs[0].latencies_ns is not None else None,
        timed_out=any(r.timed_out for r in runs),
    )


async def _sessions(
    protos: Sequence[LoadProtocol], args: argparse.Namespace, result: JsonDict
) -> str | None:
    """Bind, warm up, measure (into ``result``), unbind; returns what went wrong, if anything."""
    bind_cls = BindTransceiver if args.bind == "transceiver" else BindTransmitter
    bind = codec.encode(bind_cls(system_id=args.system_id, password=args.password))
    for status in await asyncio.gather(*(p.request(bind, args.connect_timeout) for p in protos)):
        if status != CommandStatus.ESME_ROK:
            return f"bind_{args.bind} answered {status_name(status)}"
    window = math.ceil(args.window / len(protos))
    if args.warmup:
        await asyncio.gather(
            *(
                p.run(n, window, args.timeout, latency=False)
                for p, n in zip(protos, shares(args.warmup, len(protos)), strict=True)
            )
        )
    runs = await asyncio.gather(
        *(
            p.run(n, window, args.timeout, latency=args.latency)
            for p, n in zip(protos, shares(args.messages, len(protos)), strict=True)
        )
    )
    measured = combined(runs)
    result.update(measured.as_dict())
    result["connections"] = len(protos)
    if measured.timed_out:
        return (
            f"timed out after {args.timeout}s with {measured.responses} of "
            f"{measured.messages} responses"
        )
    # A polite unbind; its answer does not change the figures.
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.gather(*(p.request(codec.encode(Unbind()), 5.0) for p in protos))
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=10_000, help="measured submit_sm")
    parser.add_argument("--window", type=int, default=100, help="requests outstanding")
    parser.add_argument("--warmup", type=int, default=0, help="unmeasured submit_sm first")
    parser.add_argument("--latency", action="store_true", help="record each round trip")
    parser.add_argument("--bind", choices=("transmitter", "transceiver"), default="transmitter")
    parser.add_argument("--system-id", default="bench")
    parser.add_argument("--password", default="bench")
    parser.add_argument("--destinations", type=int, default=1000, help="distinct numbers")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound for the batch, s")
    parser.add_argument("--connect-timeout", type=float, default=10.0)
    parser.add_argument(
        "--connections", type=int, default=1, help="sessions sharing the messages and window"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not 1 <= args.messages <= 100_000_000 or not 1 <= args.window <= 100_000:
        raise SystemExit("--messages must be 1..1e8 and --window 1..1e5")
    if not 1 <= args.connections <= min(args.messages, 1000):
        raise SystemExit("--connections must be 1..1000 and at most --messages")
    result = run_loop(generate(args))
    emit(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
