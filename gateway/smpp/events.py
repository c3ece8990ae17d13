"""What a ``Session`` reports: past-tense facts, returned as values (h11, aioquic).

Each event that carries a PDU also carries the exact ``frame`` it came in, so a relay can forward
it with ``codec.with_sequence`` instead of re-encoding it.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.smpp.pdu import Pdu
from gateway.smpp.state import BindState


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A request the application must act on: answer it (send_response) or relay it.

    outbind and alert_notification take no answer; every other request must get exactly one.
    """

    pdu: Pdu
    frame: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseReceived:
    """The answer to a request sent with send_request, with that request's id and context.

    A response that could not be decoded arrives as a ``RawPdu`` holding the raw body.
    """

    pdu: Pdu
    frame: bytes
    request_command_id: int
    context: object


@dataclass(frozen=True, slots=True, kw_only=True)
class UnexpectedResponse:
    """A response to no outstanding request of ours (unknown or expired sequence_number, or the
    wrong command_id for it); nothing else is done with it."""

    pdu: Pdu
    frame: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestExpired:
    """A request of ours got no response within response_timeout_s; it is forgotten, and a
    response that still arrives is an UnexpectedResponse."""

    sequence_number: int
    command_id: int
    context: object


@dataclass(frozen=True, slots=True, kw_only=True)
class PduRejected:
    """The session refused an inbound PDU by itself (for logs).

    It answered with ``status`` (the command's own response, or generic_nack) unless the
    command takes no response (outbind, alert_notification), which is then dropped.
    """

    command_id: int
    sequence_number: int
    status: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BindCompleted:
    """ESME role: a bind_resp with ESME_ROK arrived; ``system_id`` is the one we bound as."""

    bind_state: BindState
    system_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UnbindReceived:
    """The peer sent unbind; the session is UNBOUND and sends unbind_resp (then closes) as soon
    as every request still owed an answer has one, or after unbind_timeout_s."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionClosed:
    """Terminal: write out data_to_send(), then close the transport.

    Requests of ours still unanswered (or queued) are never answered now: collect them with
    ``Session.abandon_outstanding()``.
    """

    reason: str


Event = (
    RequestReceived
    | ResponseReceived
    | UnexpectedResponse
    | RequestExpired
    | PduRejected
    | BindCompleted
    | UnbindReceived
    | SessionClosed
)
