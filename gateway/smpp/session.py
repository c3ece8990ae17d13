"""One SMPP 3.4 session leg, sans-I/O: bytes and ``now`` in, events and bytes out.

The same class serves both legs of the proxy; ``Role`` picks which rows of the state table
apply to what it sends and what it receives (h11 "Rule 2"). The session answers by itself what
needs no application decision (enquire_link, unbind, PDUs in the wrong state, undecodable PDUs,
unknown commands) and surfaces everything else as events. It never reads the clock, never logs
and never touches a socket: the adapter writes ``data_to_send()`` and drives
``get_timer()`` / ``handle_timer(now)``.

Sequence numbers are the session's own: ``send_request`` allocates them, so a relay passes the
other leg's number as ``context`` and gets it back with the response.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Final

from gateway.smpp.codec import (
    decode,
    decode_body,
    encode,
    error_response,
    is_vendor_command,
    with_sequence,
)
from gateway.smpp.constants import (
    BIND_COMMANDS,
    HEADER_LENGTH,
    REQUESTS_WITHOUT_RESPONSE,
    RESPONSE_BIT,
    CommandId,
    CommandStatus,
    command_name,
)
from gateway.smpp.errors import FramingError, LocalProtocolError, PduDecodeError, PduEncodeError
from gateway.smpp.events import (
    BindCompleted,
    Event,
    PduRejected,
    RequestExpired,
    SessionClosed,
    UnbindReceived,
    UnexpectedResponse,
    _request_received,
    _response_received,
)
from gateway.smpp.framing import FrameBuffer
from gateway.smpp.pdu import BindRequest, Pdu
from gateway.smpp.state import (
    BOUND_STATES,
    KNOWN_REQUESTS,
    VENDOR_STATES,
    BindState,
    Direction,
    next_state,
    rejection_status,
    request_states,
)
from gateway.smpp.window import Outstanding, SequenceAllocator, Window

__all__ = ["Role", "Session", "SessionConfig"]

_HEADER = struct.Struct(">IIII")
_U32 = struct.Struct(">I")
_pack_u32_into = _U32.pack_into
_new_tuple = tuple.__new__
_MAX_U32 = 0xFFFFFFFF

# Session-control requests pass the window limit: they must go out even when data is stuck.
_CONTROL = BIND_COMMANDS | {CommandId.UNBIND, CommandId.ENQUIRE_LINK}
_OPEN_STATES = frozenset({BindState.OPEN, BindState.OUTBOUND})

# The per-PDU paths compare against plain ints and module globals: an IntEnum attribute or an
# Enum in a set costs several times an int comparison (Enum.__hash__ is Python code).
_ENQUIRE_LINK = int(CommandId.ENQUIRE_LINK)
_ENQUIRE_LINK_RESP = int(CommandId.ENQUIRE_LINK_RESP)
_UNBIND_ID = int(CommandId.UNBIND)
_UNBIND_RESP = int(CommandId.UNBIND_RESP)
_GENERIC_NACK = int(CommandId.GENERIC_NACK)
_BIND_IDS = frozenset(int(c) for c in BIND_COMMANDS)
_NO_RESPONSE_IDS = frozenset(int(c) for c in REQUESTS_WITHOUT_RESPONSE)
_KNOWN_REQUEST_IDS = frozenset(int(c) for c in KNOWN_REQUESTS)
# Requests with nothing to do beyond the window (send) or the owed-answer count (receive):
# everything but session control and the requests that take no response.
_SPECIAL_IDS = frozenset(int(c) for c in _CONTROL | REQUESTS_WITHOUT_RESPONSE | {CommandId.OUTBIND})
_CLOSED = BindState.CLOSED


class Role(Enum):
    """Which end of the SMPP session we are."""

    ESME = "esme"  # we are the client (the upstream leg)
    SMSC = "smsc"  # we serve a client (the client leg)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionConfig:
    """Per-session limits and timers; durations in seconds."""

    window_size: int = 100
    response_timeout_s: float = 30.0
    # Idle time (nothing received) before we send enquire_link; None disables keep-alives.
    enquire_link_interval_s: float | None = 30.0
    # Close when nothing at all has been received for this long; None disables.
    inactivity_timeout_s: float | None = None
    # SMSC role: how long a connection may stay unbound. ESME role: how long to wait for
    # bind_resp (counted from connection, restarted when the bind is sent).
    bind_timeout_s: float = 30.0
    # After unbind (sent, or received while answers are still owed): how long before closing.
    unbind_timeout_s: float = 5.0
    max_pdu_length: int = 65536
    relay_vendor_pdus: bool = True

    def __post_init__(self) -> None:
        if self.window_size < 1:
            raise ValueError("window_size must be at least 1")
        if self.max_pdu_length < HEADER_LENGTH:
            raise ValueError(f"max_pdu_length must be at least {HEADER_LENGTH}")
        for name in ("response_timeout_s", "bind_timeout_s", "unbind_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("enquire_link_interval_s", "inactivity_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive or None")


class _Own:
    """Context of the requests the session sends for itself; their answers are consumed."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_KEEPALIVE = _Own("enquire_link")
_UNBIND = _Own("unbind")

_Queued = tuple[int, int, bytes, object]  # sequence_number, command_id, frame, context


_StateRow = tuple[frozenset[int], frozenset[int]]  # (allowed, allowed and plain) request ids


def _plain_table(table: Mapping[BindState, frozenset[int]]) -> dict[BindState, _StateRow]:
    """Each state's allowed request ids, and those of them that take the per-PDU fast path."""
    return {
        state: (allowed, frozenset(int(c) for c in allowed) - _SPECIAL_IDS)
        for state, allowed in table.items()
    }


# Built once per direction and shared by every session (read only): built per session they
# were about 20 KiB of each client/upstream pair's memory.
_TABLES: Final[Mapping[Direction, Mapping[BindState, _StateRow]]] = {
    direction: MappingProxyType(_plain_table(request_states(direction))) for direction in Direction
}


def _frame_of(pdu: Pdu | bytes) -> bytes:
    return pdu if isinstance(pdu, bytes) else encode(pdu)


def _bare(command_id: int, status: int, sequence_number: int) -> bytes:
    """A header-only PDU (enquire_link_resp, unbind_resp, generic_nack)."""
    return _HEADER.pack(HEADER_LENGTH, command_id, status, sequence_number)


class Session:
    """One SMPP session leg. See the module docstring for the calling pattern."""

    __slots__ = (
        "_allocator",
        "_backlog",
        "_bind_deadline",
        "_bind_type",
        "_buffer",
        "_close_reason",
        "_config",
        "_is_bound",
        "_is_open",
        "_keepalive_seq",
        "_last_rx",
        "_out",
        "_outstanding",
        "_peer_unbind_seq",
        "_pending_system_id",
        "_recv_allowed",
        "_recv_plain",
        "_recv_table",
        "_response_timeout",
        "_role",
        "_send_allowed",
        "_send_direction",
        "_send_plain",
        "_send_table",
        "_state",
        "_system_id",
        "_unanswered",
        "_unanswered_count",
        "_unbind_deadline",
        "_unbind_outcome",
        "_unbind_refusal",
        "_window",
        "_window_limit",
    )

    def __init__(self, role: Role, config: SessionConfig, now: float) -> None:
        self._role = role
        self._config = config
        if role is Role.ESME:
            self._send_direction = Direction.ESME_TO_SMSC
            receive_direction = Direction.SMSC_TO_ESME
        else:
            self._send_direction = Direction.SMSC_TO_ESME
            receive_direction = Direction.ESME_TO_SMSC
        self._send_table = _TABLES[self._send_direction]
        self._recv_table = _TABLES[receive_direction]
        self._set_state(BindState.OPEN)
        self._response_timeout = config.response_timeout_s
        self._buffer = FrameBuffer(config.max_pdu_length)
        # Everything queued for the peer, in order: frames are copied in once and a relayed
        # frame gets its sequence number patched in place here, not sliced and re-joined.
        self._out = bytearray()
        self._allocator = SequenceAllocator()
        self._window = Window(config.window_size)
        # The window's own dict and limit, for the per-PDU paths (see Window.entries).
        self._outstanding = self._window.entries
        self._window_limit = config.window_size
        self._backlog: deque[_Queued] = deque()
        # Inbound requests still owed an answer: sequence_number -> how many (peers do reuse).
        self._unanswered: dict[int, int] = {}
        self._unanswered_count = 0
        self._last_rx = now
        self._bind_deadline: float | None = now + config.bind_timeout_s
        self._unbind_deadline: float | None = None
        # The peer's unbind, answered once every request it sent before it has been answered.
        self._peer_unbind_seq: int | None = None
        self._unbind_outcome = "unbind timeout"  # SessionClosed reason at _unbind_deadline
        self._keepalive_seq: int | None = None
        self._bind_type: BindState | None = None
        self._system_id: str | None = None
        self._pending_system_id = ""
        self._close_reason: str | None = None
        # Set when we unbind: a request the peer sent before it saw our unbind crossed it on
        # the wire. It was valid when sent, so it gets a status clients retry, not
        # ESME_RINVBNDSTS, which Kannel treats as permanent (the message would be lost).
        self._unbind_refusal: int | None = None

    # --- properties ------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._role

    @property
    def config(self) -> SessionConfig:
        return self._config

    @property
    def state(self) -> BindState:
        return self._state

    @property
    def closed(self) -> bool:
        return self._state is _CLOSED

    @property
    def close_reason(self) -> str | None:
        """The SessionClosed reason once closed, else None."""
        return self._close_reason

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered (keep-alives and unbind included)."""
        return len(self._window)

    @property
    def backlog(self) -> int:
        """Requests accepted by send_request but held back because the window is full."""
        return len(self._backlog)

    @property
    def window_full(self) -> bool:
        """True while a further request would be queued: stop reading the other leg."""
        return self._window.full or bool(self._backlog)

    @property
    def unanswered(self) -> int:
        """Inbound requests surfaced to the application and not answered yet."""
        return self._unanswered_count

    @property
    def bind_type(self) -> BindState | None:
        """BOUND_TX / BOUND_RX / BOUND_TRX once bound (kept after unbind), else None."""
        return self._bind_type

    @property
    def system_id(self) -> str | None:
        """The ESME's system_id (the account) once bound, in either role."""
        return self._system_id

    @property
    def partial_bytes(self) -> int:
        """Octets of a PDU received only in part (0 between PDUs)."""
        return self._buffer.buffered

    # --- input -----------------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        """Feed bytes read from the peer; returns what happened, in order."""
        events: list[Event] = []
        if self._state is _CLOSED:
            return events
        self._last_rx = now
        buffer = self._buffer
        unpack = _HEADER.unpack_from
        entries = self._outstanding
        unanswered = self._unanswered
        append = events.append
        try:
            buffer.feed(data)
            frames = buffer.frames()
            while frames:
                for frame in frames:
                    _, command_id, status, sequence_number = unpack(frame)
                    # The two per-PDU paths inline (a call per PDU is a fair share of their
                    # cost); neither changes the state, so neither needs the closed check.
                    if command_id & RESPONSE_BIT:
                        entry = entries.get(sequence_number)
                        if (
                            entry is not None
                            and command_id == entry[0] | RESPONSE_BIT
                            and entry[0] not in _SPECIAL_IDS
                        ):
                            # The answer to a relayed request: no session control, no
                            # context of our own, no bind.
                            del entries[sequence_number]
                            append(_response_received(frame, entry[0], entry[2]))
                            if self._backlog:
                                self._pump(now)
                            continue
                        self._on_response(frame, command_id, status, sequence_number, now, events)
                    elif command_id in self._recv_plain:
                        # A request the application answers, allowed in this state.
                        try:
                            pdu = decode_body(frame, command_id, status, sequence_number)
                        except PduDecodeError as exc:
                            self._reject(
                                exc.command_id, exc.sequence_number, exc.status, str(exc), events
                            )
                            continue
                        unanswered[sequence_number] = unanswered.get(sequence_number, 0) + 1
                        self._unanswered_count += 1
                        append(_request_received(pdu, frame))
                        continue
                    else:
                        self._on_request(frame, command_id, status, sequence_number, now, events)
                    if self._state is _CLOSED:
                        return events
                # frames() hands out the good frames before a bad length and raises on the next
                # call; ``ready`` says whether there is such a next call to make.
                frames = buffer.frames() if buffer.ready else []
        except FramingError as exc:
            self._framing_error(exc, events)
        return events

    def _framing_error(self, exc: FramingError, events: list[Event]) -> None:
        if exc.command_id is not None and exc.sequence_number is not None:
            self._out += _bare(CommandId.GENERIC_NACK, exc.status, exc.sequence_number)
            events.append(
                PduRejected(
                    command_id=exc.command_id,
                    sequence_number=exc.sequence_number,
                    status=exc.status,
                    reason=f"framing: {exc}",
                )
            )
        self._close_into(events, f"framing error: {exc}")

    def _on_response(
        self,
        frame: bytes,
        command_id: int,
        status: int,
        sequence_number: int,
        now: float,
        events: list[Event],
    ) -> None:
        # The PDU is not decoded here: the events decode it when (and if) someone reads it.
        entries = self._outstanding
        entry = entries.get(sequence_number)
        if entry is None:
            events.append(UnexpectedResponse(frame=frame))
            return
        request_id, _, context = entry
        if command_id != request_id | RESPONSE_BIT and command_id != _GENERIC_NACK:
            events.append(UnexpectedResponse(frame=frame))
            return
        del entries[sequence_number]
        if context is _KEEPALIVE:
            # Any answer, even generic_nack, proves the peer alive.
            self._keepalive_seq = None
        elif request_id == _UNBIND_ID:
            if context is not _UNBIND:
                events.append(_response_received(frame, request_id, context))
            self._close_into(events, "unbind completed")
            return
        else:
            if request_id in _BIND_IDS:
                bound = next_state(self._state, command_id, status)
                if bound in BOUND_STATES:
                    self._bound(bound)
                    events.append(
                        BindCompleted(bind_state=bound, system_id=self._pending_system_id)
                    )
            events.append(_response_received(frame, request_id, context))
        if self._backlog:
            self._pump(now)

    def _on_request(
        self,
        frame: bytes,
        command_id: int,
        status: int,
        sequence_number: int,
        now: float,
        events: list[Event],
    ) -> None:
        # The plain requests (self._recv_plain) never come here: receive_data handles them.
        if command_id not in self._recv_allowed:
            if command_id in _KNOWN_REQUEST_IDS:
                refusal = self._unbind_refusal
                if refusal is not None and self._crossed_our_unbind(command_id):
                    self._reject(command_id, sequence_number, refusal, "crossed our unbind", events)
                    return
                status = rejection_status(self._state, command_id)
                self._reject(command_id, sequence_number, status, "wrong bind state", events)
                return
            if not (self._config.relay_vendor_pdus and is_vendor_command(command_id)):
                self._out += _bare(_GENERIC_NACK, CommandStatus.ESME_RINVCMDID, sequence_number)
                events.append(
                    PduRejected(
                        command_id=command_id,
                        sequence_number=sequence_number,
                        status=CommandStatus.ESME_RINVCMDID,
                        reason="unknown command_id",
                    )
                )
                return
            if self._state not in VENDOR_STATES:
                status = CommandStatus.ESME_RINVBNDSTS
                self._reject(command_id, sequence_number, status, "wrong bind state", events)
                return
        elif command_id == _ENQUIRE_LINK:
            self._out += _bare(_ENQUIRE_LINK_RESP, 0, sequence_number)
            return
        elif command_id == _UNBIND_ID:
            self._unbind_from_peer(sequence_number, now, events)
            return
        try:
            pdu = decode_body(frame, command_id, status, sequence_number)
        except PduDecodeError as exc:
            self._reject(exc.command_id, exc.sequence_number, exc.status, str(exc), events)
            return
        if command_id in _NO_RESPONSE_IDS:
            self._follow(command_id)  # outbind -> OUTBOUND
        else:
            if isinstance(pdu, BindRequest):
                self._pending_system_id = pdu.system_id
            self._unanswered[sequence_number] = self._unanswered.get(sequence_number, 0) + 1
            self._unanswered_count += 1
        events.append(_request_received(pdu, frame))

    def _reject(
        self,
        command_id: int,
        sequence_number: int,
        status: int,
        reason: str,
        events: list[Event],
    ) -> None:
        # outbind and alert_notification take no response, so there is nothing to answer with.
        if command_id not in REQUESTS_WITHOUT_RESPONSE:
            self._out += error_response(command_id, sequence_number, status)
        events.append(
            PduRejected(
                command_id=command_id,
                sequence_number=sequence_number,
                status=status,
                reason=reason,
            )
        )

    def _unbind_from_peer(self, sequence_number: int, now: float, events: list[Event]) -> None:
        self._follow(_UNBIND_ID)  # bound -> UNBOUND (an unbind crossing ours: stays UNBOUND)
        events.append(UnbindReceived())
        if self._unanswered_count == 0:
            self._out += _bare(CommandId.UNBIND_RESP, 0, sequence_number)
            self._close_into(events, "unbind received")
        elif self._peer_unbind_seq is not None:
            self._out += _bare(CommandId.UNBIND_RESP, 0, sequence_number)  # a repeat
        else:
            # The answers still owed go out first, so a peer that closes as soon as it reads
            # unbind_resp has them all; the application gets unbind_timeout_s to send them.
            self._peer_unbind_seq = sequence_number
            deadline = now + self._config.unbind_timeout_s
            if self._unbind_deadline is None or deadline < self._unbind_deadline:
                self._unbind_deadline = deadline

    # --- output ----------------------------------------------------------------------------

    def send_request(self, pdu_or_frame: Pdu | bytes, now: float, context: object = None) -> int:
        """Send a request under a new sequence number of this leg, which is returned.

        A frame is patched with the number, a PDU encoded with it. If the window is full the
        request is queued (``backlog``) and goes out, in order, as responses free slots.
        Raises LocalProtocolError if this side may not send that command in the current state.
        """
        if type(pdu_or_frame) is bytes and len(pdu_or_frame) >= HEADER_LENGTH:
            # The relay's per-PDU path: a frame of a command with nothing to do but the window
            # (CLOSED allows nothing, so no closed check is needed either).
            (command_id,) = _U32.unpack_from(pdu_or_frame, 4)
            if command_id in self._send_plain:
                sequence_number = self._allocator.next()
                entries = self._outstanding
                if self._backlog or len(entries) >= self._window_limit:
                    frame = pdu_or_frame[:12] + _U32.pack(sequence_number) + pdu_or_frame[16:]
                    self._backlog.append((sequence_number, command_id, frame, context))
                    return sequence_number
                if sequence_number in entries:  # only after a wrap past 2**31 requests
                    raise LocalProtocolError(f"sequence_number {sequence_number} is outstanding")
                entries[sequence_number] = _new_tuple(
                    Outstanding, (command_id, now + self._response_timeout, context)
                )
                out = self._out
                at = len(out) + 12
                out += pdu_or_frame
                _pack_u32_into(out, at, sequence_number)
                return sequence_number
        if self._state is _CLOSED:
            raise LocalProtocolError("session is closed")
        if isinstance(pdu_or_frame, bytes):
            frame = pdu_or_frame
            if len(frame) < HEADER_LENGTH:
                raise LocalProtocolError("frame shorter than an SMPP header")
            command_id = int.from_bytes(frame[4:8], "big")
        else:
            command_id = pdu_or_frame.command_id
        if command_id & RESPONSE_BIT:
            raise LocalProtocolError(f"{command_name(command_id)} is a response: use send_response")
        if command_id not in self._send_allowed and not (
            command_id not in KNOWN_REQUESTS
            and self._state in VENDOR_STATES
            and self._config.relay_vendor_pdus
            and is_vendor_command(command_id)
        ):
            raise LocalProtocolError(
                f"{command_name(command_id)} may not be sent by the {self._role.name} "
                f"in state {self._state.name}"
            )
        sequence_number = self._allocator.next()
        if isinstance(pdu_or_frame, bytes):
            frame = with_sequence(pdu_or_frame, sequence_number)
        else:
            frame = with_sequence(encode(pdu_or_frame), sequence_number)

        if command_id in BIND_COMMANDS:
            self._pending_system_id = self._bind_system_id(pdu_or_frame, frame)
            self._bind_deadline = now + self._config.bind_timeout_s
        elif command_id == CommandId.UNBIND:
            self._enter_unbound(now)
        elif command_id == CommandId.OUTBIND:
            self._follow(command_id)

        if command_id in REQUESTS_WITHOUT_RESPONSE:
            self._out += frame
        elif command_id in _CONTROL:
            deadline = now + self._config.response_timeout_s
            self._window.add(sequence_number, command_id, deadline, context, force=True)
            self._out += frame
        elif self._backlog or self._window.full:
            self._backlog.append((sequence_number, command_id, frame, context))
        else:
            deadline = now + self._config.response_timeout_s
            self._window.add(sequence_number, command_id, deadline, context)
            self._out += frame
        return sequence_number

    @staticmethod
    def _bind_system_id(pdu_or_frame: Pdu | bytes, frame: bytes) -> str:
        pdu = pdu_or_frame
        if isinstance(pdu, bytes):
            try:
                pdu = decode(frame)
            except PduDecodeError:
                return ""
        return pdu.system_id if isinstance(pdu, BindRequest) else ""

    def send_response(
        self, pdu_or_frame: Pdu | bytes, now: float, sequence_number: int | None = None
    ) -> None:
        """Answer an inbound request surfaced by RequestReceived.

        A frame goes out as is unless ``sequence_number`` is given (then it is patched); a PDU is
        encoded. A bind response with ESME_ROK binds the session. Raises LocalProtocolError when
        no inbound request with that sequence_number is awaiting an answer.
        """
        if self._state is _CLOSED:
            raise LocalProtocolError("session is closed")
        frame = pdu_or_frame if type(pdu_or_frame) is bytes else _frame_of(pdu_or_frame)
        if len(frame) < HEADER_LENGTH:
            if sequence_number is not None:
                with_sequence(frame, sequence_number)  # raises its FramingError
            raise LocalProtocolError("frame shorter than an SMPP header")
        _, command_id, status, seq = _HEADER.unpack_from(frame)
        patch = False
        if sequence_number is None:
            sequence_number = seq
        elif sequence_number != seq:
            # Checked here, as packing it would: the patch itself comes after the frame is in
            # the output buffer, where a failure would leave a half-sent answer.
            if not (isinstance(sequence_number, int) and 0 <= sequence_number <= _MAX_U32):
                raise PduEncodeError(f"sequence_number {sequence_number} out of range")
            patch = True  # in place, once the frame is in the output buffer
        if not command_id & RESPONSE_BIT:
            raise LocalProtocolError(f"{command_name(command_id)} is a request: use send_request")
        unanswered = self._unanswered
        owed = unanswered.get(sequence_number)
        if owed is None:
            raise LocalProtocolError(f"no request with sequence_number {sequence_number} is owed")
        if owed == 1:
            del unanswered[sequence_number]
        else:
            unanswered[sequence_number] = owed - 1
        self._unanswered_count -= 1
        if self._is_open:
            bound = next_state(self._state, command_id, status)
            if bound in BOUND_STATES:
                self._bound(bound)
        out = self._out
        if patch:
            at = len(out) + 12
            out += frame
            _pack_u32_into(out, at, sequence_number)
        else:
            out += frame
        if self._peer_unbind_seq is not None and self._unanswered_count == 0:
            self._answer_peer_unbind()
            self._unbind_outcome = "unbind completed"
            self._unbind_deadline = now  # all answered: close at the next handle_timer

    def _crossed_our_unbind(self, command_id: int) -> bool:
        bind_type = self._bind_type
        return (
            self._state is BindState.UNBOUND
            and bind_type is not None
            and command_id in self._recv_table[bind_type][0]
        )

    def start_unbind(
        self, now: float, refuse_status: int = CommandStatus.ESME_RSYSERR
    ) -> list[Event]:
        """End the session cleanly: unbind if bound, else close at once.

        Returns [SessionClosed] when the session was not bound, else nothing: it closes when the
        unbind_resp arrives or after unbind_timeout_s. Requests still in the backlog are never
        sent (the state no longer allows them); collect them with abandon_outstanding().
        Requests the peer sent before it saw our unbind are answered with ``refuse_status``
        (temporary by default: clients retry it).
        """
        events: list[Event] = []
        if self._state in BOUND_STATES:
            self._unbind_refusal = refuse_status
            sequence_number = self._allocator.next()
            self._window.add(
                sequence_number,
                CommandId.UNBIND,
                now + self._config.response_timeout_s,
                _UNBIND,
                force=True,
            )
            self._out += _bare(CommandId.UNBIND, 0, sequence_number)
            self._enter_unbound(now)
        elif self._state in _OPEN_STATES:
            self._close_into(events, "closed before bind")
        return events

    def close(self, reason: str) -> list[Event]:
        """Close now (transport lost, shutdown): [SessionClosed], or nothing if already closed.

        Requests still outstanding or queued stay for abandon_outstanding().
        """
        events: list[Event] = []
        if self._state is not _CLOSED:
            self._close_into(events, reason)
        return events

    def abandon_outstanding(self) -> list[tuple[int, int, object]]:
        """Remove every request still awaiting a response or queued, and return them.

        (sequence_number, command_id, context), oldest first, the session's own enquire_link /
        unbind left out. Call it on SessionClosed (or UnbindReceived) so that none is lost: they
        will never be answered now. A response that still arrives is an UnexpectedResponse.
        """
        window = self._window
        abandoned: list[tuple[int, int, object]] = []
        for sequence_number, entry in window.drain():
            if isinstance(entry.context, _Own):
                # Still ours to finish (an unbind_resp still closes the session): put it back.
                window.add(sequence_number, *entry, force=True)
            else:
                abandoned.append((sequence_number, entry.command_id, entry.context))
        abandoned += [(seq, command_id, context) for seq, command_id, _, context in self._backlog]
        self._backlog.clear()
        return abandoned

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call, as one buffer."""
        out = self._out
        if not out:
            return b""
        data = bytes(out)
        out.clear()
        return data

    # --- timers ----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """The earliest time at which handle_timer has something to do, or None."""
        if self._state is _CLOSED:
            return None
        # Called after every batch the connection writes: straight-line, no lists.
        timer = self._window.next_deadline()
        candidate = self._unbind_deadline
        if candidate is not None and (timer is None or candidate < timer):
            timer = candidate
        if self._is_open:
            candidate = self._bind_deadline
            if candidate is not None and (timer is None or candidate < timer):
                timer = candidate
        inactivity = self._config.inactivity_timeout_s
        if inactivity is not None:
            candidate = self._last_rx + inactivity
            if timer is None or candidate < timer:
                timer = candidate
        candidate = self._keepalive_due_at()
        if candidate is not None and (timer is None or candidate < timer):
            timer = candidate
        return timer

    def _keepalive_due_at(self) -> float | None:
        interval = self._config.enquire_link_interval_s
        if interval is None or self._keepalive_seq is not None or not self._is_bound:
            return None
        return self._last_rx + interval

    def handle_timer(self, now: float) -> list[Event]:
        """Act on every deadline at or before ``now``."""
        events: list[Event] = []
        if self._state is _CLOSED:
            return events
        config = self._config
        expired = self._window.expired(now)
        for sequence_number, entry in expired:
            if entry.context is _KEEPALIVE:
                self._keepalive_seq = None
                self._close_into(events, "peer dead: enquire_link unanswered")
                return events
            if entry.context is not _UNBIND:
                events.append(
                    RequestExpired(
                        sequence_number=sequence_number,
                        command_id=entry.command_id,
                        context=entry.context,
                    )
                )
        if self._unbind_deadline is not None and now >= self._unbind_deadline:
            self._answer_peer_unbind()
            self._close_into(events, self._unbind_outcome)
            return events
        if (
            self._state in _OPEN_STATES
            and self._bind_deadline is not None
            and now >= self._bind_deadline
        ):
            self._close_into(events, "bind timeout")
            return events
        if (
            config.inactivity_timeout_s is not None
            and now >= self._last_rx + config.inactivity_timeout_s
        ):
            self._close_into(events, "inactivity timeout")
            return events
        if expired and self._backlog:
            self._pump(now)
        due = self._keepalive_due_at()
        if due is not None and now >= due:
            sequence_number = self._allocator.next()
            self._window.add(
                sequence_number,
                CommandId.ENQUIRE_LINK,
                now + config.response_timeout_s,
                _KEEPALIVE,
                force=True,
            )
            self._keepalive_seq = sequence_number
            self._out += _bare(CommandId.ENQUIRE_LINK, 0, sequence_number)
        return events

    # --- internals -------------------------------------------------------------------------

    def _set_state(self, state: BindState) -> None:
        self._state = state
        self._send_allowed, self._send_plain = self._send_table[state]
        self._recv_allowed, self._recv_plain = self._recv_table[state]
        # Flags for the per-PDU paths, where an Enum in a set costs a Python-level hash.
        self._is_bound = state in BOUND_STATES
        self._is_open = state in _OPEN_STATES

    def _follow(self, command_id: int) -> None:
        """Move to the state the table gives for ``command_id`` sent or received now."""
        self._set_state(next_state(self._state, command_id))

    def _bound(self, state: BindState) -> None:
        self._set_state(state)
        self._bind_type = state
        self._system_id = self._pending_system_id
        self._bind_deadline = None

    def _enter_unbound(self, now: float) -> None:
        self._follow(_UNBIND_ID)  # we sent unbind: bound -> UNBOUND
        if self._unbind_deadline is None:
            self._unbind_deadline = now + self._config.unbind_timeout_s

    def _answer_peer_unbind(self) -> None:
        if self._peer_unbind_seq is not None:
            self._out += _bare(CommandId.UNBIND_RESP, 0, self._peer_unbind_seq)
            self._peer_unbind_seq = None

    def _pump(self, now: float) -> None:
        """Move queued requests into the window while it has room (bound states only)."""
        if not self._is_bound:
            return
        window = self._window
        backlog = self._backlog
        out = self._out
        deadline = now + self._response_timeout
        while backlog and not window.full:
            sequence_number, command_id, frame, context = backlog.popleft()
            window.add(sequence_number, command_id, deadline, context)
            out += frame

    def _close_into(self, events: list[Event], reason: str) -> None:
        # The window and backlog stay as they are, for abandon_outstanding().
        self._set_state(BindState.CLOSED)
        self._close_reason = reason
        self._keepalive_seq = None
        self._unbind_deadline = None
        self._bind_deadline = None
        events.append(SessionClosed(reason=reason))
