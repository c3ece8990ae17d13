"""Dialling the SMSC: the one place that opens an upstream leg and binds it.

Both upstream legs go through here: the mirrored leg of a client (``Bridge``: one attempt per
client bind, whose answer the client gets) and the gateway's own service bind (``ServiceLink``:
reconnects with capped exponential backoff). What differs between them is what they do when
the attempt fails, and that stays with them.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Any

from gateway.proxy.connection import ConnectionHandler, SmppConnection
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandId, CommandStatus
from gateway.smpp.session import Role, Session, SessionConfig
from gateway.telemetry import logs


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxySettings:
    """The relay's settings: the SMSC to dial, and both legs' session settings and limits.

    No defaults here: the composition root fills every field from the configuration, whose
    defaults are the only ones (``gateway.config``, ``SessionConfig``).
    """

    upstream_host: str
    upstream_port: int
    upstream_ssl: ssl.SSLContext | None  # None: plain TCP
    upstream_server_hostname: str | None  # the name the SMSC's certificate must carry
    connect_timeout_s: float
    client_session: SessionConfig
    upstream_session: SessionConfig
    # Inbound requests a client may leave unanswered before we stop reading it: a client must
    # not make the gateway hold an unbounded number of its requests.
    max_unanswered: int
    # A peer (either leg) that reads nothing we send for this long is dropped; None: never.
    stall_timeout_s: float | None
    # A PDU must be complete this long after its first octets came; None: no limit.
    partial_pdu_timeout_s: float | None


class Dialler:
    """Opens ESME-role legs to the configured SMSC and sends their bind."""

    def __init__(self, settings: ProxySettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop
        self.address = f"{settings.upstream_host}:{settings.upstream_port}"

    async def connect(
        self, handler: ConnectionHandler, *, leg: str, log: Any
    ) -> SmppConnection | None:
        """A new leg, connected (TLS handshake done), reporting to ``handler``; None when the
        SMSC cannot be reached within connect_timeout_s (logged as upstream_connect_failed)."""
        s = self.settings
        loop = self.loop
        conn = SmppConnection(
            Session(Role.ESME, s.upstream_session, loop.time()),
            leg=leg,
            loop=loop,
            handler=handler,
            stall_timeout_s=s.stall_timeout_s,
            partial_timeout_s=s.partial_pdu_timeout_s,
        )
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn,
                    s.upstream_host,
                    s.upstream_port,
                    ssl=s.upstream_ssl,
                    server_hostname=s.upstream_server_hostname if s.upstream_ssl else None,
                ),
                timeout=s.connect_timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            log.warning(
                logs.UPSTREAM_CONNECT_FAILED,
                upstream=self.address,
                error=str(exc) or type(exc).__name__,
            )
            return None
        return conn

    def bind(self, conn: SmppConnection, request: p.Pdu | bytes, context: object) -> None:
        """Send the bind (a PDU, or a client's frame as it came); its answer comes back to the
        handler as a ResponseReceived with ``context``, or a RequestExpired."""
        conn.session.send_request(request, self.loop.time(), context)
        conn.flush()


def bind_status(response: p.Pdu) -> int:
    """The outcome of a bind from the SMSC's answer: ESME_ROK when bound, else why not.

    Some SMSCs answer a bind they cannot parse with generic_nack; that is a failed bind even
    when its status says 0 (the session is not bound then).
    """
    if response.command_id == CommandId.GENERIC_NACK:
        return response.command_status or CommandStatus.ESME_RBINDFAIL
    return response.command_status
