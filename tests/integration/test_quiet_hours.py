"""Quiet hours end to end: a real smpplib client through the gateway to the simulator SMSC, the
gateway's clock set to a chosen wall time, the statuses as configured, the audit trail written."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.app import Gateway
from tests.support.consent import (
    NUMBER_1,
    NUMBER_3,
    OPT_OUT_REPLY,
    WAIT_S,
    campaign,
    consent_rig,
    consent_show,
    texts_to,
    to_toml,
    wait_texts,
)

AUSTIN = "15125550100"  # Texas, Central time
NEW_YORK = "12125551234"
REFUSED = 0x61  # ESME_RINVSCHED, the default for quiet_hours
DEFERRED = 0x14  # ESME_RMSGQFUL, the default for quiet_hours_deferred


class SetClock:
    """The enforcer's clock with the wall time set by the test (monotonic stays real: it only
    times memos and limits)."""

    def __init__(self, wall: float) -> None:
        self.now = wall

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return time.monotonic()


def at(zone: str, when: str) -> float:
    return datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)).timestamp()


def set_clock(gw: Gateway, wall: float) -> SetClock:
    clock = SetClock(wall)
    enforcer = gw.enforcer
    assert enforcer is not None
    # The MT path, the MO path and the auto-reply sender each read the time.
    enforcer.clock = enforcer.mo.clock = enforcer.reply_sender.clock = clock
    return clock


def campaigns(**rules: Any) -> list[dict[str, Any]]:
    """ "acme" (NUMBER_1, marketing) with quiet hours and ``rules``; "other" (NUMBER_3)
    transactional, with none."""
    hours = {"quiet_hours": ["us-federal", "us-tx"], **rules}
    return [
        campaign("acme", ["+" + NUMBER_1], **hours),
        campaign("other", ["+" + NUMBER_3], category="transactional"),
    ]


def trail_records(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_bytes().splitlines()]
    except FileNotFoundError:
        return []


async def wait_records(
    path: Path, condition: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The trail's records once ``condition`` holds (the trail is written off the loop)."""
    async with asyncio.timeout(WAIT_S):
        while True:
            found = trail_records(path)
            if condition(found):
                return found
            await asyncio.sleep(0.05)


def quiet_counted(gw: Gateway, reason: str, rule: str) -> float:
    value = gw.metrics.registry.get_sample_value(
        "smppgw_mt_quiet_hours_total", {"reason": reason, "rule": rule}
    )
    return value or 0.0


class TestRefuse:
    async def test_texas_sunday_noon(self, tmp_path: Path) -> None:
        """Sunday 11:59 in Austin is refused 0x61 (Texas: not before noon), audited with its
        rule and counted; at 12:00 the same MT goes; New York was open all along."""
        trail = tmp_path / "audit.jsonl"
        async with consent_rig(
            tmp_path, campaigns=campaigns(), audit={"path": str(trail), "fsync": False}
        ) as rig:
            clock = set_clock(rig.gw, at("America/Chicago", "2026-12-06 11:59"))
            assert await rig.mt(AUSTIN, text="sale") == REFUSED
            assert await rig.mt(NEW_YORK, text="sale") == 0
            clock.now = at("America/Chicago", "2026-12-06 12:00")
            assert await rig.mt(AUSTIN, text="sale at noon") == 0
            assert await wait_texts(rig.sim, AUSTIN, 1) == ["sale at noon"]
            assert await wait_texts(rig.sim, NEW_YORK, 1) == ["sale"]
            assert quiet_counted(rig.gw, "quiet_hours", "us-tx") == 1
            found = await wait_records(trail, lambda f: any(r["kind"] == "mt_refused" for r in f))
            (refused,) = [r for r in found if r["kind"] == "mt_refused"]
            assert refused["reason"] == "quiet_hours"
            assert refused["rule"] == "us-tx"
            assert refused["status"] == "0x00000061"
            assert refused["campaign"] == "acme"

    async def test_night_and_what_it_never_holds_back(self, tmp_path: Path) -> None:
        """At 23:00 a marketing MT is refused, a transactional one goes, and a STOP is still
        confirmed at once: auto-replies are never held back by quiet hours."""
        async with consent_rig(tmp_path, campaigns=campaigns()) as rig:
            set_clock(rig.gw, at("America/Chicago", "2026-12-07 23:00"))
            assert await rig.mt(AUSTIN, text="late offer") == REFUSED
            assert await rig.mt(AUSTIN, source=NUMBER_3, text="your code 1234") == 0
            assert await rig.mo("STOP", source=AUSTIN) == 0
            await wait_texts(rig.sim, AUSTIN, 2)
            assert texts_to(rig.sim, AUSTIN) == ["your code 1234", OPT_OUT_REPLY]
            assert quiet_counted(rig.gw, "quiet_hours", "us-federal") == 1


class TestDefer:
    async def test_deferred_then_sent_in_the_morning(self, tmp_path: Path) -> None:
        """quiet_hours_action = defer: 0x14 at 7:59 (clients retry), the retry at 8:00 goes;
        with accept-and-report on the account the deferral still shows, never an OK."""
        consent = {"accounts": {"acme": {"accept_and_report": True}}}
        async with consent_rig(
            tmp_path, campaigns=campaigns(quiet_hours_action="defer"), consent=consent
        ) as rig:
            clock = set_clock(rig.gw, at("America/New_York", "2026-12-07 07:59"))
            assert await rig.mt(NEW_YORK, text="breakfast deal") == DEFERRED
            clock.now = at("America/New_York", "2026-12-07 08:00")
            assert await rig.mt(NEW_YORK, text="breakfast deal") == 0
            assert await wait_texts(rig.sim, NEW_YORK, 1) == ["breakfast deal"]
            assert quiet_counted(rig.gw, "quiet_hours_deferred", "us-federal") == 1

    async def test_configured_statuses(self, tmp_path: Path) -> None:
        """[consent.statuses] quiet_hours_deferred = 0x58 is what the client gets."""
        consent = {"statuses": {"quiet_hours_deferred": 0x58}}
        async with consent_rig(
            tmp_path, campaigns=campaigns(quiet_hours_action="defer"), consent=consent
        ) as rig:
            set_clock(rig.gw, at("America/New_York", "2026-12-07 21:00"))
            assert await rig.mt(NEW_YORK) == 0x58
            assert texts_to(rig.sim, NEW_YORK) == []

    async def test_configured_refusal_status(self, tmp_path: Path) -> None:
        """[consent.statuses] quiet_hours = 0x440 (a vendor code) is what a refused MT gets."""
        consent = {"statuses": {"quiet_hours": 0x440}}
        async with consent_rig(tmp_path, campaigns=campaigns(), consent=consent) as rig:
            set_clock(rig.gw, at("America/New_York", "2026-12-07 21:00"))
            assert await rig.mt(NEW_YORK) == 0x440


class TestConsentShow:
    async def test_show_names_the_rules_that_apply_now(self, tmp_path: Path) -> None:
        """``consent show --json`` on the running gateway's store: the number's zone, state
        and, per campaign with quiet hours, each rule (a whole-day window is open at any time
        the test runs; the Florida preset does not apply to a Texas number)."""
        rules = {"quiet_hours": ["us-fl", {"start": "00:00", "end": "24:00"}]}
        async with consent_rig(tmp_path, campaigns=campaigns(**rules)) as rig:
            config = tmp_path / "staff.toml"
            config.write_text(
                to_toml(
                    {
                        "upstream": {"address": f"127.0.0.1:{rig.sim.port}"},
                        "store": {"url": rig.store_url},
                    }
                )
                + "\n[[campaigns]]\n"
                + f'name = "acme"\nnumbers = ["+{NUMBER_1}"]\n'
                + 'quiet_hours = ["us-fl", { start = "00:00", end = "24:00" }]\n'
            )
            shown = await consent_show(config, "+1 512 555 0100")
        sending = shown["sending_rules"]
        assert [z["zone"] for z in sending["zones"]] == ["America/Chicago"]
        assert sending["state"] == "US-TX"
        (acme,) = sending["campaigns"]
        assert acme["open"] is True
        assert [(r["rule"], r["applies"], r["open"]) for r in acme["rules"]] == [
            ("us-fl", False, True),
            ("custom", True, True),
        ]
