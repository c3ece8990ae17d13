"""Start-up checks of the listening addresses: one line naming the key, never a traceback.

``check-config`` and ``run`` try each listening address before anything else starts (a socket
bound and closed at once, with the options the daemon uses); ``run`` translates a failure of
the real bind the same way. A port held by another process is refused unless both share it on
purpose (``server.reuse_port``): two gateways on one port would split the traffic between two
consent stores without a word.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

from gateway.config import Address, ConfigError, GatewayConfig


class StartupError(ConfigError):
    """The daemon cannot start with this config on this machine; the message names the key."""

    def __init__(self, message: str, *, in_use: bool = False) -> None:
        super().__init__(message)
        self.in_use = in_use  # the port is taken now: a running daemon's, maybe


@dataclass(frozen=True, slots=True, kw_only=True)
class Listening:
    """One listening socket the daemon opens: which key configures it, and how."""

    key: str  # "server.listen", "admin.listen"
    address: Address
    reuse_port: bool


def listeners(config: GatewayConfig) -> tuple[Listening, ...]:
    server = config.server
    out = [Listening(key="server.listen", address=server.listen, reuse_port=server.reuse_port)]
    if config.admin.listen is not None:
        # The admin API is never shared: its metrics and readiness are one process's.
        out.append(Listening(key="admin.listen", address=config.admin.listen, reuse_port=False))
    if config.optout_link is not None:
        out.append(
            Listening(key="optout_link.listen", address=config.optout_link.listen, reuse_port=False)
        )
    return tuple(out)


def describe(item: Listening, exc: OSError) -> str:
    """The one-line message for a listening address that failed with ``exc``."""
    key, address = item.key, item.address
    if isinstance(exc, socket.gaierror):
        return f"{key}: cannot resolve {address.host!r}: {exc.strerror}"
    if exc.errno == errno.EADDRINUSE:
        if item.reuse_port:
            return (
                f"{key}: {address} is already in use by a process that does not share it "
                "(SO_REUSEPORT must be on in both)"
            )
        share = (
            "; server.reuse_port = true in both shares it on purpose"
            if key == "server.listen"
            else ""
        )
        return f"{key}: {address} is already in use (another gateway running?){share}"
    if exc.errno == errno.EACCES:
        return (
            f"{key}: permission denied listening on {address} (ports below 1024 need root "
            "or CAP_NET_BIND_SERVICE)"
            if address.port < 1024
            else f"{key}: permission denied listening on {address}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{key}: {address.host!r} is not an address of this machine"
    return f"{key}: cannot listen on {address}: {exc.strerror or exc}"


def try_bind(item: Listening) -> None:
    """Bind (and close) a socket on every address ``item`` resolves to, as asyncio's
    create_server does; StartupError naming the key when one fails."""
    host, port = item.address.host, item.address.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        for family, kind, proto, _name, sockaddr in infos:
            with socket.socket(family, kind, proto) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if item.reuse_port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(sockaddr)
    except OSError as exc:
        raise error(item, exc) from None


def bind(item: Listening, count: int, *, backlog: int = 1024) -> list[socket.socket]:
    """``count`` listening sockets on ``item``'s address, each with SO_REUSEPORT, for a
    supervisor to hand one to each worker (gateway.workers); StartupError naming the key when
    they cannot be bound. The address must resolve to one socket address.

    A probe bind without SO_REUSEPORT comes first (bound and closed at once): our own sockets
    share the port with each other, but a port already held by another process, even one that
    sets SO_REUSEPORT, stays an error, unless ``server.reuse_port`` shares it on purpose. Port 0
    binds the first socket on a free port and the others on that one."""
    family, sockaddr = _one_address(item)
    if not item.reuse_port:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                _prepare(probe, family, reuse_port=False)
                probe.bind(sockaddr)
            except OSError as exc:
                raise error(item, exc) from None
    out: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = bind_again(item, family, sockaddr, backlog=backlog)
            out.append(sock)
            sockaddr = sock.getsockname()  # port 0: the port the first one got
    except StartupError:
        for sock in out:
            sock.close()
        raise
    return out


def bind_again(
    item: Listening, family: int, sockaddr: Any, *, backlog: int = 1024
) -> socket.socket:
    """One more SO_REUSEPORT listening socket on ``sockaddr`` (a socket bound by ``bind``
    gives it with ``getsockname``): a restarted worker's; StartupError naming the key."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        _prepare(sock, family, reuse_port=True)
        sock.bind(sockaddr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise error(item, exc) from None
    sock.setblocking(False)
    return sock


def _one_address(item: Listening) -> tuple[int, Any]:
    host, port = item.address.host, item.address.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise error(item, exc) from None
    if len({info[4] for info in infos}) != 1:
        raise StartupError(
            f"{item.key}: {host!r} resolves to {len(infos)} addresses; with server.workers "
            "above 1 give one (an IP address such as 0.0.0.0, :: or 127.0.0.1)"
        )
    return infos[0][0], infos[0][4]


def _prepare(sock: socket.socket, family: int, *, reuse_port: bool) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


def error(item: Listening, exc: OSError) -> StartupError:
    return StartupError(describe(item, exc), in_use=exc.errno == errno.EADDRINUSE)


def check_listeners(config: GatewayConfig) -> None:
    """Every listening address of ``config`` can be bound now; StartupError otherwise."""
    for item in listeners(config):
        try_bind(item)


def resolve_upstream(config: GatewayConfig) -> str | None:
    """Why the SMSC's host name does not resolve now, or None. Not a start-up error: the SMSC
    (and the DNS) may be down while the gateway starts; every bind then fails until it is up."""
    address = config.upstream.address
    try:
        socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"upstream.address: cannot resolve {address.host!r}: {exc.strerror or exc}"
    return None
