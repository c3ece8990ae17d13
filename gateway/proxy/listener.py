"""The client listener: accepts connections, owns the bridges, drains them on shutdown.

Behind an L4 balancer (``server.proxy_protocol``) each connection first goes to a
``HeaderReader``, which reads the PROXY protocol header and then hands the transport to the
bridge's client connection, whose peer is from then on the client the header names: limits,
networks, the bind guard and the logs all see that address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import cast

from gateway.config import Network
from gateway.consent.campaign import AccountMatch, account_key
from gateway.proxy.binds import BindGuard, Verdict
from gateway.proxy.bridge import Bridge
from gateway.proxy.connection import SmppConnection
from gateway.proxy.hooks import Interceptor
from gateway.proxy.upstream import ProxySettings
from gateway.proxyproto.header import ProxyHeader, ProxyHeaderError, parse
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
    # server.proxy_protocol: connections come from the balancers of proxy_networks only, and
    # each starts with a PROXY header within proxy_header_timeout_s. Until it is in, a
    # connection counts against max_unbound (the address it is counted per comes with it).
    proxy_protocol: bool = False
    proxy_networks: tuple[Network, ...] = ()
    proxy_header_timeout_s: float = 5.0


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
        if ssl_context is not None and limits is not None and limits.proxy_protocol:
            # The header precedes the handshake; config refuses server.tls with it too.
            raise ValueError("the PROXY protocol cannot be read on a TLS listener")
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
        # Connections whose PROXY header is not in yet (also in _unbound, with no address).
        self._readers: dict[Bridge, HeaderReader] = {}
        self._header_failures = logs.Summary(interval_s=10.0, burst=5)
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

    def _accept(self) -> asyncio.Protocol:
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
        if self.limits.proxy_protocol:
            return HeaderReader(self, bridge)
        return bridge.client

    # --- the PROXY protocol header (server.proxy_protocol) ----------------------------------

    def _header_expected(self, reader: HeaderReader) -> None:
        """A connection is up and its header not read yet: only a balancer may send one, and
        it counts against max_unbound from now on."""
        limits = self.limits
        bridge = reader.bridge
        if not _within(_address(reader.balancer), limits.proxy_networks):
            self.metrics.connections_total.labels("refused").inc()
            self._header_failed(reader, "untrusted", "not from server.proxy_networks")
            return
        if len(self._unbound) >= limits.max_unbound:
            self._evict(next(iter(self._unbound)), "too many unbound connections")
        self._unbound[bridge] = ""  # its address is the header's, once read
        self._readers[bridge] = reader
        reader.timer = bridge.loop.call_later(
            limits.proxy_header_timeout_s, self._header_late, reader
        )

    def _header_late(self, reader: HeaderReader) -> None:
        reader.timer = None
        if self._readers.get(reader.bridge) is reader:
            timeout = self.limits.proxy_header_timeout_s
            self._header_failed(
                reader, "timeout", f"no PROXY header within {timeout:g} s (proxy_header_timeout_s)"
            )

    def _header_failed(self, reader: HeaderReader, outcome: str, reason: str) -> None:
        self._header_gone(reader)
        self.metrics.proxy_headers_total.labels(outcome).inc()
        self._header_failures.emit(
            log.warning,
            (outcome, reason),
            logs.PROXY_HEADER_FAILED,
            conn_id=reader.bridge.conn_id,
            peer=reader.balancer,
            outcome=outcome,
            reason=reason,
        )
        reader.close()

    def _header_gone(self, reader: HeaderReader, *, still_unbound: bool = False) -> None:
        """The reader is done: its header refused or its connection lost, or (``still_unbound``)
        its header read, the connection keeping its place among the unbound."""
        if reader.timer is not None:
            reader.timer.cancel()
            reader.timer = None
        if self._readers.get(reader.bridge) is reader:
            del self._readers[reader.bridge]
            if not still_unbound:
                self._forget_unbound(reader.bridge)

    def _header_read(self, reader: HeaderReader, header: ProxyHeader, rest: bytes) -> None:
        """Hand the transport to the client connection, as if accepted with the header's
        source as its peer (LOCAL / UNKNOWN: the connection's own). From here on its reads
        go straight to the session, as for any connection."""
        self._header_gone(reader, still_unbound=True)
        bridge = reader.bridge
        conn = bridge.client
        transport = reader.transport
        assert transport is not None
        self.metrics.proxy_headers_total.labels("local" if header.local else "read").inc()
        if header.source is not None:
            conn.peer = f"{header.source.host}:{header.source.port}"
        transport.set_protocol(conn)
        conn.connection_made(transport)
        if rest and conn.is_open:
            conn.data_received(rest)

    def _header_lost(self, reader: HeaderReader) -> None:
        self._header_gone(reader)

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
        log.debug(
            logs.CONNECTION_ACCEPTED,
            conn_id=bridge.conn_id,
            peer=bridge.client.peer,
            **({"via": _own_peer(bridge.client)} if self.limits.proxy_protocol else {}),
        )
        at_address = self._unbound_at.setdefault(address, OrderedDict())
        limits = self.limits
        if len(at_address) >= limits.max_unbound_per_address:
            self._evict(next(iter(at_address)), "too many unbound connections from its address")
        # Behind a balancer it was counted against max_unbound at accept already.
        if bridge not in self._unbound and len(self._unbound) >= limits.max_unbound:
            self._evict(next(iter(self._unbound)), "too many unbound connections")
        self._unbound[bridge] = address
        at_address[bridge] = None

    def _evict(self, victim: Bridge, reason: str) -> None:
        reader = self._readers.get(victim)
        if reader is not None:
            self._header_gone(reader)
        self._forget_unbound(victim)
        self.metrics.connections_total.labels("evicted").inc()
        self._evictions.emit(
            log.warning,
            reason,
            logs.CONNECTION_REFUSED,
            conn_id=victim.conn_id,
            peer=victim.client.peer if reader is None else reader.balancer,
            reason=reason,
        )
        if reader is not None:
            reader.close()  # still waiting for its header: no session to close
        else:
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
        for reader in list(self._readers.values()):
            self._header_gone(reader)
            reader.close()  # no session yet: nothing to drain
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


class HeaderReader(asyncio.Protocol):
    """A connection's protocol until its PROXY header is in (server.proxy_protocol).

    It buffers what arrives (the parser looks at one header's worth at most, and refuses a
    longer one) and has the listener hand the transport over once the header parses; the
    octets after the header go to the session as its first read."""

    def __init__(self, listener: Listener, bridge: Bridge) -> None:
        self.listener = listener
        self.bridge = bridge
        self.transport: asyncio.Transport | None = None
        self.balancer = ""  # the connection's own peer: the balancer, or whoever connected
        self.timer: asyncio.TimerHandle | None = None
        self._buffer = bytearray()
        self._done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but implement its interface.
        self.transport = cast(asyncio.Transport, transport)
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.balancer = f"{peername[0]}:{peername[1]}"
        self.listener._header_expected(self)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        try:
            header = parse(self._buffer)
        except ProxyHeaderError as exc:
            self.listener._header_failed(self, "invalid", str(exc))
            return
        if header is None:
            return
        self._done = True
        rest = bytes(self._buffer[header.consumed :])
        self._buffer.clear()
        self.listener._header_read(self, header, rest)

    def eof_received(self) -> bool | None:
        return None  # closed before (or without) its header: nothing to answer

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done:
            self._done = True
            self.listener._header_lost(self)

    def close(self) -> None:
        self._done = True
        if self.transport is not None:
            self.transport.close()


def _own_peer(conn: SmppConnection) -> str:
    """The connection's own peer address (the balancer's, behind one)."""
    transport = conn.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, tuple) and len(peername) >= 2:
        return f"{peername[0]}:{peername[1]}"
    return ""


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
