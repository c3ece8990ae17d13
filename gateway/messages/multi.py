"""submit_multi: one decision per destination, and the merge of the answers.

``destinations`` reads each destination as a subscriber with the refusal its address alone
earns (a distribution list is refused like an unreadable address: the SMSC expands it, and the
gateway cannot decide for members it cannot see). Once every destination is decided, ``plan``
says what happens: forward as it is, forward without the refused ones (their unsuccess_sme
entries are then added to the SMSC's answer by ``add_unsuccess``), or answer the client alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.consent.campaign import Campaign
from gateway.consent.model import SmsAddress
from gateway.consent.numbers import cached_normalise
from gateway.consent.policy import RejectReason, address_refusal
from gateway.messages.mt import NO_SUBSCRIBER
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.errors import SmppError


@dataclass(frozen=True, slots=True)
class Destination:
    """One destination of a submit_multi, read for its decision."""

    address: p.SmeAddress | p.DistributionList
    subscriber: SmsAddress  # NO_SUBSCRIBER for a list or an unreadable number
    refusal: RejectReason | None  # what its addresses alone earn (address_refusal)

    def unsuccess(self, status: int) -> p.UnsuccessSme:
        """Its unsuccess_sme entry, as the client addressed it."""
        address = self.address
        if isinstance(address, p.SmeAddress):
            return p.UnsuccessSme(
                dest_addr_ton=address.dest_addr_ton,
                dest_addr_npi=address.dest_addr_npi,
                destination_addr=address.destination_addr,
                error_status_code=status,
            )
        return p.UnsuccessSme(
            dest_addr_ton=0,
            dest_addr_npi=0,
            destination_addr=address.dl_name,
            error_status_code=status,
        )


def destinations(
    pdu: p.SubmitMulti,
    *,
    campaign: Campaign,
    sender: SmsAddress,
    account: str,
    country: str,
    short_max: int,
) -> list[Destination]:
    """Every destination of ``pdu`` in order, with the refusal its address earns."""
    found = []
    for dest in pdu.dest_addresses:
        subscriber = None
        if isinstance(dest, p.SmeAddress):
            subscriber = cached_normalise(
                dest.destination_addr,
                dest.dest_addr_ton,
                dest.dest_addr_npi,
                country,
                short_max,
                False,
            )
        subscriber = subscriber or NO_SUBSCRIBER
        refusal = address_refusal(campaign, subscriber, sender, account)
        found.append(Destination(address=dest, subscriber=subscriber, refusal=refusal))
    return found


def plan(
    pdu: p.SubmitMulti,
    kept: Sequence[Destination],
    refused: Sequence[p.UnsuccessSme],
) -> p.SubmitMulti | p.SubmitMultiResp | None:
    """What to do once every destination is decided: None, forward ``pdu`` as it is; a
    SubmitMulti, forward that (the kept destinations only); a SubmitMultiResp, answer the
    client with it (nothing left to send: the first refusal's status and the full list)."""
    if not refused:
        return None
    if not kept:
        return p.SubmitMultiResp(
            command_status=refused[0].error_status_code,
            sequence_number=pdu.sequence_number,
            message_id="",
            unsuccess_smes=tuple(refused),
        )
    return dataclasses.replace(pdu, dest_addresses=tuple(d.address for d in kept))


def add_unsuccess(frame: bytes, refused: tuple[p.UnsuccessSme, ...]) -> bytes:
    """The SMSC's submit_multi_resp ``frame`` listing the destinations the gateway refused,
    too; anything else (or a frame that does not decode) is passed on as it is."""
    try:
        resp = decode(frame)
    except SmppError:
        return frame  # not ours to repair; the client gets what the SMSC said
    if not isinstance(resp, p.SubmitMultiResp):
        return frame
    merged = dataclasses.replace(
        resp,
        message_id=resp.message_id or "",
        unsuccess_smes=(*resp.unsuccess_smes, *refused),
    )
    return encode(merged)
