"""Is the SMSC reachable? A TCP connect to the upstream address, cached for a few seconds.

``/readyz`` asks this so a load balancer stops sending clients to a gateway that cannot reach
its SMSC (their binds would only get ESME_RSYSERR). The probe connects and closes at once; the
answer is kept for ``cache_s`` so frequent readiness checks cost the SMSC one connection per
interval at most. While clients are bound, the relay's own upstream sessions prove more than a
connect, but a probe is what answers when nobody is bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

DEFAULT_CACHE_S: Final = 5.0
DEFAULT_TIMEOUT_S: Final = 2.0


class UpstreamProbe:
    """``await check()``: None when the SMSC accepts a TCP connection, else the reason."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        cache_s: float = DEFAULT_CACHE_S,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._checked_at = -float("inf")
        self._result: str | None = None
        self._running: asyncio.Task[str | None] | None = None

    async def check(self) -> str | None:
        if time.monotonic() - self._checked_at < self.cache_s:
            return self._result
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._connect())
        # Concurrent readiness checks share one connection attempt.
        return await asyncio.shield(self._running)

    async def _connect(self) -> str | None:
        result: str | None = None
        try:
            async with asyncio.timeout(self.timeout_s):
                _reader, writer = await asyncio.open_connection(self.host, self.port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        except TimeoutError:
            where = f"{self.host}:{self.port}"
            result = f"SMSC {where} did not accept a connection in {self.timeout_s:g} s"
        except OSError as exc:
            result = f"SMSC {self.host}:{self.port} unreachable: {exc.strerror or exc}"
        self._result = result
        self._checked_at = time.monotonic()
        return result
