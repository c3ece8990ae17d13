"""``python -m bench.soak``: the whole gateway under mixed traffic and faults, then an audit.

One run: a real ``redis-server`` (``appendonly yes``, ``appendfsync always``) is the consent
store; the gateway is its own process (``python -m gateway run``), so its RSS, file
descriptors and task count are its own; the SMSC is the bundled simulator, in this process, on
a fixed port so it can be stopped and started again. On top, in concurrent loops:

- ``--clients`` smpplib transceivers (a reader thread each) send submit_sm asking for receipts
  from the campaign's two numbers to a pool of ``--numbers`` subscribers, ``--window``
  outstanding each, ``--mt-rate`` per second in all; each unbinds after a random 5 to 20 s
  and binds again; a client the gateway unbinds answers ``unbind_resp`` and binds again;
- ``--mo-loops`` loops deliver MOs from pool numbers through the simulator: STOP (several
  spellings, STOPALL), START, HELP and ordinary text; an MO that is not acknowledged OK is
  delivered again, as an SMSC does, until it is; one MO per number at a time;
- the SMSC restarts (stopped, on the same port a few seconds later) and Redis is killed
  (SIGKILL) and restarted on the same data directory: once each in a run of up to 10 minutes,
  every ``--chaos-every`` seconds (default 300) in a longer one.

The run starts with a warm-up, then a quiet point (every client unbound, no MO in flight) where
the gateway's RSS, descriptors and task count are taken as the baseline; it ends with another
quiet point and the audit:

1. every STOP the gateway acknowledged OK is stored: each number's state in the store (read
   with ``open_store`` as the staff CLI reads it; three numbers also through
   ``smpp-gateway consent show``) is what the last acknowledged STOP or START made it;
2. no MT reached the SMSC for a number while it was certainly opted out: sent by the client
   after the gateway acknowledged the number's STOP and before the next START was first
   delivered (an MT in flight when the STOP was acknowledged is not counted: the client sent
   it before). One clock (this process) orders all of it. Nor was an MT refused as opted out
   while its number certainly was not, nor did one the gateway refused (opted out, store
   unavailable, throttled) reach the SMSC, nor did an MT answered OK miss it, nor did one
   arrive twice;
3. every request got exactly one answer: no submit_sm waited longer than 20 s, none was left
   unanswered when the gateway closed a connection, no answer came for nothing, and every MO
   the gateway took was answered within the simulator's 10 s;
4. no leaks: at the final quiet point the gateway holds no SMPP connection, its other
   descriptors (Redis pool connections aside) are within ``--fd-slack`` of the baseline, its
   asyncio tasks (``smppgw_event_loop_tasks``) within ``--task-slack``, and its RSS grew less
   than ``--rss-growth-mb``;
5. receipts come under ids the clients were given, once each; every MO acknowledged was
   delivered to a client; the gateway exits 0 on SIGTERM and logs no error other than the
   store outage's.

Prints a summary (``--json FILE`` also writes it); exit status 0 when the audit passed, 1 when
it found violations (each one listed), 2 when the run itself could not be carried out.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import re
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from bench import JsonDict, run_loop
from bench.__main__ import BenchError, Child, free_port, to_toml, wait_port
from gateway.consent.model import ConsentState
from gateway.simulator import Simulator
from gateway.simulator.server import MoFailedError, NoReceiverError
from gateway.smpp.session import SessionConfig
from gateway.store.base import StoreError
from gateway.store.factory import open_store
from gateway.store.staff import summary
from gateway.telemetry import logs
from tests.support.redis_server import RedisServer, redis_server_binary

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "acme"
SENDERS = ("15550100001", "15550100002")  # the campaign's numbers (scope: the campaign)
POOL_BASE = 12025550000  # subscribers 1202555xxxx

ESME_ROK = 0x00
ESME_RSYSERR = 0x08  # the SMSC's answer never came or its session died: outcome unknown
STORE_UNAVAILABLE = 0x14  # consent.statuses.store_unavailable
OPTED_OUT = 0x45  # consent.statuses.opted_out
ESME_RTHROTTLED = 0x58  # the gateway drains
MT_STATUS_NAMES = {
    ESME_ROK: "ok",
    OPTED_OUT: "opted_out",
    STORE_UNAVAILABLE: "store_unavailable",
    ESME_RSYSERR: "syserr",
    ESME_RTHROTTLED: "throttled",
}
TEMPORARY = frozenset({ESME_RSYSERR, STORE_UNAVAILABLE, ESME_RTHROTTLED})
NOT_FORWARDED = frozenset({OPTED_OUT, STORE_UNAVAILABLE, ESME_RTHROTTLED})

# What the MO loops send, by family; the same words recur, as subscribers write them.
WORDS: Mapping[str, tuple[str, ...]] = {
    "stop": ("STOP", "stop", "Stop.", "UNSUBSCRIBE", "STOPALL"),
    "start": ("START", "UNSTOP", "start"),
    "help": ("HELP", "INFO"),
    "text": ("hello there", "thanks a lot", "what time is it"),
}
MIX = (("stop", 3), ("start", 3), ("help", 1), ("text", 3))
CHANGES = {"stop": "out", "start": "in"}  # what an acknowledged MO of the family makes a number

HANG_S = 20.0  # no request may wait longer than this for its answer
FORWARD_GRACE_S = 30.0  # an MT answered OK reaches the SMSC within this (it did before)
MO_RETRY_S = 0.25
QUIET_TIMEOUT_S = 60.0
MT_TEXT = "soak {} hello from the soak"
MT_RE = re.compile(r"^soak (\d+) ")
RECEIPT_ID_RE = re.compile(r"\bid:(\S+)")
REPLY_PREFIXES = {  # the default auto-replies (brand ACME)
    "opt_out": "ACME: You are unsubscribed",
    "opt_in": "ACME: You are subscribed again",
    "help": "ACME: Msg frequency varies. Msg & data rates may apply. Reply STOP",
}
# Errors the gateway logs when the store goes away (and comes back): expected in this run.
EXPECTED_ERROR_EVENTS = frozenset({logs.STORE_UNAVAILABLE})


class SoakError(Exception):
    """The run could not be carried out (a service did not start); not an audit finding."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SoakOptions:
    duration_s: float = 90.0
    clients: int = 4
    window: int = 8
    mt_rate: float = 300.0  # submit_sm per second, all clients together
    numbers: int = 80
    mo_loops: int = 3
    mo_pause_s: float = 0.05  # between two MOs of one loop
    session_min_s: float = 5.0  # a client unbinds and binds again after [min, max] seconds
    session_max_s: float = 20.0
    warmup_s: float | None = None  # default: 15% of the run, 3 to 60 s
    smsc_restarts: bool = True
    store_outages: bool = True
    chaos_every_s: float | None = None  # default: once in a run of <= 600 s, else every 300 s
    smsc_down_s: float = 2.0
    outage_s: float = 4.0
    rss_growth_mb: float = 20.0  # measured: +0.9 MB in 75 s, +1.5 MB in 15 minutes
    fd_slack: int = 3
    task_slack: int = 5
    seed: int | None = None
    gateway_module: str = "gateway"  # ``python -m MODULE run --config FILE``
    workdir: Path | None = None  # keep the logs and configs here (else a temporary directory)
    progress_s: float = 30.0

    @property
    def warmup(self) -> float:
        if self.warmup_s is not None:
            return self.warmup_s
        return min(60.0, max(3.0, 0.15 * self.duration_s))

    def chaos_times(self) -> list[tuple[float, str]]:
        """(seconds after the start, "smsc" | "store"), in order, within the main phase."""
        start = self.warmup + 3.0  # after the baseline's quiet point
        end = self.duration_s - 3.0
        every = self.chaos_every_s
        if every is None and self.duration_s > 600:
            every = 300.0
        plan: list[tuple[float, str]] = []
        if every is None:
            span = max(0.0, end - start)
            if self.smsc_restarts:
                plan.append((start + 0.3 * span, "smsc"))
            if self.store_outages:
                plan.append((start + 0.65 * span, "store"))
            return plan
        k = 0
        while start + every * k < end:
            for share, kind in ((0.3, "smsc"), (0.7, "store")):
                at = start + every * (k + share)
                enabled = self.smsc_restarts if kind == "smsc" else self.store_outages
                if enabled and at < end:
                    plan.append((at, kind))
            k += 1
        return plan


# --- the ledger of consent changes the gateway acknowledged ---------------------------------


@dataclass(slots=True)
class NumberState:
    """What the SMSC saw acknowledged for one subscriber, on this process's clock.

    ``cert`` is what the number certainly is right now ("out", "in") or None while an MO that
    changes it is in flight (between its first delivery and its acknowledgement, the store may
    or may not have it). The closed intervals in ``out`` / ``not_out`` are the times it was
    certainly opted out / certainly not."""

    cert: str | None = "in"  # no record: MTs go (the campaign's outbound_unknown = allow)
    since: float = 0.0
    out: list[tuple[float, float]] = field(default_factory=list)
    not_out: list[tuple[float, float]] = field(default_factory=list)
    last_acked: str | None = None  # "out" / "in" after the last acknowledged STOP / START
    unresolved: bool = False  # an MO that changes it was never acknowledged


class Ledger:
    def __init__(self, numbers: Sequence[str]) -> None:
        self.numbers = {n: NumberState() for n in numbers}

    def first_delivery(self, number: str, family: str, now: float) -> None:
        """An MO of ``family`` is about to reach the gateway for the first time."""
        st = self.numbers[number]
        change = CHANGES.get(family)
        if change is None or st.cert == change:
            return  # HELP, text, or a STOP while opted out: it stays what it is
        if st.cert == "out":
            st.out.append((st.since, now))
        elif st.cert == "in":
            st.not_out.append((st.since, now))
        st.cert = None

    def acknowledged(self, number: str, family: str, now: float) -> None:
        st = self.numbers[number]
        change = CHANGES.get(family)
        if change is None:
            return
        st.last_acked = change
        if st.cert != change:
            st.cert = change
            st.since = now

    def out_during(self, number: str, start: float, end: float) -> float | None:
        """When its STOP was acknowledged, if ``number`` was certainly opted out all the time
        from ``start`` to ``end``, else None."""
        st = self.numbers[number]
        if st.cert == "out" and start >= st.since:
            return st.since
        for a, b in st.out:
            if a <= start and end < b:
                return a
        return None

    def certainly_not_out(self, number: str, start: float, end: float) -> bool:
        st = self.numbers[number]
        if st.cert == "in" and start >= st.since:
            return True
        return any(a <= start and end <= b for a, b in st.not_out)


# --- figures and findings --------------------------------------------------------------------


@dataclass(slots=True)
class MtMeta:
    dest: str
    t_send: float
    status: int | None = None  # None until answered; -1: never answered (connection lost)
    t_answer: float = 0.0
    seen: bool = False  # reached the SMSC


@dataclass(slots=True)
class Figures:
    mt_sent: int = 0
    mt_status: Counter[str] = field(default_factory=Counter)
    mt_forwarded: int = 0
    mt_unsent: int = 0  # built but not sent: the gateway had unbound the session
    mo_attempts: Counter[str] = field(default_factory=Counter)  # by outcome
    mo_acked: Counter[str] = field(default_factory=Counter)  # by family
    mo_to_clients: int = 0
    receipts: int = 0
    receipts_matched: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    binds: int = 0
    bind_refused: Counter[str] = field(default_factory=Counter)
    connect_failed: int = 0
    unbinds_by_client: int = 0
    unbinds_by_gateway: int = 0
    smsc_restarts: int = 0
    smsc_down_s: list[float] = field(default_factory=list)
    store_outages: int = 0
    outage_s: list[float] = field(default_factory=list)


class Findings:
    """Audit violations: every one counted, the first few of each kind kept verbatim."""

    KEEP = 20

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < self.KEEP:
            kept.append(message)

    def __bool__(self) -> bool:
        return bool(self.counts)


# --- the gateway process ------------------------------------------------------------------------


@dataclass(slots=True)
class ProcSample:
    at: float
    rss_kb: int
    fds: dict[str, int]
    tasks: int | None = None
    sessions: int | None = None

    def json(self) -> JsonDict:
        return {
            "at_s": round(self.at, 1),
            "rss_mb": round(self.rss_kb / 1024, 1),
            "fds": dict(self.fds),
            "tasks": self.tasks,
            "sessions": self.sessions,
        }


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise SoakError(f"no VmRSS for pid {pid}")


def _tcp_sockets(pid: int) -> dict[str, tuple[int, int, str]]:
    """socket inode -> (local port, remote port, state) of the process's TCP sockets."""
    found: dict[str, tuple[int, int, str]] = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                found[inode] = (
                    int(local.rsplit(":", 1)[1], 16),
                    int(remote.rsplit(":", 1)[1], 16),
                    state,
                )
    return found


def fd_kinds(pid: int, ports: Mapping[str, int]) -> dict[str, int]:
    """The process's descriptors by kind: "smpp_client" / "smpp_upstream" / "redis" / "admin"
    connections, "listen" sockets, "other_socket", "pipe", "anon" (epoll, eventfd...), "file"."""
    tcp = _tcp_sockets(pid)
    kinds: Counter[str] = Counter()
    base = Path(f"/proc/{pid}/fd")
    for entry in os.listdir(base):
        try:
            target = os.readlink(base / entry)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            sock = tcp.get(target[8:-1])
            if sock is None:
                kinds["other_socket"] += 1
                continue
            local, remote, state = sock
            if state == "0A":
                kinds["listen"] += 1
            elif remote == ports["redis"]:
                kinds["redis"] += 1
            elif local == ports["gateway"]:
                kinds["smpp_client"] += 1
            elif remote == ports["smsc"]:
                kinds["smpp_upstream"] += 1
            elif local == ports["admin"]:
                kinds["admin"] += 1
            else:
                kinds["other_socket"] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith("anon_inode:"):
            kinds["anon"] += 1
        else:
            kinds["file"] += 1
    return dict(sorted(kinds.items()))


async def http_get(port: int, path: str, timeout_s: float = 5.0) -> str:
    """A bare HTTP/1.1 GET on loopback; the body (the admin API answers and closes)."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    _head, _sep, body = raw.partition(b"\r\n\r\n")
    return body.decode(errors="replace")


def metric_sum(text: str, name: str) -> float | None:
    """The sum of a metric's samples (all label sets) in the Prometheus text, or None."""
    total: float | None = None
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


# --- clients ------------------------------------------------------------------------------------


class BindRefusedError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused 0x{status:02x}")
        self.status = status


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.rstrip(b"\0").decode("latin-1")
    return str(value)


def _response(client: smpplib.client.Client, command: str, sequence: int, **fields: Any) -> Any:
    """A response PDU to ``sequence`` (passing ``sequence=`` alone only skips smpplib's
    counter: the PDU would carry the client's current sequence number)."""
    pdu = smpplib.smpp.make_pdu(command, client=client, sequence=sequence, **fields)
    pdu.sequence = sequence
    return pdu


class Session:
    """One bound smpplib transceiver connection and its reader thread.

    The reader answers deliver_sm, data_sm and enquire_link itself and hands everything else
    to the event loop. When the gateway unbinds, it answers ``unbind_resp`` under the send
    lock, and no request is written after that: every request sent precedes the
    ``unbind_resp`` on the wire, so the gateway owes each an answer before it closes.
    """

    def __init__(self, soak: Soak, name: str, client: smpplib.client.Client) -> None:
        self.soak = soak
        self.name = name
        self.client = client
        self.sock: socket.socket = client._socket
        self.loop = asyncio.get_running_loop()
        self.lock = threading.Lock()
        self.peer_unbound = False  # the gateway sent unbind
        self.we_unbound = False
        self.closed = False  # the reader saw the connection end
        self.unbind_answered = False
        self.outstanding: dict[int, tuple[int, str, float]] = {}  # seq -> (mt id, dest, sent)
        self.maybe_sent: set[int] = set()  # sequence numbers of a write that failed midway
        self.changed = asyncio.Event()
        self.reader = threading.Thread(target=self._read, name=f"soak-{name}", daemon=True)
        self.reader.start()

    # reader thread

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self.loop.call_soon_threadsafe(fn, *args)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def _respond(self, command: str, sequence: int, **fields: Any) -> None:
        pdu = _response(self.client, command, sequence, **fields)
        with self.lock:
            self._write(pdu.generate())

    def _read(self) -> None:
        try:
            while True:
                try:
                    pdu = self.client.read_pdu()
                except TimeoutError:
                    continue
                self._handle(pdu)
        except (smpplib.exceptions.ConnectionError, OSError):
            pass  # the connection ended
        except Exception as exc:  # noqa: BLE001 (a PDU smpplib could not take: a finding)
            self._post(self.soak.findings.add, "client_read", f"{self.name}: {exc!r}")
        finally:
            self._post(self._on_closed)

    def _handle(self, pdu: Any) -> None:
        command = pdu.command
        if command == "deliver_sm":
            self._respond("deliver_sm_resp", pdu.sequence)
            self._post(
                self.soak.on_deliver,
                int(pdu.esm_class or 0),
                _text(getattr(pdu, "receipted_message_id", None)),
                _text(pdu.short_message),
            )
        elif command == "data_sm":
            self._respond("data_sm_resp", pdu.sequence, message_id="")
            self._post(self.soak.on_deliver, int(pdu.esm_class or 0), "", "")
        elif command == "enquire_link":
            self._respond("enquire_link_resp", pdu.sequence)
        elif command == "unbind":
            resp = _response(self.client, "unbind_resp", pdu.sequence)
            with self.lock:
                self.peer_unbound = True
                self._write(resp.generate())
            self._post(self._wake)
        elif command == "unbind_resp":
            self._post(self._on_unbind_resp)
        elif command.endswith("_resp") or command == "generic_nack":
            message_id = _text(getattr(pdu, "message_id", None))
            self._post(self._on_answer, pdu.sequence, int(pdu.status), command, message_id)
        else:
            self._post(self.soak.findings.add, "client_read", f"{self.name}: got {command}")

    # loop side

    def _wake(self) -> None:
        self.changed.set()

    def _on_closed(self) -> None:
        self.closed = True
        self.changed.set()

    def _on_unbind_resp(self) -> None:
        self.unbind_answered = True
        self.changed.set()

    def _on_answer(self, sequence: int, status: int, command: str, message_id: str) -> None:
        entry = self.outstanding.pop(sequence, None)
        if entry is None:
            if sequence in self.maybe_sent:
                self.maybe_sent.discard(sequence)
            else:
                self.soak.findings.add(
                    "answers", f"{self.name}: {command} seq {sequence} answers no request"
                )
        else:
            self.soak.on_mt_answer(entry, status, command, message_id)
        self.changed.set()

    def _send(self, data: bytes) -> bool:
        """Write a batch of requests unless the gateway unbound the session (thread)."""
        with self.lock:
            if self.peer_unbound or self.closed:
                return False
            self.sock.sendall(data)
            return True

    async def submit(self, mts: Sequence[tuple[int, str, str]]) -> None:
        """Send submit_sm for (mt id, source, destination), in one write."""
        frames = []
        entries = []
        for mt_id, source, dest in mts:
            pdu = smpplib.smpp.make_pdu(
                "submit_sm",
                client=self.client,
                source_addr_ton=1,
                source_addr_npi=1,
                source_addr=source,
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=dest,
                short_message=MT_TEXT.format(mt_id).encode(),
                registered_delivery=1,
            )
            frames.append(pdu.generate())
            entries.append((int(pdu.sequence), mt_id, dest))
        sent_at = time.monotonic()  # before the write: an MT is never sent earlier than this
        for seq, mt_id, dest in entries:
            self.outstanding[seq] = (mt_id, dest, sent_at)
            self.soak.mt_meta[mt_id] = MtMeta(dest=dest, t_send=sent_at)
        try:
            sent = await asyncio.to_thread(self._send, b"".join(frames))
        except OSError:
            sent = None
        if sent:
            self.soak.figures.mt_sent += len(entries)
            return
        for seq, mt_id, _dest in entries:
            if self.outstanding.pop(seq, None) is None:
                continue  # answered already
            if sent is None:  # the write failed midway: the gateway may have some of them
                self.maybe_sent.add(seq)
                self.soak.mt_lost(mt_id)
            else:
                del self.soak.mt_meta[mt_id]
                self.soak.figures.mt_unsent += 1

    async def unbind(self) -> None:
        pdu = smpplib.smpp.make_pdu("unbind", client=self.client)

        def send() -> None:
            with self.lock:
                self.we_unbound = True
                self._write(pdu.generate())

        await asyncio.to_thread(send)

    async def wait(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``condition()`` holds (re-checked on every change); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            if condition():
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 1.0))
        return True

    def close(self) -> None:
        """Close the socket and join the reader (thread)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.reader.join(10)
        self.client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN  # no "disconnect bound" noise
        with contextlib.suppress(OSError, smpplib.exceptions.ConnectionError):
            self.client.disconnect()


class Client:
    """One application: binds, sends its share of the MTs, unbinds now and then, binds again."""

    def __init__(self, soak: Soak, index: int) -> None:
        self.soak = soak
        self.name = f"c{index}"
        self.rng = random.Random(soak.rng.random())
        self.connected = False

    def _open(self) -> smpplib.client.Client:
        client = smpplib.client.Client(
            HOST, self.soak.ports["gateway"], timeout=30, allow_unknown_opt_params=True
        )
        try:
            client.connect()
            client.bind_transceiver(system_id=ACCOUNT, password="pw")
        except smpplib.exceptions.PDUError as exc:
            client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN
            with contextlib.suppress(OSError, smpplib.exceptions.ConnectionError):
                client.disconnect()
            status = exc.args[1] if len(exc.args) > 1 else -1
            raise BindRefusedError(int(status)) from None
        except BaseException:
            client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN
            with contextlib.suppress(OSError, smpplib.exceptions.ConnectionError):
                client.disconnect()
            raise
        return client

    async def run(self) -> None:
        soak = self.soak
        backoff = 0.1
        while not soak.finished:
            await soak.traffic.wait()
            if soak.finished:
                return
            try:
                smpp = await asyncio.to_thread(self._open)
            except BindRefusedError as exc:
                soak.figures.bind_refused[f"0x{exc.status:02x}"] += 1
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            except (OSError, smpplib.exceptions.ConnectionError):
                soak.figures.connect_failed += 1
                await asyncio.sleep(backoff)
                backoff = min(1.0, backoff * 2)
                continue
            backoff = 0.1
            soak.figures.binds += 1
            self.connected = True
            session = Session(soak, self.name, smpp)
            try:
                await self._drive(session)
                await self._end(session)
            finally:
                await asyncio.to_thread(session.close)
                self._lost(session)
                self.connected = False

    async def _drive(self, session: Session) -> None:
        soak = self.soak
        opts = soak.opts
        rate = opts.mt_rate / opts.clients
        leave_at = time.monotonic() + self.rng.uniform(opts.session_min_s, opts.session_max_s)
        tokens = 0.0
        last = time.monotonic()
        while True:
            now = time.monotonic()
            if session.closed or session.peer_unbound:
                return
            if soak.finished or not soak.traffic.is_set() or now >= leave_at:
                return
            oldest = min((e[2] for e in session.outstanding.values()), default=now)
            if now - oldest > HANG_S:
                soak.findings.add(
                    "answers",
                    f"{self.name}: {len(session.outstanding)} submit_sm without an answer "
                    f"for over {HANG_S:g}s",
                )
                session.outstanding.clear()
                return
            tokens = min(float(opts.window), tokens + (now - last) * rate)
            last = now
            free = opts.window - len(session.outstanding)
            count = min(free, int(tokens))
            if count > 0:
                tokens -= count
                await session.submit([soak.new_mt(self.rng) for _ in range(count)])
                continue
            session.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(session.changed.wait(), 0.05)

    async def _end(self, session: Session) -> None:
        """Unbind (unless the gateway did) once every request is answered; wait for the close."""
        soak = self.soak
        if not (session.closed or session.peer_unbound):
            if not await session.wait(lambda: not session.outstanding or session.closed, HANG_S):
                soak.findings.add(
                    "answers",
                    f"{self.name}: {len(session.outstanding)} submit_sm unanswered {HANG_S:g}s "
                    "before unbind",
                )
            if not (session.closed or session.peer_unbound):
                soak.figures.unbinds_by_client += 1
                await session.unbind()
                if not await session.wait(lambda: session.unbind_answered or session.closed, 10.0):
                    soak.findings.add("answers", f"{self.name}: unbind not answered in 10s")
                # The gateway closes once it answered; a client may close first, as this one does.
                return
        if session.peer_unbound:
            soak.figures.unbinds_by_gateway += 1
        if not await session.wait(lambda: session.closed, 10.0):
            soak.findings.add(
                "answers", f"{self.name}: the gateway unbound but did not close in 10s"
            )

    def _lost(self, session: Session) -> None:
        if session.outstanding and not session.we_unbound:
            self.soak.findings.add(
                "answers",
                f"{self.name}: {len(session.outstanding)} submit_sm unanswered when the "
                "connection closed",
            )
        for mt_id, _dest, _sent in session.outstanding.values():
            self.soak.mt_lost(mt_id)
        session.outstanding.clear()


# --- the run ------------------------------------------------------------------------------------


def gateway_config(ports: Mapping[str, int], redis_url: str) -> dict[str, Any]:
    return {
        "gateway": {"instance": "soak", "shutdown_grace_s": 5},
        "server": {"listen": f"{HOST}:{ports['gateway']}"},
        "upstream": {"address": f"{HOST}:{ports['smsc']}", "connect_timeout_s": 2},
        "session": {
            "response_timeout_s": 5,
            "enquire_link_interval_s": 10,
            "bind_timeout_s": 5,
            "unbind_timeout_s": 1,
        },
        "store": {"url": f"{redis_url}?timeout_s=0.5&heartbeat_s=0.2&recovery_interval_s=0.2"},
        "admin": {"listen": f"{HOST}:{ports['admin']}"},
        "logging": {"level": "warning", "format": "json"},
        "campaigns": [
            {
                "name": "acme",
                "brand": "ACME",
                "numbers": ["+" + n for n in SENDERS],
                "footer": "always",
            }
        ],
    }


class Soak:
    def __init__(self, opts: SoakOptions, workdir: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        seed = opts.seed if opts.seed is not None else random.randrange(2**32)
        self.seed = seed
        self.rng = random.Random(seed)
        self.numbers = [str(POOL_BASE + i) for i in range(opts.numbers)]
        self.ledger = Ledger(self.numbers)
        self.figures = Figures()
        self.findings = Findings()
        self.mt_meta: dict[int, MtMeta] = {}
        self.next_mt = 0
        self.issued: dict[str, float] = {}  # message ids given to clients, receipt not seen yet
        self.early: dict[str, float] = {}  # receipt ids no client was given (yet)
        self.traffic = asyncio.Event()  # clients bind and send while set
        self.mo_enabled = asyncio.Event()
        self.busy: set[str] = set()  # numbers with an MO in flight
        self.mo_done = asyncio.Event()  # set whenever one of them is done
        self.finished = False
        self.t0 = time.monotonic()
        self.samples: list[ProcSample] = []
        self.ports: dict[str, int] = {}
        self.redis: RedisServer | None = None
        self.sim: Simulator | None = None
        self.gateway: Child | None = None
        self.gateway_stopped = False
        # With --workdir: every acknowledged MO, one JSON line each (wall clock), to compare
        # with the store's history when the audit finds something.
        self.mo_log = (workdir / "mo.jsonl").open("w") if opts.workdir is not None else None
        self.config_path = workdir / "gateway.toml"
        self.clients = [Client(self, i) for i in range(opts.clients)]

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # --- traffic bookkeeping (event loop only) ---

    def new_mt(self, rng: random.Random) -> tuple[int, str, str]:
        self.next_mt += 1
        return self.next_mt, rng.choice(SENDERS), rng.choice(self.numbers)

    def on_mt_answer(
        self, entry: tuple[int, str, float], status: int, command: str, message_id: str
    ) -> None:
        mt_id, dest, sent_at = entry
        now = time.monotonic()
        self.figures.mt_status[MT_STATUS_NAMES.get(status, f"0x{status:02x}")] += 1
        if command != "submit_sm_resp":
            self.findings.add("mt_status", f"MT {mt_id}: answered with {command} 0x{status:02x}")
        elif status == ESME_ROK:
            if message_id in self.early:
                del self.early[message_id]
                self.figures.receipts_matched += 1
            elif message_id:
                self.issued[message_id] = now
        elif status == OPTED_OUT:
            if self.ledger.certainly_not_out(dest, sent_at, now):
                self.findings.add(
                    "over_refusal", f"MT {mt_id} to {dest} refused as opted out; it was not"
                )
        elif status not in TEMPORARY:
            self.findings.add("mt_status", f"MT {mt_id} to {dest}: unexpected 0x{status:02x}")
        meta = self.mt_meta.get(mt_id)
        if meta is None:
            return
        meta.status = status
        meta.t_answer = now
        if meta.seen:
            self.check_forwarded(mt_id, meta)

    def mt_lost(self, mt_id: int) -> None:
        """The MT's answer will never come (its connection ended)."""
        meta = self.mt_meta.get(mt_id)
        if meta is None:
            return
        meta.status = -1
        meta.t_answer = time.monotonic()
        if meta.seen:
            self.check_forwarded(mt_id, meta)

    def on_deliver(self, esm_class: int, receipted_id: str, body: str) -> None:
        if not esm_class & 0x3C:
            self.figures.mo_to_clients += 1
            return
        self.figures.receipts += 1
        rid = receipted_id
        if not rid:
            found = RECEIPT_ID_RE.search(body)
            rid = found.group(1) if found else ""
        if rid in self.issued:
            del self.issued[rid]
            self.figures.receipts_matched += 1
        else:
            self.early[rid] = time.monotonic()

    def harvest(self) -> None:
        """Take what reached the SMSC since the last call and check every MT of ours."""
        sim = self.sim
        if sim is None:
            return
        records = sim.messages
        sim.clear()
        for record in records:
            text = record.text or ""
            found = MT_RE.match(text)
            if found is None:
                kind = next((k for k, v in REPLY_PREFIXES.items() if text.startswith(v)), "other")
                self.figures.replies[kind] += 1
                continue
            self.figures.mt_forwarded += 1
            mt_id = int(found.group(1))
            meta = self.mt_meta.get(mt_id)
            if meta is None or meta.seen:
                self.findings.add("duplicate_forward", f"MT {mt_id} reached the SMSC again")
                continue
            meta.seen = True
            if meta.status is not None:
                self.check_forwarded(mt_id, meta)

    def check_forwarded(self, mt_id: int, meta: MtMeta) -> None:
        """An MT of ours reached the SMSC and its client has its answer (or lost it): the
        gateway must not have let it through while the number was certainly opted out, from
        before the client sent it to after the answer came (so it was decided in between),
        nor refused it."""
        acked = self.ledger.out_during(meta.dest, meta.t_send, meta.t_answer)
        if acked is not None:
            self.findings.add(
                "mt_after_stop",
                f"MT {mt_id} to {meta.dest} reached the SMSC; the client sent it "
                f"{meta.t_send - acked:.3f}s after the gateway acknowledged its STOP",
            )
        if meta.status in NOT_FORWARDED:
            self.findings.add(
                "refused_forwarded",
                f"MT {mt_id} to {meta.dest} answered 0x{meta.status:02x} yet reached the SMSC",
            )
        del self.mt_meta[mt_id]

    def prune(self, final: bool = False) -> None:
        now = time.monotonic()
        for mt_id, meta in list(self.mt_meta.items()):
            if meta.status is None or (now - meta.t_answer < FORWARD_GRACE_S and not final):
                continue
            if meta.status == ESME_ROK and not meta.seen:
                self.findings.add(
                    "ok_not_forwarded", f"MT {mt_id} to {meta.dest} answered OK, not at the SMSC"
                )
            del self.mt_meta[mt_id]

    async def watch(self) -> None:
        """Harvest what the SMSC got, prune, sample the gateway, print progress."""
        last_sample = last_prune = last_progress = 0.0
        while not self.finished:
            self.harvest()
            now = self.elapsed()
            if now - last_prune >= 5:
                self.prune()
                last_prune = now
            if now - last_sample >= 5:
                with contextlib.suppress(OSError, TimeoutError, SoakError):
                    self.samples.append(await self.sample())
                last_sample = now
            if now - last_progress >= self.opts.progress_s:
                self.progress()
                last_progress = now
            await asyncio.sleep(0.2)

    def progress(self) -> None:
        f = self.figures
        rss = f"{self.samples[-1].rss_kb / 1024:.1f} MB" if self.samples else "-"
        print(
            f"[soak {self.elapsed():6.0f}s] MT sent {f.mt_sent} ok {f.mt_status['ok']} "
            f"opted_out {f.mt_status['opted_out']}; MO acked {sum(f.mo_acked.values())}; "
            f"receipts {f.receipts}; restarts {f.smsc_restarts} outages {f.store_outages}; "
            f"gateway RSS {rss}; findings {sum(self.findings.counts.values())}",
            file=sys.stderr,
            flush=True,
        )

    # --- MOs ---

    async def mo_loop(self, index: int) -> None:
        rng = random.Random(self.rng.random())
        families = [name for name, weight in MIX for _ in range(weight)]
        while not self.finished:
            await self.mo_enabled.wait()
            if self.finished:
                return
            free = [n for n in self.numbers if n not in self.busy]
            if not free:
                await asyncio.sleep(0.05)
                continue
            number = rng.choice(free)
            family = rng.choice(families)
            self.busy.add(number)
            try:
                await self.deliver(number, family, rng.choice(WORDS[family]), rng)
            finally:
                self.busy.discard(number)
                self.mo_done.set()
            await asyncio.sleep(self.opts.mo_pause_s)

    async def deliver(self, number: str, family: str, text: str, rng: random.Random) -> None:
        """Deliver one MO until the gateway acknowledges it OK, as an SMSC does."""
        sim = self.sim
        assert sim is not None
        destination = rng.choice(SENDERS)
        self.ledger.first_delivery(number, family, time.monotonic())
        give_up = None
        trail: list[str] = []
        started = time.time()
        while True:
            outcome = "ok"
            try:
                status = await sim.send_mo(
                    source=number, destination=destination, text=text, system_id=ACCOUNT
                )
            except NoReceiverError:
                status, outcome = -1, "no_receiver"
            except TimeoutError:  # the gateway owes an answer within its response_timeout_s
                status, outcome = -1, "timeout"
                self.findings.add(
                    "answers", f"MO from {number}: no answer in {sim.mo_timeout_s:g}s"
                )
            except MoFailedError:
                status, outcome = -1, "session_lost"
            if status == ESME_ROK:
                self.ledger.acknowledged(number, family, time.monotonic())
                if self.mo_log is not None:
                    entry = {
                        "number": number,
                        "text": text,
                        "to": destination,
                        "first": round(started, 3),
                        "acked": round(time.time(), 3),
                        "failed": trail,
                    }
                    self.mo_log.write(json.dumps(entry) + "\n")
                self.figures.mo_attempts["ok"] += 1
                self.figures.mo_acked[family] += 1
                return
            if status > 0:
                outcome = f"0x{status:02x}"
            self.figures.mo_attempts[outcome] += 1
            trail.append(outcome)
            if self.finished or not self.mo_enabled.is_set():
                give_up = give_up or time.monotonic() + QUIET_TIMEOUT_S
                if time.monotonic() > give_up:
                    self.ledger.numbers[number].unresolved = True
                    self.findings.add(
                        "mo_unacknowledged", f"{family} MO from {number} never acknowledged"
                    )
                    return
            await asyncio.sleep(MO_RETRY_S)

    # --- chaos ---

    async def chaos(self) -> None:
        for at, kind in self.opts.chaos_times():
            await asyncio.sleep(max(0.0, at - self.elapsed()))
            if kind == "smsc":
                await self.restart_smsc()
            else:
                await self.store_outage()

    async def restart_smsc(self) -> None:
        sim = self.sim
        assert sim is not None
        started = time.monotonic()
        await sim.stop()
        self.harvest()  # nothing more arrives on the stopped simulator
        await asyncio.sleep(self.opts.smsc_down_s)
        await sim.start()
        self.figures.smsc_restarts += 1
        self.figures.smsc_down_s.append(round(time.monotonic() - started, 2))

    async def store_outage(self) -> None:
        redis = self.redis
        assert redis is not None
        started = time.monotonic()
        await asyncio.to_thread(redis.kill)  # SIGKILL: only what was fsync'ed survives
        await asyncio.sleep(self.opts.outage_s)
        await asyncio.to_thread(redis.start)
        self.figures.store_outages += 1
        self.figures.outage_s.append(round(time.monotonic() - started, 2))

    # --- the gateway ---

    async def metrics(self) -> str:
        return await http_get(self.ports["admin"], "/metrics")

    async def sample(self) -> ProcSample:
        gateway = self.gateway
        assert gateway is not None
        pid = gateway.pid
        text = await self.metrics()
        tasks = metric_sum(text, "smppgw_event_loop_tasks")
        sessions = metric_sum(text, "smppgw_sessions")
        return ProcSample(
            at=self.elapsed(),
            rss_kb=rss_kb(pid),
            fds=fd_kinds(pid, self.ports),
            tasks=None if tasks is None else int(tasks),
            sessions=None if sessions is None else int(sessions),
        )

    async def quiet(self) -> ProcSample:
        """Stop the traffic (MOs first, then the clients unbind) and sample the idle gateway."""
        self.mo_enabled.clear()
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        while self.busy and time.monotonic() < deadline:
            self.mo_done.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.mo_done.wait(), 1.0)
        self.traffic.clear()
        sim = self.sim
        assert sim is not None
        deadline = time.monotonic() + QUIET_TIMEOUT_S
        while True:
            clients = sum(c.connected for c in self.clients)
            sessions = metric_sum(await self.metrics(), "smppgw_sessions")
            if not clients and not sim.sessions and not sessions:
                break
            if time.monotonic() > deadline:
                self.findings.add(
                    "quiet",
                    f"{QUIET_TIMEOUT_S:g}s after the traffic stopped: {clients} clients still "
                    f"connected, {sessions} gateway sessions, {len(sim.sessions)} at the SMSC",
                )
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # closing sockets finish closing
        self.harvest()
        return await self.sample()

    def resume(self) -> None:
        self.traffic.set()
        self.mo_enabled.set()

    async def start_services(self) -> None:
        if redis_server_binary() is None:
            raise SoakError("redis-server is not installed")
        self.redis = RedisServer(self.workdir / "redis")
        await asyncio.to_thread(self.redis.start)
        self.ports = {
            "redis": self.redis.port,
            "smsc": free_port(),
            "gateway": free_port(),
            "admin": free_port(),
        }
        self.sim = Simulator(
            host=HOST,
            port=self.ports["smsc"],
            control_port=None,
            receipts=True,
            session_config=SessionConfig(unbind_timeout_s=1.0, bind_timeout_s=5.0),
        )
        await self.sim.start()
        self.config_path.write_text(to_toml(gateway_config(self.ports, self.redis.url)))
        # The gateway's environment is this process's (a test's SOAK_BREAK goes through).
        argv = [sys.executable, "-m", self.opts.gateway_module, "run"]
        self.gateway = Child(
            "gateway", [*argv, "--config", str(self.config_path)], self.workdir, control=False
        )
        try:
            await asyncio.to_thread(wait_port, self.ports["gateway"], self.gateway)
            await asyncio.to_thread(wait_port, self.ports["admin"], self.gateway)
        except BenchError as exc:
            raise SoakError(str(exc)) from exc

    async def stop_services(self) -> int | None:
        code = None
        if self.gateway is not None:
            code = await asyncio.to_thread(self.gateway.stop)
        if self.sim is not None:
            await self.sim.stop()
        if self.redis is not None:
            await asyncio.to_thread(self.redis.stop)
        return code

    # --- the audit ---

    async def audit_store(self) -> dict[str, Any]:
        """Every number's state in the store against the ledger; three through the CLI."""
        assert self.redis is not None
        try:
            store = await open_store(self.redis.url, instance="soak-audit")
        except StoreError as exc:
            self.findings.add("final_state", f"cannot open the store: {exc}")
            return {}
        states: dict[str, str] = {}
        try:
            for number in self.numbers:
                records = await store.current(number)
                states[number] = (summary(records) if records else ConsentState.UNKNOWN).value
        finally:
            await store.close()
        checked = 0
        counts: Counter[str] = Counter()
        for number, st in self.ledger.numbers.items():
            actual = states.get(number, "unknown")
            counts[actual] += 1
            if st.unresolved:
                continue
            checked += 1
            expected_out = st.last_acked == "out"
            actual_out = actual in (ConsentState.OPTED_OUT.value, ConsentState.BLOCKED.value)
            if expected_out != actual_out:
                self.findings.add(
                    "final_state",
                    f"{number}: last acknowledged {'STOP' if expected_out else 'START or none'}"
                    f", the store says {actual}",
                )
        by_state: dict[str, str] = {}
        for number, state in states.items():
            by_state.setdefault(state, number)
        for state, number in sorted(by_state.items())[:3]:
            shown = await self.consent_show(number)
            if shown != state:
                self.findings.add(
                    "final_state", f"{number}: the CLI shows {shown}, the store read {state}"
                )
        return {"numbers_checked": checked, "states": dict(counts)}

    async def consent_show(self, number: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "consent",
            "show",
            "--config",
            str(self.config_path),
            number,
            "--json",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
        if proc.returncode != 0:
            return f"error {proc.returncode}: {err.decode(errors='replace').strip()[-200:]}"
        state: str = json.loads(out)["state"]
        return state

    def audit_logs(self) -> dict[str, int]:
        """The gateway's warnings and errors by event; errors other than the outage's count."""
        assert self.gateway is not None
        events: Counter[str] = Counter()
        for line in self.gateway.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                self.findings.add("gateway_log", f"not a log line: {line[:200]}")
                continue
            level = entry.get("log_level") or entry.get("level")
            name = str(entry.get("event"))
            events[f"{level}:{name}"] += 1
            if level in ("error", "critical") and name not in EXPECTED_ERROR_EVENTS:
                self.findings.add("gateway_log", f"{level} {name}: {line[:300]}")
        return dict(sorted(events.items()))

    def audit_leaks(self, base: ProcSample, end: ProcSample) -> None:
        opts = self.opts
        for kind in ("smpp_client", "smpp_upstream"):
            if end.fds.get(kind, 0):
                self.findings.add(
                    "fd_leak", f"{end.fds[kind]} {kind} connections open with no session"
                )

        def others(sample: ProcSample) -> int:
            return sum(n for k, n in sample.fds.items() if k != "redis")

        grown = others(end) - others(base)
        if grown > opts.fd_slack:
            self.findings.add(
                "fd_leak",
                f"descriptors other than Redis connections: {others(base)} -> {others(end)} "
                f"(bound +{opts.fd_slack}); {base.fds} -> {end.fds}",
            )
        if end.fds.get("redis", 0) > 66:  # the pool's max_connections (64), pub/sub, probe
            self.findings.add("fd_leak", f"{end.fds['redis']} Redis connections")
        if base.tasks is None or end.tasks is None:
            self.findings.add("task_leak", "the gateway does not export smppgw_event_loop_tasks")
        elif end.tasks - base.tasks > opts.task_slack:
            self.findings.add(
                "task_leak",
                f"asyncio tasks {base.tasks} -> {end.tasks} (bound +{opts.task_slack})",
            )
        growth_mb = (end.rss_kb - base.rss_kb) / 1024
        if growth_mb > opts.rss_growth_mb:
            self.findings.add(
                "rss_growth",
                f"RSS {base.rss_kb / 1024:.1f} -> {end.rss_kb / 1024:.1f} MB "
                f"(+{growth_mb:.1f}, bound {opts.rss_growth_mb:g} MB)",
            )

    def audit_traffic(self) -> None:
        f = self.figures
        acked = sum(f.mo_acked.values())
        if f.mo_to_clients < acked:
            self.findings.add(
                "mo_not_delivered",
                f"{acked} MOs acknowledged, {f.mo_to_clients} reached a client",
            )
        for rid in list(self.early)[: Findings.KEEP]:
            self.findings.add("receipt_ids", f"receipt for {rid!r}: no client was given that id")
        for _ in list(self.early)[Findings.KEEP :]:
            self.findings.counts["receipt_ids"] += 1

    # --- the whole run ---

    async def run(self) -> JsonDict:
        opts = self.opts
        await self.start_services()
        loops: list[asyncio.Task[None]] = []
        result: JsonDict = {}
        try:
            loops += [asyncio.create_task(c.run(), name=c.name) for c in self.clients]
            loops += [
                asyncio.create_task(self.mo_loop(i), name=f"mo{i}") for i in range(opts.mo_loops)
            ]
            watcher = asyncio.create_task(self.watch(), name="watch")
            self.resume()
            await asyncio.sleep(opts.warmup)
            base = await self.quiet()
            self.resume()
            chaos = asyncio.create_task(self.chaos(), name="chaos")
            await asyncio.sleep(max(0.0, opts.duration_s - self.elapsed()))
            await chaos
            end = await self.quiet()
            self.finished = True
            self.traffic.set()  # let idle clients see the end
            self.mo_enabled.set()
            async with asyncio.timeout(QUIET_TIMEOUT_S):
                await asyncio.gather(*loops)
            await watcher
            self.harvest()
            self.prune(final=True)
            self.audit_leaks(base, end)
            self.audit_traffic()
            store = await self.audit_store()
            code = await self.stop_services()
            self.gateway_stopped = True
            if code != 0:
                self.findings.add("gateway_exit", f"the gateway exited {code} on SIGTERM")
            gateway_log = self.audit_logs()
            result = self.report(base, end, store, gateway_log)
        finally:
            self.finished = True
            for task in loops:
                task.cancel()
            if not self.gateway_stopped:
                with contextlib.suppress(Exception):
                    await self.stop_services()
            if self.mo_log is not None:
                self.mo_log.close()
        return result

    def report(
        self,
        base: ProcSample,
        end: ProcSample,
        store: Mapping[str, Any],
        gateway_log: Mapping[str, int],
    ) -> JsonDict:
        f = self.figures
        rss = [s.rss_kb for s in self.samples] or [end.rss_kb]
        return {
            "passed": not self.findings,
            "findings": dict(self.findings.counts),
            "examples": self.findings.examples,
            "seed": self.seed,
            "elapsed_s": round(self.elapsed(), 1),
            "options": {
                k: (str(v) if isinstance(v, Path) else v)
                for k, v in dataclasses.asdict(self.opts).items()
            },
            "mt": {
                "sent": f.mt_sent,
                "answers": dict(f.mt_status),
                "reached_smsc": f.mt_forwarded,
                "not_sent_after_unbind": f.mt_unsent,
            },
            "mo": {
                "acknowledged": dict(f.mo_acked),
                "attempts": dict(f.mo_attempts),
                "delivered_to_clients": f.mo_to_clients,
            },
            "auto_replies": dict(f.replies),
            "receipts": {
                "received": f.receipts,
                "matched": f.receipts_matched,
                "missing": len(self.issued),
            },
            "sessions": {
                "binds": f.binds,
                "bind_refused": dict(f.bind_refused),
                "connect_failed": f.connect_failed,
                "unbound_by_client": f.unbinds_by_client,
                "unbound_by_gateway": f.unbinds_by_gateway,
            },
            "smsc_restarts": f.smsc_restarts,
            "smsc_down_s": f.smsc_down_s,
            "store_outages": f.store_outages,
            "outage_s": f.outage_s,
            "store": dict(store),
            "gateway": {
                "baseline": base.json(),
                "end": end.json(),
                "rss_max_mb": round(max(rss) / 1024, 1),
                "rss_growth_mb": round((end.rss_kb - base.rss_kb) / 1024, 1),
                "log": dict(gateway_log),
            },
        }


def summary_text(result: Mapping[str, Any]) -> str:
    mt, mo, gw = result["mt"], result["mo"], result["gateway"]
    base, end = gw["baseline"], gw["end"]
    answers = mt["answers"]
    temporary = sum(answers.get(k, 0) for k in ("store_unavailable", "syserr", "throttled"))
    lines = [
        f"soak: {result['elapsed_s']}s (seed {result['seed']}): "
        + ("PASSED" if result["passed"] else "FAILED"),
        f"  MT: {mt['sent']} sent, {answers.get('ok', 0)} OK, {answers.get('opted_out', 0)} "
        f"refused opted out, {temporary} temporary ({answers}); {mt['reached_smsc']} reached "
        "the SMSC",
        f"  MO acknowledged by keyword: {mo['acknowledged']}; attempts {mo['attempts']}; "
        f"{mo['delivered_to_clients']} delivered to clients",
        f"  auto-replies at the SMSC: {result['auto_replies']}",
        f"  receipts: {result['receipts']}",
        f"  sessions: {result['sessions']}",
        f"  SMSC restarts: {result['smsc_restarts']} (down {result['smsc_down_s']} s); "
        f"store outages: {result['store_outages']} ({result['outage_s']} s)",
        f"  store: {result['store']}",
        f"  gateway RSS {base['rss_mb']} -> {end['rss_mb']} MB (+{gw['rss_growth_mb']}, max "
        f"{gw['rss_max_mb']}); fds {base['fds']} -> {end['fds']}; tasks {base['tasks']} -> "
        f"{end['tasks']}",
        f"  gateway log: {gw['log']}",
    ]
    for kind, count in result["findings"].items():
        lines.append(f"  VIOLATION {kind} x{count}:")
        lines += [f"    {example}" for example in result["examples"].get(kind, [])]
    return "\n".join(lines)


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="smpp-soak-") as tmp:
        yield Path(tmp)


async def soak(opts: SoakOptions) -> JsonDict:
    logs.configure(level="error", stream=sys.stderr)  # the simulator's own logs
    logging.getLogger("smpp").setLevel(logging.ERROR)  # smpplib warns per reset connection
    with _workdir(opts.workdir) as workdir:
        return await Soak(opts, workdir).run()


def _parser() -> argparse.ArgumentParser:
    d = SoakOptions()
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description="Soak the gateway with MT, MO keywords, receipts, reconnects, SMSC restarts "
        "and Redis outages; audit consent, answers, descriptors, tasks and RSS at the end.",
    )
    p.add_argument("--duration", type=float, default=d.duration_s, help="seconds (3600: hour)")
    p.add_argument("--clients", type=int, default=d.clients)
    p.add_argument("--window", type=int, default=d.window, help="outstanding per client")
    p.add_argument("--mt-rate", type=float, default=d.mt_rate, help="submit_sm/s in all")
    p.add_argument("--numbers", type=int, default=d.numbers, help="subscribers in the pool")
    p.add_argument("--mo-loops", type=int, default=d.mo_loops)
    p.add_argument("--warmup", type=float, default=None, help="seconds (default 15%%, 3..60)")
    p.add_argument(
        "--chaos-every",
        type=float,
        default=None,
        help="an SMSC restart and a store outage every S seconds (default: once in a run of "
        "up to 600 s, every 300 s in a longer one)",
    )
    p.add_argument("--no-smsc-restart", action="store_true")
    p.add_argument("--no-store-outage", action="store_true")
    p.add_argument("--outage", type=float, default=d.outage_s, help="seconds Redis stays down")
    p.add_argument("--rss-growth-mb", type=float, default=d.rss_growth_mb)
    p.add_argument("--fd-slack", type=int, default=d.fd_slack)
    p.add_argument("--task-slack", type=int, default=d.task_slack)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--gateway-module", default=d.gateway_module, help="python -m MODULE run --config FILE"
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep configs and logs here")
    p.add_argument("--progress", type=float, default=d.progress_s, help="seconds between lines")
    p.add_argument("--json", type=Path, default=None, help="also write the result here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    opts = SoakOptions(
        duration_s=args.duration,
        clients=args.clients,
        window=args.window,
        mt_rate=args.mt_rate,
        numbers=args.numbers,
        mo_loops=args.mo_loops,
        warmup_s=args.warmup,
        chaos_every_s=args.chaos_every,
        smsc_restarts=not args.no_smsc_restart,
        store_outages=not args.no_store_outage,
        outage_s=args.outage,
        rss_growth_mb=args.rss_growth_mb,
        fd_slack=args.fd_slack,
        task_slack=args.task_slack,
        seed=args.seed,
        gateway_module=args.gateway_module,
        workdir=args.workdir,
        progress_s=args.progress,
    )
    if opts.duration_s < 10 or opts.clients < 1 or opts.numbers < opts.mo_loops + 1:
        raise SystemExit("--duration must be >= 10, --clients >= 1, --numbers > --mo-loops")
    try:
        result = run_loop(soak(opts))
    except SoakError as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 2
    print(summary_text(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
