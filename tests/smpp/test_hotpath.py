"""The per-PDU fast paths give the same results as the general ones they short-cut."""

from __future__ import annotations

import struct
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, decode_body, decode_lenient, encode, with_sequence
from gateway.smpp.constants import CommandStatus
from gateway.smpp.errors import (
    FramingError,
    LocalProtocolError,
    PduDecodeError,
    PduEncodeError,
)
from gateway.smpp.events import Event, RequestReceived, ResponseReceived
from gateway.smpp.framing import FrameBuffer
from gateway.smpp.session import Role, Session, SessionConfig
from tests.support.strategies import (
    any_pdu,
    c_string,
    load_vector,
    pdus_of,
    tlvs,
    vector_paths,
)

_HEADER = struct.Struct(">IIII")


def outcome(call: object, *args: object) -> object:
    """The decoded PDU, or the status of the PduDecodeError raised."""
    assert callable(call)
    try:
        return call(*args)
    except PduDecodeError as exc:
        return ("error", exc.status, exc.command_id, exc.sequence_number)


class TestDecodeBody:
    @pytest.mark.parametrize("path", vector_paths(), ids=lambda path: Path(path).stem)
    def test_vectors(self, path: Path) -> None:
        """Every golden vector decodes through decode_body to what decode gives."""
        frame = load_vector(path)
        _, command_id, status, seq = _HEADER.unpack_from(frame)
        assert decode_body(frame, command_id, status, seq) == decode(frame)

    @given(any_pdu())
    def test_any_pdu(self, pdu: p.Pdu) -> None:
        """decode_body and decode agree on every valid PDU."""
        frame = encode(pdu)
        assert decode_body(frame, *_HEADER.unpack_from(frame)[1:]) == decode(frame) == pdu

    @given(
        st.sampled_from([0x00000004, 0x00000005]),
        st.binary(max_size=80),
    )
    def test_any_short_message_body(self, command_id: int, body: bytes) -> None:
        """For any submit_sm / deliver_sm body, decode_body and decode give the same PDU or the
        same error."""
        frame = _HEADER.pack(16 + len(body), command_id, 0, 9) + body
        assert outcome(decode_body, frame, command_id, 0, 9) == outcome(decode, frame)

    @given(
        c_string(),
        c_string(),
        c_string(),
        st.binary(max_size=160),
        tlvs(),
    )
    def test_short_message_strings(
        self, service_type: str, schedule: str, validity: str, text: bytes, extra: tuple[p.Tlv, ...]
    ) -> None:
        """The optional c-octet strings decode whether empty or not, TLVs after the text."""
        pdu = p.SubmitSm(
            service_type=service_type,
            schedule_delivery_time=schedule,
            validity_period=validity,
            short_message=text,
            tlvs=extra,
        )
        assert decode(encode(pdu)) == pdu


class _RefusedError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def spec_short_message(frame: bytes) -> object:
    """submit_sm / deliver_sm read field by field as SMPP 3.4 section 4.4.1 lists them, with the
    statuses of the codec's docstring; for comparing the codec's hot path against."""
    _, command_id, status, seq = _HEADER.unpack_from(frame)
    body = frame[16:]
    pos = 0

    def octet() -> int:
        nonlocal pos
        if pos >= len(body):
            raise _RefusedError(CommandStatus.ESME_RINVCMDLEN)
        pos += 1
        return body[pos - 1]

    def c_octets() -> str:
        nonlocal pos
        end = body.find(b"\0", pos)
        if end < 0:
            raise _RefusedError(CommandStatus.ESME_RINVCMDLEN)
        value, pos = body[pos:end].decode("latin-1"), end + 1
        return value

    try:
        fields: dict[str, object] = {"service_type": c_octets()}
        fields |= {"source_addr_ton": octet(), "source_addr_npi": octet()}
        fields["source_addr"] = c_octets()
        fields |= {"dest_addr_ton": octet(), "dest_addr_npi": octet()}
        fields["destination_addr"] = c_octets()
        fields |= {"esm_class": octet(), "protocol_id": octet(), "priority_flag": octet()}
        fields["schedule_delivery_time"] = c_octets()
        fields["validity_period"] = c_octets()
        for name in (
            "registered_delivery", "replace_if_present_flag", "data_coding", "sm_default_msg_id",
        ):  # fmt: skip
            fields[name] = octet()
        sm_length = octet()
        if pos + sm_length > len(body):
            raise _RefusedError(CommandStatus.ESME_RINVMSGLEN)
        fields["short_message"], pos = body[pos : pos + sm_length], pos + sm_length
        found = []
        while pos < len(body):
            if pos + 4 > len(body):
                raise _RefusedError(CommandStatus.ESME_RINVOPTPARSTREAM)
            tag, length = struct.unpack_from(">HH", body, pos)
            if pos + 4 + length > len(body):
                raise _RefusedError(CommandStatus.ESME_RINVOPTPARSTREAM)
            found.append(p.Tlv(tag, body[pos + 4 : pos + 4 + length]))
            pos += 4 + length
    except _RefusedError as refused:
        return ("error", refused.status, command_id, seq)
    cls = p.SubmitSm if command_id == 0x00000004 else p.DeliverSm
    return cls(command_status=status, sequence_number=seq, tlvs=tuple(found), **fields)


def _mutated(frame: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    """``frame`` cut short by ``cut`` octets and with some octets of its body replaced; the
    header's command_length still matches the frame."""
    body = bytearray(frame[16 : max(16, len(frame) - cut)])
    for at, value in flips:
        if body:
            body[at % len(body)] = value
    return struct.pack(">I", 16 + len(body)) + frame[4:16] + bytes(body)


class TestShortMessageDecoder:
    """The hot decoder of submit_sm / deliver_sm against a plain reading of the specification."""

    @given(st.sampled_from([p.SubmitSm, p.DeliverSm]), st.data())
    def test_valid_pdus(self, cls: type[p.Pdu], data: st.DataObject) -> None:
        """Every valid PDU decodes to what the field-by-field reading gives, and to itself."""
        pdu = data.draw(pdus_of(cls))
        frame = encode(pdu)
        assert outcome(decode, frame) == spec_short_message(frame) == pdu

    @given(
        st.sampled_from([p.SubmitSm, p.DeliverSm]),
        st.data(),
        st.integers(0, 40),
        st.lists(st.tuples(st.integers(0, 400), st.sampled_from([0, 1, 0x20, 0xFF])), max_size=4),
    )
    def test_damaged_pdus(
        self, cls: type[p.Pdu], data: st.DataObject, cut: int, flips: list[tuple[int, int]]
    ) -> None:
        """Truncated or altered frames give the same PDU or the same status both ways."""
        frame = _mutated(encode(data.draw(pdus_of(cls))), cut, flips)
        assert outcome(decode, frame) == spec_short_message(frame)

    @given(st.sampled_from([0x00000004, 0x00000005]), st.binary(max_size=120))
    def test_any_body(self, command_id: int, body: bytes) -> None:
        """Arbitrary bodies give the same PDU or the same status both ways."""
        frame = _HEADER.pack(16 + len(body), command_id, 0, 9) + body
        assert outcome(decode, frame) == spec_short_message(frame)

    def test_result_is_the_frozen_class_itself(self) -> None:
        """A decoded submit_sm is exactly SubmitSm (not a subclass), frozen, hashable, equal to
        the constructed value; a frame cut short raises."""
        pdu = p.SubmitSm(destination_addr="12025550123", short_message=b"hi")
        decoded = decode(encode(pdu))
        assert type(decoded) is p.SubmitSm
        assert hash(decoded) == hash(pdu)
        assert decoded == pdu
        with pytest.raises(FrozenInstanceError):
            decoded.esm_class = 1  # type: ignore[misc]
        with pytest.raises(FrozenInstanceError):
            del decoded.esm_class  # type: ignore[misc]
        with pytest.raises(PduDecodeError):
            decode(_mutated(encode(pdu), 1, []))


class TestDecodeLenient:
    @given(any_pdu())
    def test_valid_frames(self, pdu: p.Pdu) -> None:
        """A frame that decodes gives what decode gives."""
        assert decode_lenient(encode(pdu)) == pdu

    def test_broken_body(self) -> None:
        """A body that does not decode comes back as a RawPdu that re-encodes to the frame."""
        frame = _HEADER.pack(20, 0x80000009, 0, 5) + b"smsc"  # system_id without its NUL
        raw = decode_lenient(frame)
        assert raw == p.RawPdu(
            command_id=0x80000009, command_status=0, sequence_number=5, body=b"smsc"
        )
        assert encode(raw) == frame

    def test_short_frame(self) -> None:
        """Fewer than 16 bytes is a FramingError, as for decode."""
        with pytest.raises(FramingError):
            decode_lenient(b"\0" * 15)


class TestFrameBufferFastPath:
    def test_ready_only_when_a_call_is_due(self) -> None:
        """ready is False for a partial frame and True when a bad length waits to be raised."""
        good = encode(p.EnquireLink(sequence_number=1))
        buffer = FrameBuffer()
        assert not buffer.ready
        buffer.feed(good + good[:5])
        assert buffer.ready
        assert buffer.frames() == [good]
        assert not buffer.ready
        buffer.feed(good[5:] + _HEADER.pack(3, 4, 0, 2))
        assert buffer.frames() == [good]
        assert buffer.ready
        with pytest.raises(FramingError):
            buffer.frames()

    def test_feed_copies_mutable_buffers(self) -> None:
        """A bytearray fed in and changed afterwards does not change the frames handed out."""
        frame = encode(p.SubmitSm(short_message=b"hello"))
        data = bytearray(frame)
        buffer = FrameBuffer()
        buffer.feed(data)
        data[20:25] = b"XXXXX"
        assert buffer.frames() == [frame]

    def test_large_frame_a_byte_at_a_time(self) -> None:
        """A maximum-size PDU fed one byte per read comes out whole, and only at its last byte."""
        frame = encode(p.SubmitSm(tlvs=(p.Tlv(0x1400, b"x" * 4000),)))
        buffer = FrameBuffer(max_pdu_length=len(frame))
        for index in range(len(frame) - 1):
            buffer.feed(frame[index : index + 1])
            assert buffer.frames() == []
        buffer.feed(frame[-1:])
        assert buffer.frames() == [frame]
        assert buffer.buffered == 0


def bound(role_window: int) -> tuple[Session, Session]:
    """An ESME and an SMSC session, bound as a transceiver."""
    esme = Session(Role.ESME, SessionConfig(window_size=role_window), 0.0)
    smsc = Session(Role.SMSC, SessionConfig(), 0.0)
    esme.send_request(p.BindTransceiver(system_id="a"), 0.0, "bind")
    smsc.receive_data(esme.data_to_send(), 0.0)
    smsc.send_response(p.BindTransceiverResp(sequence_number=1, system_id="s"), 0.0)
    esme.receive_data(smsc.data_to_send(), 0.0)
    return esme, smsc


def run(as_frames: bool, texts: list[bytes], window: int, answer_every: int) -> list[object]:
    """Send, relay and answer submit_sm; everything observable, in order."""
    esme, smsc = bound(window)
    seen: list[object] = []
    events: list[Event] = []

    def exchange(now: float) -> None:
        for event in smsc.receive_data(esme.data_to_send(), now):
            events.append(event)
            assert isinstance(event, RequestReceived)
            seq = event.pdu.sequence_number
            response = p.SubmitSmResp(sequence_number=seq, message_id=f"m{seq}")
            if as_frames:
                smsc.send_response(with_sequence(encode(response), 7), now, seq)
            else:
                smsc.send_response(response, now)
        events.extend(esme.receive_data(smsc.data_to_send(), now))

    for index, text in enumerate(texts):
        pdu = p.SubmitSm(destination_addr=str(index), short_message=text)
        # A relayed frame carries the other leg's sequence number; the session replaces it.
        request: p.Pdu | bytes = with_sequence(encode(pdu), 999) if as_frames else pdu
        seen.append(esme.send_request(request, float(index), context=index))
        if index % answer_every == 0:
            exchange(float(index))
        seen.extend((esme.outstanding, esme.backlog, smsc.unanswered, esme.get_timer()))
    while esme.outstanding:
        exchange(float(len(texts)))
    # Every request went out once and came back once, to its own context.
    assert (esme.backlog, smsc.unanswered) == (0, 0)
    answered = [e.context for e in events if isinstance(e, ResponseReceived)]
    assert answered == list(range(len(texts)))
    seen.extend(events)
    return seen


class TestSessionFastPath:
    @given(
        st.lists(st.binary(max_size=20), min_size=1, max_size=30),
        st.integers(1, 5),
        st.integers(1, 4),
    )
    def test_frames_and_pdus_behave_alike(
        self, texts: list[bytes], window: int, answer_every: int
    ) -> None:
        """Relaying frames (send_request / send_response with bytes) gives exactly the bytes,
        events, window and backlog that sending the same PDUs does."""
        assert run(True, texts, window, answer_every) == run(False, texts, window, answer_every)

    def test_frame_refused_in_the_wrong_state(self) -> None:
        """A submit_sm frame before the bind, or after close, is refused like a PDU."""
        esme = Session(Role.ESME, SessionConfig(), 0.0)
        frame = encode(p.SubmitSm())
        with pytest.raises(LocalProtocolError, match="may not be sent"):
            esme.send_request(frame, 0.0)
        esme.close("test")
        with pytest.raises(LocalProtocolError, match="closed"):
            esme.send_request(frame, 0.0)

    def test_deliver_sm_frame_not_from_the_esme(self) -> None:
        """The ESME may not send deliver_sm, as a frame either."""
        esme, _ = bound(10)
        with pytest.raises(LocalProtocolError, match="may not be sent"):
            esme.send_request(encode(p.DeliverSm()), 0.0)

    def test_response_sequence_number_out_of_range(self) -> None:
        """Patching a response with a sequence number that does not fit raises PduEncodeError."""
        _, smsc = bound(10)
        with pytest.raises(PduEncodeError):
            smsc.send_response(encode(p.SubmitSmResp(sequence_number=1)), 0.0, 2**32)

    @pytest.mark.parametrize("bad", [-1, 2**32, 1.5])
    def test_refused_patch_queues_nothing(self, bad: object) -> None:
        """A sequence number that cannot be patched in leaves no bytes queued and the request
        still owed; the right one then goes out exactly as with_sequence writes it."""
        esme, smsc = bound(10)
        seq = esme.send_request(encode(p.SubmitSm(destination_addr="1")), 0.0)
        smsc.receive_data(esme.data_to_send(), 0.0)
        response = encode(p.SubmitSmResp(sequence_number=77, message_id="m1"))
        with pytest.raises(PduEncodeError):
            smsc.send_response(response, 0.0, bad)  # type: ignore[arg-type]
        assert (smsc.data_to_send(), smsc.unanswered) == (b"", 1)
        smsc.send_response(response, 0.0, seq)
        assert smsc.data_to_send() == with_sequence(response, seq)
        assert smsc.unanswered == 0

    def test_short_response_frames(self) -> None:
        """A response frame under 16 bytes: FramingError when patched, else LocalProtocolError."""
        _, smsc = bound(10)
        with pytest.raises(FramingError):
            smsc.send_response(b"\0" * 8, 0.0, 1)
        with pytest.raises(LocalProtocolError):
            smsc.send_response(b"\0" * 8, 0.0)
