"""The gateway's own transmitter bind to the SMSC (``[upstream.service_bind]``).

Auto-replies normally go over a transmit-capable session of the client account the MO came in on.
An account that binds only as a receiver (or is not bound when its STOP arrives) has none, so the
operator may give the gateway credentials of its own: this link keeps one bind_transmitter open,
reconnecting with capped exponential backoff, and carries those replies. Their responses are
consumed here.
"""

from __future__ import annotations

import asyncio
import contextlib

from gateway.config import ServiceBindConfig
from gateway.proxy.connection import SmppConnection
from gateway.proxy.hooks import ResponseCallback
from gateway.proxy.upstream import Dialler, ProxySettings, bind_status
from gateway.smpp import events as ev
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandStatus, status_name
from gateway.smpp.errors import LocalProtocolError
from gateway.smpp.state import BindState
from gateway.telemetry import logs

log = logs.get_logger(component="service-bind")

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0


class ServiceLink:
    def __init__(self, *, settings: ProxySettings, bind: ServiceBindConfig) -> None:
        self.settings = settings
        self.bind = bind
        # Read once, at start (ConfigError naming the key when it cannot be).
        self._password = bind.password.read()
        self._conn: SmppConnection | None = None
        self._bound = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._bound_once = False  # a link that bound before retries quickly after a drop

    @property
    def bound(self) -> bool:
        conn = self._conn
        return conn is not None and conn.session.state is BindState.BOUND_TX

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="service-bind")

    async def wait_bound(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._bound.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def send(self, pdu: p.Pdu, on_response: ResponseCallback) -> bool:
        """Send one request of the gateway's own; False when the link is not bound."""
        conn = self._conn
        if conn is None or not self.bound:
            return False
        try:
            conn.session.send_request(pdu, conn.loop.time(), _Reply(on_response))
        except LocalProtocolError:
            return False
        conn.flush()
        return True

    async def stop(self) -> None:
        self._stopping = True
        conn = self._conn
        if conn is not None and not conn.session.closed:
            if self.bound:
                conn.session.start_unbind(conn.loop.time())
                conn.flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(conn.lost), self.settings.upstream_session.unbind_timeout_s
                    )
            conn.abort()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        backoff = BACKOFF_START_S
        dialler = Dialler(self.settings, asyncio.get_running_loop())
        while not self._stopping:
            conn = await dialler.connect(self, leg="service", log=log)
            if conn is not None:
                self._conn = conn
                dialler.bind(
                    conn,
                    p.BindTransmitter(
                        system_id=self.bind.system_id,
                        password=self._password,
                        system_type=self.bind.system_type,
                    ),
                    _BIND,
                )
                await conn.lost
                self._bound.clear()
                if self._bound_once:
                    backoff = BACKOFF_START_S
                    self._bound_once = False
            if self._stopping:
                return
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    # --- ConnectionHandler ------------------------------------------------------------------

    def handle_events(self, conn: SmppConnection, events: list[ev.Event]) -> None:
        for event in events:
            if isinstance(event, ev.ResponseReceived):
                if event.context is _BIND:
                    self._bind_response(conn, bind_status(event.pdu))
                elif isinstance(event.context, _Reply):
                    event.context.callback(event.pdu, event.frame)
            elif isinstance(event, ev.RequestExpired):
                if isinstance(event.context, _Reply):
                    event.context.callback(None, None)
                elif event.context is _BIND:
                    conn.close("bind timed out")
            elif isinstance(event, ev.UnbindReceived | ev.SessionClosed):
                self._bound.clear()

    def _bind_response(self, conn: SmppConnection, status: int) -> None:
        if status == CommandStatus.ESME_ROK:
            self._bound_once = True
            self._bound.set()
            log.info(logs.BIND_COMPLETED, system_id=self.bind.system_id)
            return
        log.warning(
            logs.BIND_FAILED,
            system_id=self.bind.system_id,
            command_status=status_name(status),
            reason="upstream",
        )
        conn.close("bind rejected")

    def connection_lost(self, conn: SmppConnection, exc: Exception | None) -> None:
        for _seq, _cid, ctx in conn.session.abandon_outstanding():
            if isinstance(ctx, _Reply):
                ctx.callback(None, None)
        log.info(logs.SESSION_CLOSED, leg="service", reason=conn.session.close_reason)

    def writing_paused(self, conn: SmppConnection, paused: bool) -> None:
        return None


class _Reply:
    __slots__ = ("callback",)

    def __init__(self, callback: ResponseCallback) -> None:
        self.callback = callback


_BIND = object()
