"""``smpp-gateway demo`` (the scripted tour) and ``smpp-gateway send`` (the test client)."""

from __future__ import annotations

import asyncio
import os
import pty
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.smpp.constants import CommandStatus
from tests.support.consent import (
    NUMBER_1,
    ROOT,
    SIM_SESSION,
    SUBSCRIBER,
    WAIT_S,
    acme_campaigns,
    consent_gateway,
    free_port,
    run_cli,
    staff_opt_out,
)
from tests.support.sim import running_simulator

FOOTER = "Reply STOP to opt out"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


async def run_demo(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``python -m gateway demo ARGS`` with its output piped and TMPDIR in ``tmp_path``."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    environment.pop("NO_COLOR", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "demo", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=environment, cwd=ROOT,
    )  # fmt: skip
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def run_demo_on_terminal(tmp_path: Path, **env: str) -> str:
    """The demo's output when its stdout is a terminal (a pseudo-terminal here)."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path), **env}
    if "NO_COLOR" not in env:
        environment.pop("NO_COLOR", None)
    pid, fd = pty.fork()
    if pid == 0:  # the child: stdout is the terminal
        os.chdir(ROOT)
        os.execve(sys.executable, [sys.executable, "-m", "gateway", "demo"], environment)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return b"".join(chunks).decode()


def step(transcript: str, number: int) -> str:
    """The lines of step ``number`` of the transcript."""
    found = re.search(rf"^{number}\. .*?(?=^\d\. |^Every step|\Z)", transcript, re.S | re.M)
    assert found is not None, transcript
    return found.group(0)


class TestDemo:
    async def test_transcript_holds_every_step_with_its_status(self, tmp_path: Path) -> None:
        """Piped, the demo prints plain text: footer added, STOP confirmed, the MT refused with
        its status name and value, HELP answered, START and the MT through again; exit 0."""
        code, out, err = await run_demo(tmp_path)
        assert (code, err) == (0, ""), out
        assert not ANSI.search(out)
        assert "bind_transceiver demo: ESME_ROK (0x00000000)" in out
        first = step(out, 1)
        assert "submit_sm_resp ESME_ROK (0x00000000) message_id=" in first
        assert f'SMSC received      submit_sm "Your order has shipped. {FOOTER}"' in first
        stop = step(out, 2)
        assert '"STOP"' in stop
        assert "deliver_sm_resp ESME_ROK (0x00000000)" in stop
        assert re.search(r'gateway → SMSC .*submit_sm 15550100 → 15551234567 ".*unsub', stop)
        refused = step(out, 3)
        assert "submit_sm_resp ESME_RSUBMITFAIL (0x00000045)" in refused
        assert "SMSC received      nothing" in refused
        assert re.search(r'submit_sm 15550100 → 15551234567 "ACME: help', step(out, 4))
        again = step(out, 5)
        assert '"START"' in again
        assert "subscribed again" in again
        assert again.rstrip().endswith(f'submit_sm "Flash sale today! {FOOTER}"')
        assert out.rstrip().endswith("Every step did what the gateway promises.")

    async def test_leaves_no_temporary_files(self, tmp_path: Path) -> None:
        """The store, the audit trail and the privacy key go with the temporary directory."""
        code, out, _ = await run_demo(tmp_path)
        assert code == 0, out
        assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []

    @pytest.mark.parametrize("option", ["--port", "--smsc-port"])
    async def test_port_in_use_exits_2_with_one_line(self, tmp_path: Path, option: str) -> None:
        """A port given that is taken: one line on stderr naming the option, exit 2."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            code, out, err = await run_demo(tmp_path, option, str(port))
        assert (code, out) == (2, "")
        assert err == f"smpp-gateway demo: {option} {port}: address already in use\n"
        assert err.count("\n") == 1

    def test_coloured_on_a_terminal_unless_no_color(self, tmp_path: Path) -> None:
        """On a terminal the transcript is coloured; NO_COLOR makes it plain, same text."""
        coloured = run_demo_on_terminal(tmp_path)
        plain = run_demo_on_terminal(tmp_path, NO_COLOR="1")
        assert "\x1b[32mESME_ROK (0x00000000)\x1b[0m" in coloured
        assert "\x1b[31mESME_RSUBMITFAIL (0x00000045)\x1b[0m" in coloured
        assert not ANSI.search(plain)
        assert "ESME_RSUBMITFAIL (0x00000045)" in plain


@asynccontextmanager
async def rig(tmp_path: Path, **sim_options: object) -> AsyncIterator[tuple[Simulator, Gateway]]:
    """The simulator and a consent gateway (SQLite) whose campaign adds a footer."""
    async with (
        running_simulator(control_port=None, session_config=SIM_SESSION, **sim_options) as sim,
        consent_gateway(
            sim.port,
            f"sqlite:{tmp_path}/consent.db",
            campaigns=acme_campaigns(footer="always", footer_text=FOOTER),
        ) as gw,
    ):
        yield sim, gw


def send_args(gw: Gateway, *extra: str, text: str = "Your order has shipped.") -> list[str]:
    return ["send", f"127.0.0.1:{gw.port}", "--from", NUMBER_1, "--to", SUBSCRIBER,
            "--text", text, *extra]  # fmt: skip


class TestSend:
    async def test_accepted_prints_status_and_message_id(self, tmp_path: Path) -> None:
        """An accepted submit prints ESME_ROK and the SMSC's message_id, and exits 0; the SMSC
        got the text with the campaign's footer."""
        async with rig(tmp_path) as (sim, gw):
            code, out, err = await run_cli(*send_args(gw))
            assert (code, err) == (0, "")
            [received] = sim.messages
            assert received.message_id
            assert (
                out == f"submit_sm_resp: ESME_ROK (0x00000000) message_id={received.message_id}\n"
            )
            assert received.text == f"Your order has shipped. {FOOTER}"
            assert received.system_id == "demo"
            assert received.bind_type == "transmitter"

    async def test_opted_out_number_exits_1_with_the_refusal(self, tmp_path: Path) -> None:
        """A submit to an opted-out number prints the refusal status, name and value, exits 1."""
        async with rig(tmp_path) as (sim, gw):
            assert gw.store is not None
            await gw.store.append(staff_opt_out(SUBSCRIBER))
            code, out, err = await run_cli(*send_args(gw))
            assert (code, out, err) == (1, "submit_sm_resp: ESME_RSUBMITFAIL (0x00000045)\n", "")
            assert gw.config.consent.statuses.opted_out == CommandStatus.ESME_RSUBMITFAIL
            assert sim.messages == []

    async def test_refused_bind_exits_1(self, tmp_path: Path) -> None:
        """Credentials the SMSC refuses: the bind_resp status is printed, exit 1, no submit."""
        async with rig(tmp_path, accounts={"acme": "right"}) as (sim, gw):
            code, out, err = await run_cli(*send_args(gw, "--system-id", "acme"))
            assert (code, err) == (1, "")
            assert out == "bind_transmitter_resp: ESME_RINVPASWD (0x0000000e)\n"
            assert sim.messages == []

    async def test_transceiver_prints_the_mos_it_receives(self, tmp_path: Path) -> None:
        """--bind transceiver --wait-mo prints the MOs delivered while it waits."""
        async with rig(tmp_path) as (sim, gw):
            client = asyncio.create_task(
                run_cli(*send_args(gw, "--bind", "transceiver", "--wait-mo", "3"))
            )
            await sim.wait_for(lambda m: len(m) == 1, timeout=WAIT_S)
            status = await sim.send_mo(source=SUBSCRIBER, destination=NUMBER_1, text="hello")
            assert status == CommandStatus.ESME_ROK
            code, out, err = await client
            assert (code, err) == (0, "")
            lines = out.splitlines()
            assert lines[0].startswith("submit_sm_resp: ESME_ROK (0x00000000) message_id=")
            assert lines[1:] == [f"deliver_sm: from {SUBSCRIBER} to {NUMBER_1}: hello"]

    async def test_closed_port_exits_2_with_one_line(self) -> None:
        """Nothing listening: one line on stderr naming the address, no traceback, exit 2."""
        port = free_port()
        code, out, err = await run_cli(
            "send", "--port", str(port), "--from", NUMBER_1, "--to", SUBSCRIBER, "--text", "x"
        )
        assert (code, out) == (2, "")
        assert err == f"smpp-gateway send: 127.0.0.1:{port}: cannot connect: connection refused\n"

    async def test_wait_mo_needs_a_transceiver(self) -> None:
        """--wait-mo on a transmitter bind is a usage error (exit 2) naming the option."""
        code, out, err = await run_cli(
            "send", "--from", NUMBER_1, "--to", SUBSCRIBER, "--text", "x", "--wait-mo", "1"
        )
        assert (code, out) == (2, "")
        assert err.splitlines()[-1] == (
            "smpp-gateway send: error: --wait-mo needs --bind transceiver"
        )
