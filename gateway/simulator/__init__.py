"""The bundled SMSC simulator (``smpp-gateway smsc-sim``): demos, integration checks, tests."""

from __future__ import annotations

from gateway.simulator.server import (
    Faults,
    Mo,
    MoFailedError,
    NoReceiverError,
    ReceivedRequest,
    SessionInfo,
    Simulator,
    SimulatorError,
)

__all__ = [
    "Faults",
    "Mo",
    "MoFailedError",
    "NoReceiverError",
    "ReceivedRequest",
    "SessionInfo",
    "Simulator",
    "SimulatorError",
]
