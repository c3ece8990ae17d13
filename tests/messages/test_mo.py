"""The MO pieces the relay adds to the policy: resend keys, part keys, answers, owed replies."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.consent.campaign import default_campaign
from gateway.consent.model import GLOBAL_SCOPE, AddressKind, ConsentRecord, ConsentState, SmsAddress
from gateway.consent.policy import MoDecision, decide_mo
from gateway.messages import mo
from gateway.messages.receipts import (
    receipt_id,
    receipted_id,
    rejection_receipt,
    rewrite_receipt,
)
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode
from gateway.smpp.constants import EsmClass, Tag

SUB = SmsAddress(kind=AddressKind.E164, value="15551234567")
SHORT = SmsAddress(kind=AddressKind.SHORT_CODE, value="12345")


def digest(text: str = "STOP", now: float = 1000.0, window_s: float = 600.0) -> str:
    return mo.mo_digest(
        system_id="acct1",
        subscriber=SUB.value,
        recipient=SHORT.value,
        text=text,
        now=now,
        window_s=window_s,
    )


def record(event_id: str, at: float = 1.0) -> dict[str, ConsentRecord]:
    return {
        GLOBAL_SCOPE.key: ConsentRecord(
            subscriber=SUB.value,
            scope=GLOBAL_SCOPE.key,
            state=ConsentState.OPTED_OUT,
            updated_at=at,
            last_event_id=event_id,
        )
    }


def stop(key: str) -> MoDecision:
    return decide_mo(
        text="STOP",
        subscriber=SUB,
        recipient=SHORT,
        campaign=default_campaign(),
        system_id="acct1",
        records={},
        is_receipt=False,
        now=1000.0,
        new_event_id=lambda: key,
        dedup_key=key,
    )


class TestResendKeys:
    """The SMSC's resend is the same event; a new message after a change is a new one."""

    def test_digest_is_per_window_and_words(self) -> None:
        """Same words in the same window: one digest; another window or other words: another."""
        assert digest(now=1000.0) == digest(now=1199.0)  # both in window 1 (600..1200)
        assert digest(now=1000.0) != digest(now=1200.0)
        assert digest("STOP") != digest("START")

    def test_resend_gets_the_stored_events_key(self) -> None:
        """When the latest record is this MO's event, the resend gets its key (dropped)."""
        d = digest()
        first = mo.mo_event_key(d, {})
        assert first.startswith(d[:16])
        assert mo.mo_event_key(d, record(first)) == first

    def test_after_another_change_the_same_words_are_new(self) -> None:
        """STOP, START, STOP: the second STOP has a key of its own."""
        d = digest()
        first = mo.mo_event_key(d, {})
        later = mo.mo_event_key(d, record("some-start-event", at=5.0))
        assert later != first
        assert later.startswith(d[:16])

    def test_part_key_and_response(self) -> None:
        """Parts reassemble per session, sender, number and reference; the answer matches."""
        assert mo.mo_part_key("c1", "a", "b", 5) != mo.mo_part_key("c2", "a", "b", 5)
        resp = mo.mo_response(p.DeliverSm(sequence_number=4))
        assert isinstance(resp, p.DeliverSmResp)
        assert resp.sequence_number == 4
        assert isinstance(mo.mo_response(p.DataSm(sequence_number=5)), p.DataSmResp)


class TestUnreplied:
    """Replies owed by an MO whose store write was reported failed."""

    def test_taken_once(self) -> None:
        """The resend's events find the decision once; a second resend owes nothing."""
        owed = mo.Unreplied(max_age_s=600.0)
        decision = stop("k1")
        assert decision.events
        owed.add(decision, 0.0)
        assert owed.take(decision.events, 1.0) is decision
        assert owed.take(decision.events, 2.0) is None

    def test_forgotten_after_the_dedup_window(self) -> None:
        """Past the window the resend is a new message, and owes no old reply."""
        owed = mo.Unreplied(max_age_s=600.0)
        decision = stop("k1")
        owed.add(decision, 0.0)
        assert owed.take(decision.events, 601.0) is None
        assert len(owed) == 0

    def test_bounded(self) -> None:
        """The oldest entries go first past the bound."""
        owed = mo.Unreplied(max_age_s=600.0, max_entries=2)
        decisions = [stop(f"k{i}") for i in range(3)]
        for d in decisions:
            owed.add(d, 0.0)
        assert len(owed) == 2
        assert owed.take(decisions[0].events, 1.0) is None
        assert owed.take(decisions[2].events, 1.0) is decisions[2]


class TestReceipts:
    """Receipt ids, rewrites, and the gateway's own receipts."""

    MT = p.SubmitSm(
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr="15550100",
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=SUB.value,
    )

    def test_rejection_receipt_is_dated_by_now(self) -> None:
        """The receipt's dates are the ``now`` passed in, in UTC; addresses reversed."""
        now = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp()
        receipt = rejection_receipt(self.MT, "000000000000000042", "REJECTD", now)
        assert b"submit date:2603040506 done date:2603040506 stat:REJECTD" in (
            receipt.short_message
        )
        assert (receipt.source_addr, receipt.destination_addr) == (SUB.value, "15550100")
        assert receipt.esm_class == EsmClass.DELIVERY_RECEIPT
        assert receipt.tlv(Tag.MESSAGE_STATE) == bytes([8])
        assert receipt_id(receipt) == receipted_id(receipt) == "000000000000000042"

    def test_rewrite_changes_both_ids(self) -> None:
        """A rewritten receipt names the client's id in the TLV and in the text."""
        receipt = rejection_receipt(self.MT, "SMSC1", "UNDELIV", 0.0)
        rewritten = decode(rewrite_receipt(receipt, "CLIENT9"))
        assert isinstance(rewritten, p.DeliverSm)
        assert receipted_id(rewritten) == "CLIENT9"
        assert rewritten.short_message.startswith(b"id:CLIENT9 ")
        assert rewritten.tlv(Tag.MESSAGE_STATE) == bytes([5])

    def test_text_id_when_there_is_no_tlv(self) -> None:
        """Without receipted_message_id the text's id: is the receipt's id."""
        receipt = p.DeliverSm(esm_class=EsmClass.DELIVERY_RECEIPT, short_message=b"id:ab12 sub:001")
        assert receipt_id(receipt) == "ab12"
        assert receipted_id(receipt) is None
