"""``smpp-gateway smsc-sim``: run the SMSC simulator in the foreground until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine
from typing import Any

from gateway.eventloop import run_loop
from gateway.simulator.server import DEFAULT_SYSTEM_ID, Simulator
from gateway.telemetry import logs

EXIT_OK = 0
EXIT_FAILED = 1

log = logs.get_logger()


def host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) for argparse; port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def account(value: str) -> tuple[str, str]:
    """``SYSTEM_ID:PASSWORD`` for argparse (the password may contain ':')."""
    system_id, sep, password = value.partition(":")
    if not sep or not system_id:
        raise argparse.ArgumentTypeError(f"expected SYSTEM_ID:PASSWORD, got {value!r}")
    return system_id, password


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen", type=host_port, default=("127.0.0.1", 2776), metavar="HOST:PORT",
        help="SMPP address to listen on (default 127.0.0.1:2776)",
    )  # fmt: skip
    parser.add_argument(
        "--control", type=host_port, default=("127.0.0.1", 8776), metavar="HOST:PORT",
        help="HTTP control endpoint: POST /mo, GET|DELETE /messages, POST /faults, GET /health "
        "(default 127.0.0.1:8776)",
    )  # fmt: skip
    parser.add_argument(
        "--no-control", action="store_true", help="run without the HTTP control endpoint"
    )
    parser.add_argument(
        "--receipts", action="store_true",
        help="send delivery receipts for submits that ask for one",
    )  # fmt: skip
    parser.add_argument(
        "--account", type=account, action="append", default=[], metavar="SYSTEM_ID:PASSWORD",
        help="accept only these credentials (repeatable); default: any",
    )  # fmt: skip
    parser.add_argument(
        "--system-id", default=DEFAULT_SYSTEM_ID, help="system_id sent in bind responses"
    )
    parser.add_argument(
        "--loop", default="auto", choices=("auto", "asyncio"),
        help="event loop: auto (uvloop where installed, as the gateway) or asyncio",
    )  # fmt: skip
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"),
        help="log level (JSON lines on stderr)",
    )  # fmt: skip


def build(args: argparse.Namespace) -> Simulator:
    host, port = args.listen
    control_host, control_port = args.control
    return Simulator(
        host=host,
        port=port,
        control_host=control_host,
        control_port=None if args.no_control else control_port,
        system_id=args.system_id,
        accounts=dict(args.account) if args.account else None,
        receipts=args.receipts,
    )


async def serve(sim: Simulator) -> None:
    """Run until SIGTERM / SIGINT, then unbind every session and stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await sim.stop()


def _run(main: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "asyncio":
        asyncio.run(main)
    else:
        run_loop(main)


def run_simulator(args: argparse.Namespace) -> int:
    logs.configure(level=args.log_level, stream=sys.stderr)
    sim = build(args)
    try:
        _run(serve(sim), args.loop)
    except OSError as exc:
        log.exception(logs.CONNECTION_FAILED, component="smsc-sim", error=str(exc))
        return EXIT_FAILED
    return EXIT_OK
