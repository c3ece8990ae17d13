"""The SQLite store failing under a running gateway: its directory moved away and back, its
header overwritten, the file made read-only. A real client (smpplib) and the simulator's MOs
see temporary statuses only, /readyz says why, and no acknowledged opt-out is ever lost."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.store.guard import FailClosedStore
from gateway.store.sqlite import SQLITE_MAGIC
from gateway.telemetry import logs
from tests.admin.test_api import request
from tests.support.consent import (
    BYSTANDER,
    FAST_SESSION,
    NUMBER_1,
    OPT_OUT_REPLY,
    OTHER_SUBSCRIBER,
    SUBSCRIBER,
    UNGROUPED,
    WAIT_S,
    SmpplibEsme,
    acme_campaigns,
    simulator,
    texts_to,
    wait_texts,
)
from tests.support.gateway import running_gateway

OPTED_OUT = 0x45
STORE_UNAVAILABLE = 0x14  # consent.statuses.store_unavailable by default: clients retry it
ESME_RX_T_APPN = 0x64  # the SMSC delivers the MO again
THIRD = "15553334444"


@dataclasses.dataclass
class Rig:
    sim: Simulator
    gw: Gateway
    esme: SmpplibEsme
    db: Path

    @property
    def store(self) -> FailClosedStore:
        assert isinstance(self.gw.store, FailClosedStore)
        return self.gw.store

    async def stop(self, subscriber: str) -> int:
        """A STOP from ``subscriber`` to the campaign number; the status the SMSC got."""
        return await self.sim.send_mo(
            source=subscriber, destination=NUMBER_1, text="STOP", system_id="acme"
        )

    async def mt(self, destination: str, source: str = NUMBER_1) -> int:
        return await self.esme.submit(destination, source=source)

    async def readyz(self) -> tuple[int, Any]:
        assert self.gw.admin is not None
        return await request(self.gw.admin.port, "GET", "/readyz", token=None)

    async def ready_records(self) -> int:
        """/readyz answers ready (every check ok); the record count it reports."""
        status, body = await self.readyz()
        assert (status, body["status"]) == (200, "ready"), body
        assert set(body["checks"].values()) == {"ok"}, body
        records: int = body["store"]["records"]
        return records


@contextlib.asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """Simulator, a gateway with its admin API on a SQLite file in ``tmp_path/state`` (the
    guard probing every 50 ms), and a bound smpplib transceiver."""
    db = tmp_path / "state" / "consent.db"
    async with (
        simulator() as sim,
        running_gateway(
            sim.port,
            gateway={"instance": "faulty-gw", "shutdown_grace_s": 5},
            session=FAST_SESSION,
            store={"url": f"sqlite:{db}?recovery_interval_s=0.05"},
            admin={"listen": "127.0.0.1:0"},
            campaigns=acme_campaigns(),
        ) as gw,
        SmpplibEsme(gw.port, "acme") as esme,
    ):
        yield Rig(sim=sim, gw=gw, esme=esme, db=db)


def move(source: Path, target: Path) -> None:
    source.rename(target)


def chmod(path: Path, mode: int) -> None:
    path.chmod(mode)


def overwrite_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"\x00" * len(SQLITE_MAGIC))


class TestStoreFaults:
    async def test_directory_moved_away_and_back(self, tmp_path: Path) -> None:
        """Directory moved away: MTs get 0x14, a STOP 0x64 (not confirmed, not forwarded),
        /readyz 503 with the reason, store_unavailable logged. Moved back: /readyz 200, the
        SMSC's redelivery of the STOP is stored and confirmed once, and every opt-out
        acknowledged before the fault still refuses MTs with 0x45."""
        async with rig(tmp_path) as r:
            assert await r.stop(SUBSCRIBER) == 0
            assert await r.stop(OTHER_SUBSCRIBER) == 0
            assert await r.mt(SUBSCRIBER) == OPTED_OUT  # from the cache from now on
            assert await r.mt(BYSTANDER, UNGROUPED) == 0
            assert await r.ready_records() == 2

            with structlog.testing.capture_logs() as captured:
                await asyncio.to_thread(move, r.db.parent, tmp_path / "away")
                assert await r.mt(SUBSCRIBER) == STORE_UNAVAILABLE
                assert await r.mt(BYSTANDER, UNGROUPED) == STORE_UNAVAILABLE
                assert await r.stop(THIRD) == ESME_RX_T_APPN
                status, body = await r.readyz()
            assert status == 503
            assert any("was removed or its directory moved away" in p for p in body["problems"])
            down = [e for e in captured if e["event"] == logs.STORE_UNAVAILABLE]
            assert down
            assert down[0]["log_level"] == "error"
            assert "consent.db" in down[0]["error"]
            assert r.esme.mo_texts() == [b"STOP", b"STOP"]  # the refused STOP was not forwarded
            assert not r.db.parent.exists()  # nothing created an empty store in its place

            await asyncio.to_thread(move, tmp_path / "away", r.db.parent)
            await r.store.wait_healthy(WAIT_S)
            assert await r.ready_records() == 2
            assert await r.stop(THIRD) == 0  # the SMSC's redelivery
            assert await wait_texts(r.sim, THIRD, 1) == [OPT_OUT_REPLY]
            for number in (SUBSCRIBER, OTHER_SUBSCRIBER, THIRD):
                assert await r.mt(number) == OPTED_OUT
            await r.esme.submit(BYSTANDER, "marker", source=UNGROUPED)
            await r.sim.wait_for(lambda msgs: msgs[-1].text == "marker", timeout=WAIT_S)
            assert texts_to(r.sim, THIRD) == [OPT_OUT_REPLY]
            assert r.esme.mo_texts() == [b"STOP", b"STOP", b"STOP"]
            assert (await r.readyz())[1]["store"] == {"records": 3}

    async def test_header_overwritten(self, tmp_path: Path) -> None:
        """The file's header overwritten under the running daemon: the MT and the MO are both
        answered, with the temporary statuses, and /readyz says the file is corrupt."""
        async with rig(tmp_path) as r:
            assert await r.stop(SUBSCRIBER) == 0
            assert await r.mt(SUBSCRIBER) == OPTED_OUT
            await asyncio.to_thread(overwrite_header, r.db)
            async with asyncio.timeout(WAIT_S):  # answered, not left hanging
                assert await r.mt(SUBSCRIBER) == STORE_UNAVAILABLE
                assert await r.mt(BYSTANDER, UNGROUPED) == STORE_UNAVAILABLE
                assert await r.stop(OTHER_SUBSCRIBER) == ESME_RX_T_APPN
            status, body = await r.readyz()
            assert status == 503
            assert any("the SQLite header was overwritten" in p for p in body["problems"])
            assert r.esme.mo_texts() == [b"STOP"]

    async def test_read_only_file(self, tmp_path: Path) -> None:
        """chmod a-w (refused for root too): temporary statuses and /readyz 503; writable
        again: the store recovers, the redelivered STOP is stored, nothing acknowledged lost."""
        async with rig(tmp_path) as r:
            assert await r.stop(SUBSCRIBER) == 0
            await asyncio.to_thread(chmod, r.db, 0o444)
            try:
                assert await r.mt(SUBSCRIBER) == STORE_UNAVAILABLE
                assert await r.stop(OTHER_SUBSCRIBER) == ESME_RX_T_APPN
                status, body = await r.readyz()
                assert status == 503
                assert any("was made read-only" in p for p in body["problems"])
            finally:
                await asyncio.to_thread(chmod, r.db, 0o644)
            await r.store.wait_healthy(WAIT_S)
            assert (await r.readyz())[0] == 200
            assert await r.stop(OTHER_SUBSCRIBER) == 0
            assert await r.mt(SUBSCRIBER) == OPTED_OUT
            assert await r.mt(OTHER_SUBSCRIBER) == OPTED_OUT
            assert await wait_texts(r.sim, OTHER_SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            assert (await r.readyz())[1]["store"] == {"records": 2}
