"""Live fuzz: hostile bytes on one connection of a running gateway never hurt another connection.

A real consent gateway (SQLite store, the simulator as SMSC) with one number opted out. One raw
connection sends a few thousand random and mutated PDUs (mutations of the golden vectors and of
well-formed PDUs built with ``gateway.smpp.pdu``: bit flips, truncations, wrong and huge lengths,
wrong command ids, garbage TLVs, random bytes, binds in the wrong state, split writes, floods,
and valid-looking submits to the opted-out number in every spelling), reconnecting whenever the
gateway closes it. Meanwhile a real smpplib client on another connection keeps sending valid
submit_sm to an allowed number and to the opted-out one.

Afterwards: every honest submit got exactly one answer (the allowed ones ESME_ROK and each
received once by the SMSC, the opted-out ones refused); no submit to the opted-out number reached
the SMSC from either connection; the consent records and histories are what they were; the
gateway wrote only well-formed PDUs to the fuzzing connection, answered every clean bind there,
logged no error and raised nothing into the event loop; its connections, tasks and file
descriptors went back to where they were; and a fresh client binds and is served.

The PDU stream comes from ``random.Random(seed)``: the seed is printed, fixed under CI (as the
hypothesis profile is) and can be replayed with ``LIVE_FUZZ_SEED=<seed>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import random
import struct
import time
import unicodedata
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.consent.model import Actor, ConsentState
from gateway.consent.numbers import normalise
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode_lenient, encode
from gateway.smpp.constants import RESPONSE_BIT, CommandId, Tag
from gateway.smpp.state import BindState
from gateway.store.base import ConsentStore
from gateway.store.staff import scope_from, set_state
from tests.support.consent import (
    BYSTANDER,
    NUMBER_1,
    SUBSCRIBER,
    UNGROUPED,
    WAIT_S,
    RawEsme,
    SmpplibEsme,
    consent_rig,
    submit_fields,
)
from tests.support.strategies import load_vector, vector_paths

SEED_ENV = "LIVE_FUZZ_SEED"
FUZZ_PDUS = 5000  # the fuzzing connection stops after this many PDUs ...
FUZZ_SECONDS = 12.0  # ... or this long, whichever comes first
MIN_HONEST_BATCHES = 10
OPTED_OUT = SUBSCRIBER  # "15551234567", opted out everywhere by staff before the run
ALLOWED = BYSTANDER
REFUSED_OPTED_OUT = 0x45
MAX_PDU_LENGTH = 65536  # the gateway's default session.max_pdu_length
VECTORS = [load_vector(path) for path in vector_paths()]
HEADER = struct.Struct(">IIII")

# Every spelling of the opted-out number a client might use: (address, TON, NPI).
_FULLWIDTH = "".join(chr(0xFF10 + int(d)) for d in OPTED_OUT)
OPTED_OUT_FORMS: list[tuple[str, int, int]] = [
    (OPTED_OUT, 1, 1),
    ("+" + OPTED_OUT, 0, 0),
    ("+" + OPTED_OUT, 1, 1),
    (OPTED_OUT[1:], 2, 1),
    (OPTED_OUT[1:], 0, 0),
    ("00" + OPTED_OUT, 0, 1),
    ("011" + OPTED_OUT, 0, 1),
    ("1-555-123-4567", 1, 1),
    ("+1 (555) 123-4567", 0, 1),
    (" " + OPTED_OUT, 1, 1),
    (OPTED_OUT, 5, 0),  # "alphanumeric", digits only: SMSCs route it to the handset
    (OPTED_OUT, 3, 0),
    (OPTED_OUT, 4, 1),
    (_FULLWIDTH.encode().decode("latin-1"), 1, 1),  # UTF-8 octets, as the codec hands them over
    (("+1555\u200b1234567").encode().decode("latin-1"), 0, 1),
]


def _seed() -> int:
    if os.environ.get(SEED_ENV):
        return int(os.environ[SEED_ENV], 0)
    if os.environ.get("CI"):
        return 0x5EED_F022  # CI replays the same stream every time
    return random.SystemRandom().randrange(2**32)


# --- reaching the opted-out number ----------------------------------------------------------------


def _digits(address: str) -> str:
    """The digits an SMSC might route ``address`` (latin-1 view of its octets) by."""
    with contextlib.suppress(UnicodeError):
        address = address.encode("latin-1").decode("utf-8")
    text = unicodedata.normalize("NFKC", address)
    return "".join(
        str(unicodedata.digit(c)) for c in text if unicodedata.digit(c, None) is not None
    )


def reaches_opted_out(address: str, ton: int, npi: int) -> bool:
    """The gateway's own reading (the key its checks use), and a blunter independent one: the
    digits, leading zeros dropped, spell the number internationally, nationally or after the
    US international prefix."""
    read = normalise(address, ton, npi, "US")
    if read is not None and read.value == OPTED_OUT:
        return True
    return _digits(address).lstrip("0") in {OPTED_OUT, OPTED_OUT[1:], "11" + OPTED_OUT}


def destinations(pdu: p.Pdu) -> list[tuple[str, int, int]]:
    if isinstance(pdu, p.SubmitMulti):
        return [
            (d.destination_addr, d.dest_addr_ton, d.dest_addr_npi)
            for d in pdu.dest_addresses
            if isinstance(d, p.SmeAddress)
        ]
    if isinstance(pdu, p.SubmitSm | p.DataSm):
        return [(pdu.destination_addr, pdu.dest_addr_ton, pdu.dest_addr_npi)]
    return []


def to_opted_out(sim: Simulator) -> list[p.Pdu]:
    """Every message the SMSC received, on any connection, that would reach the number."""
    return [m.pdu for m in sim.messages if any(reaches_opted_out(*d) for d in destinations(m.pdu))]


# --- consent state --------------------------------------------------------------------------------


async def consent_snapshot(store: ConsentStore) -> tuple[Any, ...]:
    """Every consent record, the histories of the two numbers, and the record count."""
    records = [record async for record in store.export()]
    histories = [await store.history(number) for number in (OPTED_OUT, ALLOWED)]
    return records, histories, await store.record_count()


# --- the hostile PDUs -----------------------------------------------------------------------------


class Pdus:
    """Random well-formed PDUs, and mutations of them and of the golden vectors."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.kinds: Counter[str] = Counter()

    def seq(self) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.03:
            return rng.choice((0, 0xFFFFFFFF, 0x7FFFFFFF))
        return rng.randrange(1, 0x7FFFFFFF)

    def text(self) -> tuple[bytes, int]:
        """short_message and data_coding."""
        rng = self.rng
        choice = rng.randrange(7)
        if choice == 0:
            return rng.choice((b"STOP", b"START", b"HELP", b"stop", b"UNSTOP", b"YES")), 0
        if choice == 1:
            return "fuzz ünïcödé".encode("utf-16-be"), 8
        if choice == 2:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 255))), rng.choice(
                (0, 1, 2, 3, 4, 8, 0xF0, 0xF4, rng.randrange(256))
            )
        if choice == 3:
            return b"", 0
        if choice == 4:
            return b"fuzz " * 40, 0  # 200 octets: too long for one SMS
        return f"fuzz {rng.randrange(10**6)}".encode(), 0

    def allowed_address(self) -> tuple[str, int, int]:
        number = "1555" + "".join(str(self.rng.randrange(10)) for _ in range(7))
        if number == OPTED_OUT:
            number = ALLOWED
        return number, 1, 1

    def destination(self) -> tuple[str, int, int]:
        if self.rng.random() < 0.5:
            return self.rng.choice(OPTED_OUT_FORMS)
        return self.allowed_address()

    def tlvs(self) -> tuple[p.Tlv, ...]:
        rng = self.rng
        out: list[p.Tlv] = []
        for _ in range(rng.choice((0, 0, 0, 1, 2, 4))):
            kind = rng.randrange(6)
            if kind == 0:
                out.append(p.Tlv(Tag.SAR_MSG_REF_NUM, rng.randrange(65536).to_bytes(2, "big")))
                out.append(p.Tlv(Tag.SAR_TOTAL_SEGMENTS, bytes([rng.randrange(4)])))
                out.append(p.Tlv(Tag.SAR_SEGMENT_SEQNUM, bytes([rng.randrange(4)])))
            elif kind == 1:
                out.append(p.Tlv(Tag.MESSAGE_PAYLOAD, self.text()[0]))
            elif kind == 2:
                out.append(p.Tlv(Tag.USER_MESSAGE_REFERENCE, rng.randbytes(rng.choice((0, 1, 2)))))
            else:
                out.append(p.Tlv(rng.randrange(65536), rng.randbytes(rng.randrange(0, 20))))
        return tuple(out)

    def submit(self, destination: tuple[str, int, int] | None = None) -> p.Pdu:
        rng = self.rng
        addr, ton, npi = destination or self.destination()
        body, coding = self.text()
        esm_class = 0
        if rng.random() < 0.15:  # one part of a concatenated message
            total = rng.randrange(1, 4)
            udh = bytes([5, 0, 3, rng.randrange(256), total, rng.randrange(0, total + 2)])
            body = udh + body[: 255 - len(udh)]
            esm_class = 0x40
        source = rng.choice(("+" + NUMBER_1, NUMBER_1, UNGROUPED, "", "ACME", "1555000"))
        return p.SubmitSm(
            sequence_number=self.seq(),
            source_addr_ton=1 if source.lstrip("+").isdigit() and len(source) > 8 else 5,
            source_addr_npi=1,
            source_addr=source,
            dest_addr_ton=ton,
            dest_addr_npi=npi,
            destination_addr=addr,
            esm_class=esm_class,
            registered_delivery=rng.choice((0, 0, 1)),
            data_coding=coding,
            short_message=body,
            tlvs=self.tlvs(),
        )

    def well_formed(self) -> tuple[str, bytes]:
        """(kind, frame): one valid PDU of some command, mostly things a client sends."""
        rng = self.rng
        seq = self.seq()
        kind = rng.choices(
            (
                "submit_opted_out",
                "submit_allowed",
                "submit",
                "data_sm",
                "submit_multi",
                "deliver_sm",
                "response",
                "control",
                "bind",
                "other_request",
                "vendor",
            ),
            weights=(14, 6, 8, 4, 4, 4, 4, 6, 4, 4, 2),
        )[0]
        pdu: p.Pdu
        if kind == "submit_opted_out":
            pdu = self.submit(rng.choice(OPTED_OUT_FORMS))
        elif kind == "submit_allowed":
            pdu = self.submit(self.allowed_address())
        elif kind == "submit":
            pdu = self.submit()
        elif kind == "data_sm":
            addr, ton, npi = self.destination()
            pdu = p.DataSm(
                sequence_number=seq,
                source_addr=NUMBER_1,
                source_addr_ton=1,
                dest_addr_ton=ton,
                dest_addr_npi=npi,
                destination_addr=addr,
                tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, self.text()[0]), *self.tlvs()),
            )
        elif kind == "submit_multi":
            dests = tuple(
                p.SmeAddress(dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr)
                for addr, ton, npi in (self.allowed_address(), rng.choice(OPTED_OUT_FORMS))
            )
            pdu = p.SubmitMulti(
                sequence_number=seq,
                source_addr=NUMBER_1,
                source_addr_ton=1,
                dest_addresses=(*dests, p.DistributionList(dl_name="all"))[: rng.randrange(1, 4)],
                short_message=self.text()[0],
            )
        elif kind == "deliver_sm":  # the wrong direction: an "MO" from a client
            pdu = p.DeliverSm(
                sequence_number=seq,
                source_addr_ton=1,
                source_addr=rng.choice((OPTED_OUT, ALLOWED)),
                destination_addr=NUMBER_1,
                dest_addr_ton=1,
                short_message=rng.choice((b"STOP", b"START", b"UNSTOP", b"HELP")),
            )
        elif kind == "response":
            pdu = rng.choice(
                (
                    p.SubmitSmResp(sequence_number=seq, message_id="x"),
                    p.DeliverSmResp(sequence_number=seq),
                    p.GenericNack(sequence_number=seq, command_status=rng.randrange(0x100)),
                    p.EnquireLinkResp(sequence_number=seq),
                    p.UnbindResp(sequence_number=seq),
                    p.BindTransceiverResp(sequence_number=seq, system_id="fuzz"),
                )
            )
        elif kind == "control":
            pdu = rng.choice((p.EnquireLink(sequence_number=seq), p.Unbind(sequence_number=seq)))
        elif kind == "bind":  # on a bound session: ESME_RALYBND; unbound: a real bind
            cls = rng.choice((p.BindTransceiver, p.BindTransmitter, p.BindReceiver))
            pdu = cls(sequence_number=seq, system_id=rng.choice(("fuzz", "acme")), password="pw")
        elif kind == "other_request":
            addr, ton, npi = self.destination()
            pdu = rng.choice(
                (
                    p.QuerySm(sequence_number=seq, message_id="1", source_addr=NUMBER_1),
                    p.CancelSm(
                        sequence_number=seq,
                        message_id="",
                        source_addr=NUMBER_1,
                        dest_addr_ton=ton,
                        dest_addr_npi=npi,
                        destination_addr=addr,
                    ),
                    p.ReplaceSm(
                        sequence_number=seq,
                        message_id="1",
                        source_addr=NUMBER_1,
                        short_message=b"replaced",
                    ),
                    p.Outbind(sequence_number=seq, system_id="fuzz", password="pw"),
                    p.AlertNotification(sequence_number=seq, source_addr=OPTED_OUT),
                )
            )
        else:
            command_id = rng.choice((0x00010201, 0x00000104, 0x0000FFFF, 0x00010202))
            pdu = p.RawPdu(sequence_number=seq, command_id=command_id, body=rng.randbytes(8))
        self.kinds[kind] += 1
        return kind, encode(pdu)

    def base(self) -> bytes:
        if self.rng.random() < 0.3:
            vector = self.rng.choice(VECTORS)
            return vector[:12] + struct.pack(">I", self.seq()) + vector[16:]
        return self.well_formed()[1]

    def mutate(self, frame: bytes) -> tuple[str, bytes]:
        """(mutation, bytes): one mutation of ``frame``."""
        rng = self.rng
        data = bytearray(frame)
        op = rng.choice(
            (
                "bit_flips",
                "bytes_set",
                "truncate",
                "truncate_fixed",
                "extend_fixed",
                "garbage_tlv",
                "length_off",
                "length_huge",
                "command_id",
                "status",
                "drop_nul",
                "splice",
            )
        )
        if op == "bit_flips":
            for _ in range(rng.randrange(1, 9)):
                i = rng.randrange(len(data))
                data[i] ^= 1 << rng.randrange(8)
        elif op == "bytes_set":
            for _ in range(rng.randrange(1, 5)):
                data[rng.randrange(len(data))] = rng.choice(
                    (0, 0xFF, 0x7F, 0x80, rng.randrange(256))
                )
        elif op == "truncate":  # command_length left as it was: the stream desynchronises
            data = data[: rng.randrange(len(data))]
        elif op == "truncate_fixed":
            data = data[: rng.randrange(16, len(data) + 1)]
            data[0:4] = struct.pack(">I", len(data))
        elif op == "extend_fixed":
            data += rng.randbytes(rng.randrange(1, 64))
            data[0:4] = struct.pack(">I", len(data))
        elif op == "garbage_tlv":
            value = rng.randbytes(rng.randrange(0, 16))
            declared = rng.choice((len(value), len(value) + rng.randrange(1, 9), 0xFFFF, 0))
            data += struct.pack(">HH", rng.randrange(65536), declared) + value
            data += rng.randbytes(rng.choice((0, 0, 1, 2, 3)))  # maybe half a TLV header too
            data[0:4] = struct.pack(">I", len(data))
        elif op == "length_off":
            (length,) = struct.unpack_from(">I", data)
            data[0:4] = struct.pack(">I", max(0, length + rng.randrange(-20, 21)))
        elif op == "length_huge":
            huge = (0xFFFFFFFF, 0x80000000, MAX_PDU_LENGTH + 1, 1_000_000, 0, 1, 15)
            data[0:4] = struct.pack(">I", rng.choice(huge))
        elif op == "command_id":
            command_id = rng.choice(
                (
                    *[int(c) for c in CommandId],
                    rng.randrange(2**32),
                    rng.randrange(0x104, 0x10000),
                    0x00010200 + rng.randrange(256),
                    int(CommandId.SUBMIT_SM) | RESPONSE_BIT,
                )
            )
            data[4:8] = struct.pack(">I", command_id)
        elif op == "status":
            data[8:12] = struct.pack(">I", rng.choice((1, 0x45, 0xFFFFFFFF, rng.randrange(2**32))))
        elif op == "drop_nul":
            nuls = [i for i in range(16, len(data)) if data[i] == 0]
            if nuls:
                del data[rng.choice(nuls)]
                data[0:4] = struct.pack(">I", len(data))
        else:  # splice: the head of this frame, the tail of another
            other = self.base()
            cut_a = rng.randrange(16, len(data) + 1)
            cut_b = rng.randrange(16, len(other) + 1)
            data = data[:cut_a] + other[cut_b:]
            data[0:4] = struct.pack(">I", len(data))
        return op, bytes(data)


# --- the fuzzing connection -----------------------------------------------------------------------


@dataclasses.dataclass
class FuzzStats:
    pdus: int = 0
    bytes: int = 0
    connections: int = 0
    closed_by_gateway: int = 0
    closed_by_us: int = 0
    binds: int = 0
    bind_statuses: Counter[int] = dataclasses.field(default_factory=Counter)
    bind_unanswered: int = 0
    connect_failures: int = 0
    write_stalls: int = 0
    ops: Counter[str] = dataclasses.field(default_factory=Counter)
    received: Counter[str] = dataclasses.field(default_factory=Counter)
    malformed: list[bytes] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        answers = ", ".join(f"{k} {v}" for k, v in self.received.most_common(8))
        return (
            f"{self.pdus} fuzz PDUs ({self.bytes} bytes) on {self.connections} connections "
            f"({self.closed_by_gateway} closed by the gateway, {self.closed_by_us} by us), "
            f"{self.binds} binds {dict(self.bind_statuses)}; answers: {answers}"
        )


class Link:
    """One raw connection to the gateway; a reader task keeps every frame the gateway writes."""

    def __init__(self, stats: FuzzStats) -> None:
        self.stats = stats
        self.frames: list[bytes] = []
        self.eof = False
        self._rx = bytearray()
        self._changed = asyncio.Event()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self._task = asyncio.create_task(self._read())
        self.stats.connections += 1

    async def _read(self) -> None:
        assert self.reader is not None
        try:
            while data := await self.reader.read(65536):
                self._rx += data
                self._split()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self._notify()

    def _split(self) -> None:
        rx = self._rx
        while len(rx) >= 4:
            (length,) = struct.unpack_from(">I", rx)
            if length < 16 or length > MAX_PDU_LENGTH:
                self.stats.malformed.append(bytes(rx[:64]))
                rx.clear()
                return
            if len(rx) < length:
                return
            frame = bytes(rx[:length])
            del rx[:length]
            try:
                pdu = decode_lenient(frame)
            except Exception:  # noqa: BLE001 - recorded: the gateway wrote a bad PDU
                self.stats.malformed.append(frame)
                continue
            self.stats.received[f"{_name(pdu.command_id)} {pdu.command_status:#x}"] += 1
            self.frames.append(frame)
        self._notify()

    def _notify(self) -> None:
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()

    async def wait_for(self, condition: Callable[[], bool]) -> bool:
        """Wait until ``condition()`` or the gateway closes; False on timeout."""
        try:
            async with asyncio.timeout(WAIT_S):
                while not condition() and not self.eof:
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    async def write(self, data: bytes) -> bool:
        """False once the connection is gone (or the gateway stopped reading it)."""
        writer = self.writer
        if writer is None or self.eof or writer.is_closing():
            return False
        try:
            writer.write(data)
            async with asyncio.timeout(WAIT_S):
                await writer.drain()
        except TimeoutError:
            self.stats.write_stalls += 1
            return False
        except (ConnectionError, OSError):
            return False
        return True

    async def close(self, *, abort: bool = False) -> None:
        writer = self.writer
        if writer is not None:
            if abort:
                writer.transport.abort()
            else:
                writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        if self._task is not None:
            if not abort:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WAIT_S):
                        await asyncio.shield(self._task)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _name(command_id: int) -> str:
    try:
        return CommandId(command_id).name.lower()
    except ValueError:
        return f"{command_id:#010x}"


class Fuzzer:
    """Sends hostile PDUs to ``port``, one connection at a time, reconnecting when closed."""

    def __init__(self, port: int, rng: random.Random) -> None:
        self.port = port
        self.rng = rng
        self.pdus = Pdus(rng)
        self.stats = FuzzStats()
        self.link: Link | None = None

    async def connect(self) -> Link | None:
        """A new connection, mostly bound; None when the gateway no longer accepts one."""
        link = Link(self.stats)
        try:
            await link.open(self.port)
        except OSError:
            self.stats.connect_failures += 1
            return None
        self.link = link
        if self.rng.random() < 0.85:  # mostly bound, so what follows reaches the consent checks
            cls = self.rng.choices(
                (p.BindTransceiver, p.BindTransmitter, p.BindReceiver), weights=(6, 3, 1)
            )[0]
            system_id = self.rng.choice(("fuzz", "acme", "ACME", "fuzz-" + str(self.rng.random())))
            seq = self.pdus.seq()
            self.stats.binds += 1
            if await link.write(
                encode(cls(sequence_number=seq, system_id=system_id, password="x"))
            ):
                answered = await link.wait_for(
                    lambda: any(_is_bind_resp(f, seq) for f in link.frames)
                )
                resp = next((f for f in link.frames if _is_bind_resp(f, seq)), None)
                if resp is not None:
                    self.stats.bind_statuses[HEADER.unpack_from(resp)[2]] += 1
                elif not answered or not link.eof:
                    self.stats.bind_unanswered += 1
        return link

    async def drop(self, *, by_gateway: bool) -> None:
        link, self.link = self.link, None
        if link is None:
            return
        if by_gateway:
            self.stats.closed_by_gateway += 1
        else:
            self.stats.closed_by_us += 1
        await link.close(abort=not by_gateway and self.rng.random() < 0.5)

    def next_write(self) -> tuple[str, list[bytes]]:
        """(what, the writes to make): one fuzz step, usually one PDU in one write."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.35:
            kind, frame = self.pdus.well_formed()
            return kind, [frame]
        if roll < 0.80:
            op, data = self.pdus.mutate(self.pdus.base())
            return op, [data]
        if roll < 0.88:
            return "random_bytes", [rng.randbytes(rng.randrange(0, 300))]
        if roll < 0.94:  # one PDU split over several writes
            frame = self.pdus.base()
            cuts = sorted(
                rng.sample(range(1, len(frame)), min(len(frame) - 1, rng.randrange(1, 5)))
            )
            bounds = [0, *cuts, len(frame)]
            return "split", [frame[a:b] for a, b in itertools.pairwise(bounds)]
        if roll < 0.97:  # a flood of one PDU in one write
            frame = self.pdus.well_formed()[1]
            return "flood", [frame * rng.randrange(2, 30)]
        return "reconnect", []

    async def run(self, budget: int, seconds: float) -> FuzzStats:
        deadline = time.monotonic() + seconds
        stats = self.stats
        try:
            while stats.pdus < budget and time.monotonic() < deadline:
                link = self.link
                if link is None or link.eof:
                    if link is not None:
                        await self.drop(by_gateway=True)
                    if await self.connect() is None:
                        break  # the listener is gone: reported, and the test fails on it
                    continue
                what, writes = self.next_write()
                stats.ops[what] += 1
                if what == "reconnect":
                    await self.drop(by_gateway=False)
                    continue
                written = True
                for data in writes:
                    written = await link.write(data)
                    if not written:
                        break
                    stats.bytes += len(data)
                    # Let the gateway (on this loop) read each write on its own, and our
                    # reader see what it answered: drain() does not yield below high water.
                    await asyncio.sleep(0)
                if not written:
                    await self.drop(by_gateway=True)
                    continue
                stats.pdus += 1
                if what == "length_huge" and self.rng.random() < 0.7:
                    await self.drop(by_gateway=False)  # else the next PDUs only fill it up
        finally:
            await self.drop(by_gateway=bool(self.link and self.link.eof))
        return stats


def _is_bind_resp(frame: bytes, seq: int) -> bool:
    _, command_id, _, sequence_number = HEADER.unpack_from(frame)
    bind_resps = {
        CommandId.BIND_TRANSMITTER_RESP,
        CommandId.BIND_RECEIVER_RESP,
        CommandId.BIND_TRANSCEIVER_RESP,
        CommandId.GENERIC_NACK,
    }
    return sequence_number == seq and command_id in bind_resps


# --- the honest client ----------------------------------------------------------------------------


@dataclasses.dataclass
class HonestSubmit:
    text: bytes
    destination: str
    command: str
    status: int


async def honest_client(
    esme: SmpplibEsme, stop: asyncio.Event, results: list[HonestSubmit]
) -> None:
    """Batches of three submits (allowed, opted out, allowed) until told to stop."""
    batches = 0
    while not stop.is_set() or batches < MIN_HONEST_BATCHES:
        batch = []
        for destination in (ALLOWED, OPTED_OUT, ALLOWED):
            text = f"honest-{len(results) + len(batch)}".encode()
            batch.append((destination, text))
        responses = await esme.pipeline(
            [("submit_sm", submit_fields(d, t, "+" + NUMBER_1)) for d, t in batch]
        )
        for (destination, text), resp in zip(batch, responses, strict=True):
            results.append(HonestSubmit(text, destination, resp.command, int(resp.status)))
        batches += 1


# --- the test -------------------------------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) if Path("/proc/self/fd").is_dir() else 0


async def _settled(gw: Gateway, baseline: set[Any]) -> None:
    """Wait until every connection the fuzzer opened is gone from the gateway."""
    async with asyncio.timeout(WAIT_S * 2):
        while extra := set(gw.listener.bridges) - baseline:
            await asyncio.gather(*(bridge.wait_closed() for bridge in extra))
            await asyncio.sleep(0)  # the listener forgets a bridge after it closed


async def test_fuzzing_one_connection_never_hurts_another(tmp_path: Path) -> None:
    seed = _seed()
    print(f"live fuzz seed {seed} (replay: {SEED_ENV}={seed})")
    rng = random.Random(seed)
    started = time.monotonic()
    binds = {
        "binds": {
            "delay_after": 1000,  # the fuzzer's odd binds must not get its address throttled
            "block_after": 100_000,
            "upstream_rate_per_s": 1000,
            "upstream_burst": 1000,
        }
    }
    async with consent_rig(tmp_path, server=binds) as rig:
        store = rig.gw.store
        assert store is not None
        await set_state(
            store,
            subscriber=OPTED_OUT,
            scope=scope_from(),
            state=ConsentState.OPTED_OUT,
            actor=Actor.ADMIN,
            reason="live fuzz",
            instance="test",
        )
        esme = rig.esme
        assert await esme.submit(OPTED_OUT, source="+" + NUMBER_1) == REFUSED_OPTED_OUT
        assert await esme.submit(ALLOWED, "before", source="+" + NUMBER_1) == 0
        await rig.sim.wait_for(lambda ms: len(ms) == 1, timeout=WAIT_S)
        before = await consent_snapshot(store)
        bridges_before = set(rig.gw.listener.bridges)
        tasks_before = len(asyncio.all_tasks())
        fds_before = _fds()

        loop = asyncio.get_running_loop()
        loop_errors: list[dict[str, Any]] = []
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(lambda _loop, context: loop_errors.append(context))
        fuzzer = Fuzzer(rig.gw.port, rng)
        honest: list[HonestSubmit] = []
        stop = asyncio.Event()
        try:
            with capture_logs() as logs:
                async with asyncio.TaskGroup() as group:
                    fuzzing = group.create_task(fuzzer.run(FUZZ_PDUS, FUZZ_SECONDS))
                    fuzzing.add_done_callback(lambda _task: stop.set())
                    group.create_task(honest_client(esme, stop, honest))
                await _settled(rig.gw, bridges_before)
        finally:
            loop.set_exception_handler(previous_handler)
        stats = fuzzer.stats
        outcomes = Counter((h.destination, h.command, h.status) for h in honest)
        report = (
            f"seed {seed}: {stats.summary()}; honest submits {len(honest)}: {dict(outcomes)}; "
            f"the SMSC got {len(rig.sim.messages)} messages in all; fuzz ops {dict(stats.ops)}"
        )
        print(report)

        # The honest client: exactly one answer each, the right one, nothing else.
        assert esme._reader_alive, report
        assert esme._responses == {}, f"answers nobody waited for: {esme._responses} ({report})"
        assert len(honest) >= MIN_HONEST_BATCHES * 3, report
        for submit in honest:
            assert submit.command == "submit_sm_resp", (submit, report)
            expected = 0 if submit.destination == ALLOWED else REFUSED_OPTED_OUT
            assert submit.status == expected, (submit, report)
        sent = [h.text for h in honest if h.destination == ALLOWED]
        await rig.sim.wait_for(
            lambda ms: (
                set(sent) <= {m.pdu.short_message for m in ms if hasattr(m.pdu, "short_message")}
            ),
            timeout=WAIT_S,
        )
        arrived = Counter(
            m.pdu.short_message
            for m in rig.sim.messages
            if isinstance(m.pdu, p.SubmitSm) and m.pdu.short_message.startswith(b"honest-")
        )
        assert arrived == Counter(sent), report  # each once, and no opted-out one

        # Nothing for the opted-out number left the gateway, from either connection.
        assert to_opted_out(rig.sim) == [], report
        # Consent is as it was.
        assert await consent_snapshot(store) == before, report

        # The fuzzing connection got SMPP and nothing else, and an answer to each clean bind.
        assert stats.connect_failures == 0, report
        assert stats.malformed == [], report
        assert stats.bind_unanswered == 0, report
        assert stats.pdus >= 500, report  # it really did fuzz
        assert stats.ops["submit_opted_out"] > 0, report
        assert stats.connections > 1, report  # and the gateway did close it at times
        errors = [
            e for e in logs if e.get("log_level") in ("error", "critical") or e.get("exc_info")
        ]
        assert errors == [], f"{errors[:3]} ({report})"
        assert loop_errors == [], report

        # No connection, task or descriptor left behind.
        assert set(rig.gw.listener.bridges) == bridges_before, report
        assert len(asyncio.all_tasks()) <= tasks_before + 2, report
        assert _fds() <= fds_before + 4, report

        # A fresh client binds and is served as before.
        async with RawEsme.bound(rig.gw.port, "fresh") as fresh:
            refused = await fresh.request(
                p.SubmitSm(dest_addr_ton=1, destination_addr=OPTED_OUT, short_message=b"no")
            )
            allowed = await fresh.request(
                p.SubmitSm(dest_addr_ton=1, destination_addr=ALLOWED, short_message=b"fresh")
            )
        assert refused.command_status == REFUSED_OPTED_OUT, report
        assert allowed.command_status == 0, report
        await rig.sim.wait_for(
            lambda ms: any(getattr(m.pdu, "short_message", b"") == b"fresh" for m in ms),
            timeout=WAIT_S,
        )
        assert esme._responses == {}, report  # no late second answer either
    print(f"live fuzz took {time.monotonic() - started:.1f} s")


# --- what the live fuzz found ---------------------------------------------------------------------


async def test_mt_decided_after_its_upstream_began_unbinding_is_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the live fuzz: a client goes away while the consent look-up of its MT is still
    in flight, so the gateway unbinds the upstream leg; the SMSC is slow to answer that unbind.
    When the look-up completes, the MT is dropped quietly (the client is gone). It used to
    raise LocalProtocolError ("submit_sm may not be sent ... in state UNBOUND") out of the
    relay into the hook guard: an error with a traceback in the log, and, had the client still
    been there, an MT settled without any answer."""
    async with consent_rig(tmp_path) as rig:
        store = rig.gw.store
        assert store is not None
        entered = asyncio.Event()
        release = asyncio.Event()
        current = store.current

        async def held_current(subscriber: str) -> Any:
            entered.set()
            await release.wait()
            return await current(subscriber)

        monkeypatch.setattr(store, "cached_current", lambda _subscriber: None)  # the slow path
        monkeypatch.setattr(store, "current", held_current)
        known = set(rig.gw.listener.bridges)
        client = await RawLink.bound(rig.gw.port)
        (bridge,) = set(rig.gw.listener.bridges) - known
        await client.write(
            encode(p.SubmitSm(sequence_number=7, dest_addr_ton=1, destination_addr=ALLOWED))
        )
        async with asyncio.timeout(WAIT_S):
            await entered.wait()
        rig.sim.set_faults(silent=True)  # the SMSC will not answer the gateway's unbind
        client.abort()
        assert bridge.upstream is not None
        async with asyncio.timeout(WAIT_S):
            await bridge.client.lost
        assert bridge.upstream.session.state is BindState.UNBOUND  # the race, reproduced
        hooks = [t for t in asyncio.all_tasks() if t.get_name() == f"{bridge.conn_id}-hook"]
        assert hooks
        with capture_logs() as logs:
            release.set()
            async with asyncio.timeout(WAIT_S):
                await asyncio.gather(*hooks)
        rig.sim.set_faults(silent=False)
        async with asyncio.timeout(WAIT_S):
            await bridge.wait_closed()
        assert [e for e in logs if e.get("log_level") == "error"] == []
        assert all(m.pdu.sequence_number != 7 for m in rig.sim.messages)
        await rig.flows()  # the other client is served as before


class RawLink:
    """A bound raw client that can vanish without a word."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def bound(cls, port: int) -> RawLink:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        link = cls(reader, writer)
        await link.write(encode(p.BindTransmitter(sequence_number=1, system_id="gone")))
        async with asyncio.timeout(WAIT_S):
            head = await reader.readexactly(16)
        (length, command_id, status, _) = HEADER.unpack(head)
        await reader.readexactly(length - 16)
        assert (command_id, status) == (CommandId.BIND_TRANSMITTER_RESP, 0)
        return link

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def abort(self) -> None:
        self.writer.transport.abort()
