"""asyncio adapter around a sans-I/O ``Session``: one per TCP connection, either leg.

It feeds whatever a read returns to the session (one read usually carries many PDUs), hands the
resulting events to its handler in one batch, writes everything the session queued in one write,
and keeps exactly one timer armed for the session's earliest deadline. Back-pressure is explicit:
the handler pauses reading on this connection when the other leg cannot take more, and is told when
the kernel's send buffer towards this peer is full.
"""

from __future__ import annotations

import asyncio
import math
import socket
from collections.abc import Callable
from typing import Protocol, cast

from gateway.smpp.events import Event
from gateway.smpp.session import Session
from gateway.telemetry import logs

log = logs.get_logger()


class ConnectionHandler(Protocol):
    """What a connection reports to: the bridge (proxy) or the simulator."""

    def handle_events(self, conn: SmppConnection, events: list[Event]) -> None: ...

    def connection_lost(self, conn: SmppConnection, exc: Exception | None) -> None: ...

    def writing_paused(self, conn: SmppConnection, paused: bool) -> None: ...


class SmppConnection(asyncio.Protocol):
    def __init__(
        self,
        session: Session,
        *,
        leg: str,
        loop: asyncio.AbstractEventLoop,
        handler: ConnectionHandler | None = None,
        on_connected: Callable[[SmppConnection], None] | None = None,
        stall_timeout_s: float | None = None,
        partial_timeout_s: float | None = None,
    ) -> None:
        self.session = session
        # A PDU must be complete this long after its first octets came (a peer that trickles
        # an octet now and then would otherwise keep a connection for ever).
        self.partial_timeout_s = partial_timeout_s
        self._partial: asyncio.TimerHandle | None = None
        # A peer that reads nothing for this long while we have bytes for it is dropped.
        self.stall_timeout_s = stall_timeout_s
        self._stall: asyncio.TimerHandle | None = None
        # Called once the transport is up (after the TLS handshake, where there is one).
        self.on_connected = on_connected
        self.leg = leg
        self.loop = loop
        self.handler = handler
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.lost: asyncio.Future[None] = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self._pause_reasons: set[str] = set()
        self.write_paused = False

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but implement its interface.
        self.transport = cast(asyncio.Transport, transport)
        sock = self.transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # SMPP is request/response: Nagle would add up to 40 ms per round trip.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peername = self.transport.get_extra_info("peername")
        # A peer already set is the client a PROXY protocol header named (the listener's).
        if not self.peer and isinstance(peername, tuple) and len(peername) >= 2:
            self.peer = f"{peername[0]}:{peername[1]}"
        if self._pause_reasons:
            self.transport.pause_reading()
        if self.on_connected is not None:
            self.on_connected(self)
        self.flush()

    def data_received(self, data: bytes) -> None:
        before = self.session.partial_bytes
        events = self.session.receive_data(data, self.loop.time())
        if events and self.handler is not None:
            self.handler.handle_events(self, events)
        if self.partial_timeout_s is not None:
            self._watch_partial(before + len(data))
        self.flush()

    def _watch_partial(self, unconsumed: int) -> None:
        """(Re)start the incomplete-PDU deadline when a PDU starts; keep it while the same
        one is still incomplete (nothing completed since: all octets still buffered)."""
        partial = self.session.partial_bytes
        progressed = partial < unconsumed  # a PDU completed in this read
        if self._partial is not None and (progressed or partial == 0):
            self._partial.cancel()
            self._partial = None
        if partial and self._partial is None:
            self._partial = self.loop.call_later(self.partial_timeout_s or 0.0, self._incomplete)

    def _incomplete(self) -> None:
        self._partial = None
        if self.session.partial_bytes == 0 or self.session.closed:
            return
        log.warning(
            logs.FRAMING_FAILED, leg=self.leg, peer=self.peer,
            reason=f"a PDU still incomplete after {self.partial_timeout_s:g} s",
            partial_bytes=self.session.partial_bytes,
        )  # fmt: skip
        self.close(f"incomplete PDU for {self.partial_timeout_s:g} s")

    def eof_received(self) -> bool | None:
        # The peer half-closed (aiosmpplib does after unbind): nothing more will come.
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._partial is not None:
            self._partial.cancel()
            self._partial = None
        if not self.session.closed:
            self.session.close("connection lost")
        if not self.lost.done():
            self.lost.set_result(None)
        if self.handler is not None:
            self.handler.connection_lost(self, exc)

    def pause_writing(self) -> None:
        """The peer stopped reading (our send buffer to it passed its high-water mark).

        What fills that buffer is mostly our answers to its own requests, so stop reading its
        requests too: its memory cost stays at the buffer's high-water mark plus one read's
        answers. If it reads nothing for ``stall_timeout_s``, it is dropped (its requests and
        ours are then failed like those of any lost connection)."""
        self.write_paused = True
        self.pause_reading("peer-not-reading")
        if self.stall_timeout_s is not None and self._stall is None:
            self._stall = self.loop.call_later(self.stall_timeout_s, self._stalled)
        if self.handler is not None:
            self.handler.writing_paused(self, True)

    def resume_writing(self) -> None:
        self.write_paused = False
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        self.resume_reading("peer-not-reading")
        if self.handler is not None:
            self.handler.writing_paused(self, False)

    def _stalled(self) -> None:
        self._stall = None
        buffered = self.transport.get_write_buffer_size() if self.transport is not None else 0
        log.warning(
            logs.SESSION_STALLED, leg=self.leg, peer=self.peer, buffered=buffered,
            stalled_s=self.stall_timeout_s,
        )  # fmt: skip
        if not self.session.closed:
            self.session.close(f"peer read nothing for {self.stall_timeout_s:g} s")
        if self.transport is not None:
            self.transport.abort()  # a graceful close would wait for it to read

    # --- used by handlers --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def flush(self) -> None:
        """Write what the session queued (one write per batch), re-arm the timer, close if done."""
        session = self.session
        out = session.data_to_send()
        transport = self.transport
        if transport is None:
            return
        if out and not transport.is_closing():
            transport.write(out)
        if session.closed:
            if not transport.is_closing():
                transport.close()  # after the write above: close() flushes the buffer first
            return
        # Called several times per batch (both legs, deferred flushes): the common case, a
        # deadline no earlier than the armed one, stays inline.
        deadline = session.get_timer()
        if deadline is not None and deadline < self._timer_at:
            self._arm_timer(deadline)

    def pause_reading(self, reason: str) -> None:
        if not self._pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and self.transport is not None and self.is_open:
            self.transport.resume_reading()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self, reason: str) -> None:
        """End the session now (no unbind) and close once queued bytes are written."""
        if not self.session.closed:
            self.session.close(reason)
        self.flush()

    # --- timers -------------------------------------------------------------------------------

    def _arm_timer(self, deadline: float) -> None:
        # Deadlines mostly move later as traffic flows, so a timer that fires early and finds
        # nothing due is cheaper than cancelling and re-creating one per batch: flush() only
        # comes here for a deadline earlier than the armed one.
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = math.inf
        events = self.session.handle_timer(self.loop.time())
        if events and self.handler is not None:
            self.handler.handle_events(self, events)
        self.flush()
