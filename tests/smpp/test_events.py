"""Response events decode their PDU lazily, yet look and behave like the frozen dataclass events."""

from __future__ import annotations

import struct
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given

from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.events import RequestReceived, ResponseReceived, UnexpectedResponse
from gateway.smpp.session import Role, Session, SessionConfig
from tests.support.strategies import pdus_of

RESP = encode(p.SubmitSmResp(sequence_number=7, message_id="abc"))
# submit_sm_resp whose message_id has no NUL: the body cannot be decoded.
BROKEN = struct.pack(">IIII", 19, 0x80000004, 0, 7) + b"abc"


class TestLazyPdu:
    @given(pdus_of(p.SubmitSmResp))
    def test_pdu_decoded_on_first_read(self, response: p.Pdu) -> None:
        """Without a pdu, the event's pdu is the frame decoded, and it is decoded only once."""
        frame = encode(response)
        event = ResponseReceived(frame=frame, request_command_id=4, context=None)
        assert event.pdu == decode(frame)
        assert event.pdu is event.pdu

    def test_undecodable_body_gives_raw_pdu(self) -> None:
        """A response body that does not decode arrives as a RawPdu holding the bytes."""
        event = UnexpectedResponse(frame=BROKEN)
        assert event.pdu == p.RawPdu(
            command_id=0x80000004, command_status=0, sequence_number=7, body=b"abc"
        )
        assert encode(event.pdu) == BROKEN

    def test_given_pdu_is_kept(self) -> None:
        """A pdu passed to the constructor is the one read back, not a decode of the frame."""
        given_pdu = p.SubmitSmResp(sequence_number=1, message_id="other")
        event = ResponseReceived(pdu=given_pdu, frame=RESP, request_command_id=4, context="c")
        assert event.pdu is given_pdu


class TestValueSemantics:
    def test_lazy_equals_eager(self) -> None:
        """Events built with and without the pdu compare and hash alike."""
        lazy = ResponseReceived(frame=RESP, request_command_id=4, context="c")
        eager = ResponseReceived(pdu=decode(RESP), frame=RESP, request_command_id=4, context="c")
        assert lazy == eager
        assert hash(lazy) == hash(eager)
        assert UnexpectedResponse(frame=RESP) == UnexpectedResponse(pdu=decode(RESP), frame=RESP)

    def test_fields_take_part_in_equality(self) -> None:
        """Events that differ in context, request id or class are not equal."""
        event = ResponseReceived(frame=RESP, request_command_id=4, context="c")
        assert event != ResponseReceived(frame=RESP, request_command_id=4, context="d")
        assert event != ResponseReceived(frame=RESP, request_command_id=0x103, context="c")
        assert UnexpectedResponse(frame=RESP) != event
        assert event != RequestReceived(pdu=decode(RESP), frame=RESP)

    def test_frozen(self) -> None:
        """Assigning or deleting any field raises FrozenInstanceError, as on the dataclasses."""
        event = ResponseReceived(frame=RESP, request_command_id=4, context="c")
        for name in ("pdu", "frame", "request_command_id", "context"):
            with pytest.raises(FrozenInstanceError):
                setattr(event, name, None)
            with pytest.raises(FrozenInstanceError):
                delattr(event, name)

    def test_repr_names_the_fields(self) -> None:
        """The repr reads like a dataclass's, pdu decoded."""
        text = repr(UnexpectedResponse(frame=RESP))
        assert text == f"UnexpectedResponse(pdu={decode(RESP)!r}, frame={RESP!r})"


class TestSessionEvents:
    def test_session_leaves_responses_undecoded(self) -> None:
        """The session hands a response over undecoded; reading pdu decodes the frame."""
        session = Session(Role.ESME, SessionConfig(), 0.0)
        session.send_request(p.BindTransmitter(system_id="a"), 0.0, "bind")
        session.receive_data(encode(p.BindTransmitterResp(sequence_number=1)), 0.0)
        session.send_request(p.SubmitSm(destination_addr="1"), 0.0, "mt")
        (event,) = session.receive_data(RESP[:12] + struct.pack(">I", 2) + RESP[16:], 0.0)
        assert isinstance(event, ResponseReceived)
        assert event._pdu is None
        assert event.pdu == p.SubmitSmResp(sequence_number=2, message_id="abc")
        assert (event.request_command_id, event.context) == (4, "mt")

    def test_request_event_equals_constructed_one(self) -> None:
        """A RequestReceived from the session equals one built with the dataclass __init__."""
        session = Session(Role.SMSC, SessionConfig(), 0.0)
        frame = encode(p.BindTransmitter(sequence_number=3, system_id="a"))
        (event,) = session.receive_data(frame, 0.0)
        assert event == RequestReceived(pdu=decode(frame), frame=frame)
