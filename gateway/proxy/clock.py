"""The proxy ring's one source of time, so that tests can set it and the pure core never reads it.

Wall-clock seconds for what is recorded (events, reply evidence, receipts), monotonic seconds
for what expires (memos, limits, latency).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock and monotonic seconds, read where the adapters need the time."""

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    """The process's clocks (the C functions themselves: no Python frame per reading)."""

    __slots__ = ()
    wall = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)


SYSTEM_CLOCK: Clock = SystemClock()
