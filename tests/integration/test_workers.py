"""``python -m gateway run --workers 2``: real worker processes on one listening port, real
smpplib clients the kernel hands to either worker, a SQLite and a Redis store.

Which worker took a connection is read from the workers' logs (every line a worker logs carries
``worker``; ``bind_completed`` names the client's address)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.simulator import Simulator
from tests.integration.test_optout_link import fetch
from tests.support.consent import (
    BYSTANDER,
    NUMBER_1,
    OPT_OUT_REPLY,
    ROOT,
    SUBSCRIBER,
    WAIT_S,
    SmpplibEsme,
    free_port,
    simulator,
    to_toml,
    wait_texts,
)
from tests.support.redis_server import RedisServer

OPTED_OUT = 0x45
TOKEN = "workers-test-token"
FOOTER = "{brand}: Reply STOP to opt out"
NEW_FOOTER = "{brand}: Reply STOP to end"
LINK_FOOTER = "{brand}: stop at {optout_url}"


def config_data(tmp_path: Path, sim_port: int, store_url: str) -> dict[str, Any]:
    return {
        "gateway": {"instance": "workers-gw", "shutdown_grace_s": 2},
        "server": {"listen": f"127.0.0.1:{free_port()}"},
        "upstream": {"address": f"127.0.0.1:{sim_port}"},
        "session": {"unbind_timeout_s": 1, "response_timeout_s": 5},
        "store": {"url": store_url},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "admin": {"listen": f"127.0.0.1:{free_port()}", "token": TOKEN},
        "logging": {"level": "info", "format": "json"},
        "campaigns": [
            {
                "name": "acme",
                "brand": "ACME",
                "numbers": ["+" + NUMBER_1],
                "footer": "always",
                "footer_text": FOOTER,
            }
        ],
    }


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and its key (the openssl command line)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl")
    cert, key = directory / "gw.crt", directory / "gw.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
         "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=gateway.test"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


class Supervised:
    """``python -m gateway run --workers 2``, its JSON log lines (supervisor and workers) kept."""

    def __init__(self, config: Path, data: dict[str, Any]) -> None:
        self.config = config
        self.data = data
        self.port = int(data["server"]["listen"].rpartition(":")[2])
        self.admin_port = int(data["admin"]["listen"].rpartition(":")[2])
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[dict[str, Any]] = []
        self._line = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self.opened = 0  # connections one_per_worker opened

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--config",
            str(self.config),
            "--workers",
            "2",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = {"event": "unparsed", "text": raw.decode(errors="replace")}
            self.lines.append(line)
            line_read, self._line = self._line, asyncio.Event()
            line_read.set()
        self._line.set()

    def events(self, name: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            line
            for line in self.lines
            if line.get("event") == name and all(line.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self,
        name: str,
        count: int = 1,
        timeout: float = WAIT_S,  # noqa: ASYNC109
        **fields: Any,
    ) -> dict[str, Any]:
        """The ``count``-th line ``name`` with these fields, once logged."""
        async with asyncio.timeout(timeout):
            while True:
                line_read = self._line
                found = self.events(name, **fields)
                if len(found) >= count:
                    return found[count - 1]
                if self._reader is None or self._reader.done():
                    raise AssertionError(f"ended before {name!r}: {self.lines[-20:]}")
                await line_read.wait()

    def worker_pids(self) -> dict[int, int]:
        """Worker index -> pid of its latest process."""
        return {line["worker"]: line["worker_pid"] for line in self.events("worker_started")}

    async def exit_status(self, timeout: float = WAIT_S) -> int:  # noqa: ASYNC109
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            status = await self.proc.wait()
        if self._reader is not None:
            await self._reader
        return status

    async def output_ended(self) -> None:
        """Wait for the end of stderr: every process writing to it has exited."""
        assert self._reader is not None
        async with asyncio.timeout(WAIT_S):
            await self._reader

    async def kill(self) -> None:
        """SIGKILL the supervisor and its workers (the test's clean-up)."""
        for pid in self.worker_pids().values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            await self._reader

    async def worker_of(self, esme: SmpplibEsme) -> int:
        """The worker that took ``esme``'s connection."""
        port = esme.client._socket.getsockname()[1]
        line = await self.wait_for("bind_completed", peer=f"127.0.0.1:{port}")
        worker: int = line["worker"]
        return worker

    async def one_per_worker(
        self, stack: contextlib.AsyncExitStack, bind: str = "transmitter"
    ) -> dict[int, SmpplibEsme]:
        """Connections opened until each worker took one: worker -> a client it serves."""
        found: dict[int, SmpplibEsme] = {}
        for _ in range(40):
            esme = await stack.enter_async_context(SmpplibEsme(self.port, "acme", bind=bind))
            self.opened += 1
            found.setdefault(await self.worker_of(esme), esme)
            if len(found) == 2:
                return found
        raise AssertionError(f"40 connections, all to worker {list(found)}")

    async def http(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.admin_port)
        payload = json.dumps(body).encode() if body is not None else b""
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        async with asyncio.timeout(WAIT_S):
            raw = await reader.read()
        writer.close()
        head, _, answer = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), answer

    async def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the supervisor's /metrics (None when absent)."""
        status, body = await self.http("GET", "/metrics")
        assert status == 200
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return float(sample.value)
        return None


@contextlib.asynccontextmanager
async def supervised(
    tmp_path: Path, store_url: str | None = None, **sections: Any
) -> AsyncIterator[tuple[Simulator, Supervised]]:
    """The SMSC simulator and a gateway with two workers in front of it, all workers ready
    (``sections`` merged into the config's tables, or replacing what is not a table)."""
    async with simulator() as sim:
        url = store_url or f"sqlite:{tmp_path}/consent.db"
        data = config_data(tmp_path, sim.port, url)
        for name, value in sections.items():
            is_table = isinstance(value, dict) and isinstance(data.get(name), dict)
            data[name] = {**data[name], **value} if is_table else value
        config = tmp_path / "gateway.toml"
        config.write_text(to_toml(data), encoding="utf-8")
        daemon = Supervised(config, data)
        await daemon.start()
        try:
            await daemon.wait_for("workers_ready", timeout=30)
            yield sim, daemon
        finally:
            await daemon.kill()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each shared store: a SQLite file, and a real redis-server (a prefix of its own)."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path}/consent.db"
    server: RedisServer = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=w{uuid.uuid4().hex[:12]}"


class TestSharedConsent:
    async def test_stop_through_one_worker_refuses_the_next_mt_through_the_other(
        self, tmp_path: Path, store_url: str
    ) -> None:
        """A STOP handled by one worker refuses the next MT through the other worker (which had
        the subscriber cached as allowed), and an opt-out through the supervisor's admin API is
        enforced by both workers."""
        async with (
            supervised(tmp_path, store_url) as (sim, daemon),
            contextlib.AsyncExitStack() as stack,
        ):
            senders = await daemon.one_per_worker(stack)
            for esme in senders.values():
                assert await esme.submit(SUBSCRIBER, "before", source=NUMBER_1) == 0
                assert await esme.submit(BYSTANDER, "before", source=NUMBER_1) == 0
            receiver = await stack.enter_async_context(
                SmpplibEsme(daemon.port, "acme", bind="receiver")
            )
            handled_by = await daemon.worker_of(receiver)
            other = 2 if handled_by == 1 else 1

            status = await sim.send_mo(
                source=SUBSCRIBER, destination=NUMBER_1, text="STOP", system_id="acme"
            )
            assert status == 0
            texts = await wait_texts(sim, SUBSCRIBER, 3)
            assert texts[-1] == OPT_OUT_REPLY
            assert await senders[other].submit(SUBSCRIBER, "after", source=NUMBER_1) == OPTED_OUT
            assert (
                await senders[handled_by].submit(SUBSCRIBER, "after", source=NUMBER_1) == OPTED_OUT
            )

            status, _ = await daemon.http(
                "POST", f"/v1/consent/+{BYSTANDER}", {"action": "opt_out", "reason": "test"}
            )
            assert status == 201
            for esme in senders.values():
                assert await esme.submit(BYSTANDER, "after", source=NUMBER_1) == OPTED_OUT


class TestAdmin:
    async def test_one_scrape_sums_every_worker_and_readiness_covers_them(
        self, tmp_path: Path
    ) -> None:
        """The supervisor's /metrics counts the submits of both workers' clients in one series,
        says both workers are ready, and /readyz has a workers check."""
        async with supervised(tmp_path) as (_sim, daemon), contextlib.AsyncExitStack() as stack:
            senders = await daemon.one_per_worker(stack)
            for count, esme in enumerate(senders.values(), start=2):
                for _ in range(count):
                    assert await esme.submit(BYSTANDER, "m", source=NUMBER_1) == 0
            submits = await daemon.metric(
                "smppgw_pdus_total", leg="client", direction="in", command="submit_sm"
            )
            assert submits == 2 + 3
            assert await daemon.metric("smppgw_workers_ready") == 2
            sessions = await daemon.metric("smppgw_sessions", bind_type="transmitter")
            assert sessions == daemon.opened
            status, body = await daemon.http("GET", "/readyz")
            assert status == 200, body
            assert json.loads(body)["checks"]["workers"] == "ok"


class TestOptOutLink:
    async def test_a_link_from_one_worker_confirmed_at_the_supervisor_stops_both(
        self, tmp_path: Path
    ) -> None:
        """The footer link a worker signed is confirmed on the supervisor's opt-out listener,
        and the next MT through either worker is refused."""
        port = free_port()
        link = {"base_url": f"http://127.0.0.1:{port}/o/", "listen": f"127.0.0.1:{port}"}
        campaign = {**config_data(tmp_path, 0, "")["campaigns"][0], "footer_text": LINK_FOOTER}
        async with (
            supervised(
                tmp_path,
                optout_link={**link, "key": "workers-link-key-0123456789"},
                campaigns=[campaign],
            ) as (sim, daemon),
            contextlib.AsyncExitStack() as stack,
        ):
            senders = await daemon.one_per_worker(stack)
            assert await senders[1].submit(SUBSCRIBER, "code 1234", source=NUMBER_1) == 0
            (text,) = await wait_texts(sim, SUBSCRIBER, 1)
            assert text is not None
            found = re.search(r"(http://127\.0\.0\.1:\d+/o/[A-Za-z0-9_-]{32})", text)
            assert found is not None, text
            shown = await asyncio.to_thread(fetch, found.group(1))
            assert shown.status == 200
            done = await asyncio.to_thread(fetch, found.group(1), "POST")
            assert done.status == 200
            assert "You are unsubscribed" in done.text
            for esme in senders.values():
                assert await esme.submit(SUBSCRIBER, "after", source=NUMBER_1) == OPTED_OUT


class TestRestart:
    async def test_killed_worker_is_started_again_and_its_counts_stay(self, tmp_path: Path) -> None:
        """A worker killed with SIGKILL is logged, counted and started again; the new process
        serves, and the summed counters keep what the dead one counted."""
        async with supervised(tmp_path) as (_sim, daemon), contextlib.AsyncExitStack() as stack:
            senders = await daemon.one_per_worker(stack)
            assert await senders[2].submit(BYSTANDER, "m", source=NUMBER_1) == 0
            labels = {"leg": "client", "direction": "in", "command": "submit_sm"}
            assert await daemon.metric("smppgw_pdus_total", **labels) == 1
            old_pid = daemon.worker_pids()[2]
            os.kill(old_pid, signal.SIGKILL)

            exited = await daemon.wait_for("worker_exited", worker=2)
            assert exited["status"] == -signal.SIGKILL
            assert exited["restart_in_s"] > 0
            started = await daemon.wait_for("worker_started", 2, worker=2)
            assert started["worker_pid"] != old_pid
            await daemon.wait_for("gateway_started", 2, worker=2, timeout=30)
            assert await daemon.metric("smppgw_worker_restarts_total", reason="died") == 1
            assert await daemon.metric("smppgw_pdus_total", **labels) == 1
            assert await daemon.metric("smppgw_workers_ready") == 2
            assert await senders[1].submit(BYSTANDER, "m", source=NUMBER_1) == 0
            assert await daemon.metric("smppgw_pdus_total", **labels) == 2

    async def test_a_stuck_worker_is_killed_and_started_again(self, tmp_path: Path) -> None:
        """A worker whose loop stops answering (SIGSTOP) sends no watchdog ping: after
        server.worker_timeout_s the supervisor kills it and starts another."""
        async with supervised(tmp_path, server={"worker_timeout_s": 2}) as (_sim, daemon):
            old_pid = daemon.worker_pids()[1]
            os.kill(old_pid, signal.SIGSTOP)
            hung = await daemon.wait_for("worker_hung", worker=1)
            assert hung["worker_pid"] == old_pid
            assert hung["silent_s"] >= 2
            exited = await daemon.wait_for("worker_exited", worker=1)
            assert exited["status"] == -signal.SIGKILL
            started = await daemon.wait_for("worker_started", 2, worker=1)
            assert started["worker_pid"] != old_pid
            await daemon.wait_for("gateway_started", 2, worker=1, timeout=30)
            assert not daemon.events("worker_hung", worker=2)


class TestSignals:
    async def test_sigterm_drains_every_worker_and_exits_0(self, tmp_path: Path) -> None:
        """SIGTERM to the supervisor unbinds the clients of both workers, each worker stops,
        and the supervisor exits 0; every process's log lines stay whole on the shared
        stderr."""
        async with supervised(tmp_path) as (_sim, daemon), contextlib.AsyncExitStack() as stack:
            senders = await daemon.one_per_worker(stack)
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGTERM)
            assert await daemon.exit_status() == 0
            for esme in senders.values():
                await esme.wait_until(lambda esme=esme: not esme.connected)  # type: ignore[misc]
                assert any(pdu.command == "unbind" for pdu in esme.pdus)
            assert {
                line["worker"] for line in daemon.events("gateway_stopped") if "worker" in line
            } == {1, 2}
            assert [line["status"] for line in daemon.events("worker_exited")] == [0, 0]
            assert not daemon.events("unparsed")  # lines of three processes, none interleaved

    async def test_workers_of_a_killed_supervisor_drain_and_exit(self, tmp_path: Path) -> None:
        """SIGKILL to the supervisor leaves no worker behind holding the port: each sees its
        pipe close, logs supervisor_gone, drains and exits."""
        async with supervised(tmp_path) as (_sim, daemon):
            assert daemon.proc is not None
            daemon.proc.kill()
            for worker in (1, 2):
                await daemon.wait_for("supervisor_gone", worker=worker)
                await daemon.wait_for("gateway_stopped", worker=worker)
            await daemon.output_ended()  # every worker has exited

    async def test_sighup_reloads_every_worker(self, tmp_path: Path) -> None:
        """SIGHUP to the supervisor reloads the file in both workers: the new footer goes out
        through each."""
        async with supervised(tmp_path) as (sim, daemon), contextlib.AsyncExitStack() as stack:
            senders = await daemon.one_per_worker(stack)
            campaign = {**daemon.data["campaigns"][0], "footer_text": NEW_FOOTER}
            daemon.config.write_text(
                to_toml({**daemon.data, "campaigns": [campaign]}), encoding="utf-8"
            )
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGHUP)
            for worker in (1, 2):
                await daemon.wait_for("config_reloaded", worker=worker)
            for n, esme in enumerate(senders.values(), start=1):
                assert await esme.submit(BYSTANDER, "hi", source=NUMBER_1) == 0
                texts = await wait_texts(sim, BYSTANDER, n)
                assert texts[-1] == "hi ACME: Reply STOP to end"


class TestStartFailures:
    async def test_a_worker_that_cannot_start_stops_the_supervisor_with_status_1(
        self, tmp_path: Path
    ) -> None:
        """A worker that exits with status 2 at start (its TLS key gone since the supervisor
        loaded it) is not started again: the supervisor stops the other and exits 1."""
        cert, key = self_signed(tmp_path)
        async with simulator() as sim:
            data = config_data(tmp_path, sim.port, f"sqlite:{tmp_path}/consent.db")
            data["server"]["tls"] = {"cert_file": str(cert), "key_file": str(key)}
            config = tmp_path / "gateway.toml"
            config.write_text(to_toml(data), encoding="utf-8")
            daemon = Supervised(config, data)
            await daemon.start()
            try:
                # The supervisor has loaded the key; its workers load it after a second or
                # more of interpreter start-up.
                await daemon.wait_for("worker_started", worker=2)
                key.unlink()
                assert await daemon.exit_status(timeout=30) == 1
            finally:
                await daemon.kill()
        failed = daemon.events("workers_failed")
        assert len(failed) == 1
        assert "status 2" in failed[0]["reason"]
        assert not daemon.events("workers_ready")
        assert len(daemon.events("worker_started")) == 2  # none started again
