"""``smpp-gateway send``: bind, send one submit_sm, print the answer, unbind.

Exit codes: 0 when the submit was answered ESME_ROK, 1 when it (or the bind) was refused, 2 on
a usage error or when the connection could not be opened or was lost (one line on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Final

from gateway.client import ClientError, SmppClient, status_text

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130  # the shell's code for SIGINT
DEFAULT_ADDRESS: Final = "127.0.0.1:2775"


def _address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {value!r}")
    return int(value)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "address", nargs="?", type=_address, metavar="HOST:PORT",
        help=f"where to bind (default {DEFAULT_ADDRESS}; --host / --port override a part)",
    )  # fmt: skip
    parser.add_argument("--host", help="host to connect to (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port to connect to (default 2775)")
    parser.add_argument("--system-id", default="demo", help="bind system_id (default demo)")
    parser.add_argument("--password", default="", help="bind password (default empty)")
    parser.add_argument(
        "--bind", choices=("transmitter", "transceiver"), default="transmitter",
        help="bind type (default transmitter; transceiver to receive MOs with --wait-mo)",
    )  # fmt: skip
    parser.add_argument(
        "--from", dest="source", required=True, metavar="NUMBER", help="source_addr"
    )
    parser.add_argument(
        "--to", dest="destination", required=True, metavar="NUMBER", help="destination_addr"
    )
    parser.add_argument("--text", required=True, help="the message")
    parser.add_argument(
        "--wait-mo", type=_seconds, metavar="SECONDS",
        help="after the submit, print the MOs delivered for this long (needs --bind transceiver)",
    )  # fmt: skip


def run_send(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.wait_mo is not None and args.bind != "transceiver":
        parser.error("--wait-mo needs --bind transceiver")
    host, port = args.address or _address(DEFAULT_ADDRESS)
    host = args.host or host
    port = args.port or port
    try:
        return asyncio.run(_send(args, host, port))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # Ctrl-C while waiting for MOs: no traceback
    except (OSError, TimeoutError, ClientError) as exc:
        reason = str(exc) or type(exc).__name__
        print(f"smpp-gateway send: {host}:{port}: {reason}", file=sys.stderr)
        return EXIT_USAGE


async def _send(args: argparse.Namespace, host: str, port: int) -> int:
    try:
        client = await SmppClient.connect(host, port)
    except ConnectionRefusedError:
        raise OSError("cannot connect: connection refused") from None
    except OSError as exc:
        raise OSError(f"cannot connect: {exc.strerror or exc}") from exc
    except TimeoutError:
        raise TimeoutError("cannot connect: timed out") from None
    try:
        bound = await client.bind(args.bind, args.system_id, args.password)
        if not bound.ok:
            print(f"bind_{args.bind}_resp: {status_text(bound.status)}")
            return EXIT_REFUSED
        answer = await client.submit(args.source, args.destination, args.text)
        shown = f" message_id={answer.message_id}" if answer.message_id else ""
        print(f"submit_sm_resp: {status_text(answer.status)}{shown}")
        sys.stdout.flush()
        if args.wait_mo is not None:
            await _print_mos(client, args.wait_mo)
        await client.unbind()
    finally:
        await client.close()
    return EXIT_OK if answer.ok else EXIT_REFUSED


async def _print_mos(client: SmppClient, seconds: float) -> None:
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while (left := until - loop.time()) > 0:
        try:
            async with asyncio.timeout(left):
                mo = await client.received.get()
        except TimeoutError:
            return
        print(f"deliver_sm: from {mo.source_addr} to {mo.destination_addr}: {mo.text}")
        sys.stdout.flush()
