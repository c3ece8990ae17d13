"""The daemon's audit trail on a real file: a flood of refused MTs is written as its first few
records and one record with the count of the rest, at each interval's end and at shutdown."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from gateway.audit.chain import verify
from gateway.audit.trail import AuditFile, AuditTrail
from tests.support.consent import WAIT_S

SUBSCRIBER = "15551234567"


def refusals(path: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in path.read_bytes().splitlines()]
    return [r for r in records if r["kind"] == "mt_refused"]


def refuse(trail: AuditTrail, times: int) -> None:
    """``times`` refused MTs of one kind, all within one turn of the loop (so one interval)."""
    for _ in range(times):
        trail.mt_refused(
            subscriber=SUBSCRIBER,
            reason="opted_out",
            status=0x45,
            account="acme",
            campaign="acme",
            sender="15550100001",
        )


async def wait_counts(path: Path, wanted: list[int]) -> None:
    """Until the refusal records' counts are ``wanted`` (the writer is a thread)."""
    async with asyncio.timeout(WAIT_S):
        while [r["count"] for r in refusals(path)] != wanted:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # another thread writes the file: nothing to await


async def test_the_rest_of_a_flood_is_summed_at_the_intervals_end(tmp_path: Path) -> None:
    """The first 3 refusals of an interval are written one by one, the other 7 as one record
    with their count when the interval ends; the next interval starts counting again."""
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(AuditFile(str(path), fsync=False), refusal_burst=3, refusal_interval_s=0.05)
    await trail.start()
    try:
        refuse(trail, 10)
        await wait_counts(path, [1, 1, 1, 7])
        refuse(trail, 4)
        await wait_counts(path, [1, 1, 1, 7, 1, 1, 1, 1])
    finally:
        await trail.close()
    summed = [r for r in refusals(path) if "since" in r]
    assert [r["count"] for r in summed] == [7, 1]
    assert verify(path.read_bytes().splitlines(keepends=True)).ok


async def test_what_is_counted_is_written_at_shutdown(tmp_path: Path) -> None:
    """Refusals counted but not yet written when the trail closes are written as one record."""
    path = tmp_path / "audit.jsonl"
    trail = AuditTrail(AuditFile(str(path), fsync=False), refusal_burst=3, refusal_interval_s=3600)
    await trail.start()
    try:
        refuse(trail, 5)
        await wait_counts(path, [1, 1, 1])
    finally:
        await trail.close()
    assert [r["count"] for r in refusals(path)] == [1, 1, 1, 2]
