"""Delivery receipts under the ids the client was given.

The footer stage answers some parts of a long MT before the SMSC has seen them (so a client
that waits for each answer is never kept waiting), with message ids of the gateway's own, and
it sends parts of its own (a footer that needs another part). The SMSC's receipts carry the
SMSC's ids. ``ReceiptIds`` keeps the mapping (upstream id -> the client's ids, or none for a
part the client never sent): in a local LRU for the receipts that come back through this
process, and in the consent store (with a time-to-live) for those that come back over another
session or through another gateway instance.

Pure helpers read the id a receipt is for (``receipted_message_id``, else the ``id:`` of the
text), rewrite a receipt for another id (both places), and build the ``stat:REJECTD`` /
``UNDELIV`` receipt the gateway sends itself when the SMSC refused a part the client had
already been told was accepted.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from typing import Final

from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from gateway.smpp.constants import EsmClass, Tag
from gateway.store.base import ConsentStore, MessageIds

# The receipt text's id field (SMPP 3.4 appendix B): "id:IIIIIIIIII sub:...".
_TEXT_ID: Final = re.compile(rb"(?i)(?<![a-z])id:([^ \x00]*)")
# message_state values (SMPP 3.4 5.3.2.35) for the receipts the gateway writes.
MESSAGE_STATES: Final = {"REJECTD": 8, "UNDELIV": 5}
DEFAULT_TTL_S: Final = 2 * 24 * 3600.0
DEFAULT_LOCAL_ENTRIES: Final = 100_000

Receipt = p.DeliverSm | p.DataSm


def new_message_id() -> str:
    """A message id of the gateway's own: 18 decimal digits, so clients that keep ids as
    64-bit integers (or parse them as hex) read it as well as any SMSC's."""
    return f"{uuid.uuid4().int % 10**18:018d}"


def receipt_id(pdu: Receipt) -> str | None:
    """The id of the message a receipt is for: ``receipted_message_id``, else the text's."""
    value = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
    if value:
        return value.rstrip(b"\0").decode("latin-1")
    body = _receipt_body(pdu)
    found = _TEXT_ID.search(body)
    return found.group(1).decode("latin-1") if found and found.group(1) else None


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


def rejection_receipt(mt: p.SubmitSm | p.DataSm, message_id: str, stat: str) -> p.DeliverSm:
    """The receipt the gateway sends a client itself: ``stat`` (REJECTD / UNDELIV) for the MT
    it answered under ``message_id``, from the MT's destination to its source."""
    stamp = time.strftime("%y%m%d%H%M", time.gmtime())
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


class ReceiptIds:
    """Upstream id -> the client's ids, locally (LRU, bounded) and in the consent store."""

    __slots__ = ("_local", "_max_local", "_store", "ttl_s")

    def __init__(
        self,
        store: ConsentStore,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_local: int = DEFAULT_LOCAL_ENTRIES,
    ) -> None:
        self._store = store
        self.ttl_s = ttl_s
        self._max_local = max_local
        self._local: OrderedDict[str, tuple[float, MessageIds]] = OrderedDict()

    def remember(self, entries: Iterable[MessageIds]) -> None:
        """Keep these mappings in this process (at once: a receipt may come back quickly)."""
        expires = time.monotonic() + self.ttl_s
        for entry in entries:
            self._local.pop(entry.upstream_id, None)
            self._local[entry.upstream_id] = (expires, entry)
        while len(self._local) > self._max_local:
            self._local.popitem(last=False)

    async def persist(self, entries: Iterable[MessageIds]) -> None:
        """Keep these mappings in the store, for the other sessions and instances (raises
        what the store raises)."""
        batch = list(entries)
        if batch:
            await self._store.put_message_ids(batch, self.ttl_s)

    async def keep(self, entries: Iterable[MessageIds]) -> None:
        """``remember`` and ``persist``."""
        batch = list(entries)
        self.remember(batch)
        await self.persist(batch)

    def local(self, upstream_id: str) -> MessageIds | None:
        """The mapping if this process made it (and it has not expired); no I/O."""
        found = self._local.get(upstream_id)
        if found is None:
            return None
        if found[0] <= time.monotonic():
            del self._local[upstream_id]
            return None
        return found[1]

    async def lookup(self, upstream_id: str) -> MessageIds | None:
        """The mapping made by any instance, or None (raises what the store raises)."""
        found = self.local(upstream_id)
        if found is not None:
            return found
        return await self._store.get_message_ids(upstream_id)
