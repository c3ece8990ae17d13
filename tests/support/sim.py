"""Run the SMSC simulator in-process on free loopback ports, for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway.simulator import Simulator


@asynccontextmanager
async def running_simulator(**options: Any) -> AsyncIterator[Simulator]:
    """A started Simulator on 127.0.0.1 (``.port`` and ``.control_port`` free ports), stopped on
    exit. ``options`` are Simulator keyword arguments; pass ``control_port=None`` to run without
    the HTTP control endpoint."""
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    options.setdefault("control_host", "127.0.0.1")
    options.setdefault("control_port", 0)
    sim = Simulator(**options)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
