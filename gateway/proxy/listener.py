"""The client listener: accepts connections, owns the bridges, drains them on shutdown."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gateway.config import Network
from gateway.consent.campaign import AccountMatch, account_key
from gateway.proxy.binds import BindGuard, Verdict
from gateway.proxy.bridge import Bridge
from gateway.proxy.connection import SmppConnection
from gateway.proxy.hooks import Interceptor
from gateway.proxy.upstream import ProxySettings
from gateway.smpp.constants import CommandStatus
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

log = logs.get_logger()


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    """How many connections the listener lets in, and whose (config ``[server]``).

    A connection that has not sent its bind yet is *unbound*: it counts against its own, smaller
    limits, never against bound sessions, so strangers holding sockets open cannot lock real
    clients out. When an unbound limit is reached, the oldest unbound connection (of that
    address, else of all) is closed to make room: a real client binds within milliseconds of
    connecting, an idle socket is the one to go. Sessions (from their bind on) count against
    ``max_sessions`` and, where set (> 0), per source address and per account (system_ids
    compared as ``account_match``).
    """

    max_sessions: int = 1000
    max_unbound: int = 100
    max_unbound_per_address: int = 10
    max_sessions_per_address: int = 0  # 0: no limit
    max_sessions_per_account: int = 0  # 0: no limit
    account_match: AccountMatch = AccountMatch.FOLD
    # Client addresses let in at all (empty: any); per account key, where it may bind from.
    allow_networks: tuple[Network, ...] = ()
    account_networks: Mapping[str, tuple[Network, ...]] = field(default_factory=dict)
    # TLS with client certificates: the bind's system_id must be one of the certificate's names.
    system_id_in_certificate: bool = False


class Listener:
    def __init__(
        self,
        *,
        settings: ProxySettings,
        interceptor: Interceptor,
        metrics: Metrics,
        limits: ConnectionLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        binds: BindGuard | None = None,
    ) -> None:
        self.settings = settings
        self.interceptor = interceptor
        self.metrics = metrics
        self.limits = limits or ConnectionLimits()
        self.ssl_context = ssl_context
        self.bridges: set[Bridge] = set()
        self._server: asyncio.Server | None = None
        # Unbound connections, oldest first, globally and per source address.
        self._unbound: OrderedDict[Bridge, str] = OrderedDict()
        self._unbound_at: dict[str, OrderedDict[Bridge, None]] = {}
        # Sessions (from their bind on) per source address and per account key.
        self._sessions: dict[Bridge, tuple[str, str]] = {}
        self._per_address: Counter[str] = Counter()
        self._per_account: Counter[str] = Counter()
        self.binds = binds or BindGuard()
        self._throttles = logs.Summary(interval_s=10.0, burst=5)
        self._evictions = logs.Summary(interval_s=10.0, burst=1)
        self._refusals = logs.Summary(interval_s=10.0, burst=5)
        metrics.upstream_window.set_function(self._upstream_outstanding)

    def _upstream_outstanding(self) -> int:
        """smppgw_upstream_outstanding, summed at each scrape (nothing on the relay's path)."""
        total = 0
        for bridge in self.bridges:
            up = bridge.upstream
            if up is not None and not up.session.closed:
                total += up.session.outstanding
        return total

    @property
    def max_sessions(self) -> int:
        return self.limits.max_sessions

    @property
    def unbound(self) -> int:
        """Connections open that have not sent a bind yet."""
        return len(self._unbound)

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0)."""
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(
        self,
        host: str,
        port: int,
        *,
        reuse_port: bool = False,
        sock: socket.socket | None = None,
    ) -> None:
        """Listen on host:port, or accept on ``sock``: a listening socket a supervisor bound
        and shares with its other workers (gateway.workers)."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            self._server = await loop.create_server(self._accept, sock=sock, ssl=self.ssl_context)
        else:
            # reuse_port (server.reuse_port): several gateway processes share one listening
            # port; only when asked, or a second instance would silently take half the
            # connections.
            self._server = await loop.create_server(
                self._accept, host, port, ssl=self.ssl_context, reuse_port=reuse_port, backlog=1024
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
            admit=self._admit,
            binds=self,
        )
        return bridge.client

    # --- failed binds and the SMSC's bind rate (gateway.proxy.binds) -------------------------

    def verdict(self, bridge: Bridge) -> Verdict:
        address, account = self._who(bridge)
        verdict = self.binds.verdict(address, account, time.monotonic())
        if verdict.refuse is not None or verdict.wait_s > 0:
            kind = "refused" if verdict.refuse is not None else "slowed"
            self.metrics.binds_throttled_total.labels(kind).inc()
            self._throttles.emit(
                log.warning,
                (kind, verdict.refuse),
                logs.BIND_THROTTLED,
                conn_id=bridge.conn_id,
                peer=bridge.client.peer,
                system_id=bridge.client_info.system_id,
                wait_s=round(verdict.wait_s, 3),
                reason=verdict.refuse or "failed binds before, or the SMSC's bind rate",
            )
        return verdict

    def result(self, bridge: Bridge, ok: bool) -> None:
        address, account = self._who(bridge)
        if ok:
            self.binds.succeeded(address, account, time.monotonic())
        else:
            self.binds.failed(address, account, time.monotonic())

    def _who(self, bridge: Bridge) -> tuple[str, str]:
        return _address(bridge.client.peer), account_key(
            bridge.client_info.system_id, self.limits.account_match
        )

    def _opened(self, bridge: Bridge) -> None:
        """A connection is up (after its TLS handshake: a failed one never gets here, nor to
        connection_lost, so counting at accept would leak a slot per failure). It is unbound
        until it binds; make room among the unbound if a limit is reached."""
        address = _address(bridge.client.peer)
        self.bridges.add(bridge)
        if self.limits.allow_networks and not _within(address, self.limits.allow_networks):
            self.metrics.connections_total.labels("refused").inc()
            self._refusals.emit(
                log.warning,
                "address not allowed",
                logs.CONNECTION_REFUSED,
                conn_id=bridge.conn_id,
                peer=bridge.client.peer,
                reason="address not allowed (server.allow_networks)",
            )
            bridge.client.close("address not allowed")
            return
        self.metrics.connections_total.labels("accepted").inc()
        log.debug(logs.CONNECTION_ACCEPTED, conn_id=bridge.conn_id, peer=bridge.client.peer)
        at_address = self._unbound_at.setdefault(address, OrderedDict())
        limits = self.limits
        if len(at_address) >= limits.max_unbound_per_address:
            self._evict(next(iter(at_address)), "too many unbound connections from its address")
        if len(self._unbound) >= limits.max_unbound:
            self._evict(next(iter(self._unbound)), "too many unbound connections")
        self._unbound[bridge] = address
        at_address[bridge] = None

    def _evict(self, victim: Bridge, reason: str) -> None:
        self._forget_unbound(victim)
        self.metrics.connections_total.labels("evicted").inc()
        self._evictions.emit(
            log.warning,
            reason,
            logs.CONNECTION_REFUSED,
            conn_id=victim.conn_id,
            peer=victim.client.peer,
            reason=reason,
        )
        victim.client.close(reason)

    def _forget_unbound(self, bridge: Bridge) -> None:
        address = self._unbound.pop(bridge, None)
        if address is None:
            return
        at_address = self._unbound_at.get(address)
        if at_address is not None:
            at_address.pop(bridge, None)
            if not at_address:
                del self._unbound_at[address]

    def _admit(self, bridge: Bridge) -> tuple[int, str] | None:
        """A bind: the connection becomes a session, if the session limits allow it."""
        self._forget_unbound(bridge)
        address = _address(bridge.client.peer)
        account = account_key(bridge.client_info.system_id, self.limits.account_match)
        limits = self.limits
        reason = None
        networks = limits.account_networks.get(account)
        if networks is not None and not _within(address, networks):
            reason = "address not allowed for this account (server.accounts.*.allow_networks)"
        elif limits.system_id_in_certificate and not _certificate_names(bridge, account, limits):
            reason = "the client certificate does not name this system_id"
        elif len(self._sessions) >= limits.max_sessions:
            reason = "max_sessions"
        elif 0 < limits.max_sessions_per_address <= self._per_address[address]:
            reason = "max_sessions_per_address"
        elif 0 < limits.max_sessions_per_account <= self._per_account[account]:
            reason = "max_sessions_per_account"
        if reason is not None:
            self.metrics.connections_total.labels("refused").inc()
            self._refusals.emit(
                log.warning,
                reason,
                logs.CONNECTION_REFUSED,
                conn_id=bridge.conn_id,
                peer=bridge.client.peer,
                reason=reason,
            )
            return CommandStatus.ESME_RBINDFAIL, reason
        self._sessions[bridge] = (address, account)
        self._per_address[address] += 1
        self._per_account[account] += 1
        return None

    def _closed(self, bridge: Bridge) -> None:
        self.bridges.discard(bridge)
        self._forget_unbound(bridge)
        held = self._sessions.pop(bridge, None)
        if held is not None:
            address, account = held
            for counter, key in ((self._per_address, address), (self._per_account, account)):
                counter[key] -= 1
                if counter[key] <= 0:
                    del counter[key]

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
        # Every bridge refuses new requests from this step on, before the first drain task
        # runs: on uvloop, reads ready in this loop turn are handled before new tasks start,
        # and a submit read after gateway_stopping was logged would still go upstream.
        for bridge in bridges:
            bridge.draining = True
        if bridges:
            await asyncio.gather(*(b.drain(grace_s) for b in bridges), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def on_each(self, fn: Callable[[Bridge], None]) -> None:
        for bridge in list(self.bridges):
            fn(bridge)


def _address(peer: str) -> str:
    """The source address of ``host:port`` (IPv6 hosts keep their colons)."""
    host, _, _port = peer.rpartition(":")
    return host or peer


def _within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
            address.strip("[]")
        )
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d
    return any(ip in network for network in networks)


def _certificate_names(bridge: Bridge, account: str, limits: ConnectionLimits) -> bool:
    """Whether the client's (verified) certificate names ``account``: its subject CN or a DNS
    name of its subjectAltName, compared as system_ids are."""
    transport = bridge.client.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return False
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    return any(account_key(name, limits.account_match) == account for name in names)
