"""The MT decision as values: reading an MT, one answer per long message, refusal answers."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.campaign import Campaign, CampaignDirectory, FooterMode
from gateway.consent.model import (
    GLOBAL_SCOPE,
    AddressKind,
    ConsentRecord,
    ConsentState,
    SmsAddress,
)
from gateway.consent.policy import Allow, Reject, RejectReason, address_refusal, decide_mt
from gateway.messages.mt import (
    NO_SUBSCRIBER,
    SEND_FOOTER,
    SEND_PLAIN,
    Answer,
    Mt,
    Refuse,
    Send,
    accepted_response,
    may_be_part,
    read_mt,
    refusal_answer,
    settle,
    wants_receipt,
)
from gateway.messages.parts import PartTracker
from gateway.smpp import pdu as p
from gateway.smpp.constants import EsmClass, Tag

SENDER = "15550100"
SUB = "15551234567"
ACME = Campaign(name="acme", numbers=(SENDER,), footer=FooterMode.ALWAYS)
DIRECTORY = CampaignDirectory((ACME,))
ANY = SmsAddress(kind=AddressKind.ALPHANUMERIC, value="")
ALLOW = Allow(add_footer=False)
ALLOW_FOOTER = Allow(add_footer=True)
OPTED_OUT = Reject(reason=RejectReason.OPTED_OUT, scope="number:15550100")


@dataclass(frozen=True, slots=True)
class Part:
    reference: int
    total: int
    seq: int


def submit(dest: str = SUB, source: str = SENDER, **fields: object) -> p.SubmitSm:
    values: dict[str, object] = {
        "source_addr_ton": 1,
        "source_addr_npi": 1,
        "source_addr": source,
        "dest_addr_ton": 1,
        "dest_addr_npi": 1,
        "destination_addr": dest,
        "sequence_number": 7,
    }
    values.update(fields)
    return p.SubmitSm(**values)  # type: ignore[arg-type]


def read(pdu: p.SubmitSm | p.DataSm, part: Part | None = None, conn_id: str = "c1") -> Mt:
    return read_mt(
        pdu,
        conn_id=conn_id,
        account="acct1",
        bound_as="Acct1",
        default_sender=ANY,
        directory=DIRECTORY,
        country="US",
        short_max=8,
        part=part,
    )


class TestReadMt:
    """What a decision needs, read from the PDU."""

    def test_numbers_campaign_and_account(self) -> None:
        """Destination and source are read as numbers, the campaign found by the sender."""
        mt = read(submit())
        assert mt.subscriber == SmsAddress(kind=AddressKind.E164, value=SUB)
        assert mt.sender.value == SENDER
        assert mt.campaign is ACME
        assert (mt.account, mt.bound_as) == ("acct1", "Acct1")
        assert mt.part_key is None

    def test_unreadable_destination_is_refused_by_the_address_check(self) -> None:
        """An empty or garbled destination becomes NO_SUBSCRIBER, which address_refusal
        refuses: no MT goes to an address the gateway cannot check."""
        for dest in ("", "not a number!"):
            mt = read(submit(dest=dest, dest_addr_ton=0, dest_addr_npi=0))
            assert mt.subscriber.is_subscriber is False
            assert address_refusal(mt.campaign, mt.subscriber, mt.sender, mt.account) is (
                RejectReason.UNREADABLE_ADDRESS
            )
        assert read(submit(dest="")).subscriber is NO_SUBSCRIBER

    def test_empty_source_is_the_default_sender(self) -> None:
        """An empty source_addr stands for what the SMSC fills in for the account."""
        mt = read(submit(source="", source_addr_ton=0, source_addr_npi=0))
        assert mt.sender is ANY
        assert mt.campaign is DIRECTORY.default

    def test_part_key_names_connection_addresses_reference_and_total(self) -> None:
        """Parts of one message share a key; another connection or reference is another."""
        a = read(submit(), Part(5, 3, 1)).part_key
        assert a is not None
        assert a == read(submit(), Part(5, 3, 2)).part_key
        assert a != read(submit(), Part(5, 3, 1), conn_id="c2").part_key
        assert a != read(submit(), Part(6, 3, 1)).part_key
        assert a != read(submit(), Part(5, 4, 1)).part_key

    def test_no_part_key_for_an_unreadable_destination(self) -> None:
        """An MT refused by its address is not remembered as a part."""
        assert read(submit(dest=""), Part(5, 3, 1)).part_key is None

    def test_may_be_part(self) -> None:
        """Only a UDH or the SAR TLVs make content worth reading for the part memo."""
        assert not may_be_part(submit())
        assert may_be_part(submit(esm_class=EsmClass.UDHI))
        assert may_be_part(submit(tlvs=(p.Tlv(Tag.SAR_MSG_REF_NUM, b"\x00\x05"),)))

    def test_with_pdu_keeps_the_reading(self) -> None:
        """Another part of the same message keeps the first part's reading."""
        mt = read(submit(), Part(5, 3, 1))
        other = submit(sequence_number=9)
        again = mt.with_pdu(other)
        assert again.pdu is other
        assert (again.subscriber, again.campaign, again.part_key) == (
            mt.subscriber,
            mt.campaign,
            mt.part_key,
        )


class TestSettleSingle:
    """A message in one PDU: the policy's decision, and whether a footer stage exists."""

    def test_allow_goes_plain_or_through_the_footer_stage(self) -> None:
        """add_footer goes to the footer stage only when there is one."""
        mt = read(submit())
        parts = PartTracker(10.0)
        assert settle(ALLOW, mt, parts, 0.0, footers=True) is SEND_PLAIN
        assert settle(ALLOW_FOOTER, mt, parts, 0.0, footers=True) is SEND_FOOTER
        assert settle(ALLOW_FOOTER, mt, parts, 0.0, footers=False) is SEND_PLAIN
        assert len(parts) == 0

    def test_refusal_carries_the_decision(self) -> None:
        """A refusal keeps the policy's reason and scope."""
        outcome = settle(OPTED_OUT, read(submit()), PartTracker(10.0), 0.0, footers=True)
        assert outcome == Refuse(OPTED_OUT)
        assert isinstance(outcome, Refuse)
        assert outcome.reason is RejectReason.OPTED_OUT


class TestSettleParts:
    """A long message: every part decided afresh, one refusal refuses the rest."""

    def test_refusal_refuses_later_parts_even_if_allowed_again(self) -> None:
        """A STOP between parts 1 and 2 refuses part 2; part 3 stays refused though the
        records say allowed again (a START after the STOP)."""
        parts = PartTracker(10.0)
        outcomes = [
            settle(d, read(submit(), Part(5, 3, i + 1)), parts, float(i), footers=False)
            for i, d in enumerate([ALLOW, OPTED_OUT, ALLOW])
        ]
        assert outcomes[0] is SEND_PLAIN
        assert all(isinstance(o, Refuse) for o in outcomes[1:])
        assert [o.reason for o in outcomes[1:] if isinstance(o, Refuse)] == [
            RejectReason.OPTED_OUT,
            RejectReason.OPTED_OUT,
        ]

    def test_route_stays_the_first_parts(self) -> None:
        """Parts after one that went to the footer stage go there too, whatever their own
        decision says about the footer (the stage must see the whole message)."""
        parts = PartTracker(10.0)
        first = settle(ALLOW_FOOTER, read(submit(), Part(5, 2, 1)), parts, 0.0, footers=True)
        second = settle(ALLOW, read(submit(), Part(5, 2, 2)), parts, 1.0, footers=True)
        assert (first, second) == (SEND_FOOTER, SEND_FOOTER)

    def test_refusal_after_a_footer_part_abandons_what_is_held(self) -> None:
        """A refused part of a message whose first part went to the footer stage tells the
        proxy to refuse the parts held there too."""
        parts = PartTracker(10.0)
        settle(ALLOW_FOOTER, read(submit(), Part(5, 3, 1)), parts, 0.0, footers=True)
        outcome = settle(OPTED_OUT, read(submit(), Part(5, 3, 2)), parts, 1.0, footers=True)
        assert outcome == Refuse(OPTED_OUT, abandon_held=True)
        plain = PartTracker(10.0)
        settle(ALLOW, read(submit(), Part(6, 3, 1)), plain, 0.0, footers=True)
        outcome = settle(OPTED_OUT, read(submit(), Part(6, 3, 2)), plain, 1.0, footers=True)
        assert outcome == Refuse(OPTED_OUT, abandon_held=False)

    def test_store_unavailable_is_not_remembered(self) -> None:
        """A temporary refusal is retried by the client, and the retry decided afresh."""
        parts = PartTracker(10.0)
        down = Reject(reason=RejectReason.STORE_UNAVAILABLE)
        assert isinstance(
            settle(down, read(submit(), Part(5, 2, 1)), parts, 0.0, footers=False), Refuse
        )
        assert settle(ALLOW, read(submit(), Part(5, 2, 1)), parts, 1.0, footers=False) is SEND_PLAIN

    def test_memo_expires_with_the_time_passed_in(self) -> None:
        """After the hold timeout a part is decided afresh: its message is forgotten."""
        parts = PartTracker(10.0)
        settle(OPTED_OUT, read(submit(), Part(5, 3, 1)), parts, 0.0, footers=False)
        late = settle(ALLOW, read(submit(), Part(5, 3, 2)), parts, 10.0, footers=False)
        assert late is SEND_PLAIN

    def test_a_refusal_in_one_session_does_not_cross_to_another(self) -> None:
        """The memo is keyed by connection."""
        parts = PartTracker(10.0)
        settle(OPTED_OUT, read(submit(), Part(5, 3, 1)), parts, 0.0, footers=False)
        other = settle(
            ALLOW, read(submit(), Part(5, 3, 2), conn_id="c2"), parts, 1.0, footers=False
        )
        assert other is SEND_PLAIN

    @given(
        decisions=st.lists(
            st.sampled_from([ALLOW, ALLOW_FOOTER, OPTED_OUT]), min_size=2, max_size=8
        ),
        footers=st.booleans(),
    )
    def test_nothing_goes_after_a_refusal_and_the_route_never_changes(
        self, decisions: list[Allow | Reject], footers: bool
    ) -> None:
        """For any decisions over a message's parts: once one part is refused no later part
        is sent, and every part sent takes the first sent part's route."""
        total = len(decisions)
        parts = PartTracker(100.0)
        outcomes = [
            settle(d, read(submit(), Part(9, total, i + 1)), parts, float(i), footers=footers)
            for i, d in enumerate(decisions)
        ]
        refused_at = next((i for i, o in enumerate(outcomes) if isinstance(o, Refuse)), None)
        if refused_at is not None:
            assert all(isinstance(o, Refuse) for o in outcomes[refused_at:])
        sent = [o for o in outcomes if isinstance(o, Send)]
        assert len({o.footer for o in sent}) <= 1
        if sent and not footers:
            assert sent[0] is SEND_PLAIN
        assert len(parts) == 0  # every part seen: the message is complete and forgotten


class TestThroughThePolicy:
    """read_mt and settle with the real policy: an opted-out number is never sent to."""

    @staticmethod
    def _records(state: ConsentState) -> dict[str, ConsentRecord]:
        return {
            GLOBAL_SCOPE.key: ConsentRecord(
                subscriber=SUB,
                scope=GLOBAL_SCOPE.key,
                state=state,
                updated_at=1.0,
                last_event_id="e1",
            )
        }

    @pytest.mark.parametrize("state", [ConsentState.OPTED_OUT, ConsentState.BLOCKED])
    def test_opted_out_or_blocked_is_refused(self, state: ConsentState) -> None:
        """A global opt-out or a block refuses every part of a long MT."""
        parts = PartTracker(10.0)
        counter = itertools.count()
        for seq in (1, 2):
            mt = read(submit(), Part(3, 2, seq))
            decision = decide_mt(
                campaign=mt.campaign,
                subscriber=mt.subscriber,
                sender=mt.sender,
                system_id=mt.account,
                service_type="",
                records=self._records(state),
                now=100.0,
                new_event_id=lambda: f"id{next(counter)}",
                addresses_checked=True,
            )
            assert isinstance(settle(decision, mt, parts, 0.0, footers=True), Refuse)

    def test_opted_in_is_sent_with_the_campaigns_footer(self) -> None:
        """The same message to an opted-in number goes, through the footer stage."""
        mt = read(submit())
        decision = decide_mt(
            campaign=mt.campaign,
            subscriber=mt.subscriber,
            sender=mt.sender,
            system_id=mt.account,
            service_type="",
            records=self._records(ConsentState.OPTED_IN),
            now=100.0,
            new_event_id=lambda: "id",
            addresses_checked=True,
        )
        assert settle(decision, mt, PartTracker(10.0), 0.0, footers=True) is SEND_FOOTER


class TestRefusalAnswer:
    """How a refusal reaches the client."""

    @pytest.mark.parametrize(
        ("reason", "answered", "report", "expected"),
        [
            (RejectReason.OPTED_OUT, False, False, Answer.REJECT),
            (RejectReason.OPTED_OUT, False, True, Answer.REPORT),
            (RejectReason.OPTED_OUT, True, False, Answer.NONE),
            (RejectReason.STORE_UNAVAILABLE, False, True, Answer.REJECT),
            (RejectReason.STORE_UNAVAILABLE, True, True, Answer.NONE),
        ],
        ids=["reject", "accept-and-report", "answered", "temporary-stays-visible", "held-part"],
    )
    def test_answers(
        self, reason: RejectReason, answered: bool, report: bool, expected: Answer
    ) -> None:
        """Accept-and-report hides a refusal behind a receipt, never a temporary one."""
        assert refusal_answer(reason, answered=answered, accept_and_report=report) is expected

    @pytest.mark.parametrize(
        ("registered", "wanted"), [(0, False), (1, True), (2, True), (3, True), (0x10, False)]
    )
    def test_wants_receipt(self, registered: int, wanted: bool) -> None:
        """Only the SMSC receipt bits of registered_delivery ask for a receipt."""
        assert wants_receipt(submit(registered_delivery=registered)) is wanted

    def test_accepted_response_matches_the_request(self) -> None:
        """A submit_sm gets a submit_sm_resp, a data_sm a data_sm_resp, same sequence."""
        resp = accepted_response(submit(), "abc")
        assert isinstance(resp, p.SubmitSmResp)
        assert (resp.sequence_number, resp.message_id) == (7, "abc")
        data = accepted_response(p.DataSm(sequence_number=3, destination_addr=SUB), "x")
        assert isinstance(data, p.DataSmResp)
        assert data.sequence_number == 3


class TestSettleQuietHours:
    """The sending window closing between the parts of a long message."""

    CLOSED = Reject(reason=RejectReason.QUIET_HOURS)

    def test_message_begun_inside_the_window_is_finished(self) -> None:
        """Part 1 allowed at 20:59, part 2 at 21:00 refused for quiet hours: part 2 goes
        all the same, on part 1's route."""
        parts = PartTracker(10.0)
        first = settle(ALLOW_FOOTER, read(submit(), Part(5, 2, 1)), parts, 0.0, footers=True)
        second = settle(self.CLOSED, read(submit(), Part(5, 2, 2)), parts, 1.0, footers=True)
        assert (first, second) == (SEND_FOOTER, SEND_FOOTER)

    def test_consent_still_refuses_later_parts(self) -> None:
        """The exception is for the window only: a STOP between parts still refuses."""
        parts = PartTracker(10.0)
        settle(ALLOW, read(submit(), Part(5, 2, 1)), parts, 0.0, footers=False)
        outcome = settle(OPTED_OUT, read(submit(), Part(5, 2, 2)), parts, 1.0, footers=False)
        assert isinstance(outcome, Refuse)

    def test_message_begun_outside_stays_refused(self) -> None:
        """Part 1 refused for quiet hours: part 2 is refused too, even once the window is
        open (one answer for the message)."""
        parts = PartTracker(10.0)
        settle(self.CLOSED, read(submit(), Part(5, 2, 1)), parts, 0.0, footers=False)
        outcome = settle(ALLOW, read(submit(), Part(5, 2, 2)), parts, 1.0, footers=False)
        assert isinstance(outcome, Refuse)
        assert outcome.reason is RejectReason.QUIET_HOURS

    def test_deferral_is_never_accepted_and_reported(self) -> None:
        """A deferral is temporary: always answered with its status, never OK."""
        answer = refusal_answer(
            RejectReason.QUIET_HOURS_DEFERRED, answered=False, accept_and_report=True
        )
        assert answer is Answer.REJECT
        refused = refusal_answer(RejectReason.QUIET_HOURS, answered=False, accept_and_report=True)
        assert refused is Answer.REPORT
