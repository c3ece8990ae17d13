"""The staff tools' audit writer: records made in worker processes for a large import are the
records made here, in order, whatever the store refused."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from gateway.audit.chain import verify
from gateway.audit.staff import PREPARE_AT, StaffAudit
from gateway.audit.trail import consent_body
from gateway.config import GatewayConfig, parse
from gateway.consent.model import GLOBAL_SCOPE, Actor, ConsentEvent, ConsentState
from gateway.telemetry import logs

CHAIN = {"t", "seq", "prev", "hash"}


def config(tmp_path: Path) -> GatewayConfig:
    return parse(
        {
            "upstream": {"address": "127.0.0.1:2776"},
            "store": {"url": f"sqlite:{tmp_path}/consent.db"},
            "audit": {"path": str(tmp_path / "audit.jsonl"), "fsync": False},
        }
    )


def events(count: int) -> list[ConsentEvent]:
    return [
        ConsentEvent(
            event_id=uuid.uuid4().hex,
            at=1_700_000_000.0 + i,
            subscriber=f"1202{2_000_000 + i}",
            scope=GLOBAL_SCOPE.key,
            state=ConsentState.OPTED_OUT,
            actor=Actor.IMPORT,
            by=f"list.csv:{i + 2}",
            words="[crm] row",
            instance="gw/cli",
        )
        for i in range(count)
    ]


async def test_prepared_records_are_the_ones_made_here(tmp_path: Path) -> None:
    """Workers make the records of 2.5 chunks of changes; the store refuses every 7th (a
    conflict): the trail holds exactly the stored ones, in order, as consent_body makes them,
    under the same pseudonym key, and the chain verifies."""
    logs.set_pseudonyms(logs.Pseudonyms(b"staff-audit-test-key", 0))
    planned = events(PREPARE_AT * 3)
    stored = [e for i, e in enumerate(planned) if i % 7 != 3]
    audit = StaffAudit(config(tmp_path))
    audit.prepare(planned)
    assert audit._pool is not None  # the workers really made them
    await audit.record(stored)
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert verify(lines).ok
    records = [json.loads(line) for line in lines[1:]]
    assert len(records) == len(stored)
    for record, event in zip(records, stored, strict=True):
        assert {k: v for k, v in record.items() if k not in CHAIN} == consent_body(event)


async def test_few_changes_or_no_pool_are_made_here(tmp_path: Path) -> None:
    """Below PREPARE_AT nothing starts; records not prepared (here: all) are made at write."""
    few = events(10)
    audit = StaffAudit(config(tmp_path))
    audit.prepare(few)
    assert audit._pool is None
    await audit.record(few)
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines(keepends=True)
    assert verify(lines).ok
    assert [json.loads(line)["event_id"] for line in lines[1:]] == [e.event_id for e in few]
