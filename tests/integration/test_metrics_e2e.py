"""/metrics of a running consent gateway after real traffic (smpplib through the gateway to the
simulator): every metric counts what happened, with the labels the README documents."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.support.consent import (
    NUMBER_1,
    SUBSCRIBER,
    UNGROUPED,
    SmpplibEsme,
    consent_rig,
    sent_to,
    wait_texts,
)
from tests.support.metrics import scrape

ADMIN = {"listen": "127.0.0.1:0"}
ESME_RSYSERR = 0x08


def admin_port(rig_gw: object) -> int:
    admin = getattr(rig_gw, "admin", None)
    assert admin is not None
    return int(admin.port)


class TestConsentTraffic:
    async def test_mt_mo_and_replies_are_counted_by_campaign_reason_and_family(
        self, tmp_path: Path
    ) -> None:
        """An allowed MT, a STOP, a refused MT and a START show up as MT allowed / refused
        (reason, campaign), an opt-out and an opt-in (campaign, family), two auto-replies, the
        PDUs of each leg by command and direction, and the relay latency per command."""
        async with consent_rig(tmp_path, admin=ADMIN) as rig:
            assert await rig.mt(text="first") == 0
            assert await rig.mt(source=UNGROUPED, text="no campaign") == 0
            assert await rig.mo("STOP") == 0
            assert await rig.mt(text="refused") != 0
            assert await rig.mo("START") == 0
            # The MTs that went, then both confirmations (one per change).
            await wait_texts(rig.sim, SUBSCRIBER, 4)
            m = await scrape(admin_port(rig.gw))

        assert m.value("smppgw_mt_allowed_total", campaign="acme") == 1
        assert m.value("smppgw_mt_allowed_total", campaign="default") == 1
        assert m.value("smppgw_mt_rejected_total", reason="opted_out", campaign="acme") == 1
        assert m.total("smppgw_mt_rejected_total") == 1
        assert m.value("smppgw_opt_outs_total", campaign="acme", family="opt_out") == 1
        assert m.value("smppgw_opt_ins_total", campaign="acme", family="opt_in") == 1
        assert m.total("smppgw_auto_replies_total", outcome="sent") == 2
        assert m.value("smppgw_mo_keywords_total", family="opt_out", match="keyword") == 1

        pdus = "smppgw_pdus_total"
        assert m.value(pdus, leg="client", direction="in", command="bind_transceiver") == 1
        assert m.value(pdus, leg="client", direction="out", command="bind_transceiver_resp") == 1
        assert m.value(pdus, leg="client", direction="in", command="submit_sm") == 3
        assert m.value(pdus, leg="client", direction="out", command="submit_sm_resp") == 3
        # Upstream: the bind, the two MTs allowed and the two confirmations of our own.
        assert m.value(pdus, leg="upstream", direction="out", command="bind_transceiver") == 1
        assert m.value(pdus, leg="upstream", direction="out", command="submit_sm") == 4
        assert m.value(pdus, leg="upstream", direction="in", command="submit_sm_resp") == 4
        # The MOs: from the SMSC, on to the client, its answers, back to the SMSC.
        assert m.value(pdus, leg="upstream", direction="in", command="deliver_sm") == 2
        assert m.value(pdus, leg="client", direction="out", command="deliver_sm") == 2
        assert m.value(pdus, leg="client", direction="in", command="deliver_sm_resp") == 2
        assert m.value(pdus, leg="upstream", direction="out", command="deliver_sm_resp") == 2

        latency = "smppgw_relay_latency_seconds"
        assert m.types[latency] == "histogram"
        assert m.value(f"{latency}_count", command="submit_sm") == 3
        assert m.value(f"{latency}_count", command="bind_transceiver") == 1
        assert m.value(f"{latency}_bucket", command="submit_sm", le="+Inf") == 3
        assert m.value(f"{latency}_sum", command="submit_sm") > 0
        assert m.value("smppgw_store_write_seconds_count") == 2  # the STOP and the START

        assert m.value("smppgw_account_sessions", account="acme") == 1
        assert m.value("smppgw_upstream_outstanding") == 0

    async def test_no_subscriber_becomes_a_label(self, tmp_path: Path) -> None:
        """Refusals and opt-outs carry campaign and reason, never the subscriber's number."""
        async with consent_rig(tmp_path, admin=ADMIN) as rig:
            assert await rig.mo("STOP") == 0
            assert await rig.mt(text="refused") != 0
            m = await scrape(admin_port(rig.gw))
        assert m.total("smppgw_opt_outs_total") == 1
        assert SUBSCRIBER not in m.text
        assert NUMBER_1 not in m.text


class TestSessionsAndWindow:
    async def test_sessions_per_account_follow_binds_and_closes(self, tmp_path: Path) -> None:
        """A second session of the account counts 2; once it is closed, 1 again."""
        async with consent_rig(tmp_path, admin=ADMIN) as rig:
            port = admin_port(rig.gw)
            before = set(rig.gw.listener.bridges)
            async with SmpplibEsme(rig.gw.port, "acme"):
                assert (await scrape(port)).value("smppgw_account_sessions", account="acme") == 2
                (second,) = set(rig.gw.listener.bridges) - before
            await asyncio.wait_for(second.wait_closed(), 10)
            m = await scrape(port)
        assert m.value("smppgw_account_sessions", account="acme") == 1
        assert m.total("smppgw_sessions") == 1

    async def test_upstream_outstanding_counts_what_the_smsc_has_not_answered(
        self, tmp_path: Path
    ) -> None:
        """While the SMSC leaves an MT unanswered the gauge shows it; once the gateway gives
        up on it (the client gets a status it retries), it is 0 and counted as expired."""
        session = {"response_timeout_s": 1, "bind_timeout_s": 5, "unbind_timeout_s": 1}
        async with consent_rig(tmp_path, admin=ADMIN, session=session) as rig:
            port = admin_port(rig.gw)
            rig.sim.set_faults(respond=False)
            pending = asyncio.create_task(rig.mt(text="unanswered"))
            await rig.sim.wait_for(lambda _m: len(sent_to(rig.sim, SUBSCRIBER)) == 1, timeout=10)
            during = await scrape(port)
            assert await pending == ESME_RSYSERR
            after = await scrape(port)
        assert during.value("smppgw_upstream_outstanding") == 1
        assert after.value("smppgw_upstream_outstanding") == 0
        assert after.value("smppgw_requests_expired_total", leg="upstream") == 1
