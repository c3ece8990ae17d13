"""Graceful shutdown with requests in flight: the daemon under SIGTERM, and Gateway.stop().

Nothing in flight may be silently dropped: every submit a client sent gets exactly one answer
(the SMSC's, or a temporary error clients re-queue), the client is unbound, and the process
exits 0 within the grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import smpplib.client
import smpplib.exceptions

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.smpp.constants import CommandStatus
from tests.integration.conftest import (
    FAST_SESSION,
    WAIT_S,
    bridges,
    running_relay,
    send_raw,
    smpplib_client,
)
from tests.support.metrics import scrape

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 5.0
UNBIND_TIMEOUT_S = 1.0


def _submit(client: smpplib.client.Client, n: int) -> int:
    sent = client.send_message(
        source_addr="ACME", destination_addr="15551234567", short_message=f"m{n}".encode()
    )
    seq: int = sent.sequence
    return seq


def _bind_and_send(client: smpplib.client.Client, count: int) -> list[int]:
    client.bind_transmitter(system_id="acme", password="pw")
    return [_submit(client, n) for n in range(count)]


def _read_responses(client: smpplib.client.Client, count: int) -> list[Any]:
    """The next ``count`` responses (nothing else may come before them)."""
    return [client.read_pdu() for _ in range(count)]


def _read_until_closed(client: smpplib.client.Client) -> tuple[list[Any], int]:
    """Every response until the gateway closes the connection, and how many unbinds came
    (each answered with unbind_resp)."""
    responses: list[Any] = []
    unbinds = 0
    while True:
        try:
            pdu = client.read_pdu()
        except smpplib.exceptions.ConnectionError:
            return responses, unbinds
        if pdu.command == "unbind":
            unbinds += 1
            send_raw(client, "unbind_resp", sequence=pdu.sequence)
        else:
            responses.append(pdu)


def _statuses(sent: list[int], responses: list[Any]) -> dict[int, int]:
    """Sequence number -> status, checking each request got exactly one submit_sm_resp."""
    assert [r.command for r in responses] == ["submit_sm_resp"] * len(responses)
    assert sorted(r.sequence for r in responses) == sorted(sent)
    return {r.sequence: r.status for r in responses}


class _Daemon:
    """``python -m gateway run`` as a child process, its JSON log lines collected."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        assert process.stderr is not None
        self._reader = asyncio.create_task(self._read(process.stderr))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        async for raw in stream:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "unparsed", "text": raw.decode(errors="replace")}
            self.lines.append(line)
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait_for_event(self, name: str, **fields: Any) -> dict[str, Any]:
        """The first log line of event ``name`` with these fields (None: the field absent)."""

        def matches(line: dict[str, Any]) -> bool:
            return line.get("event") == name and all(line.get(k) == v for k, v in fields.items())

        async with asyncio.timeout(WAIT_S):
            while True:
                changed = self._changed
                for line in self.lines:
                    if matches(line):
                        return line
                if self._reader.done():
                    raise AssertionError(f"daemon ended before {name!r}: {self.lines}")
                await changed.wait()

    async def finish(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        await self._reader


@asynccontextmanager
async def daemon(config: Path) -> AsyncIterator[_Daemon]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--config",
        str(config),
        cwd=ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    child = _Daemon(process)
    try:
        yield child
    finally:
        await child.finish()


def _config(tmp_path: Path, upstream_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[gateway]
instance = "shutdown-test"
shutdown_grace_s = {GRACE_S}

[server]
listen = "127.0.0.1:0"

[upstream]
address = "127.0.0.1:{upstream_port}"
connect_timeout_s = 5

[session]
response_timeout_s = 10
bind_timeout_s = 5
unbind_timeout_s = {UNBIND_TIMEOUT_S}

[consent]
enabled = false

[admin]
listen = "127.0.0.1:0"

[logging]
level = "info"
format = "json"
"""
    )
    return path


def _port(line: dict[str, Any]) -> int:
    return int(line["listen"].rsplit(":", 1)[1])


async def _until_outstanding(admin_port: int, count: int) -> None:
    """Until the daemon's upstream legs have ``count`` requests awaiting the SMSC's answer."""
    async with asyncio.timeout(WAIT_S):
        while (await scrape(admin_port)).value("smppgw_upstream_outstanding") < count:  # noqa: ASYNC110
            await asyncio.sleep(0.02)  # another process's state: nothing to await


class TestSigterm:
    async def test_sigterm_drains_in_flight_submits_then_exits_zero(
        self, sim: Simulator, tmp_path: Path
    ) -> None:
        """Under SIGTERM the daemon answers all 50 in-flight submits, refuses new ones with a
        temporary status, unbinds the client and exits 0 within the grace period."""
        async with daemon(_config(tmp_path, sim.port)) as child:
            port = _port(await child.wait_for_event("listener_started", component=None))
            admin = _port(await child.wait_for_event("listener_started", component="admin"))
            with smpplib_client(port) as client:
                await asyncio.to_thread(client.bind_transmitter, system_id="acme", password="pw")
                # The SMSC reads nothing until the late submits are answered: the 50 stay in
                # flight, so the gateway is still draining when those arrive, however slow
                # the machine (an SMSC answering after a fixed delay sometimes answered
                # before they came, the drain ended and they found the client unbound).
                sim.set_faults(silent=True)
                sent = await asyncio.to_thread(lambda: [_submit(client, n) for n in range(50)])
                await _until_outstanding(admin, 50)
                child.process.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                await child.wait_for_event("gateway_stopping")
                late = await asyncio.to_thread(lambda: [_submit(client, n) for n in range(5)])
                refused = await asyncio.to_thread(_read_responses, client, len(late))
                sim.set_faults(silent=False)  # the SMSC reads the 50 and answers them
                responses, unbinds = await asyncio.to_thread(_read_until_closed, client)
            async with asyncio.timeout(GRACE_S + UNBIND_TIMEOUT_S + 2):
                code = await child.process.wait()
            elapsed = time.monotonic() - signalled
        assert [r.sequence for r in refused] == late
        statuses = _statuses(sent + late, refused + responses)
        assert [statuses[seq] for seq in sent] == [CommandStatus.ESME_ROK] * 50
        assert [statuses[seq] for seq in late] == [CommandStatus.ESME_RTHROTTLED] * 5
        assert unbinds == 1
        assert code == 0
        assert elapsed < GRACE_S + UNBIND_TIMEOUT_S + 1
        assert len(sim.messages) == 50  # the refused ones never went upstream
        events = [line.get("event") for line in child.lines]
        assert "gateway_stopped" in events
        assert not [line for line in child.lines if line.get("level") in ("error", "critical")]


def _outstanding(gw: Gateway) -> float:
    return gw.metrics.registry.get_sample_value("smppgw_upstream_outstanding") or 0.0


async def _until(condition: Callable[[], bool]) -> None:
    """Until ``condition()`` holds: the in-process gateway's state, read between loop turns."""
    async with asyncio.timeout(WAIT_S):
        while not condition():  # noqa: ASYNC110 (no event to await for it)
            await asyncio.sleep(0.005)


class TestGatewayStop:
    async def test_stop_waits_for_in_flight_submits_and_unbinds(self, sim: Simulator) -> None:
        """Gateway.stop() refuses new requests from its first step, lets the SMSC answer what
        is in flight, then unbinds both legs."""
        async with running_relay(sim.port) as gw:
            with smpplib_client(gw.port) as client:
                await asyncio.to_thread(client.bind_transmitter, system_id="acme", password="pw")
                sim.set_faults(silent=True)  # the SMSC holds the 50 until stop() drains
                sent = await asyncio.to_thread(lambda: [_submit(client, n) for n in range(50)])
                await _until(lambda: _outstanding(gw) == 50)
                reading = asyncio.create_task(asyncio.to_thread(_read_until_closed, client))
                stopping = asyncio.create_task(gw.stop())
                await asyncio.sleep(0)  # stop()'s first step, which logs gateway_stopping
                # From that step on every session refuses new requests: none read after the
                # log line goes upstream (the SIGTERM test sends some after it).
                assert bridges(gw)
                assert all(b.draining for b in bridges(gw))
                assert not stopping.done()  # waiting for the SMSC's answers
                sim.set_faults(silent=False)
                async with asyncio.timeout(GRACE_S + UNBIND_TIMEOUT_S + 2):
                    await stopping
                responses, unbinds = await reading
            assert not bridges(gw)
        statuses = _statuses(sent, responses)
        assert set(statuses.values()) == {CommandStatus.ESME_ROK}
        assert unbinds == 1
        await sim.wait_until(lambda: not sim.sessions)

    async def test_grace_expiry_fails_what_is_still_in_flight(self, sim: Simulator) -> None:
        """When the grace runs out first, each submit still in flight gets ESME_RSYSERR."""
        sim.set_faults(response_delay_s=WAIT_S)  # the SMSC will not answer in time
        grace_s = 0.5
        async with running_relay(
            sim.port, gateway={"shutdown_grace_s": grace_s}, session=FAST_SESSION
        ) as gw:
            with smpplib_client(gw.port) as client:
                sent = await asyncio.to_thread(_bind_and_send, client, 20)
                await sim.wait_for(lambda messages: len(messages) == 20)
                reading = asyncio.create_task(asyncio.to_thread(_read_until_closed, client))
                started = time.monotonic()
                async with asyncio.timeout(grace_s + UNBIND_TIMEOUT_S + 2):
                    await gw.stop()
                elapsed = time.monotonic() - started
                responses, unbinds = await reading
        statuses = _statuses(sent, responses)
        assert set(statuses.values()) == {CommandStatus.ESME_RSYSERR}
        assert unbinds == 1
        assert elapsed >= grace_s
