"""A small SMPP client (ESME) for ``smpp-gateway send`` and ``smpp-gateway demo``.

It is the project's own sans-I/O ``Session`` (ESME role) over an asyncio stream: what the
daemon's upstream leg uses, so the test client exercises the production protocol code rather
than a third-party library. Inbound deliver_sm / data_sm are answered ESME_ROK at once and
queued for the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Final

from gateway.errors import GatewayError
from gateway.smpp import events as ev
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandId, CommandStatus, Tag, status_name
from gateway.smpp.errors import SmppError
from gateway.smpp.session import Role, Session, SessionConfig
from gateway.text import dcs

BIND_REQUESTS: Final[dict[str, type[p.BindRequest]]] = {
    "transmitter": p.BindTransmitter,
    "receiver": p.BindReceiver,
    "transceiver": p.BindTransceiver,
}
DATA_CODING_UCS2: Final = 0x08
SHORT_MESSAGE_MAX: Final = 254  # SMPP 3.4 section 5.2.22: longer text goes in message_payload
RESPONSE_TIMEOUT_S: Final = 10.0
_READ_SIZE: Final = 65536


class ClientError(GatewayError):
    """The connection failed or closed before an answer came."""


def status_text(status: int) -> str:
    """``ESME_RINVDSTADR (0x0000000b)``: the spec name and the value, as clients log them."""
    return f"{status_name(status)} (0x{status:08x})"


def encode_message(text: str) -> tuple[int, bytes]:
    """(data_coding, octets): GSM 03.38 (data_coding 0) when it can carry the text, else UCS-2."""
    if dcs.can_encode(text, dcs.Alphabet.GSM7):
        return 0, dcs.encode_text(text, dcs.Alphabet.GSM7)
    return DATA_CODING_UCS2, dcs.encode_text(text, dcs.Alphabet.UCS2)


def message_text(pdu: p.Pdu) -> str:
    """The text of a deliver_sm / data_sm (message_payload when short_message is empty)."""
    body = pdu.short_message if isinstance(pdu, p.ShortMessagePdu) else b""
    data_coding = pdu.data_coding if isinstance(pdu, p.ShortMessagePdu | p.DataSm) else 0
    if not body:
        body = pdu.tlv(Tag.MESSAGE_PAYLOAD) or b""
    text = dcs.decode_as(body, dcs.alphabet_for(data_coding))
    return body.hex() if text is None else text


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """A response: its command_status and, for submits, the message_id."""

    status: int
    message_id: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == CommandStatus.ESME_ROK


@dataclass(frozen=True, slots=True, kw_only=True)
class Received:
    """An MO (or receipt) the SMSC side delivered to us."""

    source_addr: str
    destination_addr: str
    esm_class: int
    text: str


class SmppClient:
    """One ESME connection: ``await SmppClient.connect(host, port)``, then bind, submit, unbind."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._loop = asyncio.get_running_loop()
        # No keep-alives: the client's sessions last seconds.
        self._session = Session(
            Role.ESME,
            SessionConfig(enquire_link_interval_s=None, response_timeout_s=RESPONSE_TIMEOUT_S),
            self._loop.time(),
        )
        self._reader = reader
        self._writer = writer
        self._timer: asyncio.TimerHandle | None = None
        self._closed = self._loop.create_future()
        self.received: asyncio.Queue[Received] = asyncio.Queue()
        self._task = self._loop.create_task(self._read_loop())

    @classmethod
    async def connect(cls, host: str, port: int, *, timeout_s: float = 5.0) -> SmppClient:
        """Open the TCP connection; OSError / TimeoutError when it cannot be opened."""
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def bind(self, bind_type: str, system_id: str, password: str) -> Answer:
        request = BIND_REQUESTS[bind_type](system_id=system_id, password=password)
        response = await self._request(request)
        return Answer(status=response.command_status)

    async def submit(self, source_addr: str, destination_addr: str, text: str) -> Answer:
        data_coding, body = encode_message(text)
        payload = len(body) > SHORT_MESSAGE_MAX
        request = p.SubmitSm(
            source_addr_ton=_ton(source_addr),
            source_addr_npi=1 if source_addr.lstrip("+").isdigit() else 0,
            source_addr=source_addr.lstrip("+"),
            dest_addr_ton=_ton(destination_addr),
            dest_addr_npi=1,
            destination_addr=destination_addr.lstrip("+"),
            data_coding=data_coding,
            short_message=b"" if payload else body,
            tlvs=(p.Tlv(Tag.MESSAGE_PAYLOAD, body),) if payload else (),
        )
        response = await self._request(request)
        message_id = response.message_id if isinstance(response, p.MessageIdResponse) else None
        return Answer(status=response.command_status, message_id=message_id)

    async def unbind(self) -> None:
        """Unbind (if bound) and wait for the session to close; bounded by unbind_timeout_s."""
        self._handle(self._session.start_unbind(self._loop.time()))
        self._flush()
        await asyncio.shield(self._closed)

    async def close(self) -> None:
        """Close the connection (after unbind, or at once); idempotent."""
        self._handle(self._session.close("client closed"))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._timer is not None:
            self._timer.cancel()
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    # --- the adapter -----------------------------------------------------------------------

    async def _request(self, pdu: p.Pdu) -> p.Pdu:
        if self._closed.done():
            raise ClientError("connection closed")
        answer: asyncio.Future[p.Pdu] = self._loop.create_future()
        try:
            self._session.send_request(pdu, self._loop.time(), answer)
        except SmppError as exc:
            raise ClientError(str(exc)) from exc
        self._flush()
        return await answer

    async def _read_loop(self) -> None:
        reason = "connection closed by the peer"
        try:
            while True:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                self._handle(self._session.receive_data(data, self._loop.time()))
                self._flush()
                if self._session.closed:
                    return
        except OSError as exc:
            reason = str(exc) or type(exc).__name__
        self._handle(self._session.close(reason))

    def _handle(self, events: list[ev.Event]) -> None:
        for event in events:
            if isinstance(event, ev.ResponseReceived):
                future = event.context
                if isinstance(future, asyncio.Future) and not future.done():
                    future.set_result(event.pdu)
            elif isinstance(event, ev.RequestReceived):
                self._on_request(event.pdu)
            elif isinstance(event, ev.RequestExpired):
                future = event.context
                if isinstance(future, asyncio.Future) and not future.done():
                    reason = f"no response within {RESPONSE_TIMEOUT_S:g} s"
                    future.set_exception(ClientError(reason))
            elif isinstance(event, ev.SessionClosed):
                self._on_closed(event.reason)

    def _on_request(self, pdu: p.Pdu) -> None:
        if pdu.command_id in (CommandId.DELIVER_SM, CommandId.DATA_SM):
            response: p.Pdu = (
                p.DeliverSmResp(sequence_number=pdu.sequence_number)
                if pdu.command_id == CommandId.DELIVER_SM
                else p.DataSmResp(sequence_number=pdu.sequence_number)
            )
            self._session.send_response(response, self._loop.time())
            if isinstance(pdu, p.ShortMessagePdu | p.DataSm):
                self.received.put_nowait(
                    Received(
                        source_addr=pdu.source_addr,
                        destination_addr=pdu.destination_addr,
                        esm_class=pdu.esm_class,
                        text=message_text(pdu),
                    )
                )

    def _on_closed(self, reason: str) -> None:
        for _, _, context in self._session.abandon_outstanding():
            if isinstance(context, asyncio.Future) and not context.done():
                context.set_exception(ClientError(reason))
        if not self._closed.done():
            self._closed.set_result(None)

    def _flush(self) -> None:
        data = self._session.data_to_send()
        if data and not self._writer.is_closing():
            self._writer.write(data)
        deadline = self._session.get_timer()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._handle(self._session.handle_timer(self._loop.time()))
        self._flush()


def _ton(addr: str) -> int:
    """International (1) for a number given with '+' or 11+ digits, alphanumeric (5) for a
    name, else unknown (0): what an application would set."""
    digits = addr.lstrip("+")
    if not digits.isdigit():
        return 5
    return 1 if addr.startswith("+") or len(digits) >= 11 else 0
