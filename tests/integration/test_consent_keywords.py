"""HELP, START, STOPALL, list words, STOP scopes and re-opt-in, end to end through the gateway.

The SMSC is the bundled simulator, the client application smpplib, the store a SQLite file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gateway.consent.model import ConsentState
from tests.support.consent import (
    HELP_REPLY,
    NUMBER_1,
    NUMBER_2,
    NUMBER_3,
    OPT_IN_REPLY,
    OPT_OUT_REPLY,
    SUBSCRIBER,
    UNGROUPED,
    Rig,
    SmpplibEsme,
    acme_campaigns,
    campaign,
    consent_rig,
    texts_to,
    wait_texts,
)

OPTED_OUT = 0x45


async def states(rig: Rig) -> dict[str, ConsentState]:
    assert rig.gw.store is not None
    return {k: r.state for k, r in (await rig.gw.store.current(SUBSCRIBER)).items()}


class TestHelp:
    @pytest.mark.parametrize("word", ["HELP", "info", " Help? "])
    async def test_help_is_answered_and_changes_nothing(self, tmp_path: Path, word: str) -> None:
        """HELP gets the help reply; no consent state is recorded and MTs still go through."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo(word) == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [HELP_REPLY]
            assert await states(rig) == {}
            assert await rig.mt() == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 2) == [HELP_REPLY, "hello"]
            assert rig.esme.mo_texts() == [word.encode()]

    async def test_help_after_stop_is_answered_and_keeps_the_opt_out(self, tmp_path: Path) -> None:
        """An opted-out subscriber still gets the HELP reply (CTIA) and stays opted out."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("HELP") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 2) == [OPT_OUT_REPLY, HELP_REPLY]
            assert await rig.mt() == OPTED_OUT

    async def test_replies_are_rate_limited_but_a_stop_is_always_confirmed(
        self, tmp_path: Path
    ) -> None:
        """Six HELPs in an hour get five replies (reply_limit_per_hour = 5); a STOP after them
        still gets its one confirmation."""
        async with consent_rig(tmp_path) as rig:
            for _ in range(6):
                assert await rig.mo("HELP") == 0
            assert await rig.mo("STOP") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 6) == [HELP_REPLY] * 5 + [OPT_OUT_REPLY]
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [HELP_REPLY] * 5 + [OPT_OUT_REPLY]
            assert len(rig.esme.mo_texts()) == 7


class TestOptInAgain:
    @pytest.mark.parametrize("word", ["START", "unstop", "Yes."])
    async def test_start_after_stop(self, tmp_path: Path, word: str) -> None:
        """START / UNSTOP / YES after STOP opts back in with one confirmation; MTs flow again."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mt() == OPTED_OUT
            assert await rig.mo(word) == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 2) == [OPT_OUT_REPLY, OPT_IN_REPLY]
            assert await rig.mt(text="welcome back") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 3) == [
                OPT_OUT_REPLY,
                OPT_IN_REPLY,
                "welcome back",
            ]

    async def test_yes_from_an_opted_in_subscriber_is_not_confirmed(self, tmp_path: Path) -> None:
        """A conversational 'yes' from a subscriber already opted in records and replies nothing."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("START") == 0
            assert await rig.mo("yes") == 0
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY, OPT_IN_REPLY]

    async def test_keyword_rule_ignores_other_messages(self, tmp_path: Path) -> None:
        """Under reopt_in = keyword, an ordinary message after STOP does not opt back in."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("when is my appointment") == 0
            assert await rig.mt() == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY]

    async def test_any_message_rule_opts_back_in(self, tmp_path: Path) -> None:
        """Under reopt_in = any_message, any new message after STOP opts back in, confirmed."""
        async with consent_rig(tmp_path, campaigns=acme_campaigns(reopt_in="any_message")) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mo("when is my appointment") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 2) == [OPT_OUT_REPLY, OPT_IN_REPLY]
            assert await rig.mt() == 0
            assert rig.esme.mo_texts() == [b"STOP", b"when is my appointment"]


class TestScopes:
    @pytest.mark.parametrize(
        ("scope", "refused_from"),
        [
            ("number", {NUMBER_1}),
            ("campaign", {NUMBER_1, NUMBER_2}),
            ("account", {NUMBER_1, NUMBER_2, NUMBER_3, UNGROUPED}),
        ],
    )
    async def test_how_far_a_stop_reaches(
        self, tmp_path: Path, scope: str, refused_from: set[str]
    ) -> None:
        """A STOP to NUMBER_1 refuses MTs from exactly the senders its campaign's scope covers."""
        async with consent_rig(tmp_path, campaigns=acme_campaigns(scope=scope)) as rig:
            assert await rig.mo("STOP", destination=NUMBER_1) == 0
            answers = {n: await rig.mt(source=n) for n in (NUMBER_1, NUMBER_2, NUMBER_3, UNGROUPED)}
            assert {n for n, status in answers.items() if status == OPTED_OUT} == refused_from
            assert {status for n, status in answers.items() if n not in refused_from} <= {0}
            await rig.flows()
            allowed = 4 - len(refused_from)
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY] + ["hello"] * allowed

    async def test_account_scope_stays_in_its_account(self, tmp_path: Path) -> None:
        """An account-wide STOP of account 'acme' does not refuse another account's MTs."""
        async with consent_rig(tmp_path, campaigns=acme_campaigns(scope="account")) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mt() == OPTED_OUT
            async with SmpplibEsme(rig.gw.port, "beta") as beta:
                assert await beta.submit(SUBSCRIBER, "from beta", source=NUMBER_3) == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 2) == [OPT_OUT_REPLY, "from beta"]

    @pytest.mark.parametrize("word", ["STOPALL", "stop all"])
    async def test_stopall_reaches_the_whole_account(self, tmp_path: Path, word: str) -> None:
        """STOPALL to one number refuses every sender of the account, even under scope=number."""
        async with consent_rig(tmp_path, campaigns=acme_campaigns(scope="number")) as rig:
            assert await rig.mo(word) == 0
            for sender in (NUMBER_1, NUMBER_2, NUMBER_3, UNGROUPED):
                assert await rig.mt(source=sender) == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY]
            assert await states(rig) == {"account:acme": ConsentState.OPTED_OUT}

    async def test_start_to_one_number_after_stopall(self, tmp_path: Path) -> None:
        """START to one number after STOPALL lets that number through, the rest stay stopped."""
        async with consent_rig(tmp_path, campaigns=acme_campaigns(scope="number")) as rig:
            assert await rig.mo("STOPALL") == 0
            assert await rig.mo("START", destination=NUMBER_2) == 0
            assert await rig.mt(source=NUMBER_2) == 0
            assert await rig.mt(source=NUMBER_1) == OPTED_OUT
            assert await wait_texts(rig.sim, SUBSCRIBER, 3) == [
                OPT_OUT_REPLY,
                OPT_IN_REPLY,
                "hello",
            ]


def promo_campaign(**rules: Any) -> list[dict[str, Any]]:
    lists = [
        {"name": "promo", "service_types": ["PROMO"], "keywords": ["STOP PROMO"]},
        {"name": "notices", "service_types": ["NOTE"], "keywords": ["STOP NOTICES"]},
    ]
    return [campaign("acme", ["+" + NUMBER_1], lists=lists, **rules)]


class TestLists:
    async def test_list_word_opts_out_of_that_list_only(self, tmp_path: Path) -> None:
        """'STOP PROMO' refuses MTs whose service_type is the promo list's; others still go."""
        async with consent_rig(tmp_path, campaigns=promo_campaign()) as rig:
            assert await rig.mo("Stop promo") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [
                "ACME: You will receive no more promo messages. Reply STOP to opt out of all."
            ]
            assert await rig.mt(service_type="PROMO", text="sale") == OPTED_OUT
            assert await rig.mt(service_type="NOTE", text="your bill") == 0
            assert await rig.mt(text="no list") == 0
            assert texts_to(rig.sim, SUBSCRIBER)[1:] == ["your bill", "no list"]
            assert await states(rig) == {"list:acme/promo": ConsentState.OPTED_OUT}

    async def test_plain_stop_covers_every_list(self, tmp_path: Path) -> None:
        """A plain STOP after a list word refuses every list of the campaign."""
        async with consent_rig(tmp_path, campaigns=promo_campaign()) as rig:
            assert await rig.mo("STOP PROMO") == 0
            assert await rig.mo("STOP") == 0
            for service_type in ("PROMO", "NOTE", ""):
                assert await rig.mt(service_type=service_type) == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER)[1:] == [OPT_OUT_REPLY]
