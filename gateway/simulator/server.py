"""The bundled SMSC simulator: an SMPP 3.4 server for demos, integration checks and tests.

It runs the same ``Session`` (SMSC role) and ``SmppConnection`` adapter as the gateway, so the
simulator exercises the production protocol code rather than a second implementation. It accepts
binds, answers submits with unique message ids, records every request it receives (decoded PDU
and exact frame), sends delivery receipts and MOs on demand, and has fault modes that the
gateway's fault tests switch at run time.

Everything happens on the event loop thread: connection callbacks are synchronous, so waiters
are woken through a fresh ``asyncio.Event`` per change (a Condition would need its lock, which
cannot be taken from a protocol callback).
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import secrets
import socket
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from http import HTTPStatus
from typing import Any, Final, TypeVar

from gateway.admin.http import (
    Handler,
    HttpError,
    HttpServer,
    Request,
    Response,
    json_response,
)
from gateway.errors import GatewayError
from gateway.proxy.connection import SmppConnection
from gateway.smpp import events as ev
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode, error_response, int_tlv
from gateway.smpp.constants import (
    BIND_COMMANDS,
    CommandId,
    CommandStatus,
    EsmClass,
    Tag,
    command_name,
    status_name,
)
from gateway.smpp.errors import LocalProtocolError, SmppError
from gateway.smpp.session import Role, Session, SessionConfig
from gateway.smpp.state import BOUND_STATES, BindState
from gateway.telemetry import logs
from gateway.text import dcs

log = logs.get_logger()
_T = TypeVar("_T")

DEFAULT_SYSTEM_ID: Final = "SIM"
SUBMIT_COMMANDS: Final = frozenset({CommandId.SUBMIT_SM, CommandId.SUBMIT_MULTI, CommandId.DATA_SM})
SHORT_MESSAGE_MAX: Final = 254  # SMPP 3.4 section 5.2.22: longer text goes in message_payload
PENDING_RECEIPTS_MAX: Final = 10_000  # per system_id, while no receiver is bound
_SILENT: Final = "silent-fault"  # the reason reading is paused while Faults.silent is on

BIND_TYPES: Final[Mapping[int, str]] = {
    CommandId.BIND_TRANSMITTER: "transmitter",
    CommandId.BIND_RECEIVER: "receiver",
    CommandId.BIND_TRANSCEIVER: "transceiver",
}
_BIND_TYPE_OF_STATE: Final[Mapping[BindState, str]] = {
    BindState.BOUND_TX: "transmitter",
    BindState.BOUND_RX: "receiver",
    BindState.BOUND_TRX: "transceiver",
}
_RECEIVING = frozenset({BindState.BOUND_RX, BindState.BOUND_TRX})


class MessageState(IntEnum):
    """message_state values of SMPP 3.4 section 5.2.28 (query_sm_resp, TLV 0x0427)."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


RECEIPT_STATS: Final[Mapping[str, MessageState]] = {
    "DELIVRD": MessageState.DELIVERED,
    "EXPIRED": MessageState.EXPIRED,
    "DELETED": MessageState.DELETED,
    "UNDELIV": MessageState.UNDELIVERABLE,
    "ACCEPTD": MessageState.ACCEPTED,
    "UNKNOWN": MessageState.UNKNOWN,
    "REJECTD": MessageState.REJECTED,
}
"""Receipt ``stat:`` words (SMPP 3.4 appendix B) and the message_state each one reports."""


class SimulatorError(GatewayError):
    """Root of the simulator's errors."""


class NoReceiverError(SimulatorError):
    """No RX / TRX session (of the requested system_id) is bound to take an MO."""


class MoFailedError(SimulatorError):
    """The receiving session closed before it answered the MO."""


# --- values -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Misbehaviour for fault tests; switch at run time with ``Simulator.set_faults``.

    ``drop_after``: the next N submits are answered; the one after that is recorded, left
    unanswered, and every connection is aborted (no unbind). It then resets to None.
    ``drop_reset``: ``drop_after`` resets the connections (TCP RST: SO_LINGER 0, as a crashed
    host or a middlebox does; what was not yet delivered is discarded) instead of closing them.
    ``silent``: no connection is read any more, new ones included (a hung SMSC: nothing is
    answered, not even enquire_link, bind or unbind; TCP still accepts what fits its buffers).
    Switched off, reading resumes and what was sent meanwhile is processed then.
    ``receipt_stat``: the outcome every message gets (``DELIVRD``, ``UNDELIV``, ``REJECTD``,
    ...), reported in receipts and query_sm; registered_delivery 2 asks for receipts of
    outcomes other than DELIVRD only.
    ``receipt_delay_s``: receipts go this long after the submit's answer (as a real SMSC's
    come after a delivery attempt), instead of at once.
    ``refuse_after``: the next N submits are accepted; the one after that is refused with
    ``refuse_status`` (one refusal in a stream, e.g. one part of a long message). It then
    resets to None.
    """

    respond: bool = True
    submit_status: int = CommandStatus.ESME_ROK
    drop_after: int | None = None
    drop_reset: bool = False
    silent: bool = False
    refuse_after: int | None = None
    refuse_status: int = CommandStatus.ESME_RSUBMITFAIL
    receipt_delay_s: float = 0.0
    bind_status: int = CommandStatus.ESME_ROK
    response_delay_s: float = 0.0
    receipt_stat: str = "DELIVRD"

    def __post_init__(self) -> None:
        if self.drop_after is not None and self.drop_after < 0:
            raise ValueError("drop_after must be 0 or more")
        if self.refuse_after is not None and self.refuse_after < 0:
            raise ValueError("refuse_after must be 0 or more")
        if self.response_delay_s < 0 or self.receipt_delay_s < 0:
            raise ValueError("response_delay_s and receipt_delay_s must not be negative")
        if self.receipt_stat not in RECEIPT_STATS:
            raise ValueError(f"receipt_stat must be one of {', '.join(RECEIPT_STATS)}")
        for name in ("submit_status", "bind_status", "refuse_status"):
            if not 0 <= getattr(self, name) <= 0xFFFFFFFF:
                raise ValueError(f"{name} must be a 32-bit command_status")

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceivedRequest:
    """One request a client sent, as received, with who sent it."""

    index: int  # position in arrival order, from 0; never reused, even after clear()
    conn_id: str
    system_id: str
    bind_type: str  # transmitter / receiver / transceiver ("" before a bind)
    pdu: p.Pdu
    frame: bytes
    received_at: float  # UNIX time
    message_id: str | None = None  # the id the simulator answered with, if any

    @property
    def command(self) -> str:
        return command_name(self.pdu.command_id)

    @property
    def text(self) -> str | None:
        """The message text where the data_coding is a text coding, else None."""
        return message_text(self.pdu)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionInfo:
    """A client connection as seen from outside (health endpoint, tests)."""

    conn_id: str
    peer: str
    system_id: str
    bind_type: str
    state: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Mo:
    """An MO (or any SMSC-originated message) to send to a bound receiver."""

    source: str
    destination: str
    text: str = ""
    data_coding: int = 0
    system_id: str | None = None  # target account; None: any bound receiver
    command: str = "deliver_sm"  # or "data_sm"
    payload: bool = False  # text in message_payload (always so for data_sm)
    esm_class: int = 0
    short_message: bytes | None = None  # raw body instead of text
    source_addr_ton: int | None = None  # None: guessed from the address
    source_addr_npi: int | None = None
    dest_addr_ton: int | None = None
    dest_addr_npi: int | None = None
    tlvs: tuple[p.Tlv, ...] = ()

    def body(self) -> bytes:
        """The message octets: ``short_message`` as given, or ``text`` in ``data_coding``."""
        if self.short_message is not None:
            return self.short_message
        alphabet = dcs.alphabet_for(self.data_coding)
        if not alphabet.is_text:
            raise ValueError(f"data_coding 0x{self.data_coding:02x} is not a text coding")
        return dcs.encode_text(self.text, alphabet)

    def to_pdu(self) -> p.Pdu:
        """The deliver_sm / data_sm to send; raises ValueError on bad input."""
        body = self.body()
        src_ton, src_npi, source = _address(self.source, self.source_addr_ton, self.source_addr_npi)
        dst_ton, dst_npi, dest = _address(self.destination, self.dest_addr_ton, self.dest_addr_npi)
        addressing: dict[str, Any] = {
            "source_addr_ton": src_ton,
            "source_addr_npi": src_npi,
            "source_addr": source,
            "dest_addr_ton": dst_ton,
            "dest_addr_npi": dst_npi,
            "destination_addr": dest,
            "esm_class": self.esm_class,
            "data_coding": self.data_coding,
        }
        payload_tlv = (p.Tlv(Tag.MESSAGE_PAYLOAD, body),)
        if self.command == "data_sm":
            return p.DataSm(**addressing, tlvs=payload_tlv + self.tlvs)
        if self.command != "deliver_sm":
            raise ValueError(f"command must be deliver_sm or data_sm, not {self.command!r}")
        if self.payload:
            return p.DeliverSm(**addressing, tlvs=payload_tlv + self.tlvs)
        if len(body) > SHORT_MESSAGE_MAX:
            raise ValueError(f"{len(body)} octets exceed short_message; send it as payload")
        return p.DeliverSm(**addressing, short_message=body, tlvs=self.tlvs)

    @classmethod
    def from_json(cls, value: object) -> Mo:
        """Parse the JSON of ``POST /mo``; raises ValueError naming the bad key."""
        if not isinstance(value, dict):
            raise ValueError("body must be a JSON object")  # noqa: TRY004 (an HTTP 400)
        known = {
            "source", "destination", "text", "data_coding", "system_id", "as", "payload",
            "esm_class", "hex", "source_addr_ton", "source_addr_npi", "dest_addr_ton",
            "dest_addr_npi",
        }  # fmt: skip
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"unknown keys: {', '.join(unknown)}")
        raw = _opt(value, "hex", str)
        try:
            short_message = None if raw is None else bytes.fromhex(raw)
        except ValueError:
            raise ValueError("hex: not hexadecimal") from None
        return cls(
            source=_req(value, "source", str),
            destination=_req(value, "destination", str),
            text=_opt(value, "text", str) or "",
            data_coding=_opt(value, "data_coding", int) or 0,
            system_id=_opt(value, "system_id", str),
            command=_opt(value, "as", str) or "deliver_sm",
            payload=bool(_opt(value, "payload", bool)),
            esm_class=_opt(value, "esm_class", int) or 0,
            short_message=short_message,
            source_addr_ton=_opt(value, "source_addr_ton", int),
            source_addr_npi=_opt(value, "source_addr_npi", int),
            dest_addr_ton=_opt(value, "dest_addr_ton", int),
            dest_addr_npi=_opt(value, "dest_addr_npi", int),
        )


def _req(obj: Mapping[str, object], key: str, kind: type[_T]) -> _T:
    value = _opt(obj, key, kind)
    if value is None:
        raise ValueError(f"{key}: required")
    return value


def _opt(obj: Mapping[str, object], key: str, kind: type[_T]) -> _T | None:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int subclass: a JSON true is not a number here.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"{key}: expected {kind.__name__}")
    return value


def _address(addr: str, ton: int | None, npi: int | None) -> tuple[int, int, str]:
    """TON / NPI for an address unless given: E.164 international, short code, or a name."""
    digits = addr[1:] if addr.startswith("+") else addr
    if digits.isdigit():
        guessed = (1, 1) if addr.startswith("+") or len(digits) > 8 else (0, 1)
        addr = digits
    else:
        guessed = (5, 0)  # alphanumeric
    return (guessed[0] if ton is None else ton, guessed[1] if npi is None else npi, addr)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Issued:
    """A message the simulator accepted, for query_sm / cancel_sm / replace_sm and receipts."""

    message_id: str
    system_id: str
    source_addr: str
    destinations: tuple[tuple[int, int, str], ...]  # (ton, npi, address)
    registered_delivery: int
    text: str
    submitted_at: datetime
    state: MessageState
    final_at: datetime | None


# --- text helpers ------------------------------------------------------------------------------


def message_body(pdu: p.Pdu) -> tuple[bytes, bytes]:
    """(udh, body) of a message PDU: short_message, or message_payload when that is empty."""
    body = getattr(pdu, "short_message", b"")
    if not body:
        body = pdu.tlv(Tag.MESSAGE_PAYLOAD) or b""
    esm_class = getattr(pdu, "esm_class", 0)
    if esm_class & EsmClass.UDHI and body:
        cut = min(len(body), 1 + body[0])
        return body[:cut], body[cut:]
    return b"", body


def message_text(pdu: p.Pdu) -> str | None:
    """The text of a message PDU where its data_coding is a text coding, else None."""
    if not hasattr(pdu, "data_coding"):
        return None
    _, body = message_body(pdu)
    return dcs.decode_text(body, pdu.data_coding)


def receipt_text(
    *,
    message_id: str,
    submitted_at: datetime,
    done_at: datetime,
    stat: str,
    text: str,
) -> str:
    """The de-facto standard receipt body (SMPP 3.4 appendix B)."""
    delivered = stat == "DELIVRD"
    return (
        f"id:{message_id} sub:001 dlvrd:{'001' if delivered else '000'} "
        f"submit date:{submitted_at:%y%m%d%H%M} done date:{done_at:%y%m%d%H%M} "
        f"stat:{stat} err:{'000' if delivered else '001'} text:{text[:20]}"
    )


def _gsm7_safe(text: str) -> bytes:
    """Receipt text as GSM 7-bit (data_coding 0); characters it lacks become '?'."""
    return dcs.encode_text(
        "".join(ch if dcs.can_encode(ch, dcs.Alphabet.GSM7) else "?" for ch in text),
        dcs.Alphabet.GSM7,
    )


def message_json(record: ReceivedRequest) -> dict[str, object]:
    """The ``GET /messages`` form of a recorded submit."""
    pdu = record.pdu
    udh, _ = message_body(pdu)
    dests: list[str] = []
    if isinstance(pdu, p.SubmitMulti):
        for dest in pdu.dest_addresses:
            dests.append(dest.destination_addr if isinstance(dest, p.SmeAddress) else dest.dl_name)
    else:
        dests.append(str(getattr(pdu, "destination_addr", "")))
    return {
        "index": record.index,
        "conn_id": record.conn_id,
        "system_id": record.system_id,
        "bind_type": record.bind_type,
        "command": record.command,
        "sequence_number": pdu.sequence_number,
        "message_id": record.message_id,
        "received_at": record.received_at,
        "service_type": getattr(pdu, "service_type", ""),
        "source_addr_ton": getattr(pdu, "source_addr_ton", 0),
        "source_addr_npi": getattr(pdu, "source_addr_npi", 0),
        "source_addr": getattr(pdu, "source_addr", ""),
        "dest_addr_ton": getattr(pdu, "dest_addr_ton", 0),
        "dest_addr_npi": getattr(pdu, "dest_addr_npi", 0),
        "destination_addr": dests[0] if dests else "",
        "dest_addresses": dests,
        "esm_class": getattr(pdu, "esm_class", 0),
        "registered_delivery": getattr(pdu, "registered_delivery", 0),
        "data_coding": getattr(pdu, "data_coding", 0),
        "text": record.text,
        "udh": udh.hex(),
        "short_message": getattr(pdu, "short_message", b"").hex(),
        "tlvs": [{"tag": t.tag, "hex": t.value.hex()} for t in pdu.tlvs],
        "frame": record.frame.hex(),
    }


# --- per-connection handler -------------------------------------------------------------------


class _MoWait:
    """Context of an MO sent by send_mo: the future its caller awaits."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[int]) -> None:
        self.future = future


class _ReceiptSent:
    __slots__ = ("message_id",)

    def __init__(self, message_id: str) -> None:
        self.message_id = message_id


class _Peer:
    """ConnectionHandler for one client connection; forwards everything to the Simulator."""

    def __init__(self, sim: Simulator, conn_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.sim = sim
        self.conn_id = conn_id
        self.conn = SmppConnection(
            Session(Role.SMSC, sim.session_config, loop.time()),
            leg="client",
            loop=loop,
            handler=self,
        )
        self.timers: set[asyncio.TimerHandle] = set()
        self.mo_waits: set[asyncio.Future[int]] = set()
        self.log = log.bind(component="smsc-sim", conn_id=conn_id)

    @property
    def system_id(self) -> str:
        return self.conn.session.system_id or ""

    @property
    def bind_type(self) -> str:
        bind = self.conn.session.bind_type
        return "" if bind is None else _BIND_TYPE_OF_STATE[bind]

    @property
    def receiving(self) -> bool:
        return self.conn.session.state in _RECEIVING

    def info(self) -> SessionInfo:
        return SessionInfo(
            conn_id=self.conn_id,
            peer=self.conn.peer,
            system_id=self.system_id,
            bind_type=self.bind_type,
            state=self.conn.session.state.value,
        )

    # ConnectionHandler

    def handle_events(self, conn: SmppConnection, events: list[ev.Event]) -> None:
        try:
            for event in events:
                self.sim._on_event(self, event)
        except Exception:  # a connection boundary: this peer is dropped, the simulator goes on
            self.log.exception(logs.CONNECTION_FAILED, where="simulator")
            conn.close("simulator error")

    def connection_lost(self, conn: SmppConnection, exc: Exception | None) -> None:
        for handle in self.timers:
            handle.cancel()
        self.timers.clear()
        for future in self.mo_waits:
            if not future.done():
                future.set_exception(MoFailedError("connection lost before the MO was answered"))
        self.mo_waits.clear()
        self.log.info(logs.SESSION_CLOSED, peer=conn.peer, error=None if exc is None else str(exc))
        self.sim._on_lost(self)

    def writing_paused(self, conn: SmppConnection, paused: bool) -> None:
        # A slow client: stop reading it until it drains what we sent, as the gateway does.
        if paused:
            conn.pause_reading("write-buffer")
        else:
            conn.resume_reading("write-buffer")


# --- the simulator ----------------------------------------------------------------------------


class Simulator:
    """An SMSC on ``host:port`` (0 picks a free port), with an optional HTTP control endpoint.

    Use as ``async with Simulator(...) as sim:`` or ``await start()`` / ``await stop()``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        control_host: str = "127.0.0.1",
        control_port: int | None = None,
        system_id: str = DEFAULT_SYSTEM_ID,
        accounts: Mapping[str, str] | None = None,
        receipts: bool = False,
        faults: Faults | None = None,
        session_config: SessionConfig | None = None,
        mo_timeout_s: float = 10.0,
        max_records: int | None = 100_000,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.control_host = control_host
        self.requested_control_port = control_port
        self.system_id = system_id
        # None accepts any credentials; otherwise system_id -> password.
        self.accounts = None if accounts is None else dict(accounts)
        self.receipts = receipts
        self.session_config = session_config or SessionConfig()
        self.mo_timeout_s = mo_timeout_s
        self._faults = faults or Faults()
        self._requests: deque[ReceivedRequest] = deque(maxlen=max_records)
        self._messages: deque[ReceivedRequest] = deque(maxlen=max_records)
        self._issued: OrderedDict[str, _Issued] = OrderedDict()
        self._max_issued = max_records
        self._pending_receipts: dict[str, deque[p.DeliverSm]] = {}
        self._receipt_timers: set[asyncio.TimerHandle] = set()
        self._peers: dict[str, _Peer] = {}
        self._index = itertools.count()
        self._conn_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        # A per-instance prefix keeps ids unique across simulator restarts in one test run.
        self._id_prefix = secrets.token_hex(3).upper()
        self._round_robin = itertools.count()
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._control: HttpServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server = await loop.create_server(self._accept, self.host, self.requested_port)
        log.info(
            logs.LISTENER_STARTED, component="smsc-sim", listen=f"{self.host}:{self.port}",
            system_id=self.system_id, receipts=self.receipts,
            accounts="any" if self.accounts is None else len(self.accounts),
        )  # fmt: skip
        if self.requested_control_port is not None:
            control = HttpServer(self._routes(), name="smsc-sim-control")
            try:
                await control.start(self.control_host, self.requested_control_port)
            except OSError:
                self._server.close()
                await self._server.wait_closed()
                self._server = None
                raise
            self._control = control

    async def stop(self) -> None:
        """Stop accepting, unbind every bound session (bounded wait), then close the rest."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for timer in self._receipt_timers:
            timer.cancel()
        self._receipt_timers.clear()
        if self._control is not None:
            await self._control.stop()
            self._control = None
        loop = asyncio.get_running_loop()
        peers = list(self._peers.values())
        for peer in peers:
            session = peer.conn.session
            if session.closed:
                continue
            if session.state in BOUND_STATES:
                events = session.start_unbind(loop.time())
                peer.handle_events(peer.conn, events)
                peer.conn.flush()
            elif session.state is not BindState.UNBOUND:
                peer.conn.close("simulator stopping")
        waiting = [peer.conn.lost for peer in peers if not peer.conn.lost.done()]
        if waiting:
            grace = self.session_config.unbind_timeout_s + 1.0
            _, pending = await asyncio.wait(waiting, timeout=grace)
            if pending:
                for peer in peers:
                    if not peer.conn.lost.done():
                        peer.conn.abort()
                await asyncio.wait(pending, timeout=1.0)
        await server.wait_closed()

    @property
    def port(self) -> int:
        """The SMPP port actually bound."""
        assert self._server is not None and self._server.sockets, "simulator not started"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def control_port(self) -> int:
        """The HTTP control port actually bound."""
        assert self._control is not None, "control endpoint not enabled"
        return self._control.port

    def _accept(self) -> SmppConnection:
        assert self._loop is not None
        peer = _Peer(self, f"s{next(self._conn_ids)}", self._loop)
        if self._faults.silent:
            peer.conn.pause_reading(_SILENT)
        self._peers[peer.conn_id] = peer
        self._notify()
        return peer.conn

    def _on_lost(self, peer: _Peer) -> None:
        self._peers.pop(peer.conn_id, None)
        self._notify()

    # --- observation --------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request received (binds, submits, queries...), in arrival order."""
        return list(self._requests)

    @property
    def messages(self) -> list[ReceivedRequest]:
        """The submits received (submit_sm, submit_multi, data_sm), in arrival order."""
        return list(self._messages)

    @property
    def sessions(self) -> list[SessionInfo]:
        """Open client connections."""
        return [peer.info() for peer in self._peers.values()]

    def bound(self, system_id: str | None = None, *, receiving: bool = False) -> list[SessionInfo]:
        """Bound sessions, optionally of one system_id and only those that take MOs."""
        return [
            peer.info()
            for peer in self._peers.values()
            if peer.conn.session.state in BOUND_STATES
            and (system_id is None or peer.system_id == system_id)
            and (not receiving or peer.receiving)
        ]

    def clear(self) -> int:
        """Forget the recorded requests; returns how many submits were dropped."""
        count = len(self._messages)
        self._requests.clear()
        self._messages.clear()
        self._notify()
        return count

    async def wait_for(
        self,
        predicate: Callable[[list[ReceivedRequest]], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (the call sites read better with it)
    ) -> list[ReceivedRequest]:
        """Wait until ``predicate(self.messages)`` holds; returns those messages.

        Raises TimeoutError after ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                messages = self.messages
                if predicate(messages):
                    return messages
                await changed.wait()

    async def wait_until(
        self,
        condition: Callable[[], bool],
        timeout: float = 5.0,  # noqa: ASYNC109 (as wait_for)
    ) -> None:
        """Wait until ``condition()`` holds; it is re-checked on every request, bind and close."""
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()

    def _notify(self) -> None:
        changed = self._changed
        self._changed = asyncio.Event()
        changed.set()

    # --- faults --------------------------------------------------------------------------------

    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, **changes: Any) -> Faults:
        """Change some fault settings (the others stay); returns the new settings."""
        unknown = set(changes) - Faults.field_names()
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        return self._set_faults(dataclasses.replace(self._faults, **changes))

    def reset_faults(self) -> Faults:
        return self._set_faults(Faults())

    def _set_faults(self, faults: Faults) -> Faults:
        """Switch to ``faults``; going silent or coming back applies to every connection now."""
        self._faults = faults
        for peer in self._peers.values():
            if faults.silent:
                peer.conn.pause_reading(_SILENT)
            else:
                peer.conn.resume_reading(_SILENT)
        return faults

    # --- MO ------------------------------------------------------------------------------------

    async def send_mo(
        self,
        mo: Mo | None = None,
        /,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 (defaults to mo_timeout_s)
        **fields: Any,
    ) -> int:
        """Send an MO to a bound RX / TRX session; returns the command_status it answered.

        Pass an ``Mo`` or its fields (``source=..., destination=..., text=...``). Raises
        NoReceiverError when nobody can take it, TimeoutError when the answer does not come
        within ``timeout`` (default ``mo_timeout_s``), MoFailedError if the session closes first,
        and ValueError for a message that cannot be built.
        """
        if mo is None:
            mo = Mo(**fields)
        elif fields:
            mo = dataclasses.replace(mo, **fields)
        pdu = mo.to_pdu()
        peer = self._pick_receiver(mo.system_id)
        if peer is None:
            raise NoReceiverError(
                "no receiver bound" + ("" if mo.system_id is None else f" for {mo.system_id}")
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        try:
            peer.conn.session.send_request(pdu, loop.time(), _MoWait(future))
        except LocalProtocolError as exc:
            raise NoReceiverError(str(exc)) from exc
        peer.mo_waits.add(future)
        peer.conn.flush()
        try:
            status = await asyncio.wait_for(future, timeout or self.mo_timeout_s)
        finally:
            peer.mo_waits.discard(future)
        peer.log.info(
            logs.SIM_MO_SENT, command_id=mo.command, system_id=peer.system_id,
            source=logs.mask_subscriber(mo.source), receipt=False,
            command_status=status_name(status),
        )  # fmt: skip
        return status

    def _pick_receiver(self, system_id: str | None) -> _Peer | None:
        receivers = [
            peer
            for peer in self._peers.values()
            if peer.receiving and (system_id is None or peer.system_id == system_id)
        ]
        if not receivers:
            return None
        return receivers[next(self._round_robin) % len(receivers)]

    # --- events ----------------------------------------------------------------------------

    def _on_event(self, peer: _Peer, event: ev.Event) -> None:
        if isinstance(event, ev.RequestReceived):
            self._on_request(peer, event.pdu, event.frame)
        elif isinstance(event, ev.ResponseReceived):
            self._on_response(peer, event.pdu, event.context)
        elif isinstance(event, ev.RequestExpired):
            context = event.context
            if isinstance(context, _MoWait) and not context.future.done():
                if peer.conn.session.closed:
                    context.future.set_exception(MoFailedError("session closed before answering"))
                else:
                    context.future.set_exception(TimeoutError("no answer to the MO"))
            elif isinstance(context, _ReceiptSent):
                peer.log.warning(
                    logs.REQUEST_EXPIRED, command_id="deliver_sm", receipt=True,
                    message_id=context.message_id,
                )  # fmt: skip
        elif isinstance(event, ev.PduRejected):
            peer.log.info(
                logs.PDU_REJECTED, command_id=command_name(event.command_id),
                sequence_number=event.sequence_number, command_status=status_name(event.status),
                reason=event.reason,
            )  # fmt: skip
        elif isinstance(event, ev.UnexpectedResponse):
            peer.log.info(
                logs.PDU_UNEXPECTED_RESPONSE, command_id=command_name(event.pdu.command_id),
                sequence_number=event.pdu.sequence_number,
            )  # fmt: skip
        elif isinstance(event, ev.UnbindReceived):
            peer.log.info(logs.UNBIND_RECEIVED, system_id=peer.system_id)
            self._notify()
        elif isinstance(event, ev.SessionClosed):
            peer.log.info(logs.SESSION_CLOSED, reason=event.reason, system_id=peer.system_id)
            self._notify()

    def _on_response(self, peer: _Peer, pdu: p.Pdu, context: object) -> None:
        if isinstance(context, _MoWait):
            if not context.future.done():
                context.future.set_result(pdu.command_status)
        elif isinstance(context, _ReceiptSent) and pdu.command_status:
            peer.log.warning(
                logs.SIM_MO_SENT, receipt=True, message_id=context.message_id,
                command_status=status_name(pdu.command_status),
            )  # fmt: skip

    def _on_request(self, peer: _Peer, pdu: p.Pdu, frame: bytes) -> None:
        cid = pdu.command_id
        if cid in BIND_COMMANDS:
            assert isinstance(pdu, p.BindRequest)
            self._on_bind(peer, pdu, frame)
        elif cid in SUBMIT_COMMANDS:
            self._on_submit(peer, pdu, frame)
        elif isinstance(pdu, p.QuerySm):
            self._record(peer, pdu, frame)
            self._answer(peer, self._query(peer, pdu))
        elif isinstance(pdu, p.CancelSm):
            self._record(peer, pdu, frame)
            self._answer(peer, self._cancel(peer, pdu))
        elif isinstance(pdu, p.ReplaceSm):
            self._record(peer, pdu, frame)
            self._answer(peer, self._replace(peer, pdu))
        else:
            # Vendor commands and anything else a client may send: recorded, not supported.
            self._record(peer, pdu, frame)
            self._answer(
                peer, error_response(cid, pdu.sequence_number, CommandStatus.ESME_RINVCMDID)
            )

    def _record(
        self, peer: _Peer, pdu: p.Pdu, frame: bytes, message_id: str | None = None
    ) -> ReceivedRequest:
        cid = pdu.command_id
        bind = cid in BIND_COMMANDS
        record = ReceivedRequest(
            index=next(self._index),
            conn_id=peer.conn_id,
            system_id=pdu.system_id if isinstance(pdu, p.BindRequest) else peer.system_id,
            bind_type=BIND_TYPES[cid] if bind else peer.bind_type,
            pdu=pdu,
            frame=frame,
            received_at=time.time(),
            message_id=message_id,
        )
        self._requests.append(record)
        if cid in SUBMIT_COMMANDS:
            self._messages.append(record)
            peer.log.info(
                logs.SIM_MESSAGE_RECEIVED, command_id=record.command, system_id=record.system_id,
                sequence_number=pdu.sequence_number, message_id=message_id,
                destination=logs.mask_subscriber(str(getattr(pdu, "destination_addr", ""))),
            )  # fmt: skip
        self._notify()
        return record

    # --- binds ---------------------------------------------------------------------------------

    def _bind_status(self, pdu: p.BindRequest) -> int:
        if self._faults.bind_status:
            return self._faults.bind_status
        if self.accounts is None:
            return CommandStatus.ESME_ROK
        password = self.accounts.get(pdu.system_id)
        if password is None:
            return CommandStatus.ESME_RINVSYSID
        if password != pdu.password:
            return CommandStatus.ESME_RINVPASWD
        return CommandStatus.ESME_ROK

    def _on_bind(self, peer: _Peer, pdu: p.BindRequest, frame: bytes) -> None:
        self._record(peer, pdu, frame)
        status = self._bind_status(pdu)
        bind_type = BIND_TYPES[pdu.command_id]
        seq = pdu.sequence_number
        session = peer.conn.session
        assert self._loop is not None
        if status:
            session.send_response(error_response(pdu.command_id, seq, status), self._loop.time())
            peer.log.warning(
                logs.BIND_FAILED, system_id=pdu.system_id, bind_type=bind_type,
                command_status=status_name(status),
            )  # fmt: skip
            return
        response = p.BIND_RESP_FOR[type(pdu)](
            system_id=self.system_id,
            sequence_number=seq,
            tlvs=(int_tlv(Tag.SC_INTERFACE_VERSION, 0x34, 1),),
        )
        session.send_response(encode(response), self._loop.time())
        peer.log = peer.log.bind(system_id=pdu.system_id, bind_type=bind_type)
        peer.log.info(logs.BIND_COMPLETED, peer=peer.conn.peer)
        self._notify()
        if peer.receiving:
            self._flush_pending_receipts(peer)

    # --- submits -------------------------------------------------------------------------------

    def _on_submit(self, peer: _Peer, pdu: p.Pdu, frame: bytes) -> None:
        faults = self._faults
        if faults.drop_after is not None:
            if faults.drop_after == 0:
                self._faults = dataclasses.replace(faults, drop_after=None)
                self._record(peer, pdu, frame)
                self._drop_all()
                return
            self._faults = dataclasses.replace(faults, drop_after=faults.drop_after - 1)
        if not faults.respond:
            self._record(peer, pdu, frame)
            return
        cid = pdu.command_id
        seq = pdu.sequence_number
        status = faults.submit_status
        if faults.refuse_after is not None:
            if faults.refuse_after == 0:
                status = faults.refuse_status
                self._faults = dataclasses.replace(faults, refuse_after=None)
            else:
                self._faults = dataclasses.replace(faults, refuse_after=faults.refuse_after - 1)
        if status:
            self._record(peer, pdu, frame)
            self._answer(peer, error_response(cid, seq, status))
            return
        issued = self._issue(peer, pdu, faults.receipt_stat)
        self._record(peer, pdu, frame, issued.message_id)
        response: p.Pdu
        if isinstance(pdu, p.SubmitMulti):
            unsuccess = tuple(
                p.UnsuccessSme(error_status_code=CommandStatus.ESME_RINVDLNAME)
                for dest in pdu.dest_addresses
                if isinstance(dest, p.DistributionList)  # the simulator knows no lists
            )
            response = p.SubmitMultiResp(
                message_id=issued.message_id, unsuccess_smes=unsuccess, sequence_number=seq
            )
        elif isinstance(pdu, p.DataSm):
            response = p.DataSmResp(message_id=issued.message_id, sequence_number=seq)
        else:
            response = p.SubmitSmResp(message_id=issued.message_id, sequence_number=seq)
        self._answer(peer, encode(response), then=lambda: self._receipts_due(issued))

    def _issue(self, peer: _Peer, pdu: p.Pdu, stat: str) -> _Issued:
        now = datetime.now(UTC)
        dests: tuple[tuple[int, int, str], ...]
        if isinstance(pdu, p.SubmitMulti):
            dests = tuple(
                (d.dest_addr_ton, d.dest_addr_npi, d.destination_addr)
                for d in pdu.dest_addresses
                if isinstance(d, p.SmeAddress)
            )
        else:
            dests = (
                (
                    getattr(pdu, "dest_addr_ton", 0),
                    getattr(pdu, "dest_addr_npi", 0),
                    getattr(pdu, "destination_addr", ""),
                ),
            )
        # A scheduled message waits (and can be cancelled or replaced); the rest reach their
        # outcome at once.
        scheduled = bool(getattr(pdu, "schedule_delivery_time", ""))
        issued = _Issued(
            message_id=f"{self._id_prefix}{next(self._message_ids):08d}",
            system_id=peer.system_id,
            source_addr=getattr(pdu, "source_addr", ""),
            destinations=dests,
            registered_delivery=getattr(pdu, "registered_delivery", 0),
            text=message_text(pdu) or "",
            submitted_at=now,
            state=MessageState.ENROUTE if scheduled else RECEIPT_STATS[stat],
            final_at=None if scheduled else now,
        )
        self._issued[issued.message_id] = issued
        if self._max_issued is not None and len(self._issued) > self._max_issued:
            self._issued.popitem(last=False)
        return issued

    def _answer(self, peer: _Peer, frame: bytes, then: Callable[[], None] | None = None) -> None:
        delay = self._faults.response_delay_s
        if delay <= 0:
            self._answer_now(peer, frame, then, None)
            return
        assert self._loop is not None
        box: list[asyncio.TimerHandle] = []
        handle = self._loop.call_later(delay, lambda: self._answer_now(peer, frame, then, box[0]))
        box.append(handle)
        peer.timers.add(handle)

    def _answer_now(
        self,
        peer: _Peer,
        frame: bytes,
        then: Callable[[], None] | None,
        handle: asyncio.TimerHandle | None,
    ) -> None:
        if handle is not None:
            peer.timers.discard(handle)
        session = peer.conn.session
        if session.closed:
            return
        assert self._loop is not None
        try:
            session.send_response(frame, self._loop.time())
        except LocalProtocolError:
            return  # the session moved on (closed, or the request is no longer owed)
        peer.conn.flush()
        if then is not None:
            then()

    def _drop_all(self) -> None:
        reset = self._faults.drop_reset
        for peer in list(self._peers.values()):
            peer.log.warning(
                logs.SESSION_CLOSED, reason=f"drop_after fault: {'reset' if reset else 'aborting'}"
            )
            transport = peer.conn.transport
            sock = None if transport is None else transport.get_extra_info("socket")
            if reset and sock is not None:
                # Linger on, timeout 0: close() sends RST and drops what is still queued.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.conn.abort()

    # --- receipts ------------------------------------------------------------------------------

    def _receipts_due(self, issued: _Issued) -> None:
        delay = self._faults.receipt_delay_s
        if delay <= 0:
            self._send_receipts(issued)
            return
        assert self._loop is not None
        box: list[asyncio.TimerHandle] = []

        def fire() -> None:
            self._receipt_timers.discard(box[0])
            self._send_receipts(issued)

        box.append(self._loop.call_later(delay, fire))
        self._receipt_timers.add(box[0])

    def _send_receipts(self, issued: _Issued) -> None:
        if not self.receipts or issued.state is MessageState.ENROUTE:
            return
        stat = next(word for word, state in RECEIPT_STATS.items() if state is issued.state)
        wanted = issued.registered_delivery & 0x03
        if not (wanted == 1 or (wanted == 2 and stat != "DELIVRD")):
            return
        text = receipt_text(
            message_id=issued.message_id,
            submitted_at=issued.submitted_at,
            done_at=issued.final_at or issued.submitted_at,
            stat=stat,
            text=issued.text,
        )
        body = _gsm7_safe(text)
        for ton, npi, dest in issued.destinations:
            receipt = p.DeliverSm(
                source_addr_ton=ton,
                source_addr_npi=npi,
                source_addr=dest,
                destination_addr=issued.source_addr,
                esm_class=EsmClass.DELIVERY_RECEIPT,
                data_coding=0,
                short_message=body,
                tlvs=(
                    p.Tlv(Tag.RECEIPTED_MESSAGE_ID, issued.message_id.encode("ascii") + b"\0"),
                    int_tlv(Tag.MESSAGE_STATE, issued.state, 1),
                ),
            )
            self._deliver_receipt(issued.system_id, receipt, issued.message_id)

    def _deliver_receipt(self, system_id: str, receipt: p.DeliverSm, message_id: str) -> None:
        peer = self._pick_receiver(system_id)
        if peer is None:
            # Held until a receiver of that account binds, as an SMSC stores its receipts.
            queue = self._pending_receipts.setdefault(system_id, deque(maxlen=PENDING_RECEIPTS_MAX))
            queue.append(receipt)
            return
        self._send_receipt(peer, receipt, message_id)

    def _send_receipt(self, peer: _Peer, receipt: p.DeliverSm, message_id: str) -> None:
        assert self._loop is not None
        try:
            peer.conn.session.send_request(receipt, self._loop.time(), _ReceiptSent(message_id))
        except SmppError:
            peer.log.warning(logs.SIM_MO_SENT, receipt=True, message_id=message_id, sent=False)
            return
        peer.conn.flush()
        peer.log.info(
            logs.SIM_MO_SENT, receipt=True, message_id=message_id, system_id=peer.system_id
        )

    def _flush_pending_receipts(self, peer: _Peer) -> None:
        queue = self._pending_receipts.pop(peer.system_id, None)
        while queue:
            receipt = queue.popleft()
            message_id = (receipt.tlv(Tag.RECEIPTED_MESSAGE_ID) or b"").rstrip(b"\0").decode()
            self._send_receipt(peer, receipt, message_id)

    # --- query / cancel / replace -------------------------------------------------------------

    def _owned(self, peer: _Peer, message_id: str) -> _Issued | None:
        issued = self._issued.get(message_id)
        if issued is None or issued.system_id != peer.system_id:
            return None
        return issued

    def _query(self, peer: _Peer, pdu: p.QuerySm) -> bytes:
        issued = self._owned(peer, pdu.message_id)
        if issued is None:
            return error_response(pdu.command_id, pdu.sequence_number, CommandStatus.ESME_RINVMSGID)
        final = issued.final_at
        return encode(
            p.QuerySmResp(
                message_id=issued.message_id,
                final_date="" if final is None else final.strftime("%y%m%d%H%M%S") + "000+",
                message_state=issued.state,
                error_code=0,
                sequence_number=pdu.sequence_number,
            )
        )

    def _cancel(self, peer: _Peer, pdu: p.CancelSm) -> bytes:
        issued = self._owned(peer, pdu.message_id)
        if issued is None:
            status: int = CommandStatus.ESME_RINVMSGID
        elif issued.state is not MessageState.ENROUTE:
            status = CommandStatus.ESME_RCANCELFAIL
        else:
            self._issued[issued.message_id] = dataclasses.replace(
                issued, state=MessageState.DELETED, final_at=datetime.now(UTC)
            )
            status = CommandStatus.ESME_ROK
        if status:
            return error_response(pdu.command_id, pdu.sequence_number, status)
        return encode(p.CancelSmResp(sequence_number=pdu.sequence_number))

    def _replace(self, peer: _Peer, pdu: p.ReplaceSm) -> bytes:
        issued = self._owned(peer, pdu.message_id)
        if issued is None:
            status: int = CommandStatus.ESME_RINVMSGID
        elif issued.state is not MessageState.ENROUTE:
            status = CommandStatus.ESME_RREPLACEFAIL
        else:
            self._issued[issued.message_id] = dataclasses.replace(
                issued,
                registered_delivery=pdu.registered_delivery,
                text=pdu.short_message.decode("latin-1"),
            )
            status = CommandStatus.ESME_ROK
        if status:
            return error_response(pdu.command_id, pdu.sequence_number, status)
        return encode(p.ReplaceSmResp(sequence_number=pdu.sequence_number))

    # --- HTTP control -------------------------------------------------------------------------

    def _routes(self) -> dict[tuple[str, str], Handler]:
        return {
            ("GET", "/health"): self._http_health,
            ("GET", "/messages"): self._http_messages,
            ("DELETE", "/messages"): self._http_clear,
            ("POST", "/mo"): self._http_mo,
            ("GET", "/faults"): self._http_get_faults,
            ("POST", "/faults"): self._http_set_faults,
        }

    async def _http_health(self, request: Request) -> Response:
        return json_response(
            {
                "status": "ok",
                "system_id": self.system_id,
                "receipts": self.receipts,
                "sessions": [dataclasses.asdict(info) for info in self.sessions],
                "messages": len(self._messages),
            }
        )

    async def _http_messages(self, request: Request) -> Response:
        return json_response([message_json(record) for record in self._messages])

    async def _http_clear(self, request: Request) -> Response:
        return json_response({"cleared": self.clear()})

    async def _http_get_faults(self, request: Request) -> Response:
        return json_response(self._faults.to_json())

    async def _http_set_faults(self, request: Request) -> Response:
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        try:
            faults = Faults() if body.pop("reset", False) else self._faults
            self._set_faults(dataclasses.replace(faults, **_fault_changes(body)))
        except (TypeError, ValueError) as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        return json_response(self._faults.to_json())

    async def _http_mo(self, request: Request) -> Response:
        try:
            mo = Mo.from_json(request.json())
            status = await self.send_mo(mo)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
        except NoReceiverError as exc:
            raise HttpError(HTTPStatus.CONFLICT, str(exc)) from None
        except TimeoutError:
            raise HttpError(HTTPStatus.GATEWAY_TIMEOUT, "no answer from the client") from None
        except MoFailedError as exc:
            raise HttpError(HTTPStatus.BAD_GATEWAY, str(exc)) from None
        return json_response({"command_status": status, "status_name": status_name(status)})


def _fault_changes(body: Mapping[str, object]) -> dict[str, Any]:
    """Validate the JSON of ``POST /faults`` field by field (types as the dataclass has them)."""
    unknown = set(body) - Faults.field_names()
    if unknown:
        raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
    kinds: Mapping[str, Sequence[type]] = {
        "respond": (bool,),
        "submit_status": (int,),
        "drop_after": (int, type(None)),
        "drop_reset": (bool,),
        "silent": (bool,),
        "refuse_after": (int, type(None)),
        "refuse_status": (int,),
        "bind_status": (int,),
        "response_delay_s": (int, float),
        "receipt_delay_s": (int, float),
        "receipt_stat": (str,),
    }
    for key, value in body.items():
        wrong_bool = isinstance(value, bool) and bool not in kinds[key]
        if wrong_bool or not isinstance(value, tuple(kinds[key])):
            raise ValueError(f"{key}: wrong type")
    return dict(body)
