"""A plain TCP relay: copies bytes both ways without parsing them; the reference figure.

Whatever the gateway does per message on top of moving bytes shows as the gap between this and
the gateway. Back-pressure is the transport's: when one side's write buffer is full, reading from
the other side pauses.

Run as ``python -m bench.relay --upstream HOST:PORT [--port 0]``: prints ``{"port": N}``, answers
``stats`` on stdin; exits when stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from bench import JsonDict, emit, loop_name, run_loop, serve_control


class RelayStats:
    __slots__ = ("bytes_down", "bytes_up", "connections")

    def __init__(self) -> None:
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0

    def as_dict(self) -> JsonDict:
        return {
            "connections": self.connections,
            "bytes_up": self.bytes_up,
            "bytes_down": self.bytes_down,
            "cpu_s": sum(os.times()[:2]),
        }


class Side(asyncio.Protocol):
    """One side of a relayed connection: holds what it must write until its peer connects,
    closes the peer when it goes, and pauses the peer's reading while its own writes back up.
    Subclasses say what reading does (``data_received``)."""

    def __init__(self, *, upstream: bool) -> None:
        self.upstream = upstream  # True for the side facing the server
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.pending: list[bytes] = []  # for the peer, read before it connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses, so no isinstance.
        self.transport = cast(asyncio.Transport, transport)

    def attach(self, peer: Side) -> None:
        self.peer = peer
        assert peer.transport is not None
        if self.pending:
            peer.transport.write(b"".join(self.pending))
            self.pending.clear()

    def write_peer(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool:
        # SMPP has no use for half-closed connections: returning False closes this side, and
        # connection_lost then closes the peer once its pending writes are flushed.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()

    # Our write buffer is full: stop reading from the peer until it drains.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Half(Side):
    """A side of the byte relay: writes what it reads to its peer, counting the bytes."""

    def __init__(self, stats: RelayStats, upstream: bool) -> None:
        super().__init__(upstream=upstream)
        self.stats = stats
        if not upstream:
            stats.connections += 1

    def data_received(self, data: bytes) -> None:
        if self.upstream:
            self.stats.bytes_down += len(data)
        else:
            self.stats.bytes_up += len(data)
        self.write_peer(data)


async def start_relay(
    host: str, port: int, upstream_host: str, upstream_port: int, stats: RelayStats
) -> asyncio.Server:
    """A listening relay towards ``upstream_host:upstream_port`` (in-process)."""
    return await start_pairs(
        host, port, upstream_host, upstream_port, lambda upstream: _Half(stats, upstream)
    )


async def start_pairs(
    host: str,
    port: int,
    upstream_host: str,
    upstream_port: int,
    side: Callable[[bool], Side],
) -> asyncio.Server:
    """A listener whose every connection gets one to ``upstream_host:upstream_port``, the two
    joined as ``side(False)`` (the client's) and ``side(True)`` (the server's)."""
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()  # strong references while they run

    def accept() -> Side:
        client = side(False)
        task = loop.create_task(connect(client))
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    async def connect(client: Side) -> None:
        try:
            _, server = await loop.create_connection(
                lambda: side(True), upstream_host, upstream_port
            )
        except OSError:
            if client.transport is not None:
                client.transport.close()
            return
        if client.transport is None:  # the client left while we connected
            assert server.transport is not None
            server.transport.close()
            return
        server.attach(client)
        client.attach(server)

    return await loop.create_server(accept, host, port, backlog=1024)


# Starts the listener towards the upstream address; returns it and the stats to report.
Starter = Callable[[str, int, str, int], Awaitable[tuple[asyncio.Server, Callable[[], JsonDict]]]]


async def serve(starter: Starter, host: str, port: int, upstream: tuple[str, int]) -> None:
    srv, stats = await starter(host, port, *upstream)
    emit({"port": srv.sockets[0].getsockname()[1], "pid": os.getpid(), "loop": loop_name()})
    try:
        await serve_control({"stats": stats})
    finally:
        srv.close()


def relay_main(argv: Sequence[str] | None, prog: str, description: str, starter: Starter) -> int:
    """The command line of a relay: ``--upstream HOST:PORT [--host H] [--port 0]``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT")
    args = parser.parse_args(argv)
    up_host, _, up_port = args.upstream.rpartition(":")
    run_loop(serve(starter, args.host, args.port, (up_host, int(up_port))))
    return 0


async def _start(
    host: str, port: int, upstream_host: str, upstream_port: int
) -> tuple[asyncio.Server, Callable[[], JsonDict]]:
    stats = RelayStats()
    return await start_relay(host, port, upstream_host, upstream_port, stats), stats.as_dict


def main(argv: Sequence[str] | None = None) -> int:
    return relay_main(argv, "python -m bench.relay", __doc__ or "", _start)


if __name__ == "__main__":
    raise SystemExit(main())
