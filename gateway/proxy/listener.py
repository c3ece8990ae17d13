"""The client listener: accepts connections, owns the bridges, drains them on shutdown."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable

from gateway.proxy.bridge import Bridge, ProxySettings
from gateway.proxy.connection import SmppConnection
from gateway.proxy.hooks import Interceptor
from gateway.smpp.constants import CommandStatus
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

log = logs.get_logger()


class Listener:
    def __init__(
        self,
        *,
        settings: ProxySettings,
        interceptor: Interceptor,
        metrics: Metrics,
        max_sessions: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.interceptor = interceptor
        self.metrics = metrics
        self.max_sessions = max_sessions
        self.ssl_context = ssl_context
        self.bridges: set[Bridge] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        # reuse_port: several gateway processes (one per core) can share one listening port.
        self._server = await loop.create_server(
            self._accept, host, port, ssl=self.ssl_context, reuse_port=True, backlog=1024
        )
        log.info(
            logs.LISTENER_STARTED, listen=f"{host}:{self.port}", tls=self.ssl_context is not None
        )

    def _accept(self) -> SmppConnection:
        bridge = Bridge(
            settings=self.settings,
            interceptor=self.interceptor,
            metrics=self.metrics,
            loop=asyncio.get_running_loop(),
            on_closed=self._closed,
            on_connected=self._opened,
        )
        return bridge.client

    def _opened(self, bridge: Bridge) -> None:
        """Count a session only once its transport is up: a failed TLS handshake never gets here
        (nor to connection_lost), so counting at accept would leak a slot per failure."""
        if len(self.bridges) >= self.max_sessions:
            # Accept and answer the bind with a clear status rather than reset the TCP connection.
            bridge.refuse_binds(CommandStatus.ESME_RBINDFAIL)
            self.metrics.connections_total.labels("refused").inc()
            log.warning(
                logs.CONNECTION_REFUSED,
                conn_id=bridge.conn_id,
                peer=bridge.client.peer,
                reason="max_sessions",
                max_sessions=self.max_sessions,
            )
        else:
            self.metrics.connections_total.labels("accepted").inc()
            log.debug(logs.CONNECTION_ACCEPTED, conn_id=bridge.conn_id, peer=bridge.client.peer)
        self.bridges.add(bridge)

    def _closed(self, bridge: Bridge) -> None:
        self.bridges.discard(bridge)

    def set_interceptor(self, interceptor: Interceptor) -> None:
        """Config reload: new connections get the new interceptor."""
        self.interceptor = interceptor

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def drain(self, grace_s: float) -> None:
        """Stop accepting, then drain every bridge concurrently."""
        if self._server is not None:
            self._server.close()
        bridges = list(self.bridges)
        if bridges:
            await asyncio.gather(*(b.drain(grace_s) for b in bridges), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def on_each(self, fn: Callable[[Bridge], None]) -> None:
        for bridge in list(self.bridges):
            fn(bridge)
