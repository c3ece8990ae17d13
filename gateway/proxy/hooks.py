"""Where consent and text processing plug into the relay.

An interceptor gets a handle for each MT (submit_sm / submit_multi / data_sm from a client) or MO
(deliver_sm / data_sm from the SMSC) and must settle it exactly once: ``forward`` it (the original
frame or replacement frames) or ``respond`` to it itself. It may do so at once, which is the fast
path, or later from a task (after a durable store write, or once every part of a long message is
in). Requests the gateway sends on its own (auto-replies, extra segments) go through
``originate``; their responses come back to the callback and never reach a client.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.smpp.constants import CommandStatus
from gateway.smpp.pdu import Pdu


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who the client is: fixed once its bind has completed."""

    conn_id: str
    system_id: str
    system_type: str
    bind_type: str  # "transmitter" | "receiver" | "transceiver"
    peer: str


# Called with the response PDU and its frame, or (None, None) when none came in time or the
# session ended first.
ResponseCallback = Callable[[Pdu | None, bytes | None], None]


class LegPair(Protocol):
    """What hooks use of one client connection and its upstream leg (``Bridge`` is the one).

    Requests are settled through their handles; the rest is for the gateway's own requests
    (``originate_*``), tasks owned by the connection (``spawn``) and choosing a connection.
    """

    @property
    def conn_id(self) -> str: ...

    @property
    def client_info(self) -> ClientInfo: ...

    @property
    def client_gone(self) -> bool:
        """The client connection is closing or closed: nothing more reaches it."""
        ...

    def forward_mt(
        self, request: MtRequest, frame: bytes, transform: Callable[[bytes], bytes] | None
    ) -> None:
        """Relay an MT upstream; the SMSC's response (``transform``-ed) goes to the client."""
        ...

    def forward_mo(self, request: MoRequest, frame: bytes) -> None:
        """Relay an MO to the client; its response goes back to the SMSC."""
        ...

    def respond_client(self, response: Pdu | bytes, sequence_number: int) -> None: ...

    def reject_client(self, command_id: int, sequence_number: int, status: int) -> None: ...

    def respond_upstream(self, response: Pdu | bytes, sequence_number: int) -> None: ...

    def reject_upstream(self, command_id: int, sequence_number: int, status: int) -> None: ...

    def originate_upstream(self, pdu: Pdu | bytes, on_response: ResponseCallback) -> bool:
        """Send a request of the gateway's own to the SMSC; False if the leg cannot carry it."""
        ...

    def originate_to_client(self, pdu: Pdu | bytes, on_response: ResponseCallback) -> bool:
        """Send a request of the gateway's own to the client; False if it cannot take it."""
        ...

    def spawn(self, coro: object, on_failure: Callable[[], None] | None = None) -> None:
        """Run a coroutine owned by the connection (cancelled when it closes)."""
        ...


class _Pending(ABC):
    __slots__ = ("_bridge", "_settled", "frame", "pdu")
    # What a request gets when the hook handling it failed (see ``spawn``).
    TEMPORARY_FAILURE: int = CommandStatus.ESME_RSYSERR  # clients re-queue it

    def __init__(self, bridge: LegPair, pdu: Pdu, frame: bytes) -> None:
        self._bridge = bridge
        self.pdu = pdu
        self.frame = frame
        self._settled = False

    @property
    def client(self) -> ClientInfo:
        return self._bridge.client_info

    @property
    def bridge(self) -> LegPair:
        """The connection the request arrived on (to prefer it for replies of the gateway's own)."""
        return self._bridge

    @property
    def settled(self) -> bool:
        return self._settled

    @abstractmethod
    def reject(self, status: int) -> None:
        """Answer the peer that sent this request with an error status and no body."""

    def _settle(self) -> None:
        if self._settled:
            raise RuntimeError("request already settled")
        self._settled = True

    def originate(self, pdu: Pdu | bytes, on_response: ResponseCallback) -> bool:
        """Send a request of the gateway's own over this bridge's upstream leg."""
        return self._bridge.originate_upstream(pdu, on_response)

    def spawn(self, coro: object) -> None:
        """Run a coroutine owned by the bridge (cancelled when it closes). If it fails, this
        request, when still unsettled, gets a temporary status: never no answer at all."""
        self._bridge.spawn(coro, self._fail)

    def _fail(self) -> None:
        if not self._settled:
            self.reject(self.TEMPORARY_FAILURE)


class MtRequest(_Pending):
    """An MT from the client, waiting to be forwarded to the SMSC or answered by the gateway."""

    __slots__ = ("on_status", "sequence_number")

    def __init__(self, bridge: LegPair, pdu: Pdu, frame: bytes) -> None:
        super().__init__(bridge, pdu, frame)
        self.sequence_number = pdu.sequence_number
        # Told the command_status of the SMSC's response once it comes (frequency caps take
        # back a reservation the SMSC refused), whoever forwards the request.
        self.on_status: Callable[[int], None] | None = None

    def forward(
        self,
        frame: bytes | None = None,
        *,
        transform: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """Relay upstream (this frame, or the original); the SMSC's response goes to the client,
        rewritten by ``transform`` if given."""
        self._settle()
        on_status = self.on_status
        if on_status is not None:
            transform = _observed(on_status, transform)
        self._bridge.forward_mt(self, frame if frame is not None else self.frame, transform)

    def respond(self, response: Pdu | bytes) -> None:
        """Answer the client without anything going upstream (a rejection, accept-and-report)."""
        self._settle()
        self._bridge.respond_client(response, self.sequence_number)

    def reject(self, status: int) -> None:
        """Answer the client with an error status and no body."""
        self._settle()
        self._bridge.reject_client(self.pdu.command_id, self.sequence_number, status)


def _observed(
    on_status: Callable[[int], None], transform: Callable[[bytes], bytes] | None
) -> Callable[[bytes], bytes]:
    def observe(frame: bytes) -> bytes:
        on_status(int.from_bytes(frame[8:12], "big"))
        return frame if transform is None else transform(frame)

    return observe


class MoRequest(_Pending):
    """A request from the SMSC (deliver_sm, data_sm), waiting to go to the client or be answered."""

    __slots__ = ("sequence_number",)
    TEMPORARY_FAILURE = CommandStatus.ESME_RX_T_APPN  # the SMSC delivers it again

    def __init__(self, bridge: LegPair, pdu: Pdu, frame: bytes) -> None:
        super().__init__(bridge, pdu, frame)
        self.sequence_number = pdu.sequence_number

    def forward(self, frame: bytes | None = None) -> None:
        """Relay to the client; the client's response goes back to the SMSC."""
        self._settle()
        self._bridge.forward_mo(self, frame if frame is not None else self.frame)

    def respond(self, response: Pdu | bytes) -> None:
        """Answer the SMSC ourselves; the client never sees this request."""
        self._settle()
        self._bridge.respond_upstream(response, self.sequence_number)

    def reject(self, status: int) -> None:
        """Answer the SMSC with an error status (a temporary one makes it retry)."""
        self._settle()
        self._bridge.reject_upstream(self.pdu.command_id, self.sequence_number, status)


class Interceptor(Protocol):
    """Consent and text processing. Each handle must be settled exactly once."""

    def on_mt(self, request: MtRequest) -> None: ...

    def on_mo(self, request: MoRequest) -> None: ...

    def on_bound(self, bridge: LegPair) -> None: ...

    def on_closed(self, bridge: LegPair) -> None: ...


class PassThrough:
    """No processing: the gateway is a plain transparent SMPP proxy."""

    def on_mt(self, request: MtRequest) -> None:
        request.forward()

    def on_mo(self, request: MoRequest) -> None:
        request.forward()

    def on_bound(self, bridge: LegPair) -> None:
        return None

    def on_closed(self, bridge: LegPair) -> None:
        return None
