"""submit_multi as values: one decision per destination, and the merge of the answers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.campaign import Campaign, default_campaign
from gateway.consent.model import AddressKind, SmsAddress
from gateway.consent.policy import RejectReason
from gateway.messages import multi
from gateway.messages.mt import NO_SUBSCRIBER
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from gateway.smpp.constants import CommandStatus

SENDER = SmsAddress(kind=AddressKind.E164, value="15550100")
CAMPAIGN = default_campaign()


def sme(addr: str, ton: int = 1, npi: int = 1) -> p.SmeAddress:
    return p.SmeAddress(dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr)


def multi_pdu(*dests: p.SmeAddress | p.DistributionList) -> p.SubmitMulti:
    return p.SubmitMulti(
        sequence_number=11,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=SENDER.value,
        dest_addresses=dests,
        short_message=b"hello",
    )


def read(pdu: p.SubmitMulti, campaign: Campaign = CAMPAIGN) -> list[multi.Destination]:
    return multi.destinations(
        pdu, campaign=campaign, sender=SENDER, account="acct1", country="US", short_max=8
    )


class TestDestinations:
    """Each destination read as a subscriber with what its address alone earns."""

    def test_numbers_lists_and_garbage(self) -> None:
        """A number is a subscriber; a distribution list and an unreadable number are
        refused as unreadable addresses (the gateway cannot decide for them)."""
        dests = read(multi_pdu(sme("15551234567"), p.DistributionList(dl_name="all"), sme("??")))
        assert dests[0].subscriber.value == "15551234567"
        assert dests[0].refusal is None
        assert not dests[2].subscriber.is_subscriber
        assert dests[1].subscriber is NO_SUBSCRIBER
        assert dests[1].refusal is RejectReason.UNREADABLE_ADDRESS
        assert dests[2].refusal is RejectReason.UNREADABLE_ADDRESS

    def test_campaign_of_other_accounts_refuses_every_destination(self) -> None:
        """A campaign that names its accounts refuses the senders of others."""
        mine = Campaign(name="mine", numbers=(SENDER.value,), accounts=("other",))
        dests = read(multi_pdu(sme("15551234567"), sme("15551234568")), mine)
        assert {d.refusal for d in dests} == {RejectReason.SENDER_NOT_ALLOWED}

    def test_unsuccess_entry_is_the_address_as_written(self) -> None:
        """The client hears of a refused destination by its own TON/NPI and digits."""
        dest = read(multi_pdu(sme("5551234567", ton=0, npi=1)))[0]
        assert dest.unsuccess(0x45) == p.UnsuccessSme(
            dest_addr_ton=0, dest_addr_npi=1, destination_addr="5551234567", error_status_code=0x45
        )
        dl = read(multi_pdu(p.DistributionList(dl_name="vip")))[0]
        assert dl.unsuccess(0x45).destination_addr == "vip"


class TestPlan:
    """Forward all, forward the kept ones, or answer alone."""

    def test_nothing_refused_forwards_as_is(self) -> None:
        """No refusal: the original frame goes."""
        pdu = multi_pdu(sme("15551234567"))
        assert multi.plan(pdu, read(pdu), []) is None

    def test_all_refused_answers_with_first_status_and_the_list(self) -> None:
        """Nothing left to send: the client gets the first refusal's status and every entry."""
        pdu = multi_pdu(sme("15551234567"), sme("15551234568"))
        refused = [d.unsuccess(s) for d, s in zip(read(pdu), (0x45, 0x58), strict=True)]
        resp = multi.plan(pdu, [], refused)
        assert isinstance(resp, p.SubmitMultiResp)
        assert resp.command_status == 0x45
        assert resp.sequence_number == 11
        assert resp.unsuccess_smes == tuple(refused)

    @given(st.lists(st.booleans(), min_size=1, max_size=6))
    def test_forwarded_pdu_holds_exactly_the_kept_destinations(self, keep: list[bool]) -> None:
        """For any split, the PDU that goes upstream names the kept destinations, in order,
        and no refused one."""
        pdu = multi_pdu(*(sme(f"155512345{i:02d}") for i in range(len(keep))))
        dests = read(pdu)
        kept = [d for d, k in zip(dests, keep, strict=True) if k]
        refused = [d.unsuccess(0x45) for d, k in zip(dests, keep, strict=True) if not k]
        planned = multi.plan(pdu, kept, refused)
        if not refused:
            assert planned is None
        elif not kept:
            assert isinstance(planned, p.SubmitMultiResp)
        else:
            assert isinstance(planned, p.SubmitMulti)
            assert planned.dest_addresses == tuple(d.address for d in kept)
            assert planned.short_message == pdu.short_message
            wire = decode(encode(planned))
            assert isinstance(wire, p.SubmitMulti)
            assert len(wire.dest_addresses) == len(kept)


class TestAddUnsuccess:
    """The SMSC's answer lists the gateway's refusals too."""

    def test_merge_keeps_the_smscs_entries_first(self) -> None:
        """The SMSC's own unsuccess entries stay, the gateway's follow; message id kept."""
        smsc = p.UnsuccessSme(destination_addr="1", error_status_code=CommandStatus.ESME_RINVDSTADR)
        ours = p.UnsuccessSme(destination_addr="2", error_status_code=0x45)
        frame = encode(
            p.SubmitMultiResp(sequence_number=3, message_id="m1", unsuccess_smes=(smsc,))
        )
        merged = decode(multi.add_unsuccess(frame, (ours,)))
        assert isinstance(merged, p.SubmitMultiResp)
        assert merged.unsuccess_smes == (smsc, ours)
        assert (merged.message_id, merged.sequence_number) == ("m1", 3)

    def test_other_frames_pass_unchanged(self) -> None:
        """A generic_nack or an undecodable frame is the SMSC's answer as it is."""
        nack = encode(p.GenericNack(sequence_number=3, command_status=CommandStatus.ESME_RSYSERR))
        ours = (p.UnsuccessSme(destination_addr="2", error_status_code=0x45),)
        assert multi.add_unsuccess(nack, ours) == nack
        garbage = b"\x00\x00\x00\x10\x80\x00\x00\x21\x00\x00"
        assert multi.add_unsuccess(garbage, ours) == garbage
