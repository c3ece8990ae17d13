"""FCC revoke-all: business scope before and after its date, START, the clarifying question."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from gateway.consent.campaign import Business, Campaign, Clarify, Keywords, MessageList
from gateway.consent.model import (
    AddressKind,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    MatchType,
    SmsAddress,
    fold,
)
from gateway.consent.policy import (
    Allow,
    MoAction,
    MoDecision,
    MtDecision,
    Reject,
    RejectReason,
    decide_mo,
    decide_mt,
    scope_keys,
)
from gateway.consent.revoke import pending_clarification, question_state

S = ConsentState
SUB = SmsAddress(kind=AddressKind.E164, value="15551234567")
NUM_A = SmsAddress(kind=AddressKind.E164, value="15550100")
NUM_B = SmsAddress(kind=AddressKind.E164, value="15550200")
SYS = "acct1"
DATE = 1_801_353_600.0  # 2027-01-31T00:00:00Z
BEFORE = DATE - 60.0
AFTER = DATE + 60.0
K_BUSINESS = "business:acme"
K_A = "campaign:a"
K_PROMO = "list:a/promo"
PROMO = MessageList(name="promo", service_types=("PROMO",), keywords=("OPTOUT-PROMO",))


def business(clarify: Clarify | None = None, start: float | None = DATE) -> Business:
    return Business(name="acme", revoke_all_from=start, clarify=clarify)


def pair(rules: Business) -> tuple[Campaign, Campaign]:
    a = Campaign(
        name="a",
        brand="ACME",
        numbers=(NUM_A.value,),
        lists=(PROMO,),
        business="acme",
        business_rules=rules,
    )
    b = Campaign(
        name="b", brand="ACME", numbers=(NUM_B.value,), business="acme", business_rules=rules
    )
    return a, b


A, B = pair(business())
QA, QB = pair(business(Clarify(window_s=3600.0)))


def mo(
    text: str,
    campaign: Campaign,
    now: float,
    records: Mapping[str, ConsentRecord] | None = None,
    clarifying: ConsentEvent | None = None,
) -> MoDecision:
    counter = itertools.count(1)
    return decide_mo(
        text=text,
        subscriber=SUB,
        recipient=NUM_A if campaign.name == "a" else NUM_B,
        campaign=campaign,
        system_id=SYS,
        records=records or {},
        is_receipt=False,
        now=now,
        new_event_id=lambda: f"id{next(counter)}",
        dedup_key=f"mo-{text}-{now}",
        clarifying=clarifying,
    )


def mt(
    campaign: Campaign, records: Mapping[str, ConsentRecord], service_type: str = ""
) -> MtDecision:
    return decide_mt(
        campaign=campaign,
        subscriber=SUB,
        sender=NUM_A if campaign.name == "a" else NUM_B,
        system_id=SYS,
        service_type=service_type,
        records=records,
        now=AFTER,
        new_event_id=lambda: "x",
    )


def applied(events: Sequence[ConsentEvent]) -> dict[str, ConsentRecord]:
    return {scope: r for (scope, _), r in fold(events).items()}


class TestDate:
    def test_before_the_date_a_stop_stays_in_its_campaign(self) -> None:
        """Before revoke_all's date a STOP to A is recorded for A and B's MTs go."""
        decision = mo("STOP", A, BEFORE)
        assert [e.scope for e in decision.events] == [K_A]
        assert mt(B, applied(decision.events)) == Allow(add_footer=False)

    def test_after_the_date_a_stop_reaches_the_business(self) -> None:
        """From the date a STOP to A is recorded for the business and refuses B's MTs."""
        decision = mo("STOP", A, AFTER)
        assert [e.scope for e in decision.events] == [K_BUSINESS]
        refused = mt(B, applied(decision.events))
        assert refused == Reject(reason=RejectReason.OPTED_OUT, scope=K_BUSINESS)

    def test_switched_on_at_the_exact_date(self) -> None:
        """revoke_all is in effect from its first second, not before."""
        rules = business()
        assert not rules.revoke_all(DATE - 0.001)
        assert rules.revoke_all(DATE)
        assert not business(start=None).revoke_all(AFTER)

    def test_older_campaign_opt_outs_do_not_widen(self) -> None:
        """A STOP to A recorded before the date keeps its campaign scope after it."""
        before = applied(mo("STOP", A, BEFORE).events)
        assert mt(B, before) == Allow(add_footer=False)
        assert isinstance(mt(A, before), Reject)

    def test_one_key_more_for_the_business(self) -> None:
        """An MT of a business's campaign is checked against exactly one more scope."""
        keys = scope_keys(A, NUM_A.value, SYS, "")
        assert keys[-1] == K_BUSINESS
        assert len(keys) == 5

    def test_list_word_stays_on_its_list(self) -> None:
        """A list word names what to stop: only that list, also under revoke-all."""
        decision = mo("OPTOUT-PROMO", A, AFTER)
        assert [e.scope for e in decision.events] == [K_PROMO]

    def test_start_resubscribes_one_campaign(self) -> None:
        """START to B after a revoke-all STOP lets B's MTs through, A stays stopped."""
        stopped = applied(mo("STOP", A, AFTER).events)
        started = mo("START", B, AFTER + 10, stopped)
        assert started.action is MoAction.OPTED_IN
        after = {**stopped, **applied(started.events)}
        assert mt(B, after) == Allow(add_footer=False)
        assert mt(A, after) == Reject(reason=RejectReason.OPTED_OUT, scope=K_BUSINESS)

    def test_second_stop_is_a_repeat(self) -> None:
        """A STOP to B after a revoke-all STOP to A gets no second confirmation."""
        stopped = applied(mo("STOP", A, AFTER).events)
        again = mo("STOP", B, AFTER + 5, stopped)
        assert again.action is MoAction.REPEAT_OPT_OUT
        assert again.reply is None


class TestClarify:
    def stop(self) -> MoDecision:
        return mo("STOP", QA, AFTER)

    def test_the_confirmation_asks(self) -> None:
        """The STOP is recorded for the business at once and the confirmation asks which."""
        decision = self.stop()
        (event,) = decision.events
        assert event.scope == K_BUSINESS
        assert event.clarify_until == AFTER + 3600.0
        assert decision.reply is not None
        assert "ALL" in decision.reply.text
        assert "promo, a" in decision.reply.text

    def test_pending_until_the_window_ends(self) -> None:
        """The question is pending in the window and not after it."""
        events = self.stop().events
        assert pending_clarification(events, QA, AFTER + 3599) == events[0]
        assert pending_clarification(events, QA, AFTER + 3600) is None
        state = question_state(events, K_BUSINESS, AFTER + 3600)
        assert state is not None
        assert state["status"] == "ended unanswered: all kept"

    def test_list_answer_narrows(self) -> None:
        """PROMO narrows the opt-out to A's promo list: A's other MTs and B's go again."""
        stopped = self.stop().events
        records = applied(stopped)
        answer = mo(
            "PROMO", QA, AFTER + 60, records, pending_clarification(stopped, QA, AFTER + 60)
        )
        assert answer.action is MoAction.CLARIFIED_NARROWED
        assert answer.reply is None
        assert [(e.scope, e.state) for e in answer.events] == [
            (K_PROMO, S.OPTED_OUT),
            (K_BUSINESS, S.UNKNOWN),
        ]
        assert len({e.event_id for e in answer.events}) == 2
        assert len({e.dedup_key for e in answer.events}) == 2
        after = applied((*stopped, *answer.events))
        assert mt(QA, after) == Allow(add_footer=False)
        assert mt(QB, after) == Allow(add_footer=False)
        assert mt(QA, after, "PROMO") == Reject(reason=RejectReason.OPTED_OUT, scope=K_PROMO)
        assert pending_clarification((*stopped, *answer.events), QA, AFTER + 61) is None

    def test_campaign_answer_narrows_to_the_campaign(self) -> None:
        """Naming the campaign stops that campaign only."""
        stopped = self.stop().events
        answer = mo("a", QA, AFTER + 60, applied(stopped), stopped[0])
        after = applied((*stopped, *answer.events))
        assert isinstance(mt(QA, after), Reject)
        assert mt(QB, after) == Allow(add_footer=False)

    def test_all_keeps_all(self) -> None:
        """ALL keeps the business opt-out, is recorded, and closes the question."""
        stopped = self.stop().events
        answer = mo("all", QA, AFTER + 60, applied(stopped), stopped[0])
        assert answer.action is MoAction.CLARIFIED_ALL
        assert answer.reply is None
        (event,) = answer.events
        assert event.scope == K_BUSINESS
        assert event.match is MatchType.CLARIFY
        history = (*stopped, *answer.events)
        assert isinstance(mt(QB, applied(history)), Reject)
        assert pending_clarification(history, QA, AFTER + 61) is None

    def test_answer_to_another_campaign_is_no_answer(self) -> None:
        """Naming a campaign to another campaign's number does not lift the STOP."""
        stopped = self.stop().events
        decision = mo("b", QB, AFTER + 60, applied(stopped), stopped[0])
        assert decision.events == ()
        assert decision.action is MoAction.NONE

    def test_other_words_are_no_answer(self) -> None:
        """An unrelated message in the window changes nothing and is no answer."""
        stopped = self.stop().events
        decision = mo("hello", QA, AFTER + 60, applied(stopped), stopped[0])
        assert decision.events == ()
        assert decision.action is MoAction.NONE

    def test_no_question_before_the_date(self) -> None:
        """Before the date the STOP is the campaign's and the confirmation the usual one."""
        decision = mo("STOP", QA, BEFORE)
        assert decision.events[0].clarify_until is None
        assert decision.reply is not None
        assert "ALL" not in decision.reply.text


class TestLanguage:
    def test_question_in_the_stop_word_language(self) -> None:
        """ARRET gets the French question where the business has one; STOP the default."""
        clarify = Clarify(
            window_s=3600.0,
            reply="ACME: ALL or {choices}?",
            replies=(("fr", "ACME : TOUT ou {choices} ?"),),
        )
        rules = business(clarify)
        french = Campaign(
            name="a",
            brand="ACME",
            numbers=(NUM_A.value,),
            lists=(PROMO,),
            keywords=Keywords(languages=("fr",)),
            business="acme",
            business_rules=rules,
        )
        arret = mo("ARRET", french, AFTER)
        assert arret.reply is not None
        assert arret.reply.text == "ACME : TOUT ou promo, a ?"
        stop = mo("STOP", french, AFTER)
        assert stop.reply is not None
        assert stop.reply.text == "ACME: ALL or promo, a?"

    def test_answer_words_are_normalised(self) -> None:
        """'All.' and ' promo ' are read as ALL and PROMO (case, spaces and end marks)."""
        stopped = mo("STOP", QA, AFTER).events
        assert mo("All.", QA, AFTER + 1, applied(stopped), stopped[0]).action is (
            MoAction.CLARIFIED_ALL
        )
        assert mo(" promo ", QA, AFTER + 1, applied(stopped), stopped[0]).action is (
            MoAction.CLARIFIED_NARROWED
        )
