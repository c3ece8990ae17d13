"""Consent under pipelined traffic: several MOs or MTs for one subscriber in flight at once must
get the answers they would get one after the other (simulator SMSC, smpplib, SQLite)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from gateway.consent.model import ConsentState
from tests.support.consent import (
    NUMBER_1,
    OPT_IN_REQUEST,
    OPT_OUT_REPLY,
    OTHER_SUBSCRIBER,
    SUBSCRIBER,
    acme_campaigns,
    concat_parts,
    consent_rig,
    submit_fields,
    texts_to,
    wait_texts,
)

OPTED_OUT = 0x45
PENDING = 0x65
UDHI = 0x40


class TestMoInFlight:
    async def test_two_stop_words_at_once_get_one_confirmation(self, tmp_path: Path) -> None:
        """'STOP' and 'Unsubscribe' delivered back to back (the second before the first is
        stored) opt out once: one confirmation, both words in the audit trail."""
        async with consent_rig(tmp_path) as rig:
            statuses = list(await asyncio.gather(rig.mo("STOP"), rig.mo("Unsubscribe")))
            assert statuses == [0, 0]
            assert await rig.mt() == OPTED_OUT
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY]
            assert rig.gw.store is not None
            history = await rig.gw.store.history(SUBSCRIBER)
            assert [e.words for e in history] == ["STOP", "Unsubscribe"]

    async def test_mo_order_is_kept_per_subscriber(self, tmp_path: Path) -> None:
        """An ordinary MO right behind a STOP reaches the client after the STOP, not before."""
        async with consent_rig(tmp_path) as rig:
            statuses = list(await asyncio.gather(rig.mo("STOP"), rig.mo("thanks, bye")))
            assert statuses == [0, 0]
            assert rig.esme.mo_texts() == [b"STOP", b"thanks, bye"]


class TestMtInFlight:
    async def test_pipelined_mts_to_an_unknown_number_ask_once(self, tmp_path: Path) -> None:
        """require_opt_in: three MTs in flight to an unknown number are all refused pending and
        the handset gets one opt-in request, not three."""
        campaigns = acme_campaigns(outbound_unknown="require_opt_in")
        async with consent_rig(tmp_path, campaigns=campaigns) as rig:
            requests = [
                ("submit_sm", submit_fields(SUBSCRIBER, f"offer {i}", NUMBER_1)) for i in range(3)
            ]
            responses = await rig.esme.pipeline(requests)
            assert [r.status for r in responses] == [PENDING] * 3
            # The requests go out after their store writes; wait for those to be done: the
            # SQLite store commits on one writer thread in order, so once a later write is
            # committed every earlier one is, and its reply is on the upstream leg.
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_IN_REQUEST]
            assert rig.gw.store is not None
            await rig.gw.store.mark_footer_seen(OTHER_SUBSCRIBER, "write barrier", 0.0)
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_IN_REQUEST]
            history = await rig.gw.store.history(SUBSCRIBER)
            assert [e.state for e in history] == [ConsentState.PENDING]

    async def test_concatenated_mt_gets_one_answer_under_accept_and_report(
        self, tmp_path: Path
    ) -> None:
        """accept_and_report: every part of a long MT to an opted-out number is answered OK
        (not the first OK and the rest 0x45); nothing reaches the SMSC."""
        consent: dict[str, Any] = {"accounts": {"acme": {"accept_and_report": True}}}
        async with consent_rig(tmp_path, consent=consent) as rig:
            assert await rig.mo("STOP") == 0
            parts = concat_parts([b"first half, ", b"second half"], reference=9)
            requests = [
                ("submit_sm", submit_fields(SUBSCRIBER, part, NUMBER_1, {"esm_class": UDHI}))
                for part in parts
            ]
            # One after the other: the second part gets the first part's remembered answer.
            responses = [(await rig.esme.pipeline([request]))[0] for request in requests]
            assert [r.status for r in responses] == [0, 0]
            await rig.flows()
            assert texts_to(rig.sim, SUBSCRIBER) == [OPT_OUT_REPLY]

    async def test_concatenated_mt_parts_all_refused(self, tmp_path: Path) -> None:
        """Every part of a long MT to an opted-out number is refused 0x45."""
        async with consent_rig(tmp_path) as rig:
            assert await rig.mo("STOP") == 0
            parts = concat_parts([b"a" * 100, b"b" * 100, b"c"], reference=3)
            requests = [
                ("submit_sm", submit_fields(SUBSCRIBER, part, NUMBER_1, {"esm_class": UDHI}))
                for part in parts
            ]
            responses = [(await rig.esme.pipeline([request]))[0] for request in requests]
            assert [r.status for r in responses] == [OPTED_OUT] * 3
            await rig.flows()
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_OUT_REPLY]
