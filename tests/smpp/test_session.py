"""Sessions in pairs: an ESME-role and an SMSC-role Session wired back to back, fake clock."""

from __future__ import annotations

import pytest

from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode, with_sequence
from gateway.smpp.constants import CommandId, CommandStatus
from gateway.smpp.errors import LocalProtocolError
from gateway.smpp.events import (
    BindCompleted,
    Event,
    PduRejected,
    RequestExpired,
    RequestReceived,
    ResponseReceived,
    SessionClosed,
    UnbindReceived,
    UnexpectedResponse,
)
from gateway.smpp.session import Role, Session, SessionConfig
from gateway.smpp.state import BindState

VENDOR_ID = 0x00010201


def header(frame: bytes) -> tuple[int, int, int, int]:
    """(command_length, command_id, command_status, sequence_number) of a frame."""
    fields = [int.from_bytes(frame[i : i + 4], "big") for i in range(0, 16, 4)]
    return fields[0], fields[1], fields[2], fields[3]


def split(data: bytes) -> list[bytes]:
    """Cut concatenated output into frames."""
    frames = []
    while data:
        length = int.from_bytes(data[:4], "big")
        frames.append(data[:length])
        data = data[length:]
    return frames


def ids(data: bytes) -> list[int]:
    """The command ids of the frames in ``data``, in order."""
    return [header(frame)[1] for frame in split(data)]


def state(session: Session) -> BindState:
    """The session's state, read through a call so that mypy does not pin it between steps."""
    return session.state


def kinds(events: list[Event]) -> list[type]:
    return [type(event) for event in events]


class Pair:
    """Two sessions and a fake link; ``now`` only moves when a test moves it."""

    def __init__(
        self,
        esme_config: SessionConfig | None = None,
        smsc_config: SessionConfig | None = None,
    ) -> None:
        self.now = 0.0
        self.esme = Session(Role.ESME, esme_config or SessionConfig(), self.now)
        self.smsc = Session(Role.SMSC, smsc_config or SessionConfig(), self.now)

    def to_smsc(self) -> list[Event]:
        return self.smsc.receive_data(self.esme.data_to_send(), self.now)

    def to_esme(self) -> list[Event]:
        return self.esme.receive_data(self.smsc.data_to_send(), self.now)

    def advance(self, seconds: float) -> tuple[list[Event], list[Event]]:
        self.now += seconds
        return self.esme.handle_timer(self.now), self.smsc.handle_timer(self.now)

    def bind(
        self,
        request: p.BindRequest | None = None,
        response: type[p.BindResponse] = p.BindTransceiverResp,
    ) -> list[Event]:
        """Bind the ESME (transceiver unless told); returns the ESME's events."""
        self.esme.send_request(request or p.BindTransceiver(system_id="acct"), self.now, "bind")
        (received,) = self.to_smsc()
        assert isinstance(received, RequestReceived)
        seq = received.pdu.sequence_number
        self.smsc.send_response(response(sequence_number=seq, system_id="smsc"), self.now)
        return self.to_esme()

    def submit(self, context: object = None, text: bytes = b"hi") -> int:
        return self.esme.send_request(
            p.SubmitSm(destination_addr="4915112345678", short_message=text), self.now, context
        )

    def answer_all(self) -> None:
        """SMSC application: answer every request surfaced to it with ESME_ROK."""
        for event in self.to_smsc():
            assert isinstance(event, RequestReceived)
            seq = event.pdu.sequence_number
            self.smsc.send_response(p.SubmitSmResp(sequence_number=seq, message_id="m"), self.now)


@pytest.fixture
def pair() -> Pair:
    bound = Pair()
    bound.bind()
    return bound


class TestBind:
    def test_transceiver_bind_completes_on_both_sides(self) -> None:
        """A bind_transceiver answered with ESME_ROK binds both legs as BOUND_TRX."""
        link = Pair()
        link.esme.send_request(p.BindTransceiver(system_id="acct"), 0.0, "bind-ctx")
        (request,) = link.to_smsc()
        assert isinstance(request, RequestReceived)
        assert isinstance(request.pdu, p.BindTransceiver)
        assert state(link.smsc) is BindState.OPEN  # the application has not answered yet
        assert link.smsc.unanswered == 1
        link.smsc.send_response(p.BindTransceiverResp(sequence_number=1, system_id="smsc"), 0.0)
        assert state(link.smsc) is BindState.BOUND_TRX
        assert link.smsc.unanswered == 0
        events = link.to_esme()
        assert events[0] == BindCompleted(bind_state=BindState.BOUND_TRX, system_id="acct")
        assert isinstance(events[1], ResponseReceived)
        assert events[1].context == "bind-ctx"
        assert events[1].request_command_id == CommandId.BIND_TRANSCEIVER
        for session in (link.esme, link.smsc):
            assert session.bind_type is BindState.BOUND_TRX
            assert session.system_id == "acct"

    @pytest.mark.parametrize(
        ("request_pdu", "response", "expected"),
        [
            (p.BindTransmitter(system_id="a"), p.BindTransmitterResp, BindState.BOUND_TX),
            (p.BindReceiver(system_id="a"), p.BindReceiverResp, BindState.BOUND_RX),
        ],
    )
    def test_bind_type_sets_state(
        self, request_pdu: p.BindRequest, response: type[p.BindResponse], expected: BindState
    ) -> None:
        """Transmitter and receiver binds end in BOUND_TX and BOUND_RX."""
        link = Pair()
        link.bind(request_pdu, response)
        assert state(link.esme) is expected
        assert state(link.smsc) is expected

    def test_refused_bind_leaves_both_open(self) -> None:
        """A bind_resp with an error status is relayed as a response and binds nothing."""
        link = Pair()
        link.esme.send_request(p.BindTransmitter(system_id="acct"), 0.0, "ctx")
        link.to_smsc()
        refusal = p.BindTransmitterResp(
            sequence_number=1, command_status=CommandStatus.ESME_RINVPASWD, system_id=None
        )
        link.smsc.send_response(refusal, 0.0)
        events = link.to_esme()
        assert kinds(events) == [ResponseReceived]
        assert events[0].pdu.command_status == CommandStatus.ESME_RINVPASWD  # type: ignore[union-attr]
        assert state(link.esme) is BindState.OPEN
        assert state(link.smsc) is BindState.OPEN
        assert link.esme.system_id is None

    def test_rebind_refused_with_already_bound(self, pair: Pair) -> None:
        """A second bind on a bound session is answered ESME_RALYBND by the session itself."""
        frame = encode(p.BindTransmitter(sequence_number=9, system_id="again"))
        events = pair.smsc.receive_data(frame, 1.0)
        assert kinds(events) == [PduRejected]
        assert header(pair.smsc.data_to_send()) == (
            16,
            CommandId.BIND_TRANSMITTER_RESP,
            CommandStatus.ESME_RALYBND,
            9,
        )

    def test_smsc_closes_connection_left_unbound(self) -> None:
        """An SMSC-role session closes after bind_timeout_s without a bind."""
        smsc = Session(Role.SMSC, SessionConfig(bind_timeout_s=10.0), 100.0)
        assert smsc.get_timer() == 110.0
        assert smsc.handle_timer(109.9) == []
        assert smsc.handle_timer(110.0) == [SessionClosed(reason="bind timeout")]
        assert smsc.closed
        assert smsc.get_timer() is None

    def test_esme_gives_up_waiting_for_bind_resp(self) -> None:
        """An unanswered bind closes the ESME leg at bind_timeout_s; the bind is abandoned."""
        link = Pair(esme_config=SessionConfig(bind_timeout_s=10.0))
        link.now = 5.0
        link.esme.send_request(p.BindTransceiver(system_id="acct"), link.now, "ctx")
        assert link.esme.get_timer() == 15.0
        events, _ = link.advance(10.0)
        assert events == [SessionClosed(reason="bind timeout")]
        assert link.esme.abandon_outstanding() == [(1, CommandId.BIND_TRANSCEIVER, "ctx")]

    @pytest.mark.parametrize(("cut", "system_id"), [(0, "raw"), (1, "")])
    def test_relayed_bind_frame_names_the_account(self, cut: int, system_id: str) -> None:
        """A bind relayed as a raw frame records its system_id (none if it cannot be decoded)."""
        link = Pair()
        frame = encode(p.BindTransmitter(system_id="raw"))
        frame = (len(frame) - cut).to_bytes(4, "big") + frame[4 : len(frame) - cut]
        link.esme.send_request(frame, 0.0)
        link.esme.receive_data(encode(p.BindTransmitterResp(sequence_number=1)), 0.0)
        assert link.esme.system_id == system_id

    def test_smsc_may_not_submit(self, pair: Pair) -> None:
        """The SMSC role may not send submit_sm: the table says that is the ESME's command."""
        with pytest.raises(LocalProtocolError, match="submit_sm"):
            pair.smsc.send_request(p.SubmitSm(), pair.now)


class TestTraffic:
    def test_submit_and_response_carry_context(self, pair: Pair) -> None:
        """A submit_sm reaches the SMSC application and its response returns with the context."""
        seq = pair.submit(context=("client-7", 42))
        (request,) = pair.to_smsc()
        assert isinstance(request, RequestReceived)
        assert isinstance(request.pdu, p.SubmitSm)
        assert request.pdu.sequence_number == seq
        pair.smsc.send_response(p.SubmitSmResp(sequence_number=seq, message_id="abc"), pair.now)
        (response,) = pair.to_esme()
        assert isinstance(response, ResponseReceived)
        assert response.context == ("client-7", 42)
        assert response.request_command_id == CommandId.SUBMIT_SM
        assert isinstance(response.pdu, p.SubmitSmResp)
        assert response.pdu.message_id == "abc"
        assert pair.esme.outstanding == 0

    def test_raw_frame_gets_leg_sequence_and_body_untouched(self, pair: Pair) -> None:
        """A relayed frame is sent under this leg's number with its body byte-for-byte intact."""
        client_frame = encode(p.SubmitSm(sequence_number=999, short_message=b"\x00\xff"))
        seq = pair.esme.send_request(client_frame, pair.now, context=999)
        sent = pair.esme.data_to_send()
        assert sent == with_sequence(client_frame, seq)
        assert seq != 999

    def test_relay_answers_with_client_sequence(self, pair: Pair) -> None:
        """send_response with sequence_number patches an upstream frame for the client."""
        pair.smsc.receive_data(encode(p.SubmitSm(sequence_number=55)), pair.now)
        upstream = encode(p.SubmitSmResp(sequence_number=3, message_id="x"))
        pair.smsc.send_response(upstream, pair.now, sequence_number=55)
        assert pair.smsc.data_to_send() == with_sequence(upstream, 55)
        assert pair.smsc.unanswered == 0

    def test_deliver_sm_to_receiver(self) -> None:
        """The SMSC delivers to a receiver and the ESME answers deliver_sm_resp."""
        link = Pair()
        link.bind(p.BindReceiver(system_id="acct"), p.BindReceiverResp)
        seq = link.smsc.send_request(p.DeliverSm(short_message=b"mo"), link.now, "mo")
        (request,) = link.to_esme()
        assert isinstance(request, RequestReceived)
        assert isinstance(request.pdu, p.DeliverSm)
        link.esme.send_response(p.DeliverSmResp(sequence_number=seq), link.now)
        (response,) = link.to_smsc()
        assert isinstance(response, ResponseReceived)
        assert response.context == "mo"

    def test_sequences_are_per_leg(self, pair: Pair) -> None:
        """Each leg numbers its own requests from 1, independently of the other."""
        assert pair.submit() == 2  # 1 was the bind
        assert pair.smsc.send_request(p.DeliverSm(), pair.now) == 1

    def test_generic_nack_answers_request(self, pair: Pair) -> None:
        """A generic_nack with the request's number is that request's response."""
        seq = pair.submit("ctx")
        nack = encode(
            p.GenericNack(sequence_number=seq, command_status=CommandStatus.ESME_RTHROTTLED)
        )
        (event,) = pair.esme.receive_data(nack, pair.now)
        assert isinstance(event, ResponseReceived)
        assert event.context == "ctx"
        assert event.pdu.command_status == CommandStatus.ESME_RTHROTTLED

    def test_response_with_unknown_sequence_is_reported(self, pair: Pair) -> None:
        """A response to nothing we sent is reported as UnexpectedResponse, not dropped silently."""
        frame = encode(p.SubmitSmResp(sequence_number=1234, message_id="x"))
        (event,) = pair.esme.receive_data(frame, pair.now)
        assert event == UnexpectedResponse(pdu=decode(frame), frame=frame)

    def test_response_of_wrong_kind_leaves_request_waiting(self, pair: Pair) -> None:
        """A deliver_sm_resp bearing a submit_sm's number is unexpected; the submit still waits."""
        seq = pair.submit("ctx")
        frame = encode(p.DeliverSmResp(sequence_number=seq))
        assert kinds(pair.esme.receive_data(frame, pair.now)) == [UnexpectedResponse]
        assert pair.esme.outstanding == 1

    def test_undecodable_response_arrives_raw(self, pair: Pair) -> None:
        """A response whose body cannot be decoded still answers its request, as a RawPdu."""
        seq = pair.submit("ctx")
        frame = with_sequence(encode(p.SubmitSmResp(message_id="abc")), seq)[:-1]  # no NUL
        frame = len(frame).to_bytes(4, "big") + frame[4:]
        (event,) = pair.esme.receive_data(frame, pair.now)
        assert isinstance(event, ResponseReceived)
        assert isinstance(event.pdu, p.RawPdu)
        assert event.frame == frame

    def test_answer_must_match_an_owed_request(self, pair: Pair) -> None:
        """Answering a request never received, or twice, raises LocalProtocolError."""
        pair.smsc.receive_data(encode(p.SubmitSm(sequence_number=5)), pair.now)
        with pytest.raises(LocalProtocolError, match="owed"):
            pair.smsc.send_response(p.SubmitSmResp(sequence_number=6), pair.now)
        pair.smsc.send_response(p.SubmitSmResp(sequence_number=5), pair.now)
        with pytest.raises(LocalProtocolError, match="owed"):
            pair.smsc.send_response(p.SubmitSmResp(sequence_number=5), pair.now)

    def test_reused_sequence_numbers_are_each_owed(self, pair: Pair) -> None:
        """Two requests under one number (buggy peers) each get an answer."""
        frame = encode(p.SubmitSm(sequence_number=5))
        pair.smsc.receive_data(frame + frame, pair.now)
        assert pair.smsc.unanswered == 2
        pair.smsc.send_response(p.SubmitSmResp(sequence_number=5), pair.now)
        pair.smsc.send_response(p.SubmitSmResp(sequence_number=5), pair.now)
        assert pair.smsc.unanswered == 0

    def test_request_and_response_sent_the_wrong_way_raise(self, pair: Pair) -> None:
        """send_request refuses a response and send_response refuses a request."""
        with pytest.raises(LocalProtocolError, match="send_response"):
            pair.esme.send_request(p.SubmitSmResp(), pair.now)
        with pytest.raises(LocalProtocolError, match="send_request"):
            pair.esme.send_response(p.SubmitSm(), pair.now)

    def test_short_frames_refused(self, pair: Pair) -> None:
        """A frame shorter than a header cannot be sent either way."""
        with pytest.raises(LocalProtocolError, match="shorter"):
            pair.esme.send_request(b"\x00\x00", pair.now)
        with pytest.raises(LocalProtocolError, match="shorter"):
            pair.esme.send_response(b"\x00\x00", pair.now)

    def test_closed_session_refuses_output(self, pair: Pair) -> None:
        """Nothing may be sent once the session is closed."""
        pair.smsc.receive_data(encode(p.SubmitSm(sequence_number=5)), pair.now)
        pair.smsc.close("gone")
        with pytest.raises(LocalProtocolError, match="closed"):
            pair.smsc.send_response(p.SubmitSmResp(sequence_number=5), pair.now)

    def test_accessors(self, pair: Pair) -> None:
        """role and config are what the session was built with."""
        assert pair.esme.role is Role.ESME
        assert pair.smsc.role is Role.SMSC
        assert pair.esme.config == SessionConfig()
        assert pair.esme.close_reason is None

    def test_output_is_one_batch(self, pair: Pair) -> None:
        """data_to_send returns everything queued since the last call, then nothing."""
        pair.submit()
        pair.submit()
        assert ids(pair.esme.data_to_send()) == [CommandId.SUBMIT_SM, CommandId.SUBMIT_SM]
        assert pair.esme.data_to_send() == b""

    def test_frames_split_at_every_byte(self, pair: Pair) -> None:
        """Requests fed one byte at a time are surfaced once each, whole."""
        pair.submit()
        pair.submit()
        data = pair.esme.data_to_send()
        events: list[Event] = []
        for i in range(len(data)):
            events += pair.smsc.receive_data(data[i : i + 1], pair.now)
        assert kinds(events) == [RequestReceived, RequestReceived]


class TestKeepalive:
    def test_enquire_link_sent_when_idle_and_answered(self) -> None:
        """After enquire_link_interval_s of silence the ESME probes; the SMSC answers by itself."""
        link = Pair(smsc_config=SessionConfig(enquire_link_interval_s=None))
        link.bind()
        assert link.esme.get_timer() == 30.0
        assert link.advance(29.9) == ([], [])
        assert link.esme.data_to_send() == b""
        assert link.advance(0.1) == ([], [])
        probe = link.esme.data_to_send()
        assert ids(probe) == [CommandId.ENQUIRE_LINK]
        assert link.smsc.receive_data(probe, link.now) == []
        assert header(link.smsc.data_to_send()) == (
            16,
            CommandId.ENQUIRE_LINK_RESP,
            0,
            header(probe)[3],
        )

    def test_own_enquire_link_response_is_consumed(self, pair: Pair) -> None:
        """The answer to the session's own enquire_link produces no event and rearms the timer."""
        pair.advance(30.0)
        assert pair.to_smsc() == []
        assert pair.to_esme() == []
        assert pair.esme.outstanding == 0
        assert pair.esme.get_timer() == 60.0

    def test_peer_dead_when_enquire_link_unanswered(self, pair: Pair) -> None:
        """An enquire_link without answer in response_timeout_s closes the session."""
        seq = pair.submit("ctx")
        pair.advance(30.0)  # probe sent (and the submit expires at the same instant)
        pair.esme.data_to_send()
        events, _ = pair.advance(30.0)
        assert events == [SessionClosed(reason="peer dead: enquire_link unanswered")]
        assert pair.esme.closed
        assert seq == 2

    def test_traffic_postpones_probe(self, pair: Pair) -> None:
        """Anything received resets the idle clock."""
        pair.now = 20.0
        pair.submit()
        pair.answer_all()
        pair.to_esme()
        assert pair.esme.get_timer() == 50.0

    def test_keepalive_disabled(self) -> None:
        """With enquire_link_interval_s None no probe is ever sent."""
        link = Pair(esme_config=SessionConfig(enquire_link_interval_s=None))
        link.bind()
        assert link.esme.get_timer() is None
        link.advance(1000.0)
        assert link.esme.data_to_send() == b""

    def test_enquire_link_answered_before_bind(self) -> None:
        """An enquire_link on an unbound connection is answered, not refused (peers do that)."""
        smsc = Session(Role.SMSC, SessionConfig(), 0.0)
        assert smsc.receive_data(encode(p.EnquireLink(sequence_number=3)), 0.0) == []
        assert header(smsc.data_to_send()) == (16, CommandId.ENQUIRE_LINK_RESP, 0, 3)

    def test_probe_goes_out_with_window_full(self) -> None:
        """A keep-alive passes a full window: that is when the peer may be stuck."""
        link = Pair(esme_config=SessionConfig(window_size=1))
        link.bind()
        link.submit()
        link.submit()
        link.esme.data_to_send()
        assert link.esme.window_full
        link.advance(30.0)
        assert CommandId.ENQUIRE_LINK in ids(link.esme.data_to_send())

    def test_inactivity_closes(self) -> None:
        """With inactivity_timeout_s set, total silence for that long closes the session."""
        link = Pair(smsc_config=SessionConfig(inactivity_timeout_s=60.0))
        link.bind()
        link.smsc.receive_data(encode(p.EnquireLink(sequence_number=9)), 10.0)
        assert link.smsc.get_timer() == 40.0  # its own probe comes first
        link.now = 10.0
        _, events = link.advance(59.0)
        assert events == []
        _, events = link.advance(1.0)
        assert events == [SessionClosed(reason="inactivity timeout")]


class TestResponseTimeout:
    def test_expired_request_reported_with_context(self) -> None:
        """A request unanswered for response_timeout_s comes back as RequestExpired."""
        link = Pair(esme_config=SessionConfig(enquire_link_interval_s=None))
        link.bind()
        link.now = 1.0
        seq = link.submit("ctx")
        assert link.esme.get_timer() == 31.0
        assert link.advance(29.9) == ([], [])
        events, _ = link.advance(0.1)
        assert events == [
            RequestExpired(sequence_number=seq, command_id=CommandId.SUBMIT_SM, context="ctx")
        ]
        assert link.esme.outstanding == 0
        assert link.esme.get_timer() is None

    def test_late_response_is_unexpected(self, pair: Pair) -> None:
        """A response arriving after its request expired is reported as unexpected."""
        pair.submit("ctx")
        pair.to_smsc()
        pair.advance(30.0)
        pair.smsc.send_response(p.SubmitSmResp(sequence_number=2), pair.now)
        assert kinds(pair.to_esme()) == [UnexpectedResponse]


class TestBackPressure:
    def test_full_window_queues_in_order(self) -> None:
        """Past window_size, requests wait in the backlog and go out FIFO as slots free up."""
        link = Pair(esme_config=SessionConfig(window_size=2))
        link.bind()
        seqs = [link.submit(context=n) for n in range(5)]
        assert link.esme.outstanding == 2
        assert link.esme.backlog == 3
        assert link.esme.window_full
        data = link.esme.data_to_send()
        assert [header(f)[3] for f in split(data)] == seqs[:2]
        waiting: list[int] = []
        arrived: list[int] = []
        while link.esme.outstanding:
            for event in link.smsc.receive_data(data, link.now):
                assert isinstance(event, RequestReceived)
                waiting.append(event.pdu.sequence_number)
            arrived.append(waiting[0])
            # answer only the oldest one, so exactly one slot frees at a time
            link.smsc.send_response(p.SubmitSmResp(sequence_number=waiting.pop(0)), link.now)
            link.to_esme()
            assert link.esme.outstanding <= 2
            data = link.esme.data_to_send()
        assert arrived == seqs
        assert link.esme.backlog == 0
        assert not link.esme.window_full

    def test_backlog_preserves_fifo_across_responses(self) -> None:
        """Queued requests leave in the order they were accepted."""
        link = Pair(esme_config=SessionConfig(window_size=1))
        link.bind()
        seqs = [link.submit(context=n) for n in range(4)]
        received: list[int] = []
        for _ in seqs:
            (event,) = link.to_smsc()
            assert isinstance(event, RequestReceived)
            received.append(event.pdu.sequence_number)
            link.smsc.send_response(
                p.SubmitSmResp(sequence_number=event.pdu.sequence_number), link.now
            )
            link.to_esme()
        assert received == seqs

    def test_expiry_frees_slots_for_backlog(self) -> None:
        """Requests that time out make room for queued ones, which get fresh deadlines."""
        link = Pair(esme_config=SessionConfig(window_size=1, enquire_link_interval_s=None))
        link.bind()
        first = link.submit("a")
        second = link.submit("b")
        link.esme.data_to_send()
        events, _ = link.advance(30.0)
        assert events == [
            RequestExpired(sequence_number=first, command_id=CommandId.SUBMIT_SM, context="a")
        ]
        assert [header(f)[3] for f in split(link.esme.data_to_send())] == [second]
        assert link.esme.get_timer() == 60.0

    def test_abandon_returns_in_flight_then_queued(self) -> None:
        """After a close, every request in flight or queued is handed back once, oldest first."""
        link = Pair(esme_config=SessionConfig(window_size=1))
        link.bind()
        first = link.submit("a")
        second = link.submit("b")
        assert link.esme.close("transport lost") == [SessionClosed(reason="transport lost")]
        assert link.esme.abandon_outstanding() == [
            (first, CommandId.SUBMIT_SM, "a"),
            (second, CommandId.SUBMIT_SM, "b"),
        ]
        assert link.esme.abandon_outstanding() == []
        assert (link.esme.outstanding, link.esme.backlog) == (0, 0)
        assert link.esme.close_reason == "transport lost"
        assert link.esme.close("again") == []
        with pytest.raises(LocalProtocolError, match="closed"):
            link.submit()


class TestUnbind:
    def test_esme_unbinds(self, pair: Pair) -> None:
        """ESME unbind: the SMSC answers and closes, the ESME closes on unbind_resp."""
        assert pair.esme.start_unbind(pair.now) == []
        assert state(pair.esme) is BindState.UNBOUND
        events = pair.to_smsc()
        assert events == [UnbindReceived(), SessionClosed(reason="unbind received")]
        assert pair.to_esme() == [SessionClosed(reason="unbind completed")]

    def test_smsc_unbinds(self, pair: Pair) -> None:
        """SMSC unbind works the same way in the other direction."""
        pair.smsc.start_unbind(pair.now)
        assert pair.to_esme() == [UnbindReceived(), SessionClosed(reason="unbind received")]
        assert pair.to_smsc() == [SessionClosed(reason="unbind completed")]

    def test_unbind_resp_waits_for_owed_answers(self, pair: Pair) -> None:
        """A peer that submits then unbinds gets its submit_sm_resp before the unbind_resp."""
        seq = pair.submit("ctx")
        pair.esme.start_unbind(pair.now)
        events = pair.to_smsc()
        assert kinds(events) == [RequestReceived, UnbindReceived]
        assert pair.smsc.data_to_send() == b""
        pair.smsc.send_response(p.SubmitSmResp(sequence_number=seq, message_id="m"), pair.now)
        out = pair.smsc.data_to_send()
        assert ids(out) == [CommandId.SUBMIT_SM_RESP, CommandId.UNBIND_RESP]
        assert pair.smsc.get_timer() == pair.now
        _, closing = pair.advance(0.0)
        assert closing == [SessionClosed(reason="unbind completed")]
        events = pair.esme.receive_data(out, pair.now)
        assert kinds(events) == [ResponseReceived, SessionClosed]

    def test_unbind_times_out_when_answers_never_come(self, pair: Pair) -> None:
        """If the application never answers, unbind_resp goes out at unbind_timeout_s anyway."""
        pair.submit()
        pair.esme.start_unbind(pair.now)
        pair.to_smsc()
        _, events = pair.advance(5.0)
        assert events == [SessionClosed(reason="unbind timeout")]
        assert ids(pair.smsc.data_to_send()) == [CommandId.UNBIND_RESP]

    def test_unanswered_unbind_times_out(self, pair: Pair) -> None:
        """Our unbind without unbind_resp closes after unbind_timeout_s."""
        pair.esme.start_unbind(pair.now)
        events, _ = pair.advance(5.0)
        assert events == [SessionClosed(reason="unbind timeout")]

    def test_abandon_while_unbinding_keeps_own_unbind(self) -> None:
        """Abandoning during our unbind hands back the app's requests; unbind_resp still closes."""
        link = Pair(esme_config=SessionConfig(window_size=1))
        link.bind()
        sent = link.submit("sent")
        queued = link.submit("queued")
        assert link.esme.start_unbind(link.now) == []
        assert link.esme.abandon_outstanding() == [
            (sent, CommandId.SUBMIT_SM, "sent"),
            (queued, CommandId.SUBMIT_SM, "queued"),
        ]
        events = link.to_smsc()
        assert kinds(events) == [RequestReceived, UnbindReceived]
        link.smsc.send_response(p.SubmitSmResp(sequence_number=sent), link.now)
        events = link.to_esme()
        assert kinds(events) == [UnexpectedResponse, SessionClosed]

    def test_requests_crossing_our_unbind_get_a_temporary_status(self, pair: Pair) -> None:
        """A request the bind allowed, sent before the peer saw our unbind, gets ESME_RSYSERR
        (clients retry it), not ESME_RINVBNDSTS, which Kannel treats as permanent."""
        pair.smsc.start_unbind(pair.now)
        pair.smsc.data_to_send()
        events = pair.smsc.receive_data(encode(p.SubmitSm(sequence_number=8)), pair.now)
        assert kinds(events) == [PduRejected]
        assert header(pair.smsc.data_to_send()) == (
            16,
            CommandId.SUBMIT_SM_RESP,
            CommandStatus.ESME_RSYSERR,
            8,
        )

    def test_the_crossing_status_is_the_callers(self, pair: Pair) -> None:
        """start_unbind(refuse_status=...) picks the status for requests that cross it."""
        pair.smsc.start_unbind(pair.now, refuse_status=CommandStatus.ESME_RTHROTTLED)
        pair.smsc.data_to_send()
        pair.smsc.receive_data(encode(p.SubmitSm(sequence_number=9)), pair.now)
        assert header(pair.smsc.data_to_send())[2] == CommandStatus.ESME_RTHROTTLED

    def test_requests_the_bind_never_allowed_stay_wrong_state(self, pair: Pair) -> None:
        """After we unbind, a PDU the bind type never took still gets ESME_RINVBNDSTS."""
        pair.smsc.start_unbind(pair.now)
        pair.smsc.data_to_send()
        pair.smsc.receive_data(encode(p.DeliverSm(sequence_number=10)), pair.now)
        assert header(pair.smsc.data_to_send())[1:3] == (
            CommandId.DELIVER_SM_RESP,
            CommandStatus.ESME_RINVBNDSTS,
        )

    def test_crossing_unbinds(self, pair: Pair) -> None:
        """When both sides unbind at once each answers the other and both close."""
        pair.esme.start_unbind(pair.now)
        pair.smsc.start_unbind(pair.now)
        to_smsc = pair.esme.data_to_send()
        to_esme = pair.smsc.data_to_send()
        esme_events = pair.esme.receive_data(to_esme, pair.now)
        smsc_events = pair.smsc.receive_data(to_smsc, pair.now)
        assert esme_events[-1] == SessionClosed(reason="unbind received")
        assert smsc_events[-1] == SessionClosed(reason="unbind received")
        assert ids(pair.esme.data_to_send()) == [CommandId.UNBIND_RESP]

    def test_application_unbind_is_answered_as_response(self, pair: Pair) -> None:
        """An unbind from send_request gets its unbind_resp as ResponseReceived, then closes."""
        pair.esme.send_request(p.Unbind(), pair.now, "app")
        assert state(pair.esme) is BindState.UNBOUND
        pair.to_smsc()
        events = pair.to_esme()
        assert kinds(events) == [ResponseReceived, SessionClosed]
        assert events[0].context == "app"  # type: ignore[union-attr]

    def test_responses_still_accepted_while_unbinding(self) -> None:
        """Answers to requests sent before our unbind are surfaced; queued ones never go out."""
        link = Pair(esme_config=SessionConfig(window_size=1))
        link.bind()
        first = link.submit("first")
        queued = link.submit("queued")
        link.esme.send_request(p.Unbind(), link.now, "app")
        link.to_smsc()
        link.smsc.send_response(p.SubmitSmResp(sequence_number=first), link.now)
        events = link.to_esme()
        assert kinds(events) == [ResponseReceived, ResponseReceived, SessionClosed]
        assert ids(link.esme.data_to_send()) == []  # the queued submit_sm never went out
        assert link.esme.abandon_outstanding() == [(queued, CommandId.SUBMIT_SM, "queued")]

    def test_repeated_unbind_answered_at_once(self, pair: Pair) -> None:
        """A second unbind while answers are still owed is answered straight away."""
        pair.smsc.receive_data(encode(p.SubmitSm(sequence_number=5)), pair.now)
        pair.smsc.receive_data(encode(p.Unbind(sequence_number=6)), pair.now)
        assert pair.smsc.data_to_send() == b""
        pair.smsc.receive_data(encode(p.Unbind(sequence_number=7)), pair.now)
        assert header(pair.smsc.data_to_send()) == (16, CommandId.UNBIND_RESP, 0, 7)
        pair.smsc.send_response(p.SubmitSmResp(sequence_number=5), pair.now)
        assert [header(f)[3] for f in split(pair.smsc.data_to_send())] == [5, 6]

    def test_unbind_before_bind_just_closes(self) -> None:
        """Unbinding a session that never bound closes it without sending anything."""
        esme = Session(Role.ESME, SessionConfig(), 0.0)
        assert esme.start_unbind(0.0) == [SessionClosed(reason="closed before bind")]
        assert esme.data_to_send() == b""


class TestGarbage:
    def test_oversize_length_nacked_then_closed(self, pair: Pair) -> None:
        """A command_length above the maximum gets generic_nack ESME_RINVCMDLEN and a close."""
        bad = (
            (70000).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(4) + (12).to_bytes(4, "big")
        )
        events = pair.smsc.receive_data(bad, pair.now)
        assert kinds(events) == [PduRejected, SessionClosed]
        assert header(pair.smsc.data_to_send()) == (
            16,
            CommandId.GENERIC_NACK,
            CommandStatus.ESME_RINVCMDLEN,
            12,
        )
        assert pair.smsc.closed

    def test_short_length_without_header_just_closes(self, pair: Pair) -> None:
        """A length below 16 with no readable header closes without an answer."""
        events = pair.smsc.receive_data(b"\x00\x00\x00\x05", pair.now)
        assert kinds(events) == [SessionClosed]
        assert pair.smsc.data_to_send() == b""

    def test_good_frame_before_bad_length_is_kept(self, pair: Pair) -> None:
        """A valid PDU ahead of a broken one in the same read is still delivered."""
        good = encode(p.SubmitSm(sequence_number=4))
        events = pair.smsc.receive_data(good + b"\x00\x00\x00\x01" + bytes(12), pair.now)
        assert kinds(events) == [RequestReceived, PduRejected, SessionClosed]

    def test_undecodable_request_answered_and_session_goes_on(self, pair: Pair) -> None:
        """A submit_sm whose body ends early is answered with its error; the session carries on."""
        frame = encode(p.SubmitSm(sequence_number=6, destination_addr="123"))[:20]
        frame = (20).to_bytes(4, "big") + frame[4:]
        events = pair.smsc.receive_data(frame, pair.now)
        assert kinds(events) == [PduRejected]
        _, command_id, status, seq = header(pair.smsc.data_to_send())
        assert (command_id, seq) == (CommandId.SUBMIT_SM_RESP, 6)
        assert status != 0
        assert not pair.smsc.closed
        assert pair.smsc.unanswered == 0

    def test_unknown_command_gets_generic_nack(self, pair: Pair) -> None:
        """A command id that is neither standard nor vendor gets generic_nack ESME_RINVCMDID."""
        frame = encode(p.RawPdu(command_id=0x00000010, sequence_number=3))
        events = pair.smsc.receive_data(frame, pair.now)
        assert events == [
            PduRejected(
                command_id=0x10,
                sequence_number=3,
                status=CommandStatus.ESME_RINVCMDID,
                reason="unknown command_id",
            )
        ]
        assert header(pair.smsc.data_to_send()) == (
            16,
            CommandId.GENERIC_NACK,
            CommandStatus.ESME_RINVCMDID,
            3,
        )

    def test_closed_session_ignores_input(self, pair: Pair) -> None:
        """Bytes arriving after the close produce nothing."""
        pair.smsc.close("done")
        assert pair.smsc.receive_data(encode(p.SubmitSm(sequence_number=1)), pair.now) == []
        assert pair.smsc.handle_timer(1e9) == []


class TestVendor:
    def test_vendor_request_relayed_both_legs(self, pair: Pair) -> None:
        """A vendor PDU is sent, surfaced as RawPdu, answered, and matched by its response."""
        body = b"\x01\x02vendor"
        seq = pair.esme.send_request(
            encode(p.RawPdu(command_id=VENDOR_ID, body=body)), pair.now, "v"
        )
        (request,) = pair.to_smsc()
        assert isinstance(request, RequestReceived)
        assert request.pdu == p.RawPdu(command_id=VENDOR_ID, sequence_number=seq, body=body)
        answer = p.RawPdu(command_id=VENDOR_ID | 0x80000000, sequence_number=seq, body=b"ok")
        pair.smsc.send_response(answer, pair.now)
        (response,) = pair.to_esme()
        assert isinstance(response, ResponseReceived)
        assert response.context == "v"
        assert response.pdu == answer

    def test_vendor_refused_when_not_relayed(self) -> None:
        """With relay_vendor_pdus off, vendor ids get generic_nack and cannot be sent."""
        config = SessionConfig(relay_vendor_pdus=False)
        link = Pair(esme_config=config, smsc_config=config)
        link.bind()
        frame = encode(p.RawPdu(command_id=VENDOR_ID, sequence_number=4))
        (event,) = link.smsc.receive_data(frame, link.now)
        assert isinstance(event, PduRejected)
        assert event.status == CommandStatus.ESME_RINVCMDID
        with pytest.raises(LocalProtocolError):
            link.esme.send_request(frame, link.now)

    def test_vendor_refused_before_bind(self) -> None:
        """A vendor PDU on an unbound session is refused with ESME_RINVBNDSTS."""
        smsc = Session(Role.SMSC, SessionConfig(), 0.0)
        frame = encode(p.RawPdu(command_id=VENDOR_ID, sequence_number=4))
        (event,) = smsc.receive_data(frame, 0.0)
        assert isinstance(event, PduRejected)
        assert event.status == CommandStatus.ESME_RINVBNDSTS


class TestOutbind:
    def test_outbind_then_bind_receiver(self) -> None:
        """SMSC outbind puts both in OUTBOUND; the ESME's bind_receiver then binds as receiver."""
        link = Pair()
        link.smsc.send_request(p.Outbind(system_id="gw", password="pw"), 0.0)
        assert state(link.smsc) is BindState.OUTBOUND
        assert link.smsc.outstanding == 0  # outbind takes no response
        (event,) = link.to_esme()
        assert isinstance(event, RequestReceived)
        assert isinstance(event.pdu, p.Outbind)
        assert state(link.esme) is BindState.OUTBOUND
        assert link.esme.unanswered == 0
        with pytest.raises(LocalProtocolError):
            link.esme.send_request(p.BindTransmitter(), 0.0)
        link.bind(p.BindReceiver(system_id="acct"), p.BindReceiverResp)
        assert state(link.esme) is BindState.BOUND_RX
        assert state(link.smsc) is BindState.BOUND_RX


class TestConfig:
    @pytest.mark.parametrize(
        "kwargs",
        [
            {"window_size": 0},
            {"response_timeout_s": 0},
            {"enquire_link_interval_s": -1.0},
            {"max_pdu_length": 15},
        ],
    )
    def test_rejects_nonsense(self, kwargs: dict[str, float]) -> None:
        """Values that would break the session are refused when the config is built."""
        with pytest.raises(ValueError, match="must be"):
            SessionConfig(**kwargs)  # type: ignore[arg-type]


class TestFootprint:
    def test_sessions_share_their_request_tables(self) -> None:
        """Sessions of one role share the per-state request tables instead of building their
        own (about 20 KiB of each client/upstream pair), and the two roles' tables mirror."""
        config = SessionConfig()
        esme = [Session(Role.ESME, config, 0.0) for _ in range(2)]
        smsc = Session(Role.SMSC, config, 0.0)
        assert esme[0]._send_table is esme[1]._send_table
        assert esme[0]._recv_table is esme[1]._recv_table
        assert esme[0]._send_table is smsc._recv_table
        assert esme[0]._recv_table is smsc._send_table
        assert esme[0]._send_table is not esme[0]._recv_table
