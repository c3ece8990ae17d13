"""The audit trail's hash chain on a real file: each kind of tampering is found and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.audit.chain import Head, verify
from gateway.audit.trail import AuditFile
from gateway.telemetry import logs


def _trail(tmp_path: Path, n: int = 5) -> Path:
    path = tmp_path / "audit.jsonl"
    file = AuditFile(str(path), fsync=False, instance="gw1")
    file.open()
    for i in range(n):
        file.append([{"kind": "consent", "event_id": f"e{i}", "state": "opted_out"}])
    file.close()
    return path


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_a_whole_chain_verifies(tmp_path: Path) -> None:
    verdict = verify(_lines(_trail(tmp_path)))
    assert verdict.ok
    assert verdict.records == 6


def test_a_changed_record_is_named(tmp_path: Path) -> None:
    lines = _lines(_trail(tmp_path))
    lines[3] = lines[3].replace(b"opted_out", b"opted_in")
    verdict = verify(lines)
    assert verdict.finding is not None
    assert verdict.finding.line == 4
    assert "changed" in verdict.finding.problem


def test_a_removed_record_is_named(tmp_path: Path) -> None:
    lines = _lines(_trail(tmp_path))
    del lines[2]
    verdict = verify(lines)
    assert verdict.finding is not None
    assert verdict.finding.line == 3
    assert "removed" in verdict.finding.problem


def test_reordered_records_are_named(tmp_path: Path) -> None:
    lines = _lines(_trail(tmp_path))
    lines[2], lines[3] = lines[3], lines[2]
    verdict = verify(lines)
    assert verdict.finding is not None
    assert verdict.finding.line == 3


def test_an_inserted_record_is_named(tmp_path: Path) -> None:
    lines = _lines(_trail(tmp_path))
    forged = json.loads(lines[2])
    forged["event_id"] = "forged"
    lines.insert(3, json.dumps(forged).encode() + b"\n")
    verdict = verify(lines)
    assert verdict.finding is not None
    assert verdict.finding.line == 4


def test_a_consistent_rewrite_is_caught_by_a_logged_head(tmp_path: Path) -> None:
    """Rewriting from some record on, with every hash recomputed, passes on its own; the head
    the gateway logged for the original file does not match it."""
    path = _trail(tmp_path)
    logged = verify(_lines(path)).head
    rewritten = tmp_path / "rewritten.jsonl"
    file = AuditFile(str(rewritten), fsync=False, instance="gw1")
    file.open()
    for i in range(5):
        file.append([{"kind": "consent", "event_id": f"e{i}", "state": "opted_in"}])
    file.close()
    assert verify(_lines(rewritten)).ok
    verdict = verify(_lines(rewritten), [logged])
    assert verdict.finding is not None
    assert "rewritten" in verdict.finding.problem


def test_records_cut_off_the_end_are_caught_by_a_logged_head(tmp_path: Path) -> None:
    lines = _lines(_trail(tmp_path))
    head = verify(lines).head
    verdict = verify(lines[:-2], [head])
    assert verdict.finding is not None
    assert "cut off" in verdict.finding.problem


def test_two_writers_share_one_chain(tmp_path: Path) -> None:
    """The daemon and the CLI append to one file: each resumes from what the other wrote."""
    path = str(tmp_path / "audit.jsonl")
    a = AuditFile(path, fsync=False, instance="gw1")
    b = AuditFile(path, fsync=False, instance="gw1")
    a.open()
    b.open()
    for i in range(10):
        (a if i % 2 else b).append([{"kind": "consent", "event_id": f"e{i}"}])
    a.close()
    b.close()
    assert verify(Path(path).read_bytes().splitlines(keepends=True)).records == 11


def test_head_parses_what_it_prints() -> None:
    head = Head(7, "a" * 64)
    assert Head.parse(str(head)) == head
    with pytest.raises(ValueError, match="chain head"):
        Head.parse("7:abc")


def test_pseudonyms_cannot_be_reversed_without_the_key() -> None:
    """Trying every number of a range finds the number only with the key."""
    number = "15552220042"
    keyed = logs.Pseudonyms(b"k" * 32)
    shown = keyed(number)
    assert "2220042" not in shown
    assert "42" not in shown.split("#")[0]
    candidates = [f"155522200{i:02d}" for i in range(100)]
    assert [c for c in candidates if keyed(c) == shown] == [number]
    for guess_key in (b"", b"k" * 31, b"guess" * 8):
        assert [c for c in candidates if logs.Pseudonyms(guess_key)(c) == shown] == []
    assert logs.Pseudonyms(b"k" * 32, show_digits=2)(number).startswith("…42#")
