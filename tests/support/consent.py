"""Helpers for the end-to-end consent tests: a consent gateway on a real store, real clients.

The SMSC is the bundled simulator; the client applications are smpplib (synchronous, so it runs
in threads: one reader thread answers every deliver_sm / data_sm as it arrives, the way a real
application keeps reading) and aiosmpplib; PDUs neither library can send (submit_multi) go
through a small raw client on our codec. The gateway runs in-process on a SQLite file or a real
redis-server, or as a subprocess (``python -m gateway run``) for the kill tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from gateway.app import Gateway
from gateway.consent.model import Actor, ConsentEvent, ConsentState
from gateway.consent.numbers import normalise
from gateway.simulator import Simulator
from gateway.simulator.server import ReceivedRequest
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.session import SessionConfig
from tests.support.gateway import running_gateway
from tests.support.sim import running_simulator

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 10.0  # upper bound for any one awaited condition
SIM_SESSION = SessionConfig(unbind_timeout_s=1.0, bind_timeout_s=5.0)
FAST_SESSION: dict[str, Any] = {
    "response_timeout_s": 5,
    "enquire_link_interval_s": 30,
    "bind_timeout_s": 5,
    "unbind_timeout_s": 1,
}
# The default reply texts with the brand "ACME" (gateway.consent.campaign.Replies).
BRAND = "ACME"
OPT_OUT_REPLY = (
    "ACME: You are unsubscribed and will receive no more messages. Reply START to resubscribe."
)
OPT_IN_REPLY = (
    "ACME: You are subscribed again. Msg & data rates may apply. "
    "Reply HELP for help, STOP to opt out."
)
HELP_REPLY = "ACME: Msg frequency varies. Msg & data rates may apply. Reply STOP to opt out."
OPT_IN_REQUEST = (
    "ACME: Reply YES to receive our messages. Msg & data rates may apply. Reply STOP to opt out."
)


def e164(address: str, ton: int = 1) -> str:
    """The consent key of an address, as the gateway normalises it (default country US)."""
    found = normalise(address, ton, 1, "US")
    assert found is not None
    return found.value


# --- config -------------------------------------------------------------------------------------


def staff_opt_out(subscriber: str, scope: str = "global:*") -> ConsentEvent:
    """A staff opt-out of ``subscriber`` now, as the store records one."""
    return ConsentEvent(
        event_id=uuid.uuid4().hex,
        at=time.time(),
        subscriber=subscriber,
        scope=scope,
        state=ConsentState.OPTED_OUT,
        actor=Actor.ADMIN,
    )


def campaign(name: str, numbers: Sequence[str], **rules: Any) -> dict[str, Any]:
    """One ``[[campaigns]]`` table with the ACME brand."""
    return {"name": name, "brand": BRAND, "numbers": list(numbers), **rules}


@contextlib.asynccontextmanager
async def consent_gateway(
    upstream_port: int,
    store_url: str,
    *,
    campaigns: Sequence[Mapping[str, Any]] = (),
    consent: Mapping[str, Any] | None = None,
    instance: str = "test-gw",
    **extra: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> AsyncIterator[Gateway]:
    """An in-process gateway enforcing consent on ``store_url``, relaying to ``upstream_port``;
    ``extra`` config sections (``admin={...}``, ``text={...}``) are merged in."""
    sections: dict[str, Any] = {
        "gateway": {"instance": instance, "shutdown_grace_s": 5},
        "session": FAST_SESSION,
        "store": {"url": store_url},
        "consent": dict(consent or {}),
    }
    for name, values in extra.items():  # tables, or arrays of tables ([[businesses]])
        sections[name] = dict(values) if isinstance(values, Mapping) else [dict(v) for v in values]
    if campaigns:
        sections["campaigns"] = [dict(c) for c in campaigns]
    async with running_gateway(upstream_port, **sections) as gw:
        yield gw


@contextlib.asynccontextmanager
async def simulator(*, receipts: bool = False) -> AsyncIterator[Simulator]:
    """The SMSC: the bundled simulator on a free port, no HTTP control endpoint."""
    async with running_simulator(
        control_port=None, receipts=receipts, session_config=SIM_SESSION
    ) as sim:
        yield sim


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Write a config dict as TOML (tables, arrays of tables, scalars, lists of scalars)."""
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, Mapping) or (
            isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value)
        ):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in nested:
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out += f"\n[{path}]\n" + to_toml(value, f"{path}.")
        else:
            for item in value:
                out += f"\n[[{path}]]\n" + to_toml(item, f"{path}.")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- what reached the SMSC ---------------------------------------------------------------------


def dest_of(record: ReceivedRequest) -> list[str]:
    """The normalised destinations of a submit the simulator received."""
    pdu = record.pdu
    if isinstance(pdu, p.SubmitMulti):
        return [
            e164(d.destination_addr, d.dest_addr_ton)
            for d in pdu.dest_addresses
            if isinstance(d, p.SmeAddress)
        ]
    assert isinstance(pdu, p.SubmitSm | p.DataSm)
    return [e164(pdu.destination_addr, pdu.dest_addr_ton)]


def sent_to(sim: Simulator, number: str) -> list[ReceivedRequest]:
    """Every submit the SMSC received for ``number`` (E.164 digits), in arrival order."""
    return [m for m in sim.messages if number in dest_of(m)]


def texts_to(sim: Simulator, number: str) -> list[str | None]:
    return [m.text for m in sent_to(sim, number)]


async def wait_texts(sim: Simulator, number: str, count: int) -> list[str | None]:
    """Wait until at least ``count`` submits for ``number`` reached the SMSC; their texts."""
    await sim.wait_for(lambda _m: len(sent_to(sim, number)) >= count, timeout=WAIT_S)
    return texts_to(sim, number)


def concat_parts(bodies: Sequence[bytes], reference: int) -> list[bytes]:
    """short_message of each part of a concatenated message (UDH IEI 0x00, 8-bit reference)."""
    total = len(bodies)
    return [bytes([5, 0, 3, reference, total, i + 1]) + body for i, body in enumerate(bodies)]


# --- smpplib --------------------------------------------------------------------------------------


class _LockedSocket:
    """smpplib's socket, written from two threads (the reader answers MOs): one write at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def sendall(self, data: bytes) -> None:
        with self._lock:
            self._sock.sendall(data)

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class SmpplibEsme:
    """A bound smpplib client with a reader thread, used from the event loop.

    Every PDU read is kept: responses by sequence number (``await submit(...)`` returns the
    response to its request), deliver_sm / data_sm in ``received`` (smpplib answers deliver_sm
    itself; data_sm, which it does not handle, gets data_sm_resp OK here), and all of them in
    arrival order in ``pdus`` (a request answered twice shows twice there).
    """

    def __init__(self, port: int, system_id: str = "acme", bind: str = "transceiver") -> None:
        self.port = port
        self.system_id = system_id
        self.bind = bind
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=60, allow_unknown_opt_params=True
        )
        self.received: list[Any] = []
        self.pdus: list[Any] = []
        self._responses: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._reader: threading.Thread | None = None
        self._closed = False
        self._gone = False  # the reader has seen the connection end

    # thread side

    def _notify(self) -> None:
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._notify)

    def _connect(self) -> None:
        client = self.client
        client.connect()
        client._socket = _LockedSocket(client._socket)
        getattr(client, f"bind_{self.bind}")(system_id=self.system_id, password="pw")
        read_pdu = client.read_pdu

        def read_and_keep() -> Any:
            pdu = read_pdu()
            self.pdus.append(pdu)
            if pdu.command == "data_sm":
                resp = smpplib.smpp.make_pdu("data_sm_resp", client=client, message_id="")
                resp.sequence = pdu.sequence
                client.send_pdu(resp)
                self.received.append(pdu)
            elif pdu.command.endswith("_resp") or pdu.command == "generic_nack":
                self._responses[pdu.sequence] = pdu
            return pdu

        def on_mo(pdu: Any) -> None:
            self.received.append(pdu)

        client.read_pdu = read_and_keep
        client.set_message_received_handler(on_mo)
        client.set_message_sent_handler(lambda pdu: None)
        client.set_error_pdu_handler(lambda pdu: None)  # error responses are kept, not raised

    def _read_forever(self) -> None:
        try:
            while not self._closed:
                self.client.read_once()
                self._wake()  # after smpplib's handlers ran (a deliver_sm is kept by then)
        except (smpplib.exceptions.ConnectionError, OSError):
            pass  # closed (by us, or by the gateway)
        finally:
            self._gone = True
            self._wake()

    # loop side

    async def __aenter__(self) -> SmpplibEsme:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._connect)
        self._reader = threading.Thread(target=self._read_forever, daemon=True)
        self._reader.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self._reader_alive or self._gone:  # the connection is gone: nothing to unbind
            await asyncio.to_thread(self._close)
            return
        with contextlib.suppress(TimeoutError, smpplib.exceptions.ConnectionError, OSError):
            await self.request("unbind")
        await asyncio.to_thread(self._close)

    @property
    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    @property
    def connected(self) -> bool:
        """False once the connection is gone (closed by the gateway, or by us)."""
        return self._reader is not None and not self._gone

    def _close(self) -> None:
        self._closed = True
        sock = self.client._socket
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._reader is not None:
            self._reader.join(WAIT_S)
        self.client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN  # no "disconnect bound" noise
        self.client.disconnect()

    async def wait_until(self, condition: Callable[[], bool], timeout: float = WAIT_S) -> None:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()

    async def request(self, command: str, **fields: Any) -> Any:
        """Send one request smpplib can build; returns its response (smpplib PDU)."""

        def send() -> int:
            pdu = smpplib.smpp.make_pdu(command, client=self.client, **fields)
            self.client.send_pdu(pdu)
            return int(pdu.sequence)

        seq = await asyncio.to_thread(send)
        await self.wait_until(lambda: seq in self._responses)
        return self._responses.pop(seq)

    async def submit(
        self, destination: str, text: str | bytes = "hello", *, source: str = "", **fields: Any
    ) -> int:
        """submit_sm; returns its command_status."""
        resp = await self.request("submit_sm", **submit_fields(destination, text, source, fields))
        assert resp.command == "submit_sm_resp", resp.command
        return int(resp.status)

    async def pipeline(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Send several requests back to back (a window > 1), then await every response."""

        def send() -> list[int]:
            sequences = []
            for command, fields in requests:
                pdu = smpplib.smpp.make_pdu(command, client=self.client, **fields)
                self.client.send_pdu(pdu)
                sequences.append(int(pdu.sequence))
            return sequences

        sequences = await asyncio.to_thread(send)
        await self.wait_until(lambda: all(seq in self._responses for seq in sequences))
        return [self._responses.pop(seq) for seq in sequences]

    def mo_texts(self) -> list[bytes]:
        """The bodies of the MOs (not receipts) this client received."""
        return [
            bytes(pdu.short_message or pdu.message_payload or b"")
            for pdu in self.received
            if not int(pdu.esm_class or 0) & 0x3C
        ]

    def receipts(self) -> list[Any]:
        return [pdu for pdu in self.received if int(pdu.esm_class or 0) & 0x3C]


def submit_fields(
    destination: str, text: str | bytes = "hello", source: str = "", fields: Mapping[str, Any] = {}
) -> dict[str, Any]:
    """smpplib submit_sm fields: E.164 addresses as TON international unless told otherwise."""
    body = text.encode() if isinstance(text, str) else text
    result: dict[str, Any] = {
        "source_addr_ton": 1 if source.startswith("+") or len(source) > 8 else 0,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "source_addr": source,
        "destination_addr": destination,
        "short_message": body,
    }
    result.update(fields)
    return result


# --- raw client (for what neither library sends) ---------------------------------------------


class RawEsme:
    """A bare ESME on our codec: submit_multi, and anything else the libraries cannot send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.sequence = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def bound(cls, port: int, system_id: str = "acme") -> AsyncIterator[RawEsme]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        esme = cls(reader, writer)
        try:
            resp = await esme.request(p.BindTransmitter(system_id=system_id, password="pw"))
            assert resp.command_status == 0, resp
            yield esme
            await esme.request(p.Unbind())
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def request(self, pdu: p.Pdu) -> p.Pdu:
        """Send and read the answer (nothing else arrives on a transmitter)."""
        await self.send(pdu)
        return await self.read()

    async def send(self, pdu: p.Pdu) -> int:
        """Send without waiting for the answer; returns the sequence number used."""
        self.sequence += 1
        self.writer.write(encode(dataclasses.replace(pdu, sequence_number=self.sequence)))
        await self.writer.drain()
        return self.sequence

    async def read(self) -> p.Pdu:
        async with asyncio.timeout(WAIT_S):
            head = await self.reader.readexactly(4)
            (length,) = struct.unpack(">I", head)
            return decode(head + await self.reader.readexactly(length - 4))

    async def barrier(self) -> None:
        """Return once the gateway has read everything sent before: it answers an
        enquire_link only after the requests ahead of it (nothing else may be in flight)."""
        resp = await self.request(p.EnquireLink())
        assert isinstance(resp, p.EnquireLinkResp), resp


# --- the CLI and the daemon as subprocesses ----------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``python -m gateway ARGS``; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        cwd=ROOT,
    )
    async with asyncio.timeout(30):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def consent_show(config: Path, number: str) -> dict[str, Any]:
    """``smpp-gateway consent show --json`` on ``config``'s store."""
    code, out, err = await run_cli("consent", "show", "--config", str(config), number, "--json")
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


class GatewayProcess:
    """``python -m gateway run --config FILE`` in a subprocess; ready once its port answers."""

    def __init__(self, config: Path, port: int, *, cwd: Path = ROOT) -> None:
        self.config = config
        self.port = port
        self.cwd = cwd  # where the config's relative paths (store, audit trail) resolve
        self.proc: asyncio.subprocess.Process | None = None
        self.stderr: list[str] = []
        self._drain: asyncio.Task[None] | None = None
        self._line = asyncio.Event()  # set and replaced on every line read

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(self.config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
            cwd=self.cwd,
        )
        ready = asyncio.get_running_loop().create_future()
        self._drain = asyncio.create_task(self._read(ready))
        try:
            async with asyncio.timeout(20):
                await ready
        except TimeoutError:
            await self.kill()
            raise AssertionError("gateway did not start:\n" + "".join(self.stderr[-20:])) from None

    async def _read(self, ready: asyncio.Future[None]) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace")
            self.stderr.append(line)
            if not ready.done() and '"gateway_started"' in line:
                ready.set_result(None)
            line_read, self._line = self._line, asyncio.Event()
            line_read.set()
        self._line.set()
        if not ready.done():
            ready.set_exception(AssertionError("gateway exited:\n" + "".join(self.stderr[-20:])))

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines logged so far with this event name."""
        out = []
        for line in self.stderr:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == name:
                    out.append(record)
        return out

    async def wait_for(self, name: str, count: int = 1) -> dict[str, Any]:
        """The ``count``-th log line with this event name, once logged."""
        async with asyncio.timeout(WAIT_S):
            while True:
                line_read = self._line
                found = self.events(name)
                if len(found) >= count:
                    return found[count - 1]
                if self._drain is None or self._drain.done():
                    raise AssertionError(f"gateway ended before {name!r}:\n" + "".join(self.stderr))
                await line_read.wait()

    async def kill(self) -> None:
        """SIGKILL: nothing runs after it, no flush, no unbind."""
        if self.proc is None:
            return
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self._drain is not None:
            await self._drain
        self.proc = None

    async def stop(self) -> int:
        """SIGTERM and wait for the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            code = await self.proc.wait()
        if self._drain is not None:
            await self._drain
        self.proc = None
        return code


# --- the usual set-up: SMSC, gateway on SQLite, one smpplib transceiver -------------------------

SUBSCRIBER = "15551234567"
OTHER_SUBSCRIBER = "15557654321"
NUMBER_1 = "15550100001"  # campaign "acme"
NUMBER_2 = "15550100002"  # campaign "acme"
NUMBER_3 = "15550100003"  # campaign "other"
BYSTANDER = "15559990000"  # never opts out: MTs to it prove the session still flows
UNGROUPED = "15550199999"  # a sender number in no campaign: the account's default campaign


def acme_campaigns(**rules: Any) -> list[dict[str, Any]]:
    """Two campaigns: "acme" (NUMBER_1, NUMBER_2) with ``rules``, "other" (NUMBER_3)."""
    return [
        campaign("acme", ["+" + NUMBER_1, "+" + NUMBER_2], **rules),
        campaign("other", ["+" + NUMBER_3]),
    ]


@dataclasses.dataclass
class Rig:
    sim: Simulator
    gw: Gateway
    esme: SmpplibEsme
    store_url: str

    async def mo(
        self,
        text: str = "",
        *,
        source: str = SUBSCRIBER,
        destination: str = NUMBER_1,
        **fields: Any,
    ) -> int:
        """An MO from the SMSC to the client's account; the command_status it got back."""
        fields.setdefault("system_id", self.esme.system_id)
        return await self.sim.send_mo(source=source, destination=destination, text=text, **fields)

    async def mt(
        self, destination: str = SUBSCRIBER, *, source: str = NUMBER_1, **fields: Any
    ) -> int:
        return await self.esme.submit(destination, source=source, **fields)

    async def flows(self) -> None:
        """Prove the session still carries traffic: an MT to BYSTANDER reaches the SMSC.

        Everything the gateway forwarded earlier on this session arrived before it. It is sent
        from a number in no campaign, whose default rules let MTs to unknown numbers through."""
        before = len(sent_to(self.sim, BYSTANDER))
        assert await self.mt(BYSTANDER, text="marker", source=UNGROUPED) == 0
        await wait_texts(self.sim, BYSTANDER, before + 1)


@contextlib.asynccontextmanager
async def consent_rig(
    tmp_path: Path,
    *,
    campaigns: Sequence[Mapping[str, Any]] | None = None,
    consent: Mapping[str, Any] | None = None,
    receipts: bool = False,
    store_url: str | None = None,
    system_id: str = "acme",
    **extra: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> AsyncIterator[Rig]:
    """Simulator, gateway on a SQLite file in ``tmp_path`` and a bound smpplib transceiver;
    ``extra`` config sections go to the gateway."""
    url = store_url or f"sqlite:{tmp_path}/consent.db"
    async with (
        simulator(receipts=receipts) as sim,
        consent_gateway(
            sim.port,
            url,
            campaigns=acme_campaigns() if campaigns is None else campaigns,
            consent=consent,
            **extra,
        ) as gw,
        SmpplibEsme(gw.port, system_id) as esme,
    ):
        yield Rig(sim=sim, gw=gw, esme=esme, store_url=url)
