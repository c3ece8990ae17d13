"""``smpp-gateway demo``: the bundled SMSC simulator, a consent gateway and a scripted client in
one process, and a transcript of what each of them did.

The gateway runs on a SQLite store in a temporary directory (removed on exit) with one campaign
that adds an opt-out footer. The script: an MT goes through with its footer, the subscriber
sends STOP and gets the confirmation, the next MT is refused, HELP is answered, START opts the
number in again and the MT goes through. Exit 0 when every step did what the gateway promises,
1 when one did not (the transcript says which), 2 when a port cannot be had.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO

from gateway.client import SmppClient, status_text
from gateway.config import GatewayConfig, parse
from gateway.simulator import ReceivedRequest, Simulator
from gateway.smpp.constants import CommandStatus
from gateway.startup import StartupError
from gateway.telemetry import logs

if TYPE_CHECKING:
    from gateway.app import Gateway

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

SENDER: Final = "15550100"
SUBSCRIBER: Final = "15551234567"
CAMPAIGN: Final = "acme-marketing"
FOOTER: Final = "Reply STOP to opt out"
SYSTEM_ID: Final = "demo"
WAIT_S: Final = 5.0  # for the SMSC to see what the gateway sends; loopback takes milliseconds


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value!r}")
    return int(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port", type=_port, default=0, metavar="PORT",
        help="the gateway's SMPP port on 127.0.0.1 (default: a free one)",
    )  # fmt: skip
    parser.add_argument(
        "--smsc-port", type=_port, default=0, metavar="PORT",
        help="the simulated SMSC's port on 127.0.0.1 (default: a free one)",
    )  # fmt: skip


def demo_config(directory: Path, *, port: int, smsc_port: int) -> GatewayConfig:
    """The gateway of the demo: embedded store and audit trail in ``directory``, one campaign."""
    return parse(
        {
            "gateway": {"instance": "demo", "shutdown_grace_s": 2},
            "server": {"listen": f"127.0.0.1:{port}"},
            "upstream": {"address": f"127.0.0.1:{smsc_port}", "connect_timeout_s": 5},
            "session": {"enquire_link_interval_s": 30, "unbind_timeout_s": 2},
            "logging": {"level": "error"},
            "store": {"url": f"sqlite:///{directory / 'consent.db'}"},
            "audit": {"path": str(directory / "audit.jsonl")},
            "consent": {"default_country": "US"},
            "campaigns": [
                {
                    "name": CAMPAIGN,
                    "brand": "ACME",
                    "numbers": [SENDER],
                    "scope": "number",
                    "footer": "always",
                    "footer_text": FOOTER,
                    "replies": {
                        "opt_out": "ACME: you are unsubscribed. Reply START to resubscribe.",
                        "opt_in": "ACME: you are subscribed again. Reply STOP to opt out.",
                        "help": (
                            "ACME: help at acme.example. Msg frequency varies. "
                            "Msg&data rates may apply. Reply STOP to opt out."
                        ),
                    },
                }
            ],
        }
    )


class Style:
    """ANSI colours on a terminal, nothing when piped or when NO_COLOR is set (no-color.org)."""

    def __init__(self, stream: TextIO) -> None:
        self.on = stream.isatty() and not os.environ.get("NO_COLOR")

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.on else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)

    def good(self, text: str) -> str:
        return self._wrap("32", text)

    def bad(self, text: str) -> str:
        return self._wrap("31", text)

    def quote(self, text: str) -> str:
        return self._wrap("36", _quoted(text))


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"') + '"'


@dataclass(slots=True)
class Transcript:
    out: TextIO
    style: Style
    failures: int = 0

    def step(self, number: int, title: str) -> None:
        print(file=self.out)
        print(self.style.bold(f"{number}. {title}"), file=self.out)

    def line(self, who: str, what: str) -> None:
        # Aligned: the actor column is as wide as the widest actor.
        print(f"   {self.style.dim(who.ljust(18))} {what}", file=self.out)

    def status(self, status: int, expected: int) -> str:
        text = status_text(status)
        if status != expected:
            self.failures += 1
            return self.style.bad(f"{text}, expected {status_text(expected)}")
        return (self.style.good if status == CommandStatus.ESME_ROK else self.style.bad)(text)

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.failures += 1
            self.line("!", self.style.bad(problem))


class Demo:
    def __init__(self, sim: Simulator, gw: Gateway, client: SmppClient, t: Transcript) -> None:
        self.sim = sim
        self.gw = gw
        self.client = client
        self.t = t

    async def _smsc_got(self, before: int) -> ReceivedRequest | None:
        """The next submit the SMSC received after the first ``before`` ones, or None."""
        try:
            messages = await self.sim.wait_for(lambda m: len(m) > before, timeout=WAIT_S)
        except TimeoutError:
            return None
        return messages[before]

    async def mt(self, text: str, expected: int) -> None:
        t, s = self.t, self.t.style
        before = len(self.sim.messages)
        t.line("client → gateway", f"submit_sm {SENDER} → {SUBSCRIBER} {s.quote(text)}")
        answer = await self.client.submit(SENDER, SUBSCRIBER, text)
        detail = f" message_id={answer.message_id}" if answer.message_id else ""
        if expected != CommandStatus.ESME_ROK:
            detail += s.dim("  (the number opted out)")
        t.line("gateway → client", f"submit_sm_resp {t.status(answer.status, expected)}{detail}")
        if expected == CommandStatus.ESME_ROK:
            got = await self._smsc_got(before)
            t.check(got is not None, "the SMSC received nothing")
            if got is not None:
                t.line("SMSC received", f"submit_sm {s.quote(got.text or '')}")
                t.check(FOOTER in (got.text or ""), "the footer is missing")
        else:
            # The refusal is answered before anything could go upstream: nothing to wait for.
            sent = len(self.sim.messages) - before
            t.line("SMSC received", "nothing" if sent == 0 else f"{sent} submits")
            t.check(sent == 0, "a refused MT reached the SMSC")

    async def mo(self, text: str, *, reply: bool) -> None:
        t, s = self.t, self.t.style
        before = len(self.sim.messages)
        t.line("SMSC → gateway", f"deliver_sm {SUBSCRIBER} → {SENDER} {s.quote(text)}")
        status = await self.sim.send_mo(source=SUBSCRIBER, destination=SENDER, text=text)
        t.line("gateway → SMSC", f"deliver_sm_resp {t.status(status, CommandStatus.ESME_ROK)}")
        if reply:
            got = await self._smsc_got(before)
            t.check(got is not None, "no reply reached the SMSC")
            if got is not None:
                pdu = got.pdu
                to = getattr(pdu, "destination_addr", "")
                t.line("gateway → SMSC", f"submit_sm {SENDER} → {to} {s.quote(got.text or '')}")
                t.check(to == SUBSCRIBER, f"the reply went to {to}, not {SUBSCRIBER}")

    async def run(self) -> None:
        self.t.step(1, "An MT goes through; the gateway adds the campaign's footer")
        await self.mt("Your order has shipped.", CommandStatus.ESME_ROK)
        self.t.step(2, "The subscriber sends STOP; the gateway confirms it itself")
        await self.mo("STOP", reply=True)
        self.t.step(3, "The next MT to that number is refused")
        status = self.gw.config.consent.statuses.opted_out
        await self.mt("Flash sale today!", status)
        self.t.step(4, "HELP is answered by the gateway")
        await self.mo("HELP", reply=True)
        self.t.step(5, "START opts the number in again; the MT goes through")
        await self.mo("START", reply=True)
        await self.mt("Flash sale today!", CommandStatus.ESME_ROK)


async def _run(args: argparse.Namespace, directory: Path, out: TextIO) -> int:
    # Imported here: the parser of every command imports this module, the daemon only this run.
    from gateway.app import Gateway

    t = Transcript(out=out, style=Style(out))
    s = t.style
    async with Simulator(host="127.0.0.1", port=args.smsc_port) as sim:
        gw = Gateway(demo_config(directory, port=args.port, smsc_port=sim.port))
        await gw.start()
        try:
            print(s.bold("smpp-gateway demo"), file=out)
            t.line("SMSC simulator", f"127.0.0.1:{sim.port}")
            t.line("gateway", f"127.0.0.1:{gw.port} (SQLite store in a temporary directory)")
            t.line("campaign", f"{CAMPAIGN}: sender {SENDER}, footer {s.quote(FOOTER)}")
            client = await SmppClient.connect("127.0.0.1", gw.port)
            try:
                bound = await client.bind("transceiver", SYSTEM_ID, "secret")
                t.line(
                    "client → gateway",
                    f"bind_transceiver {SYSTEM_ID}: {t.status(bound.status, 0)}",
                )
                if bound.ok:
                    await Demo(sim, gw, client, t).run()
                await client.unbind()
            finally:
                await client.close()
        finally:
            await gw.stop()
    print(file=out)
    if t.failures:
        print(s.bad(f"{t.failures} step(s) did not do what they should."), file=out)
        return EXIT_FAILED
    print(s.good("Every step did what the gateway promises."), file=out)
    return EXIT_OK


def run_demo(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    logs.configure(level="error", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="smpp-gateway-demo-") as tmp:
        try:
            return asyncio.run(_run(args, Path(tmp), stream))
        except StartupError as exc:  # the gateway's port (the message names server.listen)
            what = f"--port {args.port}: address already in use" if exc.in_use else str(exc)
            print(f"smpp-gateway demo: {what}", file=sys.stderr)
            return EXIT_USAGE
        except OSError as exc:  # the simulator's port
            taken = exc.errno == errno.EADDRINUSE and args.smsc_port
            what = f"--smsc-port {args.smsc_port}: address already in use" if taken else str(exc)
            print(f"smpp-gateway demo: {what}", file=sys.stderr)
            return EXIT_USAGE
