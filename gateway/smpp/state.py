"""The SMPP 3.4 bind-state table, and nothing else.

Sources: SMPP 3.4 section 2.2 (session states), table 2-1 in section 2.3 (which PDU each side
may issue in which state) and the "required state" of each PDU in section 4. One table serves both
ends of a session: ``Direction`` says who sends, so a session in the ESME role looks up
``ESME_TO_SMSC`` for what it sends and ``SMSC_TO_ESME`` for what it receives, and an SMSC-role
session the other way round.

Deliberate departures from the letter of the spec, each because real peers do it:

- ``enquire_link`` is accepted in every state but CLOSED (the spec asks for a bound state; many
  clients probe before binding and while unbinding, and SMPP 5.0 allows it in all of them).
- A TRX session may do everything a TX session may (section 2.2.1 says so in prose, though
  table 2-1 lists ``replace_sm`` under BOUND_TX alone).
- ``unbind`` is also accepted in UNBOUND, for the unbinds that cross on the wire.
- Responses, ``generic_nack`` included, may go either way in any state but CLOSED: they answer a
  request that was legal when it was sent, and draining an unbinding session needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from gateway.smpp.constants import BIND_COMMANDS, CommandId, CommandStatus


class BindState(Enum):
    """Session states of SMPP 3.4 section 2.2 (plus OUTBOUND and UNBOUND of SMPP 5.0)."""

    OPEN = "open"  # connected, bind pending
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    OUTBOUND = "outbound"  # outbind exchanged: the ESME may now send bind_receiver
    UNBOUND = "unbound"  # unbind sent or received, waiting for the exchange to finish
    CLOSED = "closed"


class Direction(Enum):
    """Who issues a PDU."""

    ESME_TO_SMSC = "esme_to_smsc"
    SMSC_TO_ESME = "smsc_to_esme"


BOUND_STATES = frozenset({BindState.BOUND_TX, BindState.BOUND_RX, BindState.BOUND_TRX})
_TRANSMIT = frozenset({BindState.BOUND_TX, BindState.BOUND_TRX})
_RECEIVE = frozenset({BindState.BOUND_RX, BindState.BOUND_TRX})
_LINK_UP = frozenset(BindState) - {BindState.CLOSED}
_UNBINDABLE = BOUND_STATES | {BindState.UNBOUND}

_E2S = Direction.ESME_TO_SMSC
_S2E = Direction.SMSC_TO_ESME

REQUEST_STATES: Mapping[tuple[Direction, int], frozenset[BindState]] = {
    (_E2S, CommandId.BIND_TRANSMITTER): frozenset({BindState.OPEN}),
    (_E2S, CommandId.BIND_TRANSCEIVER): frozenset({BindState.OPEN}),
    # Section 2.2.1.1: the answer to an outbind is a bind_receiver.
    (_E2S, CommandId.BIND_RECEIVER): frozenset({BindState.OPEN, BindState.OUTBOUND}),
    (_S2E, CommandId.OUTBIND): frozenset({BindState.OPEN}),
    # UNBOUND too: both sides may send unbind at once, and each must still get its unbind_resp.
    (_E2S, CommandId.UNBIND): _UNBINDABLE,
    (_S2E, CommandId.UNBIND): _UNBINDABLE,
    (_E2S, CommandId.ENQUIRE_LINK): _LINK_UP,
    (_S2E, CommandId.ENQUIRE_LINK): _LINK_UP,
    (_E2S, CommandId.SUBMIT_SM): _TRANSMIT,
    (_E2S, CommandId.SUBMIT_MULTI): _TRANSMIT,
    (_E2S, CommandId.QUERY_SM): _TRANSMIT,
    (_E2S, CommandId.CANCEL_SM): _TRANSMIT,
    (_E2S, CommandId.REPLACE_SM): _TRANSMIT,
    # data_sm goes both ways, each way on the bind type that carries that direction (4.7).
    (_E2S, CommandId.DATA_SM): _TRANSMIT,
    (_S2E, CommandId.DATA_SM): _RECEIVE,
    (_S2E, CommandId.DELIVER_SM): _RECEIVE,
    (_S2E, CommandId.ALERT_NOTIFICATION): _RECEIVE,
}
"""(who sends, request command_id) -> the states in which that side may send it."""

KNOWN_REQUESTS = frozenset(command_id for _, command_id in REQUEST_STATES)
"""Every standard request command id; anything else is a vendor or unknown command."""

VENDOR_STATES = BOUND_STATES
"""Vendor command ids (when relayed at all) travel in any bound state, either way."""

RESPONSE_STATES = _LINK_UP
"""Responses and generic_nack: any state in which the link is up."""

TRANSITIONS: Mapping[tuple[BindState, int], BindState] = {
    # A bind response moves the state only when its command_status is ESME_ROK.
    (BindState.OPEN, CommandId.BIND_TRANSMITTER_RESP): BindState.BOUND_TX,
    (BindState.OPEN, CommandId.BIND_RECEIVER_RESP): BindState.BOUND_RX,
    (BindState.OPEN, CommandId.BIND_TRANSCEIVER_RESP): BindState.BOUND_TRX,
    (BindState.OUTBOUND, CommandId.BIND_RECEIVER_RESP): BindState.BOUND_RX,
    (BindState.OPEN, CommandId.OUTBIND): BindState.OUTBOUND,
    (BindState.BOUND_TX, CommandId.UNBIND): BindState.UNBOUND,
    (BindState.BOUND_RX, CommandId.UNBIND): BindState.UNBOUND,
    (BindState.BOUND_TRX, CommandId.UNBIND): BindState.UNBOUND,
    (BindState.UNBOUND, CommandId.UNBIND_RESP): BindState.CLOSED,
}
"""(state, command_id sent or received) -> next state; symmetric in direction.

A session changes state only by looking this table up (``next_state``), with one addition: it
goes to CLOSED from any state when the link ends without an unbind exchange (transport lost,
a framing error, a timer: bind, unbind, inactivity, keep-alive). No rule means the state stays:
a bind request waits for its response, and an unbind crossing ours leaves the session UNBOUND.
"""

_BIND_RESPONSES = frozenset(
    {
        CommandId.BIND_TRANSMITTER_RESP,
        CommandId.BIND_RECEIVER_RESP,
        CommandId.BIND_TRANSCEIVER_RESP,
    }
)


def request_states(direction: Direction) -> Mapping[BindState, frozenset[int]]:
    """For one direction: each state to the standard request ids that side may send in it.

    Sessions keep the row of their current state, so the per-PDU check is one set lookup.
    """
    return {
        state: frozenset(
            command_id
            for (who, command_id), states in REQUEST_STATES.items()
            if who is direction and state in states
        )
        for state in BindState
    }


def may_send_request(
    state: BindState, direction: Direction, command_id: int, *, vendor: bool = False
) -> bool:
    """True when the side ``direction`` names may issue request ``command_id`` in ``state``.

    ``vendor`` marks a vendor command id the configuration relays; other unknown ids never pass.
    """
    states = REQUEST_STATES.get((direction, command_id))
    if states is None:
        return vendor and state in VENDOR_STATES
    return state in states


def rejection_status(state: BindState, command_id: int) -> int:
    """The command_status for a request refused by the table in ``state``.

    A bind on a session that is already bound gets ESME_RALYBND (more telling than the generic
    ESME_RINVBNDSTS every other misplaced request gets).
    """
    if command_id in BIND_COMMANDS and state in BOUND_STATES:
        return CommandStatus.ESME_RALYBND
    return CommandStatus.ESME_RINVBNDSTS


def next_state(state: BindState, command_id: int, command_status: int = 0) -> BindState:
    """The state after ``command_id`` is sent or received in ``state`` (unchanged if no rule).

    A bind response with an error status leaves the session where it was: the ESME may retry.
    """
    target = TRANSITIONS.get((state, command_id))
    if target is None or (command_status != 0 and command_id in _BIND_RESPONSES):
        return state
    return target
