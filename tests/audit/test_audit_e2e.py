"""The audit trail end to end: a STOP through a running gateway, a staff change from the CLI in
another process, a flood of refused MTs, two instances on one Redis; ``audit verify`` proves the
chains whole and finds a store changed behind the gateway's back."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.consent.model import GLOBAL_SCOPE, Actor, ConsentEvent, ConsentState
from gateway.store.factory import open_store
from tests.support.consent import (
    NUMBER_1,
    OTHER_SUBSCRIBER,
    ROOT,
    SUBSCRIBER,
    WAIT_S,
    SmpplibEsme,
    acme_campaigns,
    consent_gateway,
    consent_rig,
    simulator,
    to_toml,
)
from tests.support.redis_server import RedisServer

OPTED_OUT = 0x45


def records(path: Path) -> list[dict[str, Any]]:
    """The trail's records ([] before the file exists)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in data.splitlines()]


async def wait_records(
    path: Path, condition: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """The trail's records once ``condition`` holds for them (polled: another process writes)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        found = records(path)
        if condition(found):
            return found
        assert time.monotonic() < deadline, f"audit trail never got there: {found}"
        await asyncio.sleep(0.05)


def consent_records(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in found if r["kind"] == "consent"]


def refusals_of(found: list[dict[str, Any]], subscriber: str) -> list[dict[str, Any]]:
    """The mt_refused records of one subscriber (as its pseudonym)."""
    return [r for r in found if r["kind"] == "mt_refused" and r["subscriber"] == subscriber]


async def cli(*args: str) -> tuple[int, str, str]:
    """``python -m gateway ...`` in its own process, as staff run it beside the daemon."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_config(path: Path, store_url: str, audit: Path, instance: str = "staff") -> Path:
    path.write_text(
        to_toml(
            {
                "gateway": {"instance": instance},
                "upstream": {"address": "127.0.0.1:1"},
                "store": {"url": store_url},
                "audit": {"path": str(audit), "fsync": False},
                "campaigns": acme_campaigns(),
            }
        )
    )
    return path


def audit_section(path: Path, **more: Any) -> dict[str, Any]:
    return {"path": str(path), "fsync": False, **more}


class TestOneGatewayOnSqlite:
    async def test_stop_cli_change_and_refusals_are_in_one_verified_chain(
        self, tmp_path: Path
    ) -> None:
        """A STOP, a flood of refused MTs and a staff change from the CLI land in one chain
        that verifies, exports per number, and names a store changed behind its back."""
        trail = tmp_path / "audit.jsonl"
        # One interval for the whole run: the flood's refusals beyond the burst are summed
        # into one record at the interval's end, here the shutdown (a short interval made
        # that depend on how fast 40 MTs went: a tick in the middle split them in two).
        async with consent_rig(
            tmp_path, audit=audit_section(trail, refusal_burst=3, refusal_interval_s=3600)
        ) as rig:
            assert await rig.mo("STOP") == 0
            found = await wait_records(trail, lambda f: len(consent_records(f)) >= 1)
            (stop,) = consent_records(found)
            assert stop["state"] == "opted_out"
            assert stop["actor"] == "keyword"
            assert stop["instance"] == "test-gw"
            assert SUBSCRIBER not in trail.read_text()  # the number only as its pseudonym
            assert trail.stat().st_mode & 0o777 == 0o600

            # A flood of MTs to the opted-out number: the first 3 are written one by one.
            for _ in range(40):
                assert await rig.mt(SUBSCRIBER) == OPTED_OUT
            await wait_records(trail, lambda f: len(refusals_of(f, stop["subscriber"])) >= 3)

            # Staff opt another number out from the CLI, in another process, meanwhile.
            config = write_config(tmp_path / "staff.toml", rig.store_url, trail)
            code, _out, err = await cli(
                "consent",
                "opt-out",
                "--config",
                str(config),
                OTHER_SUBSCRIBER,
                "--reason",
                "asked by phone",
                "--actor",
                "alice",
            )
            assert code == 0, err
            found = await wait_records(trail, lambda f: len(consent_records(f)) >= 2)
            staff = consent_records(found)[1]
            assert (staff["by"], staff["actor"], staff["instance"]) == (
                "alice",
                "admin",
                "staff/cli",
            )
            assert await rig.mt(OTHER_SUBSCRIBER) == OPTED_OUT  # the gateway enforces it too

        # The flood: 3 records, then one with the count of the other 37.
        found = records(trail)
        refused = refusals_of(found, stop["subscriber"])
        assert [r["count"] for r in refused] == [1, 1, 1, 37]
        assert {r["reason"] for r in refused} == {"opted_out"}
        assert "since" in refused[-1]
        (other,) = refusals_of(found, staff["subscriber"])
        assert (other["count"], other["reason"]) == (1, "opted_out")

        # Both writers share one chain; it verifies, alone and against the store.
        code, out, err = await cli("audit", "verify", "--config", str(config), "--store", "--json")
        assert code == 0, (out, err)
        report = json.loads(out)
        assert report["ok"] is True
        assert report["store_problems"] == []
        (checked,) = report["files"]
        assert checked["records"] == len(records(trail))

        # The export for the subscriber holds its STOP and its refusals, not the other number's.
        code, out, err = await cli(
            "audit", "export", "--config", str(config), "--number", SUBSCRIBER
        )
        assert code == 0, err
        exported = json.loads(out)["files"][0]["records"]
        assert [r["kind"] for r in exported] == ["consent"] + ["mt_refused"] * 4

        # The store changed behind the gateway's back: the STOP turned into an opt-in.
        with sqlite3.connect(tmp_path / "consent.db") as db:
            db.execute("DROP TRIGGER events_no_update")
            db.execute("UPDATE events SET body = replace(body, 'opted_out', 'opted_in')")
        code, out, _err = await cli("audit", "verify", "--config", str(config), "--store")
        assert code == 1
        assert "differs from its audit record" in out
        assert "(changed in the store)" in out

    async def test_a_changed_trail_line_is_named(self, tmp_path: Path) -> None:
        trail = tmp_path / "audit.jsonl"
        async with consent_rig(tmp_path, audit=audit_section(trail)) as rig:
            assert await rig.mo("STOP") == 0
            await wait_records(trail, lambda f: len(consent_records(f)) >= 1)
        lines = trail.read_bytes().splitlines(keepends=True)
        index = next(i for i, line in enumerate(lines) if b'"opted_out"' in line)
        lines[index] = lines[index].replace(b'"opted_out"', b'"opted_in"')
        trail.write_bytes(b"".join(lines))
        code, out, _err = await cli("audit", "verify", str(trail))
        assert code == 1
        assert f"line {index + 1}" in out
        assert "changed" in out


@pytest.mark.redis
class TestTwoGatewaysOnRedis:
    async def test_each_instance_has_its_chain_and_an_unaudited_event_is_found(
        self, tmp_path: Path, redis_server: RedisServer
    ) -> None:
        url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"
        trail_a, trail_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
        async with (
            simulator() as sim,
            consent_gateway(
                sim.port,
                url,
                campaigns=acme_campaigns(),
                instance="gw-a",
                audit=audit_section(trail_a),
                privacy={"key": "k" * 32},
            ) as a,
            consent_gateway(
                sim.port,
                url,
                campaigns=acme_campaigns(),
                instance="gw-b",
                audit=audit_section(trail_b),
                privacy={"key": "k" * 32},
            ) as b,
            SmpplibEsme(a.port, "acme"),
            SmpplibEsme(b.port, "acme", bind="transmitter") as via_b,
        ):
            for text in ("STOP", "START"):
                status = await sim.send_mo(
                    source=SUBSCRIBER, destination=NUMBER_1, text=text, system_id="acme"
                )
                assert status == 0
            await wait_records(trail_a, lambda f: len(consent_records(f)) >= 2)
            assert await via_b.submit(SUBSCRIBER, "hello", source=NUMBER_1) == 0
            status = await sim.send_mo(
                source=OTHER_SUBSCRIBER, destination=NUMBER_1, text="STOP", system_id="acme"
            )
            assert status == 0
            await wait_records(trail_a, lambda f: len(consent_records(f)) >= 3)
            assert await via_b.submit(OTHER_SUBSCRIBER, "hi", source=NUMBER_1) == OPTED_OUT
            await wait_records(trail_b, lambda f: any(r["kind"] == "mt_refused" for r in f))

        states = [r["state"] for r in consent_records(records(trail_a))]
        assert states == ["opted_out", "opted_in", "opted_out"]
        assert consent_records(records(trail_b)) == []
        config_text = to_toml(
            {
                "gateway": {"instance": "staff"},
                "upstream": {"address": "127.0.0.1:1"},
                "store": {"url": url},
                "audit": {"path": str(trail_a)},
                "privacy": {"key": "k" * 32},
                "campaigns": acme_campaigns(),
            }
        )
        config = tmp_path / "staff.toml"
        config.write_text(config_text)
        code, out, err = await cli(
            "audit", "verify", str(trail_a), str(trail_b), "--config", str(config), "--store"
        )
        assert code == 0, (out, err)
        assert out.count(": OK,") == 2

        # An event written straight into the store, past every gateway.
        store = await open_store(url, instance="intruder")
        try:
            event = ConsentEvent(
                event_id=uuid.uuid4().hex,
                at=time.time(),
                subscriber=OTHER_SUBSCRIBER,
                scope=GLOBAL_SCOPE.key,
                state=ConsentState.OPTED_IN,
                actor=Actor.API,
            )
            assert await store.append(event)
        finally:
            await store.close()
        code, out, _err = await cli(
            "audit", "verify", str(trail_a), str(trail_b), "--config", str(config), "--store"
        )
        assert code == 1
        assert f"event {event.event_id}" in out
        assert "is in no audit file given" in out
