"""FCC revoke-all end to end: a real smpplib client through the gateway to the simulator SMSC,
the gateway's clock set before and after the business's revoke_all date; the clarifying
confirmation asked, answered (PROMO narrows) and left unanswered (all kept)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from gateway.consent.model import ConsentState
from tests.integration.test_optout_link import FOOTER, KEY, link_of, page
from tests.integration.test_quiet_hours import set_clock, wait_records
from tests.support.consent import (
    NUMBER_1,
    NUMBER_3,
    OPT_OUT_REPLY,
    OTHER_SUBSCRIBER,
    SUBSCRIBER,
    campaign,
    consent_rig,
    consent_show,
    free_port,
    texts_to,
    to_toml,
    wait_texts,
)
from tests.support.redis_server import RedisServer

DATE = 1_801_353_600.0  # 2027-01-31T00:00:00Z
BEFORE = DATE - 3600.0
AFTER = DATE + 3600.0
OPTED_OUT = 0x45
PROMO_LIST = {"name": "promo", "service_types": ["PROMO"]}
QUESTION = "ACME: Reply ALL to stop all ACME messages, or {choices} to stop only those."


def campaigns() -> list[dict[str, Any]]:
    """ "acme" (NUMBER_1, a promo list) and "other" (NUMBER_3), one business."""
    return [
        campaign("acme", ["+" + NUMBER_1], business="acme-inc", lists=[PROMO_LIST]),
        campaign("other", ["+" + NUMBER_3], business="acme-inc"),
    ]


def business(**settings: Any) -> list[dict[str, Any]]:
    return [{"name": "acme-inc", "revoke_all": "2027-01-31", **settings}]


CLARIFY = {"window_h": 2, "reply": QUESTION}


async def settle() -> None:
    """Long enough for a reply the gateway should not send to have reached the SMSC."""
    await asyncio.sleep(0.5)


class TestDate:
    async def test_before_and_after_the_date(self, tmp_path: Path) -> None:
        """Before the date a STOP to acme leaves other's MTs going; after it a STOP to acme
        refuses other's MTs too, and the earlier STOP does not widen; the refusal is audited
        and counted as revoke_all."""
        trail = tmp_path / "audit.jsonl"
        async with consent_rig(
            tmp_path,
            campaigns=campaigns(),
            businesses=business(),
            audit={"path": str(trail), "fsync": False},
        ) as rig:
            clock = set_clock(rig.gw, BEFORE)
            assert await rig.mo("STOP", source=SUBSCRIBER, destination=NUMBER_1) == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            assert await rig.mt(SUBSCRIBER, source=NUMBER_3, text="before") == 0
            assert await rig.mt(SUBSCRIBER, source=NUMBER_1, text="acme") == OPTED_OUT
            clock.now = AFTER
            assert await rig.mo("STOP", source=OTHER_SUBSCRIBER, destination=NUMBER_1) == 0
            assert await wait_texts(rig.sim, OTHER_SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            assert await rig.mt(OTHER_SUBSCRIBER, source=NUMBER_3, text="other") == OPTED_OUT
            assert await rig.mt(SUBSCRIBER, source=NUMBER_3, text="after") == 0
            await wait_texts(rig.sim, SUBSCRIBER, 3)
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY, "before", "after"]
            assert texts_to(rig.sim, OTHER_SUBSCRIBER) == [OPT_OUT_REPLY]
            counted = rig.gw.metrics.registry.get_sample_value(
                "smppgw_mt_revoke_all_total", {"business": "acme-inc"}
            )
            assert counted == 1
            found = await wait_records(
                trail, lambda f: sum(r["kind"] == "mt_refused" for r in f) == 2
            )
        refusals = [r for r in found if r["kind"] == "mt_refused"]
        assert [(r["campaign"], r.get("rule")) for r in refusals] == [
            ("acme", None),
            ("other", "revoke_all"),
        ]
        stops = [r for r in found if r["kind"] == "consent"]
        assert [r["scope"] for r in stops] == ["campaign:acme", "business:acme-inc"]


class TestClarify:
    async def test_promo_narrows(self, tmp_path: Path) -> None:
        """STOP gets the question and refuses everything at once; PROMO narrows it to acme's
        promo list: acme's other MTs and other's go again, promos stay refused, no reply."""
        async with consent_rig(
            tmp_path, campaigns=campaigns(), businesses=business(clarify=CLARIFY)
        ) as rig:
            clock = set_clock(rig.gw, AFTER)
            assert await rig.mo("STOP", destination=NUMBER_1) == 0
            (question,) = await wait_texts(rig.sim, SUBSCRIBER, 1)
            assert question == QUESTION.replace("{choices}", "promo, acme")
            assert await rig.mt(source=NUMBER_3, text="refused") == OPTED_OUT
            assert await rig.mt(source=NUMBER_1, text="refused") == OPTED_OUT
            clock.now = AFTER + 600
            assert await rig.mo("PROMO", destination=NUMBER_1) == 0
            assert await rig.mt(source=NUMBER_1, text="notice") == 0
            assert await rig.mt(source=NUMBER_3, text="other") == 0
            assert await rig.mt(source=NUMBER_1, text="sale", service_type="PROMO") == OPTED_OUT
            await wait_texts(rig.sim, SUBSCRIBER, 3)
            await settle()
            assert texts_to(rig.sim, SUBSCRIBER) == [question, "notice", "other"]
            assert rig.gw.enforcer is not None
            history = await rig.gw.enforcer.store.history(SUBSCRIBER)
            assert [(e.scope, e.state, e.match.value) for e in history] == [
                ("business:acme-inc", ConsentState.OPTED_OUT, "keyword"),
                ("list:acme/promo", ConsentState.OPTED_OUT, "clarify"),
                ("business:acme-inc", ConsentState.UNKNOWN, "clarify"),
            ]
            assert history[0].clarify_until == AFTER + 7200
            answers = rig.gw.metrics.registry.get_sample_value(
                "smppgw_opt_out_answers_total", {"business": "acme-inc", "answer": "narrowed"}
            )
            assert answers == 1
            config = tmp_path / "staff.toml"
            config.write_text(
                to_toml(
                    {
                        "upstream": {"address": f"127.0.0.1:{rig.sim.port}"},
                        "store": {"url": rig.store_url},
                        "businesses": business(clarify=CLARIFY),
                        "campaigns": campaigns(),
                    }
                )
            )
            shown = await consent_show(config, "+" + SUBSCRIBER)
        (acme,) = shown["businesses"]
        assert acme["campaigns"] == ["acme", "other"]
        assert acme["revoke_all"] == "2027-01-31 (UTC)"
        assert acme["in_effect"] is (time.time() >= DATE)  # the CLI reads the real clock
        assert acme["state"] == "unknown"
        assert acme["question"]["status"] == "answered (narrowed: 'PROMO')"
        assert acme["question"]["until"] == "2027-01-31T03:00:00Z"

    async def test_no_answer_keeps_all(self, tmp_path: Path) -> None:
        """PROMO after the window is no answer: everything of the business stays refused and
        nothing more is sent to the subscriber."""
        async with consent_rig(
            tmp_path, campaigns=campaigns(), businesses=business(clarify=CLARIFY)
        ) as rig:
            clock = set_clock(rig.gw, AFTER)
            assert await rig.mo("STOP", destination=NUMBER_1) == 0
            await wait_texts(rig.sim, SUBSCRIBER, 1)
            clock.now = AFTER + 7200
            assert await rig.mo("PROMO", destination=NUMBER_1) == 0
            assert await rig.mt(source=NUMBER_1, text="notice") == OPTED_OUT
            assert await rig.mt(source=NUMBER_3, text="other") == OPTED_OUT
            await settle()
            assert len(texts_to(rig.sim, SUBSCRIBER)) == 1


@pytest.mark.redis
class TestShared:
    async def test_question_survives_a_new_instance(
        self, tmp_path: Path, redis_server: RedisServer
    ) -> None:
        """On Redis, a question asked by one gateway is answered through a new one that never
        saw the STOP: the pending question is the shared event history."""
        url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"
        sections: dict[str, Any] = {"businesses": business(clarify=CLARIFY)}
        async with consent_rig(tmp_path, campaigns=campaigns(), store_url=url, **sections) as rig:
            set_clock(rig.gw, AFTER)
            assert await rig.mo("STOP", destination=NUMBER_1) == 0
            await wait_texts(rig.sim, SUBSCRIBER, 1)
        async with consent_rig(tmp_path, campaigns=campaigns(), store_url=url, **sections) as rig:
            set_clock(rig.gw, AFTER + 60)
            assert await rig.mt(source=NUMBER_3, text="refused") == OPTED_OUT
            assert await rig.mo("PROMO", destination=NUMBER_1) == 0
            assert await rig.mt(source=NUMBER_3, text="other") == 0
            assert await rig.mt(source=NUMBER_1, text="sale", service_type="PROMO") == OPTED_OUT
            await wait_texts(rig.sim, SUBSCRIBER, 1)
            await settle()
            assert texts_to(rig.sim, SUBSCRIBER) == ["other"]


class TestLink:
    async def test_web_link_opt_out_reaches_the_business(self, tmp_path: Path) -> None:
        """The web opt-out link of a campaign whose business has revoke-all in effect opts
        out business-wide, like a STOP."""
        port = free_port()
        footer = {"footer": "always", "footer_text": FOOTER}
        linked = [
            campaign("acme", ["+" + NUMBER_1], business="acme-inc", **footer),
            campaign("other", ["+" + NUMBER_3], business="acme-inc"),
        ]
        async with consent_rig(
            tmp_path,
            campaigns=linked,
            businesses=[{"name": "acme-inc", "revoke_all": True}],
            optout_link={
                "base_url": f"http://127.0.0.1:{port}/o/",
                "listen": f"127.0.0.1:{port}",
                "key": KEY,
            },
        ) as rig:
            url = await link_of(rig)
            assert (await page(url, "POST")).status == 200
            assert rig.gw.store is not None
            (event,) = await rig.gw.store.history(SUBSCRIBER)
            assert event.scope == "business:acme-inc"
            assert await rig.mt(source=NUMBER_3, text="other") == OPTED_OUT
