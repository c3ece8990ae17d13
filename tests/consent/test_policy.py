"""Consent policy: every MT and MO rule, staff block / unblock, statuses, and fold consistency."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.consent.campaign import (
    AccountMatch,
    Campaign,
    FooterMode,
    InboundUnknown,
    MessageList,
    OutboundUnknown,
    ReOptIn,
    Replies,
    account_key,
)
from gateway.consent.keywords import KeywordFamily
from gateway.consent.model import (
    GLOBAL_SCOPE,
    Actor,
    AddressKind,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    MatchType,
    Scope,
    ScopeKind,
    SmsAddress,
    fold,
)
from gateway.consent.policy import (
    CLIENT_RETRY_STATUSES,
    DEFAULT_REJECT_STATUSES,
    TEMPORARY_REASONS,
    Allow,
    AutoReply,
    MoAction,
    MoDecision,
    MtDecision,
    Reject,
    RejectReason,
    RejectStatuses,
    RequestOptIn,
    address_refusal,
    block,
    decide_mo,
    decide_mt,
    effective_state,
    is_delivery_receipt,
    scope_keys,
    scopes_for,
    unblock,
)
from gateway.smpp.constants import RETRIED_BY_CLIENTS

S = ConsentState
SUB = SmsAddress(kind=AddressKind.E164, value="15551234567")
SHORT_CODE = SmsAddress(kind=AddressKind.SHORT_CODE, value="12345")
ALPHA = SmsAddress(kind=AddressKind.ALPHANUMERIC, value="ACME")
NUM_A = SmsAddress(kind=AddressKind.E164, value="15550100")
NUM_B = SmsAddress(kind=AddressKind.E164, value="15550101")
SYS = "acct1"
NOW = 1000.0

PROMO = MessageList(name="promo", service_types=("PROMO",), keywords=("OPTOUT-PROMO",))


def campaign(scope: ScopeKind = ScopeKind.NUMBER, **kwargs: object) -> Campaign:
    values: dict[str, object] = {
        "name": "acme",
        "brand": "ACME",
        "numbers": (NUM_A.value, NUM_B.value),
        "scope": scope,
        "lists": (PROMO,),
    }
    values.update(kwargs)
    return Campaign(**values)  # type: ignore[arg-type]


BY_NUMBER = campaign(ScopeKind.NUMBER)
BY_CAMPAIGN = campaign(ScopeKind.CAMPAIGN)
BY_ACCOUNT = campaign(ScopeKind.ACCOUNT)

K_GLOBAL = GLOBAL_SCOPE.key
K_ACCOUNT = Scope(ScopeKind.ACCOUNT, SYS).key
K_OTHER_ACCOUNT = Scope(ScopeKind.ACCOUNT, "acct2").key
K_CAMPAIGN = Scope(ScopeKind.CAMPAIGN, "acme").key
K_OTHER_CAMPAIGN = Scope(ScopeKind.CAMPAIGN, "other").key
K_NUM_A = Scope(ScopeKind.NUMBER, NUM_A.value).key
K_NUM_B = Scope(ScopeKind.NUMBER, NUM_B.value).key
K_PROMO = Scope(ScopeKind.LIST, "acme/promo").key


def rec(scope: str, state: ConsentState, at: float = 1.0) -> ConsentRecord:
    return ConsentRecord(
        subscriber=SUB.value, scope=scope, state=state, updated_at=at, last_event_id=f"e-{scope}"
    )


def recs(*records: ConsentRecord) -> dict[str, ConsentRecord]:
    return {r.scope: r for r in records}


def mt(
    records: Mapping[str, ConsentRecord],
    c: Campaign = BY_NUMBER,
    *,
    service_type: str = "",
    footer_seen: bool = False,
    subscriber: SmsAddress = SUB,
) -> MtDecision:
    counter = itertools.count(1)
    return decide_mt(
        campaign=c,
        subscriber=subscriber,
        sender=NUM_A,
        system_id=SYS,
        service_type=service_type,
        records=records,
        footer_seen=footer_seen,
        now=NOW,
        new_event_id=lambda: f"id{next(counter)}",
        instance="gw1",
    )


def mo(
    text: str,
    records: Mapping[str, ConsentRecord] | None = None,
    c: Campaign = BY_NUMBER,
    *,
    subscriber: SmsAddress = SUB,
    recipient: SmsAddress = NUM_A,
    receipt: bool = False,
) -> MoDecision:
    counter = itertools.count(1)
    return decide_mo(
        text=text,
        subscriber=subscriber,
        recipient=recipient,
        campaign=c,
        system_id=SYS,
        records=records or {},
        is_receipt=receipt,
        now=NOW,
        new_event_id=lambda: f"id{next(counter)}",
        instance="gw1",
        smsc_message_id="smsc-7",
        dedup_key="mo-1",
    )


def stored_after(
    records: Mapping[str, ConsentRecord], events: tuple[ConsentEvent, ...]
) -> dict[str, ConsentRecord]:
    merged = dict(records)
    merged.update({scope: r for (scope, _), r in fold(events).items()})
    return merged


def scopes_and_states(decision: MoDecision) -> list[tuple[str, ConsentState]]:
    return [(e.scope, e.state) for e in decision.events]


ALLOW = Allow(add_footer=False)


class TestScopes:
    def test_every_scope_of_an_mt(self) -> None:
        """An MT is checked against global, account, campaign, number and its list."""
        assert scopes_for(BY_NUMBER, NUM_A.value, SYS, "PROMO") == (
            GLOBAL_SCOPE,
            Scope(ScopeKind.ACCOUNT, SYS),
            Scope(ScopeKind.CAMPAIGN, "acme"),
            Scope(ScopeKind.NUMBER, NUM_A.value),
            Scope(ScopeKind.LIST, "acme/promo"),
        )

    def test_no_list_without_its_service_type(self) -> None:
        """A service_type no list claims adds no list scope."""
        assert scope_keys(BY_NUMBER, NUM_A.value, SYS, "OTHER") == (
            K_GLOBAL,
            K_ACCOUNT,
            K_CAMPAIGN,
            K_NUM_A,
        )

    def test_keys_are_precomputed(self) -> None:
        """The per-MT scope keys are computed once and reused."""
        first = scope_keys(BY_NUMBER, NUM_A.value, SYS, "")
        assert scope_keys(BY_NUMBER, NUM_A.value, SYS, "") is first


class TestEffectiveState:
    @pytest.mark.parametrize(
        ("records", "expected"),
        [
            pytest.param({}, S.UNKNOWN, id="no-records-unknown"),
            pytest.param(recs(rec(K_NUM_A, S.UNKNOWN)), S.UNKNOWN, id="unknown-record-ignored"),
            pytest.param(
                recs(rec(K_ACCOUNT, S.OPTED_OUT, 1), rec(K_NUM_A, S.OPTED_IN, 2)),
                S.OPTED_IN,
                id="start-after-stopall-latest-wins",
            ),
            pytest.param(
                recs(rec(K_NUM_A, S.OPTED_IN, 1), rec(K_ACCOUNT, S.OPTED_OUT, 2)),
                S.OPTED_OUT,
                id="stopall-after-start-latest-wins",
            ),
            pytest.param(
                recs(rec(K_NUM_A, S.OPTED_IN, 5), rec(K_CAMPAIGN, S.OPTED_OUT, 5)),
                S.OPTED_OUT,
                id="tie-goes-to-not-sending",
            ),
            pytest.param(
                recs(rec(K_GLOBAL, S.BLOCKED, 1), rec(K_NUM_A, S.OPTED_IN, 9)),
                S.BLOCKED,
                id="block-beats-newer-opt-in",
            ),
        ],
    )
    def test_combination(self, records: dict[str, ConsentRecord], expected: ConsentState) -> None:
        """Records of several scopes combine: block first, then latest, ties protective."""
        keys = scope_keys(BY_NUMBER, NUM_A.value, SYS, "")
        assert effective_state(keys, records)[0] is expected


MT_CASES = [
    pytest.param({}, BY_NUMBER, "", ALLOW, id="unknown-allowed-by-default"),
    pytest.param(
        recs(rec(K_NUM_A, S.OPTED_OUT)),
        BY_NUMBER,
        "",
        Reject(reason=RejectReason.OPTED_OUT, scope=K_NUM_A),
        id="number-scope-opt-out",
    ),
    pytest.param(
        recs(rec(K_NUM_B, S.OPTED_OUT)), BY_NUMBER, "", ALLOW, id="other-number-unaffected"
    ),
    pytest.param(
        recs(rec(K_CAMPAIGN, S.OPTED_OUT)),
        BY_NUMBER,
        "",
        Reject(reason=RejectReason.OPTED_OUT, scope=K_CAMPAIGN),
        id="campaign-scope-opt-out",
    ),
    pytest.param(
        recs(rec(K_OTHER_CAMPAIGN, S.OPTED_OUT)),
        BY_NUMBER,
        "",
        ALLOW,
        id="other-campaign-unaffected",
    ),
    pytest.param(
        recs(rec(K_ACCOUNT, S.OPTED_OUT)),
        BY_NUMBER,
        "",
        Reject(reason=RejectReason.OPTED_OUT, scope=K_ACCOUNT),
        id="account-scope-opt-out",
    ),
    pytest.param(
        recs(rec(K_OTHER_ACCOUNT, S.OPTED_OUT)), BY_NUMBER, "", ALLOW, id="other-account-unaffected"
    ),
    pytest.param(
        recs(rec(K_GLOBAL, S.BLOCKED)),
        BY_NUMBER,
        "",
        Reject(reason=RejectReason.BLOCKED, scope=K_GLOBAL),
        id="global-block",
    ),
    pytest.param(
        recs(rec(K_GLOBAL, S.OPTED_OUT)),
        BY_NUMBER,
        "",
        Reject(reason=RejectReason.OPTED_OUT, scope=K_GLOBAL),
        id="unblocked-stays-opted-out",
    ),
    pytest.param(
        recs(rec(K_PROMO, S.OPTED_OUT)),
        BY_NUMBER,
        "PROMO",
        Reject(reason=RejectReason.OPTED_OUT, scope=K_PROMO),
        id="list-opt-out-refuses-list",
    ),
    pytest.param(
        recs(rec(K_PROMO, S.OPTED_OUT)), BY_NUMBER, "NOTICE", ALLOW, id="list-opt-out-spares-others"
    ),
    pytest.param(
        {},
        campaign(outbound_unknown=OutboundUnknown.BLOCK),
        "",
        Reject(reason=RejectReason.NO_CONSENT),
        id="block-policy-unknown-refused",
    ),
    pytest.param(
        recs(rec(K_NUM_A, S.OPTED_IN)),
        campaign(outbound_unknown=OutboundUnknown.BLOCK),
        "",
        ALLOW,
        id="block-policy-opted-in-allowed",
    ),
    pytest.param(
        recs(rec(K_NUM_A, S.PENDING)),
        campaign(outbound_unknown=OutboundUnknown.REQUIRE_OPT_IN),
        "",
        Reject(reason=RejectReason.PENDING, scope=K_NUM_A),
        id="pending-refused-without-second-request",
    ),
    pytest.param(
        recs(rec(K_NUM_A, S.PENDING)),
        campaign(outbound_unknown=OutboundUnknown.BLOCK),
        "",
        Reject(reason=RejectReason.PENDING, scope=K_NUM_A),
        id="pending-refused-under-block",
    ),
    pytest.param(
        recs(rec(K_NUM_A, S.PENDING)), BY_NUMBER, "", ALLOW, id="pending-allowed-under-allow"
    ),
    pytest.param(
        recs(rec(K_NUM_A, S.OPTED_OUT, 1), rec(K_CAMPAIGN, S.OPTED_IN, 2)),
        BY_NUMBER,
        "",
        ALLOW,
        id="later-opt-in-wins",
    ),
]


class TestDecideMt:
    @pytest.mark.parametrize(("records", "c", "service_type", "expected"), MT_CASES)
    def test_rule(
        self,
        records: dict[str, ConsentRecord],
        c: Campaign,
        service_type: str,
        expected: MtDecision,
    ) -> None:
        """Each MT rule gives its documented decision."""
        assert mt(records, c, service_type=service_type) == expected

    @pytest.mark.parametrize(
        ("mode", "seen", "footer"),
        [
            (FooterMode.ALWAYS, True, True),
            (FooterMode.FIRST, False, True),
            (FooterMode.FIRST, True, False),
            (FooterMode.NEVER, False, False),
        ],
        ids=["always", "first-not-seen", "first-seen", "never"],
    )
    def test_footer_modes(self, mode: FooterMode, seen: bool, footer: bool) -> None:
        """The footer follows the campaign's mode and whether the subscriber has seen it."""
        assert mt({}, campaign(footer=mode), footer_seen=seen) == Allow(add_footer=footer)

    def test_require_opt_in_requests_once(self) -> None:
        """require_opt_in on an unknown number records pending and sends the opt-in request."""
        c = campaign(outbound_unknown=OutboundUnknown.REQUIRE_OPT_IN)
        decision = mt({}, c)
        assert isinstance(decision, RequestOptIn)
        assert decision.reason is RejectReason.PENDING
        (event,) = decision.events
        assert (event.scope, event.state, event.actor) == (K_NUM_A, S.PENDING, Actor.POLICY)
        assert (event.subscriber, event.sender, event.campaign) == (SUB.value, NUM_A.value, "acme")
        assert (event.at, event.instance, event.event_id) == (NOW, "gw1", "id1")
        assert decision.reply == AutoReply(
            text="ACME: Reply YES to receive our messages. Msg & data rates may apply. "
            "Reply STOP to opt out.",
            source=NUM_A,
            destination=SUB,
            campaign="acme",
        )
        again = mt(stored_after({}, decision.events), c)
        assert again == Reject(reason=RejectReason.PENDING, scope=K_NUM_A)

    def test_require_opt_in_never_asks_a_short_code(self) -> None:
        """No opt-in request goes to a short code: the MT is refused for lack of consent."""
        c = campaign(outbound_unknown=OutboundUnknown.REQUIRE_OPT_IN)
        assert mt({}, c, subscriber=SHORT_CODE) == Reject(reason=RejectReason.NO_CONSENT)

    def test_require_opt_in_without_request_text(self) -> None:
        """With the request text switched off the MT is refused and nothing is recorded."""
        c = campaign(
            outbound_unknown=OutboundUnknown.REQUIRE_OPT_IN, replies=Replies(opt_in_request="")
        )
        assert mt({}, c) == Reject(reason=RejectReason.NO_CONSENT)

    def test_request_scope_follows_campaign_scope(self) -> None:
        """The pending record is kept where the campaign records opt-ins."""
        c = campaign(ScopeKind.CAMPAIGN, outbound_unknown=OutboundUnknown.REQUIRE_OPT_IN)
        decision = mt({}, c)
        assert isinstance(decision, RequestOptIn)
        assert decision.events[0].scope == K_CAMPAIGN


RECEIPT_ESM = [0x04, 0x08, 0x10, 0x18, 0x20, 0x07, 0x44, 0x23]
NOT_RECEIPT_ESM = [0x00, 0x03, 0x40, 0x43, 0x80, 0x0C, 0x3C]


class TestReceipts:
    @pytest.mark.parametrize("esm_class", RECEIPT_ESM, ids=[f"0x{e:02x}" for e in RECEIPT_ESM])
    def test_receipt_types(self, esm_class: int) -> None:
        """Receipt and acknowledgement message types are recognised by mask, with other bits set."""
        assert is_delivery_receipt(esm_class)

    @pytest.mark.parametrize(
        "esm_class", NOT_RECEIPT_ESM, ids=[f"0x{e:02x}" for e in NOT_RECEIPT_ESM]
    )
    def test_not_receipts(self, esm_class: int) -> None:
        """Ordinary MO esm_class values (UDHI and mode bits included) are not receipts."""
        assert not is_delivery_receipt(esm_class)

    def test_receipt_echoing_stop_is_no_keyword(self) -> None:
        """A receipt whose text: field echoes STOP changes nothing and is forwarded."""
        text = (
            "id:1 sub:001 dlvrd:001 submit date:2501011200 done date:2501011201"
            " stat:DELIVRD err:000 text:STOP"
        )
        for body in (text, "STOP"):
            decision = mo(body, receipt=True)
            assert decision.action is MoAction.RECEIPT
            assert (decision.events, decision.reply, decision.forward) == ((), None, True)


OPT_OUT_SCOPES = [
    pytest.param(BY_NUMBER, "STOP", K_NUM_A, id="number-scope-stop"),
    pytest.param(BY_CAMPAIGN, "STOP", K_CAMPAIGN, id="campaign-scope-stop"),
    pytest.param(BY_ACCOUNT, "STOP", K_ACCOUNT, id="account-scope-stop"),
    pytest.param(BY_NUMBER, "STOP ALL", K_ACCOUNT, id="stopall-reaches-account"),
    pytest.param(BY_CAMPAIGN, "stopall", K_ACCOUNT, id="stopall-from-campaign-scope"),
    pytest.param(BY_NUMBER, "Opt-Out!", K_NUM_A, id="variant-spelling"),
]


class TestOptOut:
    @pytest.mark.parametrize(("c", "text", "scope"), OPT_OUT_SCOPES)
    def test_scope(self, c: Campaign, text: str, scope: str) -> None:
        """A STOP opts out in the campaign's scope (STOPALL: the account) and is confirmed once."""
        decision = mo(text, c=c)
        assert decision.action is MoAction.OPTED_OUT
        assert scopes_and_states(decision) == [(scope, S.OPTED_OUT)]
        assert decision.reply is not None
        assert decision.reply.text.startswith("ACME: You are unsubscribed")
        assert (decision.reply.source, decision.reply.destination) == (NUM_A, SUB)
        assert decision.forward

    def test_event_carries_the_audit_fields(self) -> None:
        """The opt-out event records words, numbers, campaign, account, ids and instance."""
        (event,) = mo(" Stop. ").events
        assert event == ConsentEvent(
            event_id="id1",
            at=NOW,
            subscriber=SUB.value,
            scope=K_NUM_A,
            state=S.OPTED_OUT,
            actor=Actor.KEYWORD,
            match=MatchType.KEYWORD,
            words=" Stop. ",
            sender=NUM_A.value,
            campaign="acme",
            system_id=SYS,
            smsc_message_id="smsc-7",
            instance="gw1",
            dedup_key="mo-1",
        )

    def test_repeat_stop_recorded_without_second_confirmation(self) -> None:
        """A second STOP is kept for the audit trail but gets no second confirmation."""
        decision = mo("STOP", recs(rec(K_NUM_A, S.OPTED_OUT)))
        assert decision.action is MoAction.REPEAT_OPT_OUT
        assert scopes_and_states(decision) == [(K_NUM_A, S.OPTED_OUT)]
        assert decision.reply is None

    def test_repeat_reply_only_when_configured(self) -> None:
        """An operator-configured already-opted-out text answers a repeat STOP."""
        c = campaign(replies=Replies(already_opted_out="{brand}: already unsubscribed"))
        decision = mo("STOP", recs(rec(K_NUM_A, S.OPTED_OUT)), c)
        assert decision.reply is not None
        assert decision.reply.text == "ACME: already unsubscribed"

    def test_stop_after_resubscribing_is_confirmed(self) -> None:
        """STOP after START (which followed STOPALL) is a new opt-out and is confirmed."""
        records = recs(rec(K_ACCOUNT, S.OPTED_OUT, 1), rec(K_NUM_A, S.OPTED_IN, 2))
        decision = mo("STOP", records)
        assert decision.action is MoAction.OPTED_OUT
        assert decision.reply is not None

    def test_stopall_widening_is_confirmed(self) -> None:
        """STOPALL from a subscriber opted out of one number only reaches further: confirmed."""
        decision = mo("STOPALL", recs(rec(K_NUM_A, S.OPTED_OUT)))
        assert decision.action is MoAction.OPTED_OUT
        assert decision.reply is not None

    def test_repeat_stopall(self) -> None:
        """STOPALL from a subscriber already opted out account-wide is a repeat."""
        decision = mo("STOPALL", recs(rec(K_ACCOUNT, S.OPTED_OUT)))
        assert decision.action is MoAction.REPEAT_OPT_OUT
        assert decision.reply is None

    def test_then_mt_refused(self) -> None:
        """After the STOP is stored, an MT from the same number is refused."""
        decision = mo("STOP")
        stored = stored_after({}, decision.events)
        assert mt(stored) == Reject(reason=RejectReason.OPTED_OUT, scope=K_NUM_A)

    def test_phrase_recorded_as_phrase(self) -> None:
        """With the phrase tier on, a plain-language opt-out is recorded as a PHRASE match."""
        decision = mo("please stop texting me", c=campaign(phrase_tier=True))
        assert decision.action is MoAction.OPTED_OUT
        assert decision.events[0].match is MatchType.PHRASE

    def test_phrase_ignored_when_tier_off(self) -> None:
        """With the phrase tier off the same words change nothing."""
        decision = mo("please stop texting me")
        assert (decision.action, decision.events) == (MoAction.NONE, ())

    def test_keyword_not_forwarded_when_configured(self) -> None:
        """forward_keywords=False keeps keyword MOs from the client, ordinary MOs still go."""
        c = campaign(forward_keywords=False)
        assert not mo("STOP", c=c).forward
        assert mo("hello", c=c).forward

    def test_confirmation_switched_off(self) -> None:
        """An empty opt-out text records the opt-out and sends nothing."""
        decision = mo("STOP", c=campaign(replies=Replies(opt_out="")))
        assert decision.events
        assert decision.reply is None


class TestListOptOut:
    def test_list_word_opts_out_of_list_only(self) -> None:
        """A list keyword opts out of that list only, with the list reply."""
        decision = mo("optout-promo")
        assert decision.action is MoAction.LIST_OPTED_OUT
        assert decision.match is not None
        assert decision.match.family is KeywordFamily.LIST_OPT_OUT
        assert scopes_and_states(decision) == [(K_PROMO, S.OPTED_OUT)]
        assert decision.reply is not None
        assert "no more promo messages" in decision.reply.text
        stored = stored_after({}, decision.events)
        assert isinstance(mt(stored, service_type="PROMO"), Reject)
        assert mt(stored, service_type="NOTICE") == ALLOW

    def test_repeat_list_word(self) -> None:
        """A list word from a subscriber already off that list gets no second confirmation."""
        decision = mo("OPTOUT PROMO", recs(rec(K_PROMO, S.OPTED_OUT)))
        assert decision.action is MoAction.REPEAT_LIST_OPT_OUT
        assert decision.reply is None


class TestOptIn:
    @pytest.mark.parametrize(
        ("c", "scope"),
        [
            pytest.param(BY_NUMBER, K_NUM_A, id="number-scope"),
            pytest.param(BY_CAMPAIGN, K_CAMPAIGN, id="campaign-scope"),
            pytest.param(BY_ACCOUNT, K_ACCOUNT, id="account-scope"),
        ],
    )
    def test_start_in_same_scope(self, c: Campaign, scope: str) -> None:
        """START opts back in where the campaign's STOP was recorded, with a confirmation."""
        decision = mo("START", recs(rec(scope, S.OPTED_OUT)), c)
        assert decision.action is MoAction.OPTED_IN
        assert scopes_and_states(decision) == [(scope, S.OPTED_IN)]
        assert decision.reply is not None
        assert decision.reply.text.startswith("ACME: You are subscribed again")

    def test_start_completes_pending(self) -> None:
        """The opt-in word answers a pending request."""
        c = campaign(outbound_unknown=OutboundUnknown.REQUIRE_OPT_IN)
        decision = mo("yes", recs(rec(K_NUM_A, S.PENDING)), c)
        assert scopes_and_states(decision) == [(K_NUM_A, S.OPTED_IN)]
        stored = stored_after({}, decision.events)
        assert mt(stored, c) == ALLOW

    def test_already_opted_in_changes_nothing(self) -> None:
        """A conversational YES from an opted-in subscriber records and replies nothing."""
        decision = mo("Yes", recs(rec(K_NUM_A, S.OPTED_IN)))
        assert decision.action is MoAction.ALREADY_OPTED_IN
        assert (decision.events, decision.reply) == ((), None)

    def test_start_after_stopall_reopens_this_number_only(self) -> None:
        """START to one number after STOPALL lets that number through, not the rest."""
        start = mo("START", recs(rec(K_ACCOUNT, S.OPTED_OUT, 1)))
        stored = recs(rec(K_ACCOUNT, S.OPTED_OUT, 1))
        stored = stored_after(stored, start.events)
        assert mt(stored) == ALLOW
        other = decide_mt(
            campaign=BY_NUMBER,
            subscriber=SUB,
            sender=NUM_B,
            system_id=SYS,
            service_type="",
            records=stored,
            now=NOW,
            new_event_id=lambda: "x",
        )
        assert other == Reject(reason=RejectReason.OPTED_OUT, scope=K_ACCOUNT)


class TestBlock:
    def test_blocked_mo_not_forwarded(self) -> None:
        """A blocked subscriber's MO is acknowledged, not forwarded, and gets no reply."""
        decision = mo("hello", recs(rec(K_GLOBAL, S.BLOCKED)))
        assert decision.action is MoAction.BLOCKED_SENDER
        assert (decision.forward, decision.events, decision.reply) == (False, (), None)

    def test_start_never_lifts_a_block(self) -> None:
        """START from a blocked subscriber records nothing and the block stays."""
        decision = mo("START", recs(rec(K_GLOBAL, S.BLOCKED)))
        assert (decision.action, decision.events, decision.reply) == (
            MoAction.BLOCKED_SENDER,
            (),
            None,
        )
        assert decision.state_after is S.BLOCKED

    def test_stop_while_blocked_is_recorded(self) -> None:
        """A blocked subscriber's STOP is kept for the audit trail, without a reply."""
        decision = mo("STOP", recs(rec(K_GLOBAL, S.BLOCKED)))
        assert scopes_and_states(decision) == [(K_NUM_A, S.OPTED_OUT)]
        assert (decision.reply, decision.forward) == (None, False)

    def test_block_then_unblock(self) -> None:
        """Blocking refuses everything; unblocking leaves the subscriber opted out, not in."""
        history: list[ConsentEvent] = [
            ConsentEvent(
                event_id="e0",
                at=1.0,
                subscriber=SUB.value,
                scope=K_NUM_A,
                state=S.OPTED_IN,
                actor=Actor.KEYWORD,
            ),
            block(subscriber=SUB.value, now=2.0, event_id="e1", actor=Actor.ADMIN, reason="fraud"),
        ]
        stored = stored_after({}, tuple(history))
        assert mt(stored) == Reject(reason=RejectReason.BLOCKED, scope=K_GLOBAL)
        lifted = unblock(
            subscriber=SUB.value, records=stored, now=3.0, event_id="e2", actor=Actor.ADMIN
        )
        assert lifted is not None
        assert (lifted.scope, lifted.state) == (K_GLOBAL, S.OPTED_OUT)
        history.append(lifted)
        stored = stored_after({}, tuple(history))
        assert mt(stored) == Reject(reason=RejectReason.OPTED_OUT, scope=K_GLOBAL)

    def test_unblock_when_not_blocked(self) -> None:
        """Unblocking a subscriber who is not blocked makes no event."""
        event = unblock(subscriber=SUB.value, records={}, now=1.0, event_id="e", actor=Actor.API)
        assert event is None

    def test_start_after_unblock_opts_in(self) -> None:
        """After an unblock, the subscriber's own START lets messages through again."""
        records = recs(rec(K_GLOBAL, S.OPTED_OUT, 3))
        decision = mo("START", records)
        records = stored_after(records, decision.events)
        assert mt(records) == ALLOW


class TestHelp:
    @pytest.mark.parametrize(
        "records",
        [
            pytest.param({}, id="unknown"),
            pytest.param(recs(rec(K_NUM_A, S.OPTED_OUT)), id="opted-out"),
        ],
    )
    def test_help_replies_without_state_change(self, records: dict[str, ConsentRecord]) -> None:
        """HELP gets the help text, even when opted out, and changes nothing."""
        decision = mo("help", records)
        assert decision.action is MoAction.HELP
        assert decision.events == ()
        assert decision.reply is not None
        assert decision.reply.text == (
            "ACME: Msg frequency varies. Msg & data rates may apply. Reply STOP to opt out."
        )


class TestNonKeyword:
    def test_any_message_reopts_in(self) -> None:
        """Under any_message, an opted-out subscriber's ordinary MO opts back in."""
        c = campaign(reopt_in=ReOptIn.ANY_MESSAGE)
        decision = mo("see you tomorrow", recs(rec(K_NUM_A, S.OPTED_OUT)), c)
        assert decision.action is MoAction.REOPTED_IN
        assert scopes_and_states(decision) == [(K_NUM_A, S.OPTED_IN)]
        assert decision.events[0].match is MatchType.ANY_MESSAGE
        assert decision.reply is not None

    def test_keyword_rule_needs_the_word(self) -> None:
        """Under the keyword rule, an ordinary MO leaves an opted-out subscriber opted out."""
        decision = mo("see you tomorrow", recs(rec(K_NUM_A, S.OPTED_OUT)))
        assert (decision.action, decision.events, decision.reply) == (MoAction.NONE, (), None)
        assert decision.state_after is S.OPTED_OUT

    def test_inbound_request_opt_in(self) -> None:
        """request_opt_in answers an unknown subscriber's first MO with the opt-in request."""
        c = campaign(inbound_unknown=InboundUnknown.REQUEST_OPT_IN)
        decision = mo("hi there", c=c)
        assert decision.action is MoAction.OPT_IN_REQUESTED
        assert scopes_and_states(decision) == [(K_NUM_A, S.PENDING)]
        assert decision.events[0].actor is Actor.POLICY
        assert decision.reply is not None
        assert "Reply YES" in decision.reply.text
        assert decision.forward

    def test_inbound_request_only_for_unknown(self) -> None:
        """A known subscriber's MO triggers no opt-in request."""
        c = campaign(inbound_unknown=InboundUnknown.REQUEST_OPT_IN)
        decision = mo("hi there", recs(rec(K_NUM_A, S.OPTED_IN)), c)
        assert (decision.action, decision.events) == (MoAction.NONE, ())

    def test_pending_waits_for_the_word(self) -> None:
        """A pending subscriber's ordinary MO sends no second request."""
        c = campaign(inbound_unknown=InboundUnknown.REQUEST_OPT_IN)
        decision = mo("what?", recs(rec(K_NUM_A, S.PENDING)), c)
        assert (decision.action, decision.events, decision.reply) == (MoAction.NONE, (), None)

    def test_writing_first_opens_block_policy(self) -> None:
        """Under outbound block, an unknown subscriber who writes first may be answered."""
        c = campaign(outbound_unknown=OutboundUnknown.BLOCK)
        decision = mo("hello", c=c)
        assert decision.action is MoAction.CONSENTED_BY_MESSAGE
        assert scopes_and_states(decision) == [(K_NUM_A, S.OPTED_IN)]
        stored = stored_after({}, decision.events)
        assert mt(stored, c) == ALLOW

    def test_ordinary_mo_under_defaults(self) -> None:
        """Under the defaults an ordinary MO is forwarded and changes nothing."""
        decision = mo("hello")
        assert decision == MoDecision(action=MoAction.NONE, forward=True, state_after=S.UNKNOWN)


class TestNoRepliesToMachines:
    @pytest.mark.parametrize("text", ["STOP", "START", "HELP"], ids=["stop", "start", "help"])
    def test_alphanumeric_sender_ignored(self, text: str) -> None:
        """An alphanumeric sender's keyword changes nothing and gets no reply."""
        decision = mo(text, subscriber=ALPHA)
        assert decision.action is MoAction.IGNORED_SENDER
        assert (decision.events, decision.reply, decision.forward) == ((), None, True)

    @pytest.mark.parametrize(
        "kind", [AddressKind.IMPOSSIBLE, AddressKind.UNREADABLE], ids=["impossible", "unreadable"]
    )
    def test_unreadable_sender_ignored(self, kind: AddressKind) -> None:
        """A source no MT can reach (they are refused) changes nothing."""
        decision = mo("STOP", subscriber=SmsAddress(kind=kind, value="123"))
        assert decision.action is MoAction.IGNORED_SENDER
        assert decision.events == ()

    def test_number_labelled_alphanumeric_is_recorded_without_reply(self) -> None:
        """Digits the peer labelled TON 5 are the subscriber: the STOP counts, no reply goes."""
        labelled = SmsAddress(kind=AddressKind.E164, value=SUB.value, replyable=False)
        decision = mo("STOP", subscriber=labelled)
        assert [e.state for e in decision.events] == [S.OPTED_OUT]
        assert decision.reply is None

    @pytest.mark.parametrize("text", ["STOP", "START", "HELP"], ids=["stop", "start", "help"])
    def test_short_code_sender_gets_no_reply(self, text: str) -> None:
        """A short code's keyword may be recorded, but no auto-reply is ever sent to it."""
        decision = mo(text, subscriber=SHORT_CODE)
        assert decision.reply is None

    def test_short_code_stop_recorded(self) -> None:
        """A short code's STOP is still recorded under its digits."""
        decision = mo("STOP", subscriber=SHORT_CODE)
        assert [e.subscriber for e in decision.events] == [SHORT_CODE.value]

    def test_request_opt_in_not_sent_to_short_code(self) -> None:
        """inbound request_opt_in neither asks nor records pending for a short code."""
        c = campaign(inbound_unknown=InboundUnknown.REQUEST_OPT_IN)
        decision = mo("hi", c=c, subscriber=SHORT_CODE)
        assert (decision.action, decision.events, decision.reply) == (MoAction.NONE, (), None)


class TestRejectStatuses:
    def test_defaults_are_safe(self) -> None:
        """Default consent statuses are permanent and distinct; store-unavailable and a
        quiet-hours deferral are retried."""
        table = DEFAULT_REJECT_STATUSES
        assert table.problems() == []
        permanent = [r for r in RejectReason if r not in TEMPORARY_REASONS]
        assert all(table.status(r) not in CLIENT_RETRY_STATUSES for r in permanent)
        assert {
            RejectReason.STORE_UNAVAILABLE,
            RejectReason.QUIET_HOURS_DEFERRED,
        } == TEMPORARY_REASONS
        assert all(table.status(r) in CLIENT_RETRY_STATUSES for r in TEMPORARY_REASONS)

    @pytest.mark.parametrize(
        ("reason", "status"),
        [
            (RejectReason.OPTED_OUT, 0x45),
            (RejectReason.BLOCKED, 0x0B),
            (RejectReason.PENDING, 0x65),
            (RejectReason.NO_CONSENT, 0x66),
            (RejectReason.STORE_UNAVAILABLE, 0x14),
            (RejectReason.QUIET_HOURS, 0x61),
            (RejectReason.QUIET_HOURS_DEFERRED, 0x14),
        ],
        ids=lambda v: v.value if isinstance(v, RejectReason) else f"0x{v:02x}",
    )
    def test_documented_defaults(self, reason: RejectReason, status: int) -> None:
        """Each reason has its documented default command_status."""
        assert DEFAULT_REJECT_STATUSES.status(reason) == status

    @pytest.mark.parametrize(
        ("table", "fragment"),
        [
            (RejectStatuses(opted_out=0x58), "opted_out"),
            (RejectStatuses(blocked=0x08), "blocked"),
            (RejectStatuses(pending=0x00), "ESME_ROK"),
            (RejectStatuses(no_consent=0x45), "distinct"),
            (RejectStatuses(store_unavailable=0x45), "store_unavailable"),
        ],
        ids=["opt-out-retried", "blocked-retried", "pending-ok", "duplicate", "store-permanent"],
    )
    def test_unsafe_overrides_reported(self, table: RejectStatuses, fragment: str) -> None:
        """Overrides that would retry a refusal or lose a message are reported by key."""
        assert any(fragment in problem for problem in table.problems())

    def test_retry_set_matches_smpp_constants(self) -> None:
        """The consent core's copy of the client-retried statuses equals the smpp one."""
        assert {int(s) for s in RETRIED_BY_CLIENTS} == CLIENT_RETRY_STATUSES


# --- property: what a decision claims is what its events produce --------------------------------

RELEVANT_KEYS = [K_GLOBAL, K_ACCOUNT, K_CAMPAIGN, K_NUM_A, K_NUM_B, K_PROMO, K_OTHER_CAMPAIGN]
TEXTS = [
    "STOP",
    "stop all",
    "START",
    "yes",
    "HELP",
    "optout promo",
    "please stop texting me",
    "hello there",
    "",
    "STOP 12345",
]


@st.composite
def record_sets(draw: st.DrawFn) -> dict[str, ConsentRecord]:
    records: dict[str, ConsentRecord] = {}
    for key in RELEVANT_KEYS:
        states = [S.UNKNOWN, S.PENDING, S.OPTED_IN, S.OPTED_OUT]
        if key == K_GLOBAL:
            states = [S.BLOCKED, S.OPTED_OUT]
        if draw(st.booleans()):
            state = draw(st.sampled_from(states))
            at = draw(st.integers(0, 20).map(float))
            records[key] = rec(key, state, at)
    return records


campaigns = st.builds(
    campaign,
    scope=st.sampled_from([ScopeKind.NUMBER, ScopeKind.CAMPAIGN, ScopeKind.ACCOUNT]),
    reopt_in=st.sampled_from(list(ReOptIn)),
    inbound_unknown=st.sampled_from(list(InboundUnknown)),
    outbound_unknown=st.sampled_from(list(OutboundUnknown)),
    phrase_tier=st.booleans(),
)


class TestFoldProperty:
    @given(
        c=campaigns,
        records=record_sets(),
        text=st.sampled_from(TEXTS),
        subscriber=st.sampled_from([SUB, SHORT_CODE]),
    )
    def test_mo_claim_matches_fold(
        self,
        c: Campaign,
        records: dict[str, ConsentRecord],
        text: str,
        subscriber: SmsAddress,
    ) -> None:
        """Folding an MO decision's events onto the records gives the state it claims."""
        decision = mo(text, records, c, subscriber=subscriber)
        assert len(decision.events) <= 1
        merged = stored_after(records, decision.events)
        keys = scope_keys(c, NUM_A.value, SYS, "")
        if decision.match is not None and decision.match.list_name is not None:
            keys = scope_keys(c, NUM_A.value, SYS, "PROMO")
        assert effective_state(keys, merged)[0] is decision.state_after
        # A decision never lifts a block and never answers a blocked subscriber.
        if records.get(K_GLOBAL, rec(K_GLOBAL, S.UNKNOWN)).state is S.BLOCKED:
            assert decision.state_after is S.BLOCKED
            assert decision.reply is None
            assert not decision.forward
        # An opt-out, once stored, refuses the next MT from the same sender.
        if decision.state_after in (S.OPTED_OUT, S.BLOCKED):
            after = mt(merged, c, service_type="PROMO" if keys[-1] == K_PROMO else "")
            assert isinstance(after, Reject)
        # Replies only ever go to the subscriber's E.164 number, from the number written to.
        if decision.reply is not None:
            assert decision.reply.destination.accepts_auto_reply
            assert decision.reply.source == NUM_A

    @given(c=campaigns, records=record_sets(), service_type=st.sampled_from(["", "PROMO"]))
    def test_mt_request_claim_matches_fold(
        self, c: Campaign, records: dict[str, ConsentRecord], service_type: str
    ) -> None:
        """An MT's pending event, once stored, makes the next MT pending without a new request."""
        decision = mt(records, c, service_type=service_type)
        if isinstance(decision, RequestOptIn):
            merged = stored_after(records, decision.events)
            keys = scope_keys(c, NUM_A.value, SYS, service_type)
            assert effective_state(keys, merged)[0] is S.PENDING
            assert mt(merged, c, service_type=service_type) == Reject(
                reason=RejectReason.PENDING, scope=decision.events[0].scope
            )
        elif isinstance(decision, Allow):
            state = effective_state(scope_keys(c, NUM_A.value, SYS, service_type), records)[0]
            assert state not in (S.OPTED_OUT, S.BLOCKED)


class TestAddressRefusal:
    """What an MT gets whatever the records say: unreadable addresses, other accounts' numbers."""

    @pytest.mark.parametrize(
        "subscriber",
        [
            SmsAddress(kind=AddressKind.UNREADABLE, value="1555#"),
            SmsAddress(kind=AddressKind.IMPOSSIBLE, value="123"),
            ALPHA,
            None,
        ],
        ids=["unreadable", "impossible", "name", "none"],
    )
    def test_destination_that_is_no_subscriber_is_refused(
        self, subscriber: SmsAddress | None
    ) -> None:
        """An MT to something that is not a number or a short code is refused (fail closed)."""
        assert address_refusal(BY_NUMBER, subscriber, NUM_A, SYS) is (
            RejectReason.UNREADABLE_ADDRESS
        )
        if subscriber is not None:
            assert mt({}, subscriber=subscriber) == Reject(reason=RejectReason.UNREADABLE_ADDRESS)

    @pytest.mark.parametrize("subscriber", [SUB, SHORT_CODE], ids=["number", "short-code"])
    def test_subscribers_pass(self, subscriber: SmsAddress) -> None:
        """Numbers and short codes go on to the consent check."""
        assert address_refusal(BY_NUMBER, subscriber, NUM_A, SYS) is None

    def test_unreadable_sender_is_refused(self) -> None:
        """A source with stray characters has no knowable campaign: refused."""
        sender = SmsAddress(kind=AddressKind.UNREADABLE, value="1555*0100")
        assert address_refusal(BY_NUMBER, SUB, sender, SYS) is RejectReason.UNREADABLE_SENDER

    def test_campaign_number_of_another_account_is_refused(self) -> None:
        """A campaign naming its accounts refuses MTs from its numbers by any other account."""
        owned = campaign(accounts=frozenset({"acct2"}))
        assert mt({}, owned) == Reject(reason=RejectReason.SENDER_NOT_ALLOWED)
        assert isinstance(mt({}, campaign(accounts=frozenset({SYS}))), Allow)

    def test_refusal_comes_before_records(self) -> None:
        """Even an opted-in subscriber gets nothing from a number the account may not use."""
        owned = campaign(accounts=frozenset({"acct2"}))
        opted_in = recs(rec(K_NUM_A, S.OPTED_IN))
        assert mt(opted_in, owned) == Reject(reason=RejectReason.SENDER_NOT_ALLOWED)

    @pytest.mark.parametrize(
        ("reason", "status"),
        [
            (RejectReason.UNREADABLE_ADDRESS, 0x0B),
            (RejectReason.UNREADABLE_SENDER, 0x0A),
            (RejectReason.SENDER_NOT_ALLOWED, 0x0A),
        ],
        ids=lambda v: v.value if isinstance(v, RejectReason) else f"0x{v:02x}",
    )
    def test_statuses(self, reason: RejectReason, status: int) -> None:
        """Address refusals use ESME_RINVDSTADR / ESME_RINVSRCADR by default."""
        assert DEFAULT_REJECT_STATUSES.status(reason) == status


class TestAccountKeys:
    @pytest.mark.parametrize(
        "spelling", ["GOOD", "good ", " Good", "\uff27\uff2f\uff2f\uff24"], ids=repr
    )
    def test_fold_joins_spellings(self, spelling: str) -> None:
        """By default case, outer spaces and compatibility forms do not make another account."""
        assert account_key(spelling) == "good"

    def test_exact_keeps_bytes(self) -> None:
        """``exact`` compares system_ids as the bytes the client sent."""
        assert account_key("GOOD ", AccountMatch.EXACT) == "GOOD "

    def test_account_stop_binds_every_spelling(self) -> None:
        """An account-wide opt-out recorded under the key reaches a client binding as 'GOOD '."""
        records = recs(rec(Scope(ScopeKind.ACCOUNT, "good").key, S.OPTED_OUT))
        decision = decide_mt(
            campaign=BY_NUMBER,
            subscriber=SUB,
            sender=NUM_A,
            system_id=account_key("GOOD "),
            bound_as="GOOD ",
            service_type="",
            records=records,
            now=NOW,
            new_event_id=lambda: "x",
        )
        assert isinstance(decision, Reject)
        assert decision.reason is RejectReason.OPTED_OUT

    def test_records_under_the_bound_spelling_still_count(self) -> None:
        """Account records written under a system_id as bound (before keys were folded) are
        still checked, so an upgrade loses no opt-out."""
        records = recs(rec(Scope(ScopeKind.ACCOUNT, "GOOD").key, S.OPTED_OUT))
        keys = scope_keys(BY_NUMBER, NUM_A.value, "good", "", "GOOD")
        assert Scope(ScopeKind.ACCOUNT, "GOOD").key in keys
        decision = decide_mt(
            campaign=BY_NUMBER,
            subscriber=SUB,
            sender=NUM_A,
            system_id="good",
            bound_as="GOOD",
            service_type="",
            records=records,
            now=NOW,
            new_event_id=lambda: "x",
        )
        assert isinstance(decision, Reject)
