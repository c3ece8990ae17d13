"""Frequency caps end to end: a real smpplib client through the gateway to the simulator SMSC,
the gateway's clock set by the test, the count in a real SQLite file or a real redis-server
shared by two gateway instances."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.consent.caps import CapReservation, CapVerdict
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from gateway.store.base import StoreUnavailableError
from tests.integration.test_quiet_hours import set_clock, wait_records
from tests.support.consent import (
    NUMBER_1,
    NUMBER_3,
    RawEsme,
    SmpplibEsme,
    campaign,
    consent_gateway,
    consent_rig,
    consent_show,
    simulator,
    texts_to,
    to_toml,
    wait_texts,
)
from tests.support.redis_server import RedisServer

MIAMI = "13055550100"
CAPPED = 0x61  # ESME_RINVSCHED, the default for frequency_capped
STORE_UNAVAILABLE = 0x14  # ESME_RMSGQFUL, the default for store_unavailable
DAY_S = 86_400.0
T0 = 1_796_000_000.0


def campaigns(**cap: Any) -> list[dict[str, Any]]:
    """ "acme" (NUMBER_1, marketing) with Florida's cap, or ``cap``; "other" (NUMBER_3)
    transactional and uncapped."""
    rules = cap or {"frequency_cap": "us-fl"}
    return [
        campaign("acme", ["+" + NUMBER_1], **rules),
        campaign("other", ["+" + NUMBER_3], category="transactional"),
    ]


def refused(gw: Gateway, reason: str = "frequency_capped") -> float:
    value = gw.metrics.registry.get_sample_value(
        "smppgw_mt_rejected_total", {"reason": reason, "campaign": "acme"}
    )
    return value or 0.0


class TestFlorida:
    async def test_fourth_in_a_day_refused_then_sent_when_the_day_rolls(
        self, tmp_path: Path
    ) -> None:
        """Three marketing MTs go, the fourth in 24 h gets 0x61, is counted and audited with
        its rule; an uncapped campaign's MT still goes; 24 h after the first, one goes again."""
        trail = tmp_path / "audit.jsonl"
        async with consent_rig(
            tmp_path, campaigns=campaigns(), audit={"path": str(trail), "fsync": False}
        ) as rig:
            clock = set_clock(rig.gw, T0)
            for n in range(3):
                clock.now = T0 + n
                assert await rig.mt(MIAMI, text=f"offer {n}") == 0
            clock.now = T0 + 3600
            assert await rig.mt(MIAMI, text="offer 3") == CAPPED
            assert await rig.mt(MIAMI, source=NUMBER_3, text="your code") == 0
            assert await wait_texts(rig.sim, MIAMI, 4) == [
                "offer 0",
                "offer 1",
                "offer 2",
                "your code",
            ]
            assert refused(rig.gw) == 1
            found = await wait_records(trail, lambda f: any(r["kind"] == "mt_refused" for r in f))
            (record,) = [r for r in found if r["kind"] == "mt_refused"]
            assert (record["reason"], record["rule"]) == ("frequency_capped", "us-fl")
            assert record["status"] == "0x00000061"
            clock.now = T0 + DAY_S
            assert await rig.mt(MIAMI, text="tomorrow") == 0
            assert await wait_texts(rig.sim, MIAMI, 5)
            assert texts_to(rig.sim, MIAMI)[-1] == "tomorrow"

    async def test_configured_status_and_custom_cap(self, tmp_path: Path) -> None:
        """A custom cap of 1 per hour answers [consent.statuses] frequency_capped (0x440)."""
        cap = {"frequency_cap": {"count": 1, "window_h": 1}}
        consent = {"statuses": {"frequency_capped": 0x440}}
        async with consent_rig(tmp_path, campaigns=campaigns(**cap), consent=consent) as rig:
            clock = set_clock(rig.gw, T0)
            assert await rig.mt(MIAMI) == 0
            assert await rig.mt(MIAMI) == 0x440
            clock.now = T0 + 3600
            assert await rig.mt(MIAMI) == 0

    async def test_smsc_refusal_is_not_counted(self, tmp_path: Path) -> None:
        """An MT the SMSC refuses was not sent: its reservation is taken back."""
        cap = {"frequency_cap": {"count": 1, "window_h": 24}}
        async with consent_rig(tmp_path, campaigns=campaigns(**cap)) as rig:
            set_clock(rig.gw, T0)
            rig.sim.set_faults(submit_status=0x45)
            assert await rig.mt(MIAMI) == 0x45
            rig.sim.reset_faults()
            assert rig.gw.store is not None
            async with asyncio.timeout(10):  # the release is written in the background
                while True:
                    if await rig.gw.store.sends_counted(MIAMI, "c:acme", DAY_S, T0) == 0:
                        break
                    await asyncio.sleep(0.02)
            assert await rig.mt(MIAMI, text="after") == 0
            assert await rig.mt(MIAMI, text="capped") == CAPPED


class TestHotPath:
    async def test_uncapped_campaigns_make_no_store_call(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Only MTs of a capped campaign reach the store's counter; the others never call it."""
        async with consent_rig(tmp_path, campaigns=campaigns()) as rig:
            enforcer = rig.gw.enforcer
            assert enforcer is not None
            calls: list[list[str]] = []
            reserve = enforcer.store.reserve_sends

            async def counting(batch: Sequence[CapReservation]) -> list[CapVerdict]:
                calls.append([r.key for r in batch])
                return await reserve(batch)

            monkeypatch.setattr(enforcer.store, "reserve_sends", counting)
            assert await rig.mt(MIAMI, source=NUMBER_3, text="your code") == 0
            assert await rig.mt(MIAMI, text="offer") == 0
            await rig.flows()
            assert calls == [["c:acme"]]

    async def test_a_store_error_on_the_count_refuses(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The count cannot be read or reserved: the capped MT is refused with the
        store-unavailable status (one clients retry), counted, and never reaches the SMSC;
        an uncapped campaign's MT still goes."""
        async with consent_rig(tmp_path, campaigns=campaigns()) as rig:
            enforcer = rig.gw.enforcer
            assert enforcer is not None

            async def failing(*_args: Any, **_kw: Any) -> Any:
                raise StoreUnavailableError("injected: the counter is unreachable")

            monkeypatch.setattr(enforcer.store, "reserve_sends", failing)
            assert await rig.mt(MIAMI, text="offer") == STORE_UNAVAILABLE
            assert refused(rig.gw, "store_unavailable") == 1
            assert await rig.mt(MIAMI, source=NUMBER_3, text="your code") == 0
            assert await wait_texts(rig.sim, MIAMI, 1) == ["your code"]
            await rig.flows()
            assert texts_to(rig.sim, MIAMI) == ["your code"]


def burst(count: int, destination: str = MIAMI, source: str = NUMBER_1) -> bytes:
    """``count`` submit_sm (sequence numbers 1..count, texts "burst N") in one write: the
    gateway reads them together and decides them in one loop turn."""
    return b"".join(
        encode(
            p.SubmitSm(
                sequence_number=n + 1,
                source_addr_ton=1,
                source_addr_npi=1,
                source_addr=source,
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=destination,
                short_message=f"burst {n}".encode(),
            )
        )
        for n in range(count)
    )


async def answers(esme: RawEsme, frames: bytes, count: int) -> dict[int, int]:
    """Write ``frames`` at once; the command_status of each of the ``count`` answers, by
    sequence number."""
    esme.writer.write(frames)
    await esme.writer.drain()
    esme.sequence = count
    statuses: dict[int, int] = {}
    while len(statuses) < count:
        resp = await esme.read()
        assert isinstance(resp, p.SubmitSmResp), resp
        statuses[resp.sequence_number] = resp.command_status
    return statuses


class TestBatch:
    @pytest.mark.parametrize("kind", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
    async def test_a_burst_over_the_cap_is_refused_exactly_beyond_it(
        self, tmp_path: Path, kind: str, request: pytest.FixtureRequest
    ) -> None:
        """One MT counted, then six more to the same subscriber in one read at a cap of three:
        they are reserved with one store call, the first two go (in order) and the last four
        get 0x61; the SMSC gets exactly the three allowed."""
        url = None
        if kind == "redis":
            server: RedisServer = request.getfixturevalue("redis_server")
            url = f"{server.url}?prefix=t{uuid.uuid4().hex[:12]}"
        async with consent_rig(tmp_path, campaigns=campaigns(), store_url=url) as rig:
            set_clock(rig.gw, T0)
            enforcer = rig.gw.enforcer
            assert enforcer is not None
            assert await rig.mt(MIAMI, text="first") == 0
            sizes: list[int] = []
            reserve = enforcer.store.reserve_sends

            async def recording(batch: Sequence[CapReservation]) -> list[CapVerdict]:
                sizes.append(len(batch))
                return await reserve(batch)

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(enforcer.store, "reserve_sends", recording)
                async with RawEsme.bound(rig.gw.port) as raw:
                    statuses = await answers(raw, burst(6), 6)
            assert sizes == [6]
            assert [statuses[n] for n in range(1, 7)] == [0, 0] + [CAPPED] * 4
            assert await wait_texts(rig.sim, MIAMI, 3) == ["first", "burst 0", "burst 1"]
            await rig.flows()
            assert len(texts_to(rig.sim, MIAMI)) == 3
            assert refused(rig.gw) == 4
            assert rig.gw.store is not None
            assert await rig.gw.store.sends_counted(MIAMI, "c:acme", DAY_S, T0) == 3

    async def test_a_store_error_refuses_the_whole_burst(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The store fails the batch's one call: every capped MT of the burst gets the
        store-unavailable status and is counted as a store error, none reaches the SMSC, and
        an uncapped campaign's MT in the same read still goes."""
        async with consent_rig(tmp_path, campaigns=campaigns()) as rig:
            enforcer = rig.gw.enforcer
            assert enforcer is not None
            calls: list[int] = []

            async def failing(batch: Sequence[CapReservation]) -> list[CapVerdict]:
                calls.append(len(batch))
                raise StoreUnavailableError("injected: the counter is unreachable")

            monkeypatch.setattr(enforcer.store, "reserve_sends", failing)
            uncapped = encode(
                p.SubmitSm(
                    sequence_number=5,
                    source_addr_ton=1,
                    source_addr_npi=1,
                    source_addr=NUMBER_3,
                    dest_addr_ton=1,
                    dest_addr_npi=1,
                    destination_addr=MIAMI,
                    short_message=b"your code",
                )
            )
            async with RawEsme.bound(rig.gw.port) as raw:
                statuses = await answers(raw, burst(4) + uncapped, 5)
            assert calls == [4]
            assert [statuses[n] for n in range(1, 5)] == [STORE_UNAVAILABLE] * 4
            assert statuses[5] == 0
            assert refused(rig.gw, "store_unavailable") == 4
            errors = rig.gw.metrics.registry.get_sample_value(
                "smppgw_store_errors_total", {"operation": "reserve_send"}
            )
            assert errors == 4
            assert await wait_texts(rig.sim, MIAMI, 1) == ["your code"]
            await rig.flows()
            assert texts_to(rig.sim, MIAMI) == ["your code"]


class TestSubmitMulti:
    async def test_capped_destination_is_listed_unsuccessful(self, tmp_path: Path) -> None:
        """submit_multi from a capped campaign: a destination at its cap is in unsuccess_sme
        with 0x61; the others are forwarded and counted."""
        cap = {"frequency_cap": {"count": 1, "window_h": 24}}
        async with consent_rig(tmp_path, campaigns=campaigns(**cap)) as rig:
            set_clock(rig.gw, T0)
            assert await rig.mt(MIAMI, text="first") == 0
            other = "13055550101"
            dests = tuple(
                p.SmeAddress(dest_addr_ton=1, dest_addr_npi=1, destination_addr=n)
                for n in (MIAMI, other)
            )
            async with RawEsme.bound(rig.gw.port) as raw:
                resp = await raw.request(
                    p.SubmitMulti(
                        source_addr_ton=1,
                        source_addr_npi=1,
                        source_addr=NUMBER_1,
                        dest_addresses=dests,
                        short_message=b"to two",
                    )
                )
            assert isinstance(resp, p.SubmitMultiResp)
            assert resp.command_status == 0
            assert [(u.destination_addr, u.error_status_code) for u in resp.unsuccess_smes] == [
                (MIAMI, CAPPED)
            ]
            assert rig.gw.store is not None
            assert await rig.gw.store.sends_counted(other, "c:acme", DAY_S, T0) == 1


class TestConsentShow:
    async def test_show_counts_the_window_now(self, tmp_path: Path) -> None:
        """``consent show --json`` on the running gateway's store: per capped counter, the
        messages counted in the window now and whether the cap is reached."""
        async with consent_rig(tmp_path, campaigns=campaigns()) as rig:
            now = time.time()
            set_clock(rig.gw, now - 60)
            for n in range(3):
                assert await rig.mt(MIAMI, text=f"offer {n}") == 0
            config = tmp_path / "staff.toml"
            config.write_text(
                to_toml(
                    {
                        "upstream": {"address": f"127.0.0.1:{rig.sim.port}"},
                        "store": {"url": rig.store_url},
                        "campaigns": campaigns(),
                    }
                )
            )
            shown = await consent_show(config, "+1 305 555 0100")
            other = await consent_show(config, "+1 305 555 0199")
        (acme,) = shown["frequency_caps"]
        assert (acme["counter"], acme["rule"], acme["count"], acme["window_h"]) == (
            "c:acme",
            "us-fl",
            3,
            24.0,
        )
        assert (acme["counted"], acme["reached"], acme["campaigns"]) == (3, True, ["acme"])
        assert other["frequency_caps"][0]["counted"] == 0


@pytest.mark.redis
class TestTwoInstances:
    async def test_florida_cap_across_two_gateways(self, redis_server: RedisServer) -> None:
        """Two gateways on one Redis count one Florida cap: two MTs through A, one through B,
        then the fourth is refused by both; two at once at 2 of 3 let exactly one through."""
        url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"
        async with (
            simulator() as sim,
            consent_gateway(sim.port, url, campaigns=campaigns(), instance="gw-a") as a,
            consent_gateway(sim.port, url, campaigns=campaigns(), instance="gw-b") as b,
            SmpplibEsme(a.port, "acme") as via_a,
            SmpplibEsme(b.port, "acme", bind="transmitter") as via_b,
        ):
            set_clock(a, T0)
            set_clock(b, T0)
            assert await via_a.submit(MIAMI, "one", source=NUMBER_1) == 0
            assert await via_a.submit(MIAMI, "two", source=NUMBER_1) == 0
            assert await via_b.submit(MIAMI, "three", source=NUMBER_1) == 0
            assert await via_b.submit(MIAMI, "four", source=NUMBER_1) == CAPPED
            assert await via_a.submit(MIAMI, "four", source=NUMBER_1) == CAPPED

            other = "13055550101"
            assert await via_a.submit(other, "one", source=NUMBER_1) == 0
            assert await via_b.submit(other, "two", source=NUMBER_1) == 0
            statuses = await asyncio.gather(
                via_a.submit(other, "race a", source=NUMBER_1),
                via_b.submit(other, "race b", source=NUMBER_1),
            )
            assert sorted(statuses) == [0, CAPPED]
            assert len(await wait_texts(sim, other, 3)) == 3
            assert refused(a) + refused(b) == 3
