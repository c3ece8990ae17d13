"""What a ``Session`` reports: past-tense facts, returned as values (h11, aioquic).

Each event that carries a PDU also carries the exact ``frame`` it came in, so a relay can forward
it with ``codec.with_sequence`` instead of re-encoding it.

The session builds the events of its per-PDU path through the slot descriptors rather than the
frozen dataclass ``__init__`` (about a third of the cost), and leaves response PDUs undecoded
until someone reads ``pdu``.
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass
from typing import Any, ClassVar, cast

from gateway.smpp.codec import decode_lenient
from gateway.smpp.pdu import Pdu
from gateway.smpp.state import BindState


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A request the application must act on: answer it (send_response) or relay it.

    outbind and alert_notification take no answer; every other request must get exactly one.
    """

    pdu: Pdu
    frame: bytes


class _ResponseEvent:
    """What the two response events share: ``pdu`` is decoded from ``frame`` on first access.

    A relay matches a response by its sequence number and passes ``frame`` on, so most
    responses are never decoded at all. Immutable like the dataclass events (assignment raises
    ``FrozenInstanceError``); equality, hash and repr go by the public fields.
    """

    __slots__ = ("_pdu", "frame")
    _fields: ClassVar[tuple[str, ...]] = ("pdu", "frame")

    _pdu: Pdu | None
    frame: bytes

    @property
    def pdu(self) -> Pdu:
        """The response; one whose body does not decode is a ``RawPdu`` holding that body."""
        pdu = self._pdu
        if pdu is None:
            pdu = decode_lenient(self.frame)
            _set_pdu(self, pdu)
        return pdu

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, _ResponseEvent)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({fields})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")


class ResponseReceived(_ResponseEvent):
    """The answer to a request sent with send_request, with that request's id and context.

    ``pdu`` may be left out (None): it is then decoded from ``frame`` when first read. A
    response that could not be decoded arrives as a ``RawPdu`` holding the raw body.
    """

    __slots__ = ("context", "request_command_id")
    _fields = ("pdu", "frame", "request_command_id", "context")

    request_command_id: int
    context: object

    def __init__(
        self,
        *,
        pdu: Pdu | None = None,
        frame: bytes,
        request_command_id: int,
        context: object,
    ) -> None:
        _set_pdu(self, pdu)
        _set_frame(self, frame)
        _set_request_command_id(self, request_command_id)
        _set_context(self, context)


class UnexpectedResponse(_ResponseEvent):
    """A response to no outstanding request of ours (unknown or expired sequence_number, or the
    wrong command_id for it); nothing else is done with it. ``pdu`` is decoded lazily too."""

    __slots__ = ()

    def __init__(self, *, pdu: Pdu | None = None, frame: bytes) -> None:
        _set_pdu(self, pdu)
        _set_frame(self, frame)


def _setter(cls: type, name: str) -> Any:
    # The slot's own descriptor: writes past the frozen __setattr__ at a fraction of the cost.
    return cast(Any, getattr(cls, name)).__set__


_new = object.__new__
_set_pdu = _setter(_ResponseEvent, "_pdu")
_set_frame = _setter(_ResponseEvent, "frame")
_set_request_command_id = _setter(ResponseReceived, "request_command_id")
_set_context = _setter(ResponseReceived, "context")


def _response_received(frame: bytes, request_command_id: int, context: object) -> ResponseReceived:
    """``ResponseReceived(frame=..., ...)`` with ``pdu`` left to decode lazily (the hot path)."""
    event = _new(ResponseReceived)
    _set_pdu(event, None)
    _set_frame(event, frame)
    _set_request_command_id(event, request_command_id)
    _set_context(event, context)
    return event


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


_set_request_pdu = _setter(RequestReceived, "pdu")
_set_request_frame = _setter(RequestReceived, "frame")


def _request_received(pdu: Pdu, frame: bytes) -> RequestReceived:
    """``RequestReceived(pdu=pdu, frame=frame)`` without the frozen ``__init__`` (the hot path)."""
    event = _new(RequestReceived)
    _set_request_pdu(event, pdu)
    _set_request_frame(event, frame)
    return event
