"""Delivery receipts: the id a receipt is for, the same receipt under another id, and the
receipts the gateway writes itself.

A receipt names its message in ``receipted_message_id`` and in the ``id:`` field of its text
(SMPP 3.4 appendix B), either or both. The gateway writes ``stat:REJECTD`` for an MT it
accepted and reported as refused, and ``stat:UNDELIV`` for a part the client had been told was
accepted when the SMSC refused it; the time is passed in.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import Final

from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from gateway.smpp.constants import EsmClass, Tag

# The receipt text's id field (SMPP 3.4 appendix B): "id:IIIIIIIIII sub:...".
_TEXT_ID: Final = re.compile(rb"(?i)(?<![a-z])id:([^ \x00]*)")
# message_state values (SMPP 3.4 5.3.2.35) for the receipts the gateway writes.
MESSAGE_STATES: Final = {"REJECTD": 8, "UNDELIV": 5}

Receipt = p.DeliverSm | p.DataSm


def receipt_id(pdu: Receipt) -> str | None:
    """The id of the message a receipt is for: ``receipted_message_id``, else the text's."""
    value = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
    if value:
        return value.rstrip(b"\0").decode("latin-1")
    body = _receipt_body(pdu)
    found = _TEXT_ID.search(body)
    return found.group(1).decode("latin-1") if found and found.group(1) else None


def receipted_id(pdu: Receipt) -> str | None:
    """``receipted_message_id`` alone (the SMSC's id an MO's event is recorded with)."""
    value = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
    return value.rstrip(b"\0").decode("latin-1") if value else None


def rewrite_receipt(pdu: Receipt, message_id: str) -> bytes:
    """The receipt's frame with ``message_id`` in place of the SMSC's id, in the TLV and in
    the text's ``id:`` field (where each is present); every other field kept."""
    new_id = message_id.encode("latin-1")
    tlvs = tuple(
        p.Tlv(t.tag, new_id + b"\0") if t.tag == Tag.RECEIPTED_MESSAGE_ID else t for t in pdu.tlvs
    )
    changes: dict[str, object] = {"tlvs": tlvs}
    if isinstance(pdu, p.DeliverSm) and pdu.short_message:
        changes["short_message"] = _TEXT_ID.sub(b"id:" + new_id, pdu.short_message, count=1)
    else:
        payload = pdu.tlv(Tag.MESSAGE_PAYLOAD)
        if payload:
            changes["tlvs"] = tuple(
                p.Tlv(t.tag, _TEXT_ID.sub(b"id:" + new_id, t.value, count=1))
                if t.tag == Tag.MESSAGE_PAYLOAD
                else t
                for t in tlvs
            )
    return encode(dataclasses.replace(pdu, **changes))  # type: ignore[arg-type]


def _receipt_body(pdu: Receipt) -> bytes:
    if isinstance(pdu, p.DeliverSm) and pdu.short_message:
        return pdu.short_message
    return pdu.tlv(Tag.MESSAGE_PAYLOAD) or b""


def rejection_receipt(
    mt: p.SubmitSm | p.DataSm, message_id: str, stat: str, now: float
) -> p.DeliverSm:
    """The receipt the gateway sends a client itself: ``stat`` (REJECTD / UNDELIV) for the MT
    it answered under ``message_id``, from the MT's destination to its source, dated ``now``
    (wall-clock seconds, written in UTC)."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%y%m%d%H%M")
    text = (
        f"id:{message_id} sub:001 dlvrd:000 submit date:{stamp} done date:{stamp} "
        f"stat:{stat} err:000 text:"
    ).encode("ascii")
    return p.DeliverSm(
        source_addr_ton=mt.dest_addr_ton,
        source_addr_npi=mt.dest_addr_npi,
        source_addr=mt.destination_addr,
        dest_addr_ton=mt.source_addr_ton,
        dest_addr_npi=mt.source_addr_npi,
        destination_addr=mt.source_addr,
        esm_class=EsmClass.DELIVERY_RECEIPT,
        short_message=text,
        tlvs=(
            p.Tlv(Tag.RECEIPTED_MESSAGE_ID, message_id.encode("ascii") + b"\0"),
            p.Tlv(Tag.MESSAGE_STATE, bytes([MESSAGE_STATES[stat]])),
        ),
    )
