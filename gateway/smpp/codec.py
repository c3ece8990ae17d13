"""Encode and decode whole SMPP 3.4 PDUs (header included); no I/O.

``encode(decode(frame)) == frame`` for every frame ``decode`` accepts: TLVs stay raw in wire
order, unknown tags and command ids pass through, and an absent response body stays absent.
Decoding is lenient about c-octet string maxima (real clients send long passwords) and strict
about structure; every decode failure is a ``PduDecodeError`` carrying the status the peer must
get (SMPP 3.4 section 5.1.3):

- body ends inside a mandatory field, or a missing NUL: ``ESME_RINVCMDLEN``
- bytes after a PDU that takes no body: ``ESME_RINVCMDLEN``
- ``sm_length`` runs past the body: ``ESME_RINVMSGLEN``
- a TLV header or value runs past the body: ``ESME_RINVOPTPARSTREAM``
- a submit_multi ``dest_flag`` other than 1 or 2: ``ESME_RINVDESTFLAG``

The hot path (submit_sm, deliver_sm) is straight-line code over ``str.index`` and unpacking,
and builds the frozen PDU as a writable twin of its class (``_writable``) whose class is set
at the end: about five times faster than the frozen dataclass ``__init__``. The other PDUs
are built through their slot descriptors (``_builder``), about three times faster.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, NamedTuple

from gateway.smpp.constants import HEADER_LENGTH, RESPONSE_BIT, CommandId, CommandStatus
from gateway.smpp.errors import FramingError, PduDecodeError, PduEncodeError
from gateway.smpp.pdu import (
    PDU_CLASSES,
    RESPONSE_FOR,
    AlertNotification,
    BindReceiver,
    BindReceiverResp,
    BindRequest,
    BindResponse,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    CancelSm,
    CancelSmResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    DistributionList,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    MessageIdResponse,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    RawPdu,
    ReplaceSm,
    ReplaceSmResp,
    ShortMessagePdu,
    SmeAddress,
    SubmitMulti,
    SubmitMultiResp,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
    UnsuccessSme,
)

__all__ = [
    "Header",
    "decode",
    "decode_body",
    "decode_header",
    "decode_lenient",
    "encode",
    "error_response",
    "int_tlv",
    "is_vendor_command",
    "tlv_int",
    "tlv_str",
    "with_sequence",
    "with_short_message",
]

_HEADER = struct.Struct(">IIII")
_U32 = struct.Struct(">I")
_TLV_HEAD = struct.Struct(">HH")
_B2 = struct.Struct(">BB")
_B3 = struct.Struct(">BBB")
_B4 = struct.Struct(">BBBB")
_B5 = struct.Struct(">BBBBB")
_DEST_SME = 1
_DEST_DL = 2


class Header(NamedTuple):
    command_length: int
    command_id: int
    command_status: int
    sequence_number: int


def decode_header(frame: bytes) -> Header:
    """The four header fields of a frame (at least 16 bytes)."""
    if len(frame) < HEADER_LENGTH:
        raise FramingError(f"{len(frame)} bytes is shorter than an SMPP header")
    return Header._make(_HEADER.unpack_from(frame))


def with_sequence(frame: bytes, sequence_number: int) -> bytes:
    """The same frame with another sequence_number; the body is copied, never re-encoded."""
    if len(frame) < HEADER_LENGTH:
        raise FramingError(f"{len(frame)} bytes is shorter than an SMPP header")
    try:
        seq = _U32.pack(sequence_number)
    except struct.error as exc:
        raise PduEncodeError(f"sequence_number {sequence_number} out of range") from exc
    return frame[:12] + seq + frame[16:]


def with_short_message(frame: bytes, pdu: SubmitSm, short_message: bytes) -> bytes:
    """``frame`` (which decodes to ``pdu``) carrying ``short_message``: sm_length, the message and
    command_length are patched and every other octet is copied, never re-encoded. A frame not
    laid out as ``pdu`` says, or a message over 255 octets, is re-encoded instead."""
    old = pdu.short_message
    tlvs = pdu.tlvs
    end = len(frame) - sum(4 + len(t.value) for t in tlvs) if tlvs else len(frame)
    start = end - len(old)
    size = len(short_message)
    if (
        start > HEADER_LENGTH
        and size <= 0xFF
        and frame[start - 1] == len(old)
        and frame.startswith(old, start, end)
    ):
        # One join of slices: the footer path patches a frame per MT.
        return b"".join(
            (
                _U32.pack(len(frame) + size - len(old)),
                frame[4 : start - 1],
                _OCTETS[size],
                short_message,
                frame[end:],
            )
        )
    return encode(replace(pdu, short_message=short_message))


_OCTETS = tuple(bytes((n,)) for n in range(256))  # a length octet without building it


def is_vendor_command(command_id: int) -> bool:
    """True for the ids SMPP 3.4 (table 5-1) reserves for SMPP extensions and SMSC vendors.

    Extensions: 0x00000104-0x0000FFFF; SMSC vendor: 0x00010200-0x000102FF; and the same ranges
    with the response bit set.
    """
    base = command_id & ~RESPONSE_BIT
    return 0x00000104 <= base <= 0x0000FFFF or 0x00010200 <= base <= 0x000102FF


# A response id is its request id with the response bit set (SMPP 3.4 section 5.1.2.1).
_RESPONSE_ID: dict[int, int] = {
    command_id: command_id | RESPONSE_BIT
    for command_id, cls in PDU_CLASSES.items()
    if cls in RESPONSE_FOR
}


def error_response(command_id: int, sequence_number: int, status: int) -> bytes:
    """The answer to a request that failed: its own ``*_resp`` with no body, else generic_nack."""
    response_id = _RESPONSE_ID.get(command_id, CommandId.GENERIC_NACK)
    return _HEADER.pack(HEADER_LENGTH, response_id, status, sequence_number)


# --- typed TLV access -------------------------------------------------------------------------


def tlv_int(pdu: Pdu, tag: int) -> int | None:
    """The first TLV with ``tag`` read as a big-endian unsigned integer, or None if absent."""
    value = pdu.tlv(tag)
    return None if value is None else int.from_bytes(value, "big")


def tlv_str(pdu: Pdu, tag: int) -> str | None:
    """The first TLV with ``tag`` read as a (C-octet) string, latin-1, trailing NUL dropped."""
    value = pdu.tlv(tag)
    if value is None:
        return None
    if value.endswith(b"\0"):
        value = value[:-1]
    return value.decode("latin-1")


def int_tlv(tag: int, value: int, size: int) -> Tlv:
    """A TLV holding ``value`` as a ``size``-octet big-endian integer."""
    return Tlv(tag, value.to_bytes(size, "big"))


# --- decoding ---------------------------------------------------------------------------------


class _BodyError(Exception):
    """Raised inside body decoders; ``decode`` turns it into PduDecodeError with the header."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


Builder = Callable[..., Any]


def _builder(cls: type[Any]) -> Builder:
    """Build ``cls`` from positional values in field order, writing the slots directly.

    Equivalent to ``cls(**kwargs)`` but skips the frozen ``__setattr__`` detour of the
    generated ``__init__``; the hypothesis round trip checks that every slot gets written.
    """
    setters = tuple(getattr(cls, f.name).__set__ for f in fields(cls))
    new = object.__new__

    def build(*values: object) -> Any:
        obj = new(cls)
        for setter, value in zip(setters, values, strict=True):
            setter(obj, value)
        return obj

    return build


# Receipts and long messages carry several TLVs each: built inline, slot by slot.
_new = object.__new__
_set_tag: Callable[[Tlv, int], None] = getattr(Tlv, "tag").__set__  # noqa: B009
_set_value: Callable[[Tlv, bytes], None] = getattr(Tlv, "value").__set__  # noqa: B009


def _cstr(frame: bytes, pos: int) -> tuple[str, int]:
    end = frame.index(0, pos)  # ValueError when the NUL is missing: ESME_RINVCMDLEN
    return frame[pos:end].decode("latin-1"), end + 1


def _tlvs(frame: bytes, pos: int) -> tuple[Tlv, ...]:
    end = len(frame)
    if pos == end:
        return ()
    out = []
    while pos < end:
        if pos + 4 > end:
            raise _BodyError(CommandStatus.ESME_RINVOPTPARSTREAM, "truncated TLV header")
        tag, length = _TLV_HEAD.unpack_from(frame, pos)
        pos += 4
        stop = pos + length
        if stop > end:
            raise _BodyError(
                CommandStatus.ESME_RINVOPTPARSTREAM,
                f"TLV 0x{tag:04x} length {length} runs past the body",
            )
        tlv = _new(Tlv)
        _set_tag(tlv, tag)
        _set_value(tlv, frame[pos:stop])
        out.append(tlv)
        pos = stop
    return tuple(out)


Decoder = Callable[[bytes, int, int], Pdu]


def _no_body(cls: type[Pdu]) -> Decoder:
    build = _builder(cls)

    def dec(frame: bytes, status: int, seq: int) -> Pdu:
        if len(frame) != HEADER_LENGTH:
            raise _BodyError(CommandStatus.ESME_RINVCMDLEN, "this PDU takes no body")
        result: Pdu = build(status, seq, ())
        return result

    return dec


def _bind_request(cls: type[BindRequest]) -> Decoder:
    build = _builder(cls)

    def dec(f: bytes, status: int, seq: int) -> Pdu:
        system_id, p = _cstr(f, HEADER_LENGTH)
        password, p = _cstr(f, p)
        system_type, p = _cstr(f, p)
        version, ton, npi = f[p], f[p + 1], f[p + 2]
        address_range, p = _cstr(f, p + 3)
        result: Pdu = build(
            status,
            seq,
            _tlvs(f, p),
            system_id,
            password,
            system_type,
            version,
            ton,
            npi,
            address_range,
        )
        return result

    return dec


def _optional_id(cls: type[BindResponse] | type[MessageIdResponse]) -> Decoder:
    """A response whose whole body is one c-octet string (plus TLVs), or absent."""
    build = _builder(cls)

    def dec(f: bytes, status: int, seq: int) -> Pdu:
        if len(f) == HEADER_LENGTH:
            absent: Pdu = build(status, seq, (), None)
            return absent
        value, p = _cstr(f, HEADER_LENGTH)
        result: Pdu = build(status, seq, _tlvs(f, p), value)
        return result

    return dec


def _outbind(f: bytes, status: int, seq: int) -> Pdu:
    system_id, p = _cstr(f, HEADER_LENGTH)
    password, p = _cstr(f, p)
    result: Pdu = _build_outbind(status, seq, _tlvs(f, p), system_id, password)
    return result


def _writable(cls: type[Any]) -> type[Any]:
    """A subclass of frozen ``cls`` with the same layout whose fields can be assigned.

    A decoder fills one of these with plain attribute stores and then sets ``__class__`` to
    ``cls`` (allowed: the layouts are identical), so what it returns is an ordinary frozen
    ``cls``. A frozen dataclass routes every store through its own ``__setattr__``, which is
    what the slot-descriptor calls of ``_builder`` avoid; a store on this class is the
    interpreter's specialised slot store instead, several times cheaper again. Both
    ``__setattr__`` and ``__delattr__`` must be the generic ones for that (they share a slot).
    """
    return type(
        f"_Writable{cls.__name__}",
        (cls,),
        {
            "__slots__": (),
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            "__module__": __name__,
        },
    )


def _short_message(cls: type[ShortMessagePdu]) -> Decoder:
    """submit_sm / deliver_sm: the hot path, so straight-line code and plain slot stores.

    The frame is decoded to latin-1 once; code points equal bytes, so ``str.index`` finds the
    NULs where ``bytes.index`` would and slicing needs no per-field decode. The c-octet strings
    that are usually empty (service_type, schedule_delivery_time, validity_period) are tested
    for an immediate NUL first, and the fixed octets between them read with one unpack each.
    The PDU is built as a ``_writable`` twin and turned into ``cls`` at the end; a frame that
    fails to decode leaves only the discarded twin behind.
    """
    writable = _writable(cls)
    new = object.__new__
    unpack2 = _B2.unpack_from
    unpack3 = _B3.unpack_from
    unpack5 = _B5.unpack_from
    header = HEADER_LENGTH

    def dec(f: bytes, status: int, seq: int) -> Pdu:
        s = f.decode("latin-1")
        pdu: Any = new(writable)
        pdu.command_status = status
        pdu.sequence_number = seq
        if f[header] == 0:
            pdu.service_type = ""
            e = header
        else:
            e = s.index("\0", header)
            pdu.service_type = s[header:e]
        pdu.source_addr_ton, pdu.source_addr_npi = unpack2(f, e + 1)
        p = e + 3
        e = s.index("\0", p)
        pdu.source_addr = s[p:e]
        pdu.dest_addr_ton, pdu.dest_addr_npi = unpack2(f, e + 1)
        p = e + 3
        e = s.index("\0", p)
        pdu.destination_addr = s[p:e]
        pdu.esm_class, pdu.protocol_id, pdu.priority_flag = unpack3(f, e + 1)
        p = e + 4
        if f[p] == 0:
            pdu.schedule_delivery_time = ""
            e = p
        else:
            e = s.index("\0", p)
            pdu.schedule_delivery_time = s[p:e]
        p = e + 1
        if f[p] == 0:
            pdu.validity_period = ""
            e = p
        else:
            e = s.index("\0", p)
            pdu.validity_period = s[p:e]
        (
            pdu.registered_delivery,
            pdu.replace_if_present_flag,
            pdu.data_coding,
            pdu.sm_default_msg_id,
            sm_length,
        ) = unpack5(f, e + 1)
        p = e + 6
        end = p + sm_length
        size = len(f)
        if end > size:
            raise _BodyError(CommandStatus.ESME_RINVMSGLEN, "sm_length runs past the body")
        pdu.short_message = f[p:end]
        pdu.tlvs = () if end == size else _tlvs(f, end)
        pdu.__class__ = cls
        result: Pdu = pdu
        return result

    return dec


def _submit_multi(f: bytes, status: int, seq: int) -> Pdu:
    service_type, p = _cstr(f, HEADER_LENGTH)
    source_ton, source_npi = f[p], f[p + 1]
    source_addr, p = _cstr(f, p + 2)
    count = f[p]
    p += 1
    dests: list[SmeAddress | DistributionList] = []
    for _ in range(count):
        flag = f[p]
        if flag == _DEST_SME:
            ton, npi = f[p + 1], f[p + 2]
            addr, p = _cstr(f, p + 3)
            dests.append(SmeAddress(dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr))
        elif flag == _DEST_DL:
            name, p = _cstr(f, p + 1)
            dests.append(DistributionList(dl_name=name))
        else:
            raise _BodyError(CommandStatus.ESME_RINVDESTFLAG, f"dest_flag {flag}")
    esm_class, protocol_id, priority_flag = f[p], f[p + 1], f[p + 2]
    schedule_delivery_time, p = _cstr(f, p + 3)
    validity_period, p = _cstr(f, p)
    registered, replace, data_coding, default_msg_id, sm_length = _B5.unpack_from(f, p)
    p += 5
    end = p + sm_length
    if end > len(f):
        raise _BodyError(CommandStatus.ESME_RINVMSGLEN, "sm_length runs past the body")
    result: Pdu = _build_submit_multi(
        status,
        seq,
        _tlvs(f, end),
        service_type,
        source_ton,
        source_npi,
        source_addr,
        tuple(dests),
        esm_class,
        protocol_id,
        priority_flag,
        schedule_delivery_time,
        validity_period,
        registered,
        replace,
        data_coding,
        default_msg_id,
        f[p:end],
    )
    return result


def _submit_multi_resp(f: bytes, status: int, seq: int) -> Pdu:
    if len(f) == HEADER_LENGTH:
        absent: Pdu = _build_submit_multi_resp(status, seq, (), None, ())
        return absent
    message_id, p = _cstr(f, HEADER_LENGTH)
    count = f[p]
    p += 1
    smes = []
    for _ in range(count):
        ton, npi = f[p], f[p + 1]
        addr, p = _cstr(f, p + 2)
        (error,) = _U32.unpack_from(f, p)
        p += 4
        smes.append(
            UnsuccessSme(
                dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr, error_status_code=error
            )
        )
    result: Pdu = _build_submit_multi_resp(status, seq, _tlvs(f, p), message_id, tuple(smes))
    return result


def _data_sm(f: bytes, status: int, seq: int) -> Pdu:
    service_type, p = _cstr(f, HEADER_LENGTH)
    source_ton, source_npi = f[p], f[p + 1]
    source_addr, p = _cstr(f, p + 2)
    dest_ton, dest_npi = f[p], f[p + 1]
    destination_addr, p = _cstr(f, p + 2)
    esm_class, registered, data_coding = f[p], f[p + 1], f[p + 2]
    result: Pdu = _build_data_sm(
        status,
        seq,
        _tlvs(f, p + 3),
        service_type,
        source_ton,
        source_npi,
        source_addr,
        dest_ton,
        dest_npi,
        destination_addr,
        esm_class,
        registered,
        data_coding,
    )
    return result


def _query_sm(f: bytes, status: int, seq: int) -> Pdu:
    message_id, p = _cstr(f, HEADER_LENGTH)
    ton, npi = f[p], f[p + 1]
    source_addr, p = _cstr(f, p + 2)
    result: Pdu = _build_query_sm(status, seq, _tlvs(f, p), message_id, ton, npi, source_addr)
    return result


def _query_sm_resp(f: bytes, status: int, seq: int) -> Pdu:
    if len(f) == HEADER_LENGTH:
        absent: Pdu = _build_query_sm_resp(status, seq, (), None, "", 0, 0)
        return absent
    message_id, p = _cstr(f, HEADER_LENGTH)
    final_date, p = _cstr(f, p)
    state, error = f[p], f[p + 1]
    result: Pdu = _build_query_sm_resp(
        status, seq, _tlvs(f, p + 2), message_id, final_date, state, error
    )
    return result


def _cancel_sm(f: bytes, status: int, seq: int) -> Pdu:
    service_type, p = _cstr(f, HEADER_LENGTH)
    message_id, p = _cstr(f, p)
    source_ton, source_npi = f[p], f[p + 1]
    source_addr, p = _cstr(f, p + 2)
    dest_ton, dest_npi = f[p], f[p + 1]
    destination_addr, p = _cstr(f, p + 2)
    result: Pdu = _build_cancel_sm(
        status,
        seq,
        _tlvs(f, p),
        service_type,
        message_id,
        source_ton,
        source_npi,
        source_addr,
        dest_ton,
        dest_npi,
        destination_addr,
    )
    return result


def _replace_sm(f: bytes, status: int, seq: int) -> Pdu:
    message_id, p = _cstr(f, HEADER_LENGTH)
    source_ton, source_npi = f[p], f[p + 1]
    source_addr, p = _cstr(f, p + 2)
    schedule_delivery_time, p = _cstr(f, p)
    validity_period, p = _cstr(f, p)
    registered, default_msg_id, sm_length = f[p], f[p + 1], f[p + 2]
    p += 3
    end = p + sm_length
    if end > len(f):
        raise _BodyError(CommandStatus.ESME_RINVMSGLEN, "sm_length runs past the body")
    result: Pdu = _build_replace_sm(
        status,
        seq,
        _tlvs(f, end),
        message_id,
        source_ton,
        source_npi,
        source_addr,
        schedule_delivery_time,
        validity_period,
        registered,
        default_msg_id,
        f[p:end],
    )
    return result


def _alert_notification(f: bytes, status: int, seq: int) -> Pdu:
    source_ton, source_npi = f[HEADER_LENGTH], f[HEADER_LENGTH + 1]
    source_addr, p = _cstr(f, HEADER_LENGTH + 2)
    esme_ton, esme_npi = f[p], f[p + 1]
    esme_addr, p = _cstr(f, p + 2)
    result: Pdu = _build_alert_notification(
        status,
        seq,
        _tlvs(f, p),
        source_ton,
        source_npi,
        source_addr,
        esme_ton,
        esme_npi,
        esme_addr,
    )
    return result


_build_outbind = _builder(Outbind)
_build_submit_multi = _builder(SubmitMulti)
_build_submit_multi_resp = _builder(SubmitMultiResp)
_build_data_sm = _builder(DataSm)
_build_query_sm = _builder(QuerySm)
_build_query_sm_resp = _builder(QuerySmResp)
_build_cancel_sm = _builder(CancelSm)
_build_replace_sm = _builder(ReplaceSm)
_build_alert_notification = _builder(AlertNotification)
_build_raw = _builder(RawPdu)

_DECODERS: dict[int, Decoder] = {
    CommandId.SUBMIT_SM: _short_message(SubmitSm),
    CommandId.SUBMIT_SM_RESP: _optional_id(SubmitSmResp),
    CommandId.DELIVER_SM: _short_message(DeliverSm),
    CommandId.DELIVER_SM_RESP: _optional_id(DeliverSmResp),
    CommandId.ENQUIRE_LINK: _no_body(EnquireLink),
    CommandId.ENQUIRE_LINK_RESP: _no_body(EnquireLinkResp),
    CommandId.DATA_SM: _data_sm,
    CommandId.DATA_SM_RESP: _optional_id(DataSmResp),
    CommandId.GENERIC_NACK: _no_body(GenericNack),
    CommandId.BIND_TRANSMITTER: _bind_request(BindTransmitter),
    CommandId.BIND_TRANSMITTER_RESP: _optional_id(BindTransmitterResp),
    CommandId.BIND_RECEIVER: _bind_request(BindReceiver),
    CommandId.BIND_RECEIVER_RESP: _optional_id(BindReceiverResp),
    CommandId.BIND_TRANSCEIVER: _bind_request(BindTransceiver),
    CommandId.BIND_TRANSCEIVER_RESP: _optional_id(BindTransceiverResp),
    CommandId.OUTBIND: _outbind,
    CommandId.UNBIND: _no_body(Unbind),
    CommandId.UNBIND_RESP: _no_body(UnbindResp),
    CommandId.SUBMIT_MULTI: _submit_multi,
    CommandId.SUBMIT_MULTI_RESP: _submit_multi_resp,
    CommandId.QUERY_SM: _query_sm,
    CommandId.QUERY_SM_RESP: _query_sm_resp,
    CommandId.CANCEL_SM: _cancel_sm,
    CommandId.CANCEL_SM_RESP: _no_body(CancelSmResp),
    CommandId.REPLACE_SM: _replace_sm,
    CommandId.REPLACE_SM_RESP: _no_body(ReplaceSmResp),
    CommandId.ALERT_NOTIFICATION: _alert_notification,
}
assert _DECODERS.keys() == PDU_CLASSES.keys()


def decode(frame: bytes) -> Pdu:
    """The PDU in ``frame`` (one whole PDU, header included); unknown command ids give RawPdu.

    Raises ``PduDecodeError`` (answer it, keep the session) or, for fewer than 16 bytes,
    ``FramingError``; never anything that is not an ``SmppError``.
    """
    if type(frame) is not bytes:
        frame = bytes(frame)
    if len(frame) < HEADER_LENGTH:
        raise FramingError(f"{len(frame)} bytes is shorter than an SMPP header")
    length, command_id, status, seq = _HEADER.unpack_from(frame)
    if length != len(frame):
        raise PduDecodeError(
            f"command_length {length} but the frame has {len(frame)} bytes",
            status=CommandStatus.ESME_RINVCMDLEN,
            command_id=command_id,
            sequence_number=seq,
        )
    return decode_body(frame, command_id, status, seq)


def decode_body(frame: bytes, command_id: int, command_status: int, sequence_number: int) -> Pdu:
    """``decode`` for a caller that has already read and checked the header.

    ``frame`` must be ``bytes`` whose length equals its command_length (as ``FrameBuffer``
    hands them out), and the three values those of its header; the session's per-PDU path
    uses this to skip a second look at the header. Raises ``PduDecodeError`` like ``decode``.
    """
    decoder = _DECODERS.get(command_id)
    if decoder is None:
        raw: Pdu = _build_raw(
            command_status, sequence_number, (), command_id, frame[HEADER_LENGTH:]
        )
        return raw
    try:
        return decoder(frame, command_status, sequence_number)
    except _BodyError as exc:
        raise PduDecodeError(
            str(exc), status=exc.status, command_id=command_id, sequence_number=sequence_number
        ) from None
    except (IndexError, ValueError, struct.error):
        # Indexing past the end, a missing NUL, a short unpack: the body ended inside a field.
        raise PduDecodeError(
            "body ends inside a mandatory field",
            status=CommandStatus.ESME_RINVCMDLEN,
            command_id=command_id,
            sequence_number=sequence_number,
        ) from None


def decode_lenient(frame: bytes) -> Pdu:
    """``decode``, except that a body that does not decode gives a ``RawPdu`` holding it.

    For responses: they are never answered, so a relay passes their bytes on whatever they
    hold. Raises ``FramingError`` only for fewer than 16 bytes.
    """
    try:
        return decode(frame)
    except PduDecodeError:
        _, command_id, status, seq = _HEADER.unpack_from(frame)
        raw: Pdu = _build_raw(status, seq, (), command_id, bytes(frame[HEADER_LENGTH:]))
        return raw


# --- encoding ---------------------------------------------------------------------------------


def _c(value: str) -> bytes:
    if "\0" in value:
        raise PduEncodeError(f"NUL inside c-octet string {value!r}")
    return value.encode("latin-1") + b"\0"


def _enc_bind(p: Any) -> bytes:
    return b"".join(
        (
            _c(p.system_id),
            _c(p.password),
            _c(p.system_type),
            _B3.pack(p.interface_version, p.addr_ton, p.addr_npi),
            _c(p.address_range),
        )
    )


def _enc_optional_id(p: Any) -> bytes | None:
    return None if p.message_id is None else _c(p.message_id)


def _enc_bind_resp(p: Any) -> bytes | None:
    return None if p.system_id is None else _c(p.system_id)


def _enc_outbind(p: Any) -> bytes:
    return _c(p.system_id) + _c(p.password)


def _enc_short_message(p: Any) -> bytes:
    return b"".join(
        (
            _c(p.service_type),
            _B2.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
            _B2.pack(p.dest_addr_ton, p.dest_addr_npi),
            _c(p.destination_addr),
            _B3.pack(p.esm_class, p.protocol_id, p.priority_flag),
            _c(p.schedule_delivery_time),
            _c(p.validity_period),
            _B5.pack(
                p.registered_delivery,
                p.replace_if_present_flag,
                p.data_coding,
                p.sm_default_msg_id,
                len(p.short_message),
            ),
            p.short_message,
        )
    )


def _enc_dest(dest: SmeAddress | DistributionList) -> bytes:
    if type(dest) is SmeAddress:
        return _B3.pack(_DEST_SME, dest.dest_addr_ton, dest.dest_addr_npi) + _c(
            dest.destination_addr
        )
    if type(dest) is DistributionList:
        return bytes((_DEST_DL,)) + _c(dest.dl_name)
    raise PduEncodeError(f"not a submit_multi destination: {dest!r}")


def _enc_submit_multi(p: Any) -> bytes:
    return b"".join(
        (
            _c(p.service_type),
            _B2.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
            bytes((len(p.dest_addresses),)),
            *map(_enc_dest, p.dest_addresses),
            _B3.pack(p.esm_class, p.protocol_id, p.priority_flag),
            _c(p.schedule_delivery_time),
            _c(p.validity_period),
            _B5.pack(
                p.registered_delivery,
                p.replace_if_present_flag,
                p.data_coding,
                p.sm_default_msg_id,
                len(p.short_message),
            ),
            p.short_message,
        )
    )


def _enc_unsuccess(sme: UnsuccessSme) -> bytes:
    return (
        _B2.pack(sme.dest_addr_ton, sme.dest_addr_npi)
        + _c(sme.destination_addr)
        + _U32.pack(sme.error_status_code)
    )


def _enc_submit_multi_resp(p: Any) -> bytes | None:
    if p.message_id is None:
        if p.unsuccess_smes:
            raise PduEncodeError("unsuccess_smes need a message_id (a body)")
        return None
    return b"".join(
        (_c(p.message_id), bytes((len(p.unsuccess_smes),)), *map(_enc_unsuccess, p.unsuccess_smes))
    )


def _enc_data_sm(p: Any) -> bytes:
    return b"".join(
        (
            _c(p.service_type),
            _B2.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
            _B2.pack(p.dest_addr_ton, p.dest_addr_npi),
            _c(p.destination_addr),
            _B3.pack(p.esm_class, p.registered_delivery, p.data_coding),
        )
    )


def _enc_query_sm(p: Any) -> bytes:
    return b"".join(
        (
            _c(p.message_id),
            _B2.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
        )
    )


def _enc_query_sm_resp(p: Any) -> bytes | None:
    if p.message_id is None:
        return None
    return _c(p.message_id) + _c(p.final_date) + _B2.pack(p.message_state, p.error_code)


def _enc_cancel_sm(p: Any) -> bytes:
    return b"".join(
        (
            _c(p.service_type),
            _c(p.message_id),
            _B2.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
            _B2.pack(p.dest_addr_ton, p.dest_addr_npi),
            _c(p.destination_addr),
        )
    )


def _enc_replace_sm(p: Any) -> bytes:
    return b"".join(
        (
            _c(p.message_id),
            _B2.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
            _c(p.schedule_delivery_time),
            _c(p.validity_period),
            _B3.pack(p.registered_delivery, p.sm_default_msg_id, len(p.short_message)),
            p.short_message,
        )
    )


def _enc_alert_notification(p: Any) -> bytes:
    return b"".join(
        (
            _B2.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
            _B2.pack(p.esme_addr_ton, p.esme_addr_npi),
            _c(p.esme_addr),
        )
    )


# An encoder returns the mandatory body, or None when the PDU has no body and so no TLVs.
Encoder = Callable[[Any], "bytes | None"]

_ENCODERS: dict[type[Pdu], Encoder] = {
    SubmitSm: _enc_short_message,
    DeliverSm: _enc_short_message,
    SubmitSmResp: _enc_optional_id,
    DeliverSmResp: _enc_optional_id,
    DataSmResp: _enc_optional_id,
    DataSm: _enc_data_sm,
    BindTransmitter: _enc_bind,
    BindReceiver: _enc_bind,
    BindTransceiver: _enc_bind,
    BindTransmitterResp: _enc_bind_resp,
    BindReceiverResp: _enc_bind_resp,
    BindTransceiverResp: _enc_bind_resp,
    Outbind: _enc_outbind,
    SubmitMulti: _enc_submit_multi,
    SubmitMultiResp: _enc_submit_multi_resp,
    QuerySm: _enc_query_sm,
    QuerySmResp: _enc_query_sm_resp,
    CancelSm: _enc_cancel_sm,
    ReplaceSm: _enc_replace_sm,
    AlertNotification: _enc_alert_notification,
    Unbind: lambda _: None,
    UnbindResp: lambda _: None,
    EnquireLink: lambda _: None,
    EnquireLinkResp: lambda _: None,
    GenericNack: lambda _: None,
    CancelSmResp: lambda _: None,
    ReplaceSmResp: lambda _: None,
}
assert set(_ENCODERS) == set(PDU_CLASSES.values())


def encode(pdu: Pdu) -> bytes:
    """The wire bytes of ``pdu``; lengths (command_length, sm_length, counts) are derived.

    Raises ``PduEncodeError`` for a field that cannot be encoded: an integer out of range, a
    c-octet string with a NUL or a character above U+00FF, TLVs on a PDU without a body.
    """
    try:
        if type(pdu) is RawPdu:
            if pdu.tlvs:
                raise PduEncodeError("RawPdu carries its TLVs inside body")
            body = bytes(pdu.body)
        else:
            encoder = _ENCODERS.get(type(pdu))
            if encoder is None:
                raise PduEncodeError(f"cannot encode {type(pdu).__name__}")
            mandatory = encoder(pdu)
            if mandatory is None:
                if pdu.tlvs:
                    raise PduEncodeError(f"{type(pdu).__name__} without a body cannot carry TLVs")
                body = b""
            elif pdu.tlvs:
                body = mandatory + b"".join(
                    [_TLV_HEAD.pack(t.tag, len(t.value)) + t.value for t in pdu.tlvs]
                )
            else:
                body = mandatory
        return (
            _HEADER.pack(
                HEADER_LENGTH + len(body), pdu.command_id, pdu.command_status, pdu.sequence_number
            )
            + body
        )
    except (struct.error, ValueError, TypeError, AttributeError, OverflowError) as exc:
        raise PduEncodeError(f"cannot encode {type(pdu).__name__}: {exc}") from exc
