"""One client leg and its mirrored upstream leg: the relay at the heart of the proxy.

Each leg is its own SMPP session with its own sequence numbers. A request relayed from one leg to
the other carries, as its window context, where it came from: the client's sequence number
itself (a plain int, the common case: no object per MT), ``_FromClient`` when the response is
rewritten or answers a bind, or ``_FromUpstream``; the response is matched by the receiving
leg's window and sent back with the original sequence number patched in (``with_sequence``):
the PDU itself is never re-encoded. Requests the gateway originates carry ``_Own`` and their
responses are consumed. The loop's time is read once per read batch.

Status codes the gateway chooses itself, and why:
- upstream unreachable / bind timed out -> the client's bind gets ESME_RSYSERR (temporary);
- an MT whose upstream response never came, or whose upstream leg died -> ESME_RSYSERR, which
  clients re-queue (the outcome is unknown; a duplicate beats a loss);
- an MO the client never answered, or one arriving while draining -> ESME_RX_T_APPN to the SMSC,
  a temporary error, so the SMSC delivers it again later;
- an MT arriving while the gateway drains for shutdown -> ESME_RTHROTTLED (clients retry it).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from bisect import bisect_left
from collections.abc import Callable, Coroutine
from functools import lru_cache
from typing import Any, Protocol

from gateway.proxy.binds import Verdict
from gateway.proxy.connection import SmppConnection
from gateway.proxy.hooks import ClientInfo, Interceptor, MoRequest, MtRequest, ResponseCallback
from gateway.proxy.upstream import Dialler, ProxySettings, bind_status
from gateway.smpp import events as ev
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode, error_response
from gateway.smpp.constants import (
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
    command_name,
    status_name,
)
from gateway.smpp.errors import LocalProtocolError
from gateway.smpp.session import Role, Session
from gateway.smpp.state import BOUND_STATES, BindState
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

log = logs.get_logger()

MT_COMMANDS = frozenset({CommandId.SUBMIT_SM, CommandId.SUBMIT_MULTI, CommandId.DATA_SM})
MO_COMMANDS = frozenset({CommandId.DELIVER_SM, CommandId.DATA_SM})
BIND_TYPES = {
    CommandId.BIND_TRANSMITTER: "transmitter",
    CommandId.BIND_RECEIVER: "receiver",
    CommandId.BIND_TRANSCEIVER: "transceiver",
}

__all__ = ["BIND_TYPES", "MO_COMMANDS", "MT_COMMANDS", "BindPolicy", "Bridge", "ProxySettings"]

_conn_ids = itertools.count(1)
# How long before the client leg's bind deadline a bind still in progress upstream is answered.
_BIND_ANSWER_MARGIN_S = 0.05
# Metric label for a command id: spec names, and the hex of the (bounded) vendor range.
_command_label = lru_cache(maxsize=1024)(command_name)
# smppgw_pdus_total is counted under command_id + one of these (an int key: no tuple per PDU).
_CLIENT_IN, _CLIENT_OUT, _UPSTREAM_IN, _UPSTREAM_OUT = (n << 32 for n in range(4))
_LEGS = (("client", "in"), ("client", "out"), ("upstream", "in"), ("upstream", "out"))
_U32_AT_4 = struct.Struct(">I").unpack_from


def pdu_labels(key: object) -> tuple[str, str, str]:
    """The (leg, direction, command) labels of a smppgw_pdus_total key."""
    assert isinstance(key, int)
    leg, direction = _LEGS[key >> 32]
    return leg, direction, _command_label(key & 0xFFFFFFFF)


def command_labels(key: object) -> tuple[str]:
    assert isinstance(key, int)
    return (_command_label(key),)


def _command_id(pdu_or_frame: p.Pdu | bytes) -> int:
    if isinstance(pdu_or_frame, bytes):
        return int(_U32_AT_4(pdu_or_frame, 4)[0])
    return pdu_or_frame.command_id


class BindPolicy(Protocol):
    """Failed-bind throttling and the SMSC's bind rate (the listener's)."""

    def verdict(self, bridge: Bridge) -> Verdict:
        """Before the bind goes upstream: refuse it, or how long it waits first."""
        ...

    def result(self, bridge: Bridge, ok: bool) -> None:
        """The SMSC answered the bind."""
        ...


class _Relayed:
    """Window context of a relayed request: where its response must go back to."""

    __slots__ = ("command_id", "sequence_number")

    def __init__(self, command_id: int, sequence_number: int) -> None:
        self.command_id = command_id
        self.sequence_number = sequence_number


class _FromClient(_Relayed):
    __slots__ = ("transform",)

    def __init__(
        self,
        command_id: int,
        sequence_number: int,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        super().__init__(command_id, sequence_number)
        # Rewrites the SMSC's response before the client gets it (submit_multi: add the
        # destinations the gateway refused to unsuccess_sme).
        self.transform = transform


class _BindFromClient(_FromClient):
    __slots__ = ()


class _FromUpstream(_Relayed):
    __slots__ = ()


class _Own:
    __slots__ = ("callback",)

    def __init__(self, callback: ResponseCallback) -> None:
        self.callback = callback


class Bridge:
    """Handler for both legs' connections; created per accepted client connection."""

    def __init__(
        self,
        *,
        settings: ProxySettings,
        interceptor: Interceptor,
        metrics: Metrics,
        loop: asyncio.AbstractEventLoop,
        on_closed: Callable[[Bridge], None] | None = None,
        on_connected: Callable[[Bridge], None] | None = None,
        refuse_bind_status: int | None = None,
        admit: Callable[[Bridge], tuple[int, str] | None] | None = None,
        binds: BindPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.interceptor = interceptor
        self.metrics = metrics
        self.loop = loop
        self.conn_id = f"c{next(_conn_ids)}"
        self._dialler = Dialler(settings, loop)
        self.client = SmppConnection(
            Session(Role.SMSC, settings.client_session, loop.time()),
            leg="client",
            loop=loop,
            handler=self,
            on_connected=None if on_connected is None else lambda _conn: on_connected(self),
            stall_timeout_s=settings.stall_timeout_s,
            partial_timeout_s=settings.partial_pdu_timeout_s,
        )
        self.upstream: SmppConnection | None = None
        self.client_info = ClientInfo(
            conn_id=self.conn_id, system_id="", system_type="", bind_type="", peer=""
        )
        self.draining = False
        self.closed = False
        self.bound = False
        self._on_closed = on_closed
        self._refuse_bind_status = refuse_bind_status
        # Asked at a bind (the listener's limits): None, or (the status to refuse with, why).
        self._admit = admit
        self._binds = binds
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connecting: asyncio.Task[None] | None = None
        self._bind_guard: asyncio.TimerHandle | None = None
        self._flush_scheduled = False
        self._in_batch = False
        # The loop's time, read once per read batch: every request and response of the batch
        # is stamped with it (None outside a batch: then the loop is asked).
        self._batch_now: float | None = None
        self._idle = asyncio.Event()
        self._done = asyncio.Event()
        self._log = log.bind(conn_id=self.conn_id)
        # The hot-path metrics are updated in place (see gateway.telemetry.metrics.Tally).
        metrics.pdus_total.labels_of = pdu_labels
        metrics.relay_latency.labels_of = command_labels
        self._pdus = metrics.pdus_total.counts
        self._latency = metrics.relay_latency
        # Client requests not yet answered: sequence_number -> (command_id, when it came), for
        # smppgw_relay_latency_seconds. A peer reusing a number keeps the earlier arrival.
        self._arrived: dict[int, tuple[int, float]] = {}

    @property
    def client_gone(self) -> bool:
        """The client connection is closing or closed: nothing more reaches it."""
        return self.closed or not self.client.is_open

    def refuse_binds(self, status: int) -> None:
        """Answer any bind on this connection with ``status`` and close (over max_sessions)."""
        self._refuse_bind_status = status

    # --- ConnectionHandler ------------------------------------------------------------------

    def handle_events(self, conn: SmppConnection, events: list[ev.Event]) -> None:
        # Hooks settled inside this batch need no deferred flush: the batch's own flush below
        # writes what they queued, one write per leg.
        self._in_batch = True
        now = self._batch_now = self.loop.time()
        try:
            counts = self._pdus
            if conn is self.client:
                arrived = self._arrived
                for event in events:
                    if isinstance(event, ev.RequestReceived):
                        pdu = event.pdu
                        cid = pdu.command_id
                        counts[cid] = counts.get(cid, 0) + 1  # _CLIENT_IN is 0
                        if pdu.sequence_number not in arrived:
                            arrived[pdu.sequence_number] = (cid, now)
                        self._client_request(event)
                    elif isinstance(event, ev.ResponseReceived):
                        # Named after the request it answers (a generic_nack too): reading the
                        # frame's own id would cost more than the rest of the counting.
                        key = _CLIENT_IN + (event.request_command_id | RESPONSE_BIT)
                        counts[key] = counts.get(key, 0) + 1
                        self._response(event)
                    else:
                        self._leg_event(conn, event)
            else:
                for event in events:
                    if isinstance(event, ev.RequestReceived):
                        key = _UPSTREAM_IN + event.pdu.command_id
                        counts[key] = counts.get(key, 0) + 1
                        self._upstream_request(event)
                    elif isinstance(event, ev.ResponseReceived):
                        key = _UPSTREAM_IN + (event.request_command_id | RESPONSE_BIT)
                        counts[key] = counts.get(key, 0) + 1
                        self._response(event)
                    else:
                        self._leg_event(conn, event)
        finally:
            self._in_batch = False
            self._batch_now = None
        self._flush_both()
        self._update_backpressure()
        if self.draining:
            self._check_idle()

    def _count_sent(self, leg_out: int, command_id: int) -> None:
        key = leg_out + command_id
        counts = self._pdus
        counts[key] = counts.get(key, 0) + 1

    def connection_lost(self, conn: SmppConnection, exc: Exception | None) -> None:
        if conn is not self.client and conn is not self.upstream:
            return  # an upstream leg already replaced or given up (a rejected bind)
        if conn is self.client:
            self._log.info(
                logs.SESSION_CLOSED, leg="client", reason=self.client.session.close_reason
            )
            self._end_upstream("client closed")
        else:
            self._log.info(logs.SESSION_CLOSED, leg="upstream", reason=conn.session.close_reason)
            self._upstream_ended(conn, "upstream closed")
        self._maybe_finished()

    def writing_paused(self, conn: SmppConnection, paused: bool) -> None:
        # The peer of `conn` stopped reading: stop reading the other leg, which feeds it.
        other = self.upstream if conn is self.client else self.client
        if other is None:
            return
        if paused:
            other.pause_reading("peer-write-buffer")
        else:
            other.resume_reading("peer-write-buffer")

    # --- events of either leg ---------------------------------------------------------------

    def _client_request(self, event: ev.RequestReceived) -> None:
        pdu = event.pdu
        cid = pdu.command_id
        if cid in BIND_TYPES:
            self._client_bind(pdu, event.frame)
        elif cid in MT_COMMANDS:
            if self.draining:
                self.reject_client(cid, pdu.sequence_number, CommandStatus.ESME_RTHROTTLED)
            else:
                self.interceptor.on_mt(MtRequest(self, pdu, event.frame))
        else:
            self._relay_to_upstream(cid, pdu.sequence_number, event.frame)

    def _upstream_request(self, event: ev.RequestReceived) -> None:
        pdu = event.pdu
        cid = pdu.command_id
        if cid in MO_COMMANDS:
            if self.draining:
                self.reject_upstream(cid, pdu.sequence_number, CommandStatus.ESME_RX_T_APPN)
            else:
                self.interceptor.on_mo(MoRequest(self, pdu, event.frame))
        else:
            self._relay_to_client(cid, pdu.sequence_number, event.frame)

    def _response(self, event: ev.ResponseReceived) -> None:
        """A response on either leg: its request's context says where it goes. (Each context
        lives in the window of one leg only, so one dispatch serves both.)"""
        ctx = event.context
        if type(ctx) is int:  # a client request relayed as it came
            self.respond_client(event.frame, ctx)
        elif isinstance(ctx, _FromClient):
            if isinstance(ctx, _BindFromClient):
                self._upstream_bind_response(event.pdu, event.frame, ctx)
            else:
                frame = event.frame if ctx.transform is None else ctx.transform(event.frame)
                self.respond_client(frame, ctx.sequence_number)
        elif isinstance(ctx, _FromUpstream):
            self._answer_upstream(event.frame, ctx.sequence_number)
        elif isinstance(ctx, _Own):
            ctx.callback(event.pdu, event.frame)

    def _give_up(self, ctx: object, command_id: int) -> None:
        """A request that will get no response now (expired, or its leg ended), ``command_id``
        the id it went under: whoever sent it gets a status it retries (the client RSYSERR,
        the SMSC RX_T_APPN, see above)."""
        if type(ctx) is int:
            self.reject_client(command_id, ctx, CommandStatus.ESME_RSYSERR)
        elif isinstance(ctx, _FromClient):
            self.reject_client(ctx.command_id, ctx.sequence_number, CommandStatus.ESME_RSYSERR)
        elif isinstance(ctx, _FromUpstream):
            self.reject_upstream(ctx.command_id, ctx.sequence_number, CommandStatus.ESME_RX_T_APPN)
        elif isinstance(ctx, _Own):
            ctx.callback(None, None)

    def _leg_event(self, conn: SmppConnection, event: ev.Event) -> None:
        """What is not a request or a response: timeouts, faults, the end of a leg."""
        leg = conn.leg
        if isinstance(event, ev.RequestExpired):
            self.metrics.requests_expired_total.labels(leg).inc()
            self._log.warning(
                logs.REQUEST_EXPIRED,
                leg=leg,
                command_id=command_name(event.command_id),
                sequence_number=event.sequence_number,
            )
            self._give_up(event.context, event.command_id)
            if isinstance(event.context, _BindFromClient):
                self._end_upstream("bind timed out")
        elif isinstance(event, ev.PduRejected | ev.UnexpectedResponse):
            self._log_protocol_fault(leg, event)
        elif conn is self.client:
            if isinstance(event, ev.UnbindReceived):
                # The upstream leg stays bound until the client's session closes: at once when
                # it is owed nothing, else once its requests (some maybe still queued behind the
                # upstream window) are answered, or after unbind_timeout_s. Unbinding upstream
                # now would refuse the queued ones although the client sent them before its
                # unbind.
                self._log.info(logs.UNBIND_RECEIVED, leg=leg)
            elif isinstance(event, ev.SessionClosed):
                # Logged once, in connection_lost, when the socket is really gone.
                self._end_upstream(f"client: {event.reason}")
        elif isinstance(event, ev.UnbindReceived):
            self._log.info(logs.UNBIND_RECEIVED, leg=leg)
            self._upstream_ended(conn, "upstream unbound")
        elif isinstance(event, ev.SessionClosed):
            self._upstream_ended(conn, f"upstream: {event.reason}")

    def _client_bind(self, pdu: p.Pdu, frame: bytes) -> None:
        assert isinstance(pdu, p.BindTransmitter | p.BindReceiver | p.BindTransceiver)
        bind_type = BIND_TYPES[CommandId(pdu.command_id)]
        self.client_info = ClientInfo(
            conn_id=self.conn_id,
            system_id=pdu.system_id,
            system_type=pdu.system_type,
            bind_type=bind_type,
            peer=self.client.peer,
        )
        self._log = log.bind(conn_id=self.conn_id, system_id=pdu.system_id, bind_type=bind_type)
        self._log.info(logs.BIND_REQUESTED, peer=self.client.peer)
        if self._connecting is not None or self.upstream is not None:
            # A second bind while the first is in progress: the session table only knows states.
            self.reject_client(pdu.command_id, pdu.sequence_number, CommandStatus.ESME_RALYBND)
            return
        status = self._refuse_bind_status
        reason = "refused"
        if status is None and self.draining:
            status = CommandStatus.ESME_RBINDFAIL
        if status is None and self._admit is not None:
            refusal = self._admit(self)
            if refusal is not None:
                status, reason = refusal
        wait_s = 0.0
        if status is None and self._binds is not None:
            verdict = self._binds.verdict(self)
            if verdict.refuse is not None:
                status, reason = CommandStatus.ESME_RBINDFAIL, verdict.refuse
            wait_s = verdict.wait_s
        if status is not None:
            self.metrics.binds_total.labels(bind_type, "refused").inc()
            self._log.warning(logs.BIND_FAILED, command_status=status_name(status), reason=reason)
            self.reject_client(pdu.command_id, pdu.sequence_number, status)
            self.client.close("bind refused")
            return
        self._connecting = self.loop.create_task(self._connect_and_bind(pdu, frame, wait_s))
        self._tasks.add(self._connecting)
        self._connecting.add_done_callback(self._tasks.discard)
        # The client leg closes a connection still unbound at its bind deadline, bind in flight
        # or not (its timer started at accept, before the upstream's): answer the bind just
        # before then rather than let the connection die with the bind unanswered.
        deadline = self.client.session.get_timer()
        if self._bind_guard is not None:
            self._bind_guard.cancel()
        if deadline is not None:
            self._bind_guard = self.loop.call_at(
                deadline - _BIND_ANSWER_MARGIN_S,
                self._bind_overdue,
                pdu.command_id,
                pdu.sequence_number,
            )

    def _bind_overdue(self, command_id: int, sequence_number: int) -> None:
        self._bind_guard = None
        up = self.upstream
        pending = self._connecting is not None or (
            up is not None and up.session.state is BindState.OPEN
        )
        if self.bound or not pending:
            return
        self.metrics.binds_total.labels(self.client_info.bind_type, "upstream_down").inc()
        self._log.warning(
            logs.BIND_FAILED,
            command_status=status_name(CommandStatus.ESME_RSYSERR),
            reason="upstream bind not answered in time",
        )
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if up is not None:
            self.upstream = None  # its events and its close are ignored from now on
            up.close("bind not answered in time")
        self.reject_client(command_id, sequence_number, CommandStatus.ESME_RSYSERR)
        self.client.flush()

    async def _connect_and_bind(self, pdu: p.Pdu, frame: bytes, wait_s: float = 0.0) -> None:
        if wait_s > 0:
            # Slowed down (failed binds before, or the SMSC's bind rate): the client's bind
            # deadline still bounds this, see _bind_overdue.
            await asyncio.sleep(wait_s)
        conn = await self._dialler.connect(self, leg="upstream", log=self._log)
        self._connecting = None
        if conn is None:
            self.metrics.binds_total.labels(self.client_info.bind_type, "upstream_down").inc()
            if not self.client.session.closed:
                self.reject_client(pdu.command_id, pdu.sequence_number, CommandStatus.ESME_RSYSERR)
                self._flush_both()
            return
        if self.closed or self.client.session.closed:
            conn.close("client gone")
            return
        self.upstream = conn
        # The client's own bind frame goes up: what the gateway does not change is not re-encoded.
        self._dialler.bind(conn, frame, _BindFromClient(pdu.command_id, pdu.sequence_number))
        self._count_sent(_UPSTREAM_OUT, pdu.command_id)
        self._flush_both()

    def _log_protocol_fault(self, leg: str, event: ev.PduRejected | ev.UnexpectedResponse) -> None:
        """What the session answered or dropped on its own: the operator's view of bad input."""
        if isinstance(event, ev.PduRejected):
            self.metrics.pdus_rejected_total.labels(leg, status_name(event.status)).inc()
            self._log.info(
                logs.PDU_REJECTED,
                leg=leg,
                command_id=command_name(event.command_id),
                sequence_number=event.sequence_number,
                command_status=status_name(event.status),
                reason=event.reason,
            )
        else:
            self._log.info(
                logs.PDU_UNEXPECTED_RESPONSE,
                leg=leg,
                command_id=command_name(event.pdu.command_id),
                sequence_number=event.pdu.sequence_number,
            )

    def _upstream_bind_response(self, pdu: p.Pdu, frame: bytes, ctx: _BindFromClient) -> None:
        status = bind_status(pdu)
        bind_type = self.client_info.bind_type
        if self._bind_guard is not None:
            # Answered: the guard would only hold its handle and arguments until the deadline.
            self._bind_guard.cancel()
            self._bind_guard = None
        if pdu.command_id == CommandId.GENERIC_NACK:
            # The client must get a bind_resp, not the SMSC's generic_nack.
            self.reject_client(ctx.command_id, ctx.sequence_number, status)
        else:
            self.respond_client(frame, ctx.sequence_number)
        if self._binds is not None:
            self._binds.result(self, status == CommandStatus.ESME_ROK)
        if status == CommandStatus.ESME_ROK:
            self.bound = True
            self.metrics.binds_total.labels(bind_type, "ok").inc()
            self.metrics.sessions.labels(bind_type).inc()
            self.metrics.account_sessions.labels(self.client_info.system_id).inc()
            self._log.info(logs.BIND_COMPLETED, peer=self.client.peer)
            self.interceptor.on_bound(self)
        else:
            self.metrics.binds_total.labels(bind_type, "rejected").inc()
            self._log.warning(
                logs.BIND_FAILED, command_status=status_name(status), reason="upstream"
            )
            # The client stays connected and unbound: it may try again with other credentials.
            if self.upstream is not None:
                self.upstream.close("bind rejected")
                self.upstream = None

    # --- relaying (also used by hooks) ------------------------------------------------------

    def forward_mt(
        self,
        request: MtRequest,
        frame: bytes,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self._relay_to_upstream(request.pdu.command_id, request.sequence_number, frame, transform)
        if not self._in_batch:
            self._flush_soon()

    def forward_mo(self, request: MoRequest, frame: bytes) -> None:
        self._relay_to_client(request.pdu.command_id, request.sequence_number, frame)
        if not self._in_batch:
            self._flush_soon()

    def _relay(self, conn: SmppConnection | None, frame: bytes, ctx: object, key: int) -> bool:
        """Send a request of one leg's peer to the other leg's, under that leg's next sequence
        number, counted under ``key``; False when that leg cannot carry it now."""
        if conn is None:
            return False
        session = conn.session
        if session.closed:
            return False
        now = self._batch_now
        try:
            session.send_request(frame, self.loop.time() if now is None else now, ctx)
        except LocalProtocolError:
            return False
        counts = self._pdus
        counts[key] = counts.get(key, 0) + 1
        return True

    def _relay_to_upstream(
        self,
        command_id: int,
        sequence_number: int,
        frame: bytes,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        ctx = (
            sequence_number
            if transform is None
            else _FromClient(command_id, sequence_number, transform)
        )
        if not self._relay(self.upstream, frame, ctx, _UPSTREAM_OUT + command_id):
            # No upstream leg, or it is unbinding (the client went away, the SMSC unbound,
            # shutdown) while a hook was still deciding this request: a status clients retry.
            self.reject_client(command_id, sequence_number, CommandStatus.ESME_RSYSERR)

    def _relay_to_client(self, command_id: int, sequence_number: int, frame: bytes) -> None:
        ctx = _FromUpstream(command_id, sequence_number)
        if not self._relay(self.client, frame, ctx, _CLIENT_OUT + command_id):
            # The client's bind type does not take this PDU (e.g. deliver_sm to a transmitter),
            # or the client is unbinding or gone: then the SMSC must deliver it again later.
            status = (
                CommandStatus.ESME_RINVBNDSTS
                if self.client.session.state in BOUND_STATES
                else CommandStatus.ESME_RX_T_APPN
            )
            self.reject_upstream(command_id, sequence_number, status)

    def respond_client(self, response: p.Pdu | bytes, sequence_number: int) -> None:
        frame = response if isinstance(response, bytes) else encode(response)
        session = self.client.session
        arrived = self._arrived.pop(sequence_number, None)
        if not session.closed:
            now = self._batch_now
            if now is None:
                now = self.loop.time()
            session.send_response(frame, now, sequence_number)
            if arrived is not None:
                command_id, at = arrived
                latency = self._latency
                series = latency.all.get(command_id) or latency.series(command_id)
                series[bisect_left(latency.bounds, now - at)] += 1
                series[-1] += now - at
                key = _CLIENT_OUT + (command_id | RESPONSE_BIT)
                counts = self._pdus
                counts[key] = counts.get(key, 0) + 1
            if not self._in_batch:
                self._flush_soon()

    def reject_client(self, command_id: int, sequence_number: int, status: int) -> None:
        self.respond_client(error_response(command_id, sequence_number, status), sequence_number)

    def _answer_upstream(self, frame: bytes, sequence_number: int) -> None:
        up = self.upstream
        if up is not None and not up.session.closed:
            up.session.send_response(frame, self.loop.time(), sequence_number)
            self._count_sent(_UPSTREAM_OUT, _command_id(frame))
            self._flush_soon()

    def respond_upstream(self, response: p.Pdu | bytes, sequence_number: int) -> None:
        frame = response if isinstance(response, bytes) else encode(response)
        self._answer_upstream(frame, sequence_number)

    def reject_upstream(self, command_id: int, sequence_number: int, status: int) -> None:
        self._answer_upstream(error_response(command_id, sequence_number, status), sequence_number)

    def originate_upstream(self, pdu: p.Pdu | bytes, on_response: ResponseCallback) -> bool:
        """Send a request of our own upstream; False if the leg cannot carry it now."""
        return self._originate(self.upstream, pdu, on_response, _UPSTREAM_OUT)

    def originate_to_client(self, pdu: p.Pdu | bytes, on_response: ResponseCallback) -> bool:
        """Send a request of our own to the client (a receipt); False if it cannot take it."""
        return self._originate(self.client, pdu, on_response, _CLIENT_OUT)

    def _originate(
        self,
        conn: SmppConnection | None,
        pdu: p.Pdu | bytes,
        on_response: ResponseCallback,
        leg_out: int,
    ) -> bool:
        if conn is None or conn.session.closed or not self.bound:
            return False
        try:
            conn.session.send_request(pdu, self.loop.time(), _Own(on_response))
        except LocalProtocolError:
            return False
        self._count_sent(leg_out, _command_id(pdu))
        self._flush_soon()
        return True

    def spawn(self, coro: object, on_failure: Callable[[], None] | None = None) -> None:
        """Run a hook's coroutine owned by this bridge; ``on_failure`` runs if it raises."""
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[Any] = self.loop.create_task(
            _guard(coro, self._log, on_failure), name=f"{self.conn_id}-hook"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- flushing and back-pressure ---------------------------------------------------------

    def _flush_both(self) -> None:
        self.client.flush()
        if self.upstream is not None:
            self.upstream.flush()

    def _flush_soon(self) -> None:
        if self._in_batch:
            return
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._deferred_flush)

    def _deferred_flush(self) -> None:
        self._flush_scheduled = False
        self._flush_both()
        self._update_backpressure()
        if self.draining:  # only drain() waits for idleness
            self._check_idle()

    def _update_backpressure(self) -> None:
        up = self.upstream
        if up is not None:
            if up.session.backlog or self.client.session.unanswered > self.settings.max_unanswered:
                self.client.pause_reading("upstream-window")
            else:
                self.client.resume_reading("upstream-window")
            if self.client.session.backlog:
                up.pause_reading("client-window")
            else:
                up.resume_reading("client-window")

    # --- teardown ---------------------------------------------------------------------------

    def _fail_client_requests(self, upstream: SmppConnection) -> None:
        """The upstream leg ended: every client request still in its window gets an answer."""
        for _seq, command_id, ctx in upstream.session.abandon_outstanding():
            self._give_up(ctx, command_id)
        self.client.flush()

    def _upstream_ended(self, upstream: SmppConnection, reason: str) -> None:
        """The upstream leg ended (closed, or the SMSC unbound): the client's requests in its
        window are answered now; those a hook is still deciding (a store lookup, a capped MT's
        reservation) are answered when it decides, with a temporary refusal since no leg
        carries them any more; and only then is the client unbound (within unbind_timeout_s),
        so that the unbind leaves no request unanswered. Shutdown's drain does its own wait."""
        self._fail_client_requests(upstream)
        client = self.client.session
        if self.draining or client.closed or not client.unanswered:
            self._end_client(reason)
            return
        # Draining from now on: new requests get ESME_RTHROTTLED, and idleness is tracked.
        self.draining = True
        self.spawn(self._end_client_once_answered(reason))

    async def _end_client_once_answered(self, reason: str) -> None:
        self._check_idle()
        try:
            await asyncio.wait_for(
                self._idle.wait(), timeout=self.settings.client_session.unbind_timeout_s
            )
        except TimeoutError:
            self._log.warning(
                logs.CLIENT_UNBOUND_UNANSWERED,
                reason=reason,
                unanswered=self.client.session.unanswered,
            )
        self._end_client(reason)
        self._flush_both()

    def _end_upstream(self, reason: str) -> None:
        up = self.upstream
        if up is not None:
            # MOs still waiting for the client's answer: the SMSC must deliver them again.
            for _seq, command_id, ctx in self.client.session.abandon_outstanding():
                self._give_up(ctx, command_id)
            self._unbind_or_close(up, reason)
        elif self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if not self.client.is_open:
            self._maybe_finished()

    def _end_client(self, reason: str) -> None:
        self._unbind_or_close(self.client, reason)

    def _unbind_or_close(self, conn: SmppConnection, reason: str) -> None:
        session = conn.session
        if session.closed:
            conn.flush()
            return
        if session.state in BOUND_STATES:
            # What crosses our unbind on the wire was valid when sent: answer it with a status
            # the peer retries (a client: RTHROTTLED while draining, else RSYSERR; the SMSC:
            # RX_T_APPN, so it delivers the MO again).
            if conn is self.client:
                refusal = (
                    CommandStatus.ESME_RTHROTTLED if self.draining else CommandStatus.ESME_RSYSERR
                )
            else:
                refusal = CommandStatus.ESME_RX_T_APPN
            session.start_unbind(self.loop.time(), refusal)
            conn.flush()
        elif session.state != BindState.UNBOUND:
            conn.close(reason)

    def _maybe_finished(self) -> None:
        client_gone = self.client.lost.done()
        upstream_gone = self.upstream is None or self.upstream.lost.done()
        if client_gone and upstream_gone and self._connecting is None and not self.closed:
            self.closed = True
            if self._bind_guard is not None:
                self._bind_guard.cancel()
                self._bind_guard = None
            if self.bound:
                self.metrics.sessions.labels(self.client_info.bind_type).dec()
                self.metrics.account_sessions.labels(self.client_info.system_id).dec()
                self.bound = False
            self._arrived.clear()
            for task in list(self._tasks):
                task.cancel()
            self.interceptor.on_closed(self)
            self._done.set()
            if self._on_closed is not None:
                self._on_closed(self)

    def _check_idle(self) -> None:
        if self._is_idle():
            self._idle.set()
        else:
            self._idle.clear()

    def _is_idle(self) -> bool:
        up = self.upstream
        busy_up = (
            up is not None
            and not up.session.closed
            and (up.session.outstanding or up.session.unanswered)
        )
        c = self.client.session
        busy_client = not c.closed and (c.outstanding or c.unanswered)
        return not busy_up and not busy_client

    async def drain(self, grace_s: float) -> None:
        """Shutdown: refuse new work, let what is in flight finish (bounded), then unbind both."""
        self.draining = True
        self._check_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        except TimeoutError:
            self._log.warning(logs.GATEWAY_STOPPING, reason="drain timed out", conn_id=self.conn_id)
        # Whatever is still unanswered gets a temporary error rather than silence.
        if self.upstream is not None:
            self._fail_client_requests(self.upstream)
        self._end_upstream("shutdown")
        self._end_client("shutdown")
        self._flush_both()
        try:
            await asyncio.wait_for(
                self.wait_closed(), timeout=self.settings.client_session.unbind_timeout_s + 1
            )
        except TimeoutError:
            self.client.abort()
            if self.upstream is not None:
                self.upstream.abort()

    async def wait_closed(self) -> None:
        await self._done.wait()


async def _guard(
    coro: Coroutine[Any, Any, Any], bound_log: Any, on_failure: Callable[[], None] | None
) -> None:
    # A task boundary: a failing hook must not take the bridge (or the daemon) down silently,
    # nor leave its request unanswered (on_failure answers it with a temporary status).
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001 - logged with the traceback, the bridge goes on
        bound_log.exception(logs.CONNECTION_FAILED, where="hook")
        if on_failure is not None:
            on_failure()
