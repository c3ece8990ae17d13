"""Benchmark harness: load generator, SMSC sink, plain TCP relay, runner (`python -m bench`).

Each part runs in its own process so none shares an interpreter lock or an event loop with the
thing it measures. Helper processes talk to the runner over stdin/stdout, one JSON object a line:
the first line a helper prints is ``{"port": N}`` once it listens; afterwards it answers the
commands it reads on stdin, and exits when stdin reaches end of file (so a dead runner never
leaves helpers behind).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

JsonDict = dict[str, Any]


def run_loop(main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` on uvloop where installed (as the gateway does), the standard loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: which loop ``run_loop`` uses in this interpreter."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def emit(obj: Mapping[str, Any]) -> None:
    """Write one JSON line to stdout for the runner."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve_control(commands: Mapping[str, Callable[[], JsonDict]]) -> None:
    """Answer command lines from stdin with one JSON line each, until stdin closes.

    An unknown command gets ``{"error": ...}`` so the runner never waits for an answer in vain.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            name = line.decode("ascii", "replace").strip()
            if not name:
                continue
            handler = commands.get(name)
            emit(handler() if handler else {"error": f"unknown command {name!r}"})
    finally:
        transport.close()
