"""Run a real gateway in-process on a free loopback port, and tap what it writes on the wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.app import Gateway
from gateway.config import GatewayConfig, parse
from gateway.proxy.connection import SmppConnection
from gateway.proxy.hooks import Interceptor


def gateway_config(upstream_port: int, **sections: dict[str, Any]) -> GatewayConfig:
    """A config for tests: listen on a free port, relay to ``upstream_port``, fast timers."""
    data: dict[str, Any] = {
        "gateway": {"instance": "test-gw", "shutdown_grace_s": 5},
        "server": {"listen": "127.0.0.1:0"},
        "upstream": {"address": f"127.0.0.1:{upstream_port}", "connect_timeout_s": 5},
        "session": {"response_timeout_s": 10, "enquire_link_interval_s": 30, "unbind_timeout_s": 2},
        "logging": {"level": "warning"},
        # Not durable; tests about durability name a sqlite or redis URL of their own.
        "store": {"url": "memory://"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse(data)


@contextlib.asynccontextmanager
async def running_gateway(
    upstream_port: int,
    *,
    interceptor_factory: Callable[[GatewayConfig], Interceptor] | None = None,
    **sections: dict[str, Any],
) -> AsyncIterator[Gateway]:
    gw = Gateway(gateway_config(upstream_port, **sections), interceptor_factory=interceptor_factory)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


class WireTap:
    """Records every byte the gateway writes, per leg, for checking with Wireshark's dissector."""

    def __init__(self) -> None:
        self.written: dict[str, list[bytes]] = {"client": [], "upstream": []}

    def install(self, monkeypatch: Any) -> None:
        original = SmppConnection.connection_made
        tap = self

        def connection_made(conn: SmppConnection, transport: Any) -> None:
            if conn.leg in tap.written:
                transport = _TappedTransport(transport, tap.written[conn.leg])
            original(conn, transport)

        monkeypatch.setattr(SmppConnection, "connection_made", connection_made)

    def frames(self, leg: str) -> list[bytes]:
        """Split what was written on a leg back into PDUs."""
        data = b"".join(self.written[leg])
        frames = []
        pos = 0
        while pos + 4 <= len(data):
            length = int.from_bytes(data[pos : pos + 4], "big")
            frames.append(data[pos : pos + length])
            pos += length
        return frames


class _TappedTransport(asyncio.Transport):
    """Delegates to the real transport, keeping a copy of every write."""

    def __init__(self, inner: asyncio.Transport, sink: list[bytes]) -> None:
        super().__init__()
        self._inner = inner
        self._sink = sink

    def write(self, data: Any) -> None:
        self._sink.append(bytes(data))
        self._inner.write(data)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._inner.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self._inner.is_closing()

    def close(self) -> None:
        self._inner.close()

    def abort(self) -> None:
        self._inner.abort()

    def pause_reading(self) -> None:
        self._inner.pause_reading()

    def resume_reading(self) -> None:
        self._inner.resume_reading()
