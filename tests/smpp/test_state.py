"""The bind-state table, and sessions obeying it in every state, for every command, both ways."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.smpp import pdu as p
from gateway.smpp.codec import encode, error_response
from gateway.smpp.constants import REQUESTS_WITHOUT_RESPONSE, CommandId, CommandStatus
from gateway.smpp.errors import LocalProtocolError
from gateway.smpp.events import (
    PduRejected,
    RequestReceived,
    SessionClosed,
    UnbindReceived,
)
from gateway.smpp.session import Role, Session, SessionConfig
from gateway.smpp.state import (
    BOUND_STATES,
    KNOWN_REQUESTS,
    TRANSITIONS,
    BindState,
    Direction,
    may_send_request,
    next_state,
    rejection_status,
    request_states,
)
from tests.support.strategies import frames as any_frames

E2S = Direction.ESME_TO_SMSC
S2E = Direction.SMSC_TO_ESME
VENDOR_ID = 0x00010201
UNKNOWN_ID = 0x00000010

_BIND_FOR = {
    BindState.BOUND_TX: (p.BindTransmitter, p.BindTransmitterResp),
    BindState.BOUND_RX: (p.BindReceiver, p.BindReceiverResp),
    BindState.BOUND_TRX: (p.BindTransceiver, p.BindTransceiverResp),
}


def session_in(role: Role, state: BindState, config: SessionConfig | None = None) -> Session:
    """A session of ``role`` driven into ``state`` by real traffic, its output drained."""
    session = Session(role, config or SessionConfig(), 0.0)
    if state is BindState.OUTBOUND:
        if role is Role.ESME:
            session.receive_data(encode(p.Outbind(sequence_number=1, system_id="smsc")), 0.0)
        else:
            session.send_request(p.Outbind(system_id="smsc"), 0.0)
    elif state in BOUND_STATES or state in (BindState.UNBOUND, BindState.CLOSED):
        bind, bind_resp = _BIND_FOR.get(state, _BIND_FOR[BindState.BOUND_TRX])
        if role is Role.ESME:
            seq = session.send_request(bind(system_id="acct"), 0.0)
            session.receive_data(encode(bind_resp(sequence_number=seq, system_id="smsc")), 0.0)
        else:
            session.receive_data(encode(bind(sequence_number=1, system_id="acct")), 0.0)
            session.send_response(bind_resp(sequence_number=1, system_id="smsc"), 0.0)
        if state is BindState.UNBOUND:
            session.start_unbind(0.0)
        elif state is BindState.CLOSED:
            session.close("test")
    session.data_to_send()
    assert session.state is state
    return session


def request_frame(command_id: int, sequence_number: int = 77) -> bytes:
    """A minimal valid request frame for ``command_id`` (RawPdu for vendor and unknown ids)."""
    cls = p.PDU_CLASSES.get(command_id)
    if cls is None:
        return encode(p.RawPdu(command_id=command_id, sequence_number=sequence_number, body=b"v"))
    return encode(cls(sequence_number=sequence_number))


STATES = list(BindState)
COMMANDS = [*sorted(KNOWN_REQUESTS), VENDOR_ID, UNKNOWN_ID]


class TestTable:
    def test_deliver_sm_only_from_smsc_to_receivers(self) -> None:
        """deliver_sm goes SMSC->ESME in BOUND_RX / BOUND_TRX only, never the other way."""
        allowed = {s for s in STATES if may_send_request(s, S2E, CommandId.DELIVER_SM)}
        assert allowed == {BindState.BOUND_RX, BindState.BOUND_TRX}
        assert not any(may_send_request(s, E2S, CommandId.DELIVER_SM) for s in STATES)

    @pytest.mark.parametrize(
        "command_id",
        [
            CommandId.SUBMIT_SM,
            CommandId.SUBMIT_MULTI,
            CommandId.QUERY_SM,
            CommandId.CANCEL_SM,
            CommandId.REPLACE_SM,
        ],
    )
    def test_transmitter_commands_only_from_esme(self, command_id: int) -> None:
        """Message submission and its ancillaries go ESME->SMSC in BOUND_TX / BOUND_TRX only."""
        allowed = {s for s in STATES if may_send_request(s, E2S, command_id)}
        assert allowed == {BindState.BOUND_TX, BindState.BOUND_TRX}
        assert not any(may_send_request(s, S2E, command_id) for s in STATES)

    def test_data_sm_both_ways_by_bind_type(self) -> None:
        """data_sm goes ESME->SMSC on transmit binds and SMSC->ESME on receive binds."""
        assert {s for s in STATES if may_send_request(s, E2S, CommandId.DATA_SM)} == {
            BindState.BOUND_TX,
            BindState.BOUND_TRX,
        }
        assert {s for s in STATES if may_send_request(s, S2E, CommandId.DATA_SM)} == {
            BindState.BOUND_RX,
            BindState.BOUND_TRX,
        }

    def test_alert_notification_smsc_to_receivers(self) -> None:
        """alert_notification goes SMSC->ESME in BOUND_RX / BOUND_TRX only."""
        allowed = {s for s in STATES if may_send_request(s, S2E, CommandId.ALERT_NOTIFICATION)}
        assert allowed == {BindState.BOUND_RX, BindState.BOUND_TRX}

    def test_binds_from_open_and_receiver_after_outbind(self) -> None:
        """Binds go ESME->SMSC in OPEN; only bind_receiver also answers an outbind."""
        for command_id in (CommandId.BIND_TRANSMITTER, CommandId.BIND_TRANSCEIVER):
            assert {s for s in STATES if may_send_request(s, E2S, command_id)} == {BindState.OPEN}
        assert {s for s in STATES if may_send_request(s, E2S, CommandId.BIND_RECEIVER)} == {
            BindState.OPEN,
            BindState.OUTBOUND,
        }

    def test_outbind_smsc_in_open(self) -> None:
        """outbind goes SMSC->ESME in OPEN only."""
        assert {s for s in STATES if may_send_request(s, S2E, CommandId.OUTBIND)} == {
            BindState.OPEN
        }

    @pytest.mark.parametrize("direction", list(Direction))
    def test_enquire_link_anywhere_but_closed(self, direction: Direction) -> None:
        """enquire_link is allowed both ways in every state where the link is up."""
        allowed = {s for s in STATES if may_send_request(s, direction, CommandId.ENQUIRE_LINK)}
        assert allowed == set(STATES) - {BindState.CLOSED}

    def test_nothing_in_closed(self) -> None:
        """No request at all may go in CLOSED."""
        for direction in Direction:
            for command_id in COMMANDS:
                assert not may_send_request(BindState.CLOSED, direction, command_id, vendor=True)

    def test_vendor_in_bound_states_only_when_relayed(self) -> None:
        """A vendor id passes in bound states when flagged as relayed, nowhere otherwise."""
        for direction in Direction:
            assert {
                s for s in STATES if may_send_request(s, direction, VENDOR_ID, vendor=True)
            } == (BOUND_STATES)
            assert not any(may_send_request(s, direction, VENDOR_ID) for s in STATES)

    def test_request_states_rows_match_table(self) -> None:
        """The per-state rows sessions use agree with may_send_request cell by cell."""
        for direction in Direction:
            rows = request_states(direction)
            for state in STATES:
                for command_id in KNOWN_REQUESTS:
                    assert (command_id in rows[state]) == may_send_request(
                        state, direction, command_id
                    )


class TestTransitions:
    @pytest.mark.parametrize(
        ("command_id", "target"),
        [
            (CommandId.BIND_TRANSMITTER_RESP, BindState.BOUND_TX),
            (CommandId.BIND_RECEIVER_RESP, BindState.BOUND_RX),
            (CommandId.BIND_TRANSCEIVER_RESP, BindState.BOUND_TRX),
        ],
    )
    def test_successful_bind_resp_binds(self, command_id: int, target: BindState) -> None:
        """A bind response with ESME_ROK moves OPEN to the matching bound state."""
        assert next_state(BindState.OPEN, command_id, 0) is target

    def test_failed_bind_resp_stays_open(self) -> None:
        """A bind response with an error status leaves the session OPEN, free to retry."""
        status = CommandStatus.ESME_RBINDFAIL
        assert next_state(BindState.OPEN, CommandId.BIND_TRANSMITTER_RESP, status) is (
            BindState.OPEN
        )

    def test_outbind_then_bind_receiver(self) -> None:
        """outbind moves OPEN to OUTBOUND, and a bind_receiver_resp then binds as receiver."""
        assert next_state(BindState.OPEN, CommandId.OUTBIND) is BindState.OUTBOUND
        assert next_state(BindState.OUTBOUND, CommandId.BIND_RECEIVER_RESP) is BindState.BOUND_RX

    @pytest.mark.parametrize("state", [BindState.BOUND_TX, BindState.BOUND_RX, BindState.BOUND_TRX])
    def test_unbind_then_unbind_resp(self, state: BindState) -> None:
        """unbind moves a bound state to UNBOUND, and unbind_resp moves that to CLOSED."""
        assert next_state(state, CommandId.UNBIND) is BindState.UNBOUND
        assert next_state(BindState.UNBOUND, CommandId.UNBIND_RESP) is BindState.CLOSED

    def test_other_commands_do_not_move(self) -> None:
        """Commands without a rule leave every state as it is."""
        for state in STATES:
            assert next_state(state, CommandId.SUBMIT_SM) is state
            assert next_state(state, CommandId.ENQUIRE_LINK_RESP) is state

    def test_every_rule_leaves_its_state(self) -> None:
        """No rule in the table is a self-loop (each one is a real transition)."""
        assert all(source is not target for (source, _), target in TRANSITIONS.items())

    def test_rebind_gets_already_bound(self) -> None:
        """A bind on a bound session is refused with ESME_RALYBND, other misfits ESME_RINVBNDSTS."""
        assert rejection_status(BindState.BOUND_TX, CommandId.BIND_RECEIVER) == (
            CommandStatus.ESME_RALYBND
        )
        assert rejection_status(BindState.OPEN, CommandId.SUBMIT_SM) == (
            CommandStatus.ESME_RINVBNDSTS
        )
        assert rejection_status(BindState.UNBOUND, CommandId.BIND_RECEIVER) == (
            CommandStatus.ESME_RINVBNDSTS
        )


def _peer_direction(role: Role) -> Direction:
    return E2S if role is Role.SMSC else S2E


def _own_direction(role: Role) -> Direction:
    return E2S if role is Role.ESME else S2E


class TestSessionFollowsTable:
    @given(
        role=st.sampled_from(list(Role)),
        state=st.sampled_from(STATES),
        command_id=st.sampled_from(COMMANDS),
        relay_vendor=st.booleans(),
    )
    def test_inbound_request_handled_as_table_says(
        self, role: Role, state: BindState, command_id: int, relay_vendor: bool
    ) -> None:
        """An inbound request is accepted or answered with the table's error, never raised, and
        the session is then in the state the transition table gives (unchanged when refused)."""
        session = session_in(role, state, SessionConfig(relay_vendor_pdus=relay_vendor))
        frame = request_frame(command_id)
        events = session.receive_data(frame, 1.0)
        out = session.data_to_send()
        if state is BindState.CLOSED:
            assert (events, out) == ([], b"")
            assert session.state is BindState.CLOSED
            return
        vendor = command_id == VENDOR_ID and relay_vendor
        if command_id == UNKNOWN_ID or (command_id == VENDOR_ID and not relay_vendor):
            assert out == error_response(command_id, 77, CommandStatus.ESME_RINVCMDID)
            assert [type(e) for e in events] == [PduRejected]
            assert session.state is state
        elif may_send_request(state, _peer_direction(role), command_id, vendor=vendor):
            if command_id == CommandId.ENQUIRE_LINK:
                assert out == error_response(command_id, 77, 0)  # header-only enquire_link_resp
                assert events == []
                assert session.state is state
            elif command_id == CommandId.UNBIND:
                assert out == error_response(command_id, 77, 0)  # header-only unbind_resp
                assert isinstance(events[0], UnbindReceived)
                assert isinstance(events[-1], SessionClosed)
                # Nothing was owed, so the unbind_resp went at once: unbind, then unbind_resp.
                after_unbind = next_state(state, CommandId.UNBIND)
                assert after_unbind is BindState.UNBOUND
                assert session.state is next_state(after_unbind, CommandId.UNBIND_RESP)
            else:
                assert out == b""
                assert len(events) == 1
                assert isinstance(events[0], RequestReceived)
                assert events[0].frame == frame
                assert events[0].pdu.command_id == command_id
                assert session.state is next_state(state, command_id)
        else:
            assert session.state is state
            status = (
                CommandStatus.ESME_RINVBNDSTS if vendor else rejection_status(state, command_id)
            )
            reason = "wrong bind state"
            if (
                state is BindState.UNBOUND
                and not vendor
                and command_id not in (VENDOR_ID, UNKNOWN_ID)
                and may_send_request(BindState.BOUND_TRX, _peer_direction(role), command_id)
            ):
                # session_in unbinds a TRX session itself: a request the bind allowed crossed
                # our unbind and gets the temporary status, not the table's.
                status, reason = CommandStatus.ESME_RSYSERR, "crossed our unbind"
            expected = (
                b""
                if command_id in REQUESTS_WITHOUT_RESPONSE
                else error_response(command_id, 77, status)
            )
            assert out == expected
            assert events == [
                PduRejected(
                    command_id=command_id,
                    sequence_number=77,
                    status=status,
                    reason=reason,
                )
            ]

    @given(
        role=st.sampled_from(list(Role)),
        state=st.sampled_from(STATES),
        command_id=st.sampled_from(COMMANDS),
        as_frame=st.booleans(),
    )
    def test_outbound_request_refused_as_table_says(
        self, role: Role, state: BindState, command_id: int, as_frame: bool
    ) -> None:
        """send_request sends what the table allows and raises LocalProtocolError otherwise."""
        session = session_in(role, state)
        frame = request_frame(command_id, 0)
        cls = p.PDU_CLASSES.get(command_id)
        request: p.Pdu | bytes = frame if as_frame or cls is None else cls()
        allowed = may_send_request(
            state, _own_direction(role), command_id, vendor=command_id == VENDOR_ID
        )
        if not allowed:
            with pytest.raises(LocalProtocolError):
                session.send_request(request, 1.0)
            assert session.data_to_send() == b""
            assert session.state is state
            return
        seq = session.send_request(request, 1.0)
        out = session.data_to_send()
        assert out[4:8] == frame[4:8]
        assert int.from_bytes(out[12:16], "big") == seq
        assert session.state is next_state(state, command_id)

    @given(
        role=st.sampled_from(list(Role)),
        bound=st.sampled_from(sorted(BOUND_STATES, key=lambda s: s.value)),
        after_outbind=st.booleans(),
        status=st.sampled_from([0, CommandStatus.ESME_RBINDFAIL, CommandStatus.ESME_RINVPASWD]),
        nack=st.booleans(),
    )
    def test_bind_answer_moves_as_table_says(
        self, role: Role, bound: BindState, after_outbind: bool, status: int, nack: bool
    ) -> None:
        """A bind answered (sent by an SMSC-role session, received by an ESME-role one) leaves
        the session where the table says: bound on ESME_ROK, else where it was; a generic_nack
        never binds."""
        if after_outbind:
            bound = BindState.BOUND_RX  # the answer to an outbind is a bind_receiver
        start = BindState.OUTBOUND if after_outbind else BindState.OPEN
        session = session_in(role, start)
        bind, bind_resp = _BIND_FOR[bound]
        answer: p.Pdu = (
            p.GenericNack(command_status=status, sequence_number=1)
            if nack
            else bind_resp(command_status=status, sequence_number=1, system_id="smsc")
        )
        if role is Role.ESME:
            seq = session.send_request(bind(system_id="acct"), 0.0)
            assert session.state is start
            answer = dataclasses.replace(answer, sequence_number=seq)
            session.receive_data(encode(answer), 0.0)
        else:
            session.receive_data(encode(bind(sequence_number=1, system_id="acct")), 0.0)
            assert session.state is start
            if nack:
                return  # an SMSC answers a bind with a bind_resp, never a generic_nack
            session.send_response(answer, 0.0)
        assert session.state is next_state(start, answer.command_id, status)
        assert (session.state is bound) == (status == 0 and not nack)

    @given(
        role=st.sampled_from(list(Role)),
        state=st.sampled_from(STATES),
        data=st.one_of(st.binary(max_size=80), any_frames()),
    )
    def test_arbitrary_input_never_raises(self, role: Role, state: BindState, data: bytes) -> None:
        """Any bytes, in any state, give events and answers, never an exception."""
        session = session_in(role, state)
        session.receive_data(data, 1.0)
        session.data_to_send()
        session.handle_timer(1000.0)
