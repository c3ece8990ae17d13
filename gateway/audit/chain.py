"""The audit trail's hash chain: how a record is sealed and how a file of them is checked.

Pure: bytes and dicts in, records and findings out; the writer (``gateway.audit.trail``) and
the CLI do the I/O.

A record is one JSON object per line. Every record carries ``seq`` (0, 1, 2, ... in the file),
``prev`` (the ``hash`` of the record before it; 64 zeros for the first) and ``hash``: the
SHA-256 of ``PREV\nSEQ\n`` followed by the canonical JSON of the record's other fields (keys
sorted, no spaces, UTF-8). Those canonical bytes do not depend on the chain, so they can be
made anywhere (worker processes, for a large import) and sealed in order cheaply. Changing a
byte of a record breaks its own hash; removing, inserting or reordering records breaks the
``seq`` sequence and the next record's ``prev``. Rewriting the whole file consistently is only
caught against a head kept elsewhere: the gateway logs the chain head (``audit_chain_head``:
seq and hash) at an interval, so a SIEM copy of the logs proves what the file held then
(``verify(..., heads=...)``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

GENESIS: Final = "0" * 64
FORMAT: Final = 1  # the "v" of the first record; a newer writer may add fields, never change these


CHAIN_FIELDS: Final = frozenset({"seq", "prev", "hash"})


def canonical(body: Mapping[str, Any]) -> bytes:
    """A record body's canonical bytes: its fields but the chain's (``seq``, ``prev``,
    ``hash``), keys sorted, no spaces, UTF-8."""
    if not CHAIN_FIELDS.isdisjoint(body):
        body = {k: v for k, v in body.items() if k not in CHAIN_FIELDS}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal_hash(prev: str, seq: int, covered: bytes) -> str:
    return hashlib.sha256(f"{prev}\n{seq}\n".encode() + covered).hexdigest()


def seal(head: Head, covered: bytes) -> tuple[bytes, Head]:
    """The line of the record whose body's canonical bytes are ``covered`` (a JSON object),
    following ``head``; and the new head."""
    seq = head.next_seq
    digest = seal_hash(head.hash, seq, covered)
    comma = "," if len(covered) > 2 else ""  # "{}": no field before the chain's
    tail = f'{comma}"seq":{seq},"prev":"{head.hash}","hash":"{digest}"}}\n'.encode()
    return covered[:-1] + tail, Head(seq, digest)


@dataclass(frozen=True, slots=True)
class Head:
    """Where a chain ends: the last record's sequence number and hash."""

    seq: int
    hash: str

    @property
    def next_seq(self) -> int:
        return self.seq + 1

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"

    @classmethod
    def parse(cls, text: str) -> Head:
        """``SEQ:HASH`` as ``audit_chain_head`` log lines and ``audit verify`` print it."""
        seq, sep, digest = text.strip().partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise ValueError(f"not a chain head (SEQ:HASH): {text!r}")
        return cls(int(seq), digest.lower())


EMPTY: Final = Head(-1, GENESIS)


@dataclass(frozen=True, slots=True)
class Finding:
    """The first thing wrong with a file: where (1-based line) and what."""

    line: int
    seq: int | None
    problem: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Verdict:
    records: int
    head: Head
    finding: Finding | None  # None: the chain is whole
    heads_matched: int = 0  # heads from elsewhere (logs) found in the chain

    @property
    def ok(self) -> bool:
        return self.finding is None


def head_of_line(line: bytes) -> Head | None:
    """The head a line's record leaves, without checking it (the writer's fast resume)."""
    try:
        record = json.loads(line)
        return Head(int(record["seq"]), str(record["hash"]))
    except (ValueError, KeyError, TypeError):
        return None


def verify(lines: Iterable[bytes], heads: Iterable[Head] = ()) -> Verdict:
    """Check a chain file's lines in order; stop at the first bad record and name it.

    ``heads`` are chain heads recorded elsewhere (the ``audit_chain_head`` log lines): each
    must be a record of this file, with that hash; a head beyond the end means records were
    cut off the end, a different hash that the file was rewritten."""
    expected = {h.seq: h.hash for h in heads}
    head = EMPTY
    count = 0
    matched = 0
    line_no = 0
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            return _bad(count, head, line_no, None, "an empty line (a record removed or cut)")
        if not line.endswith(b"\n"):
            return _bad(count, head, line_no, None, "the last record is cut off (no newline)")
        try:
            record = json.loads(line)
        except ValueError:
            return _bad(count, head, line_no, None, "not a JSON record")
        if not isinstance(record, dict):
            return _bad(count, head, line_no, None, "not a JSON object")
        seq = record.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            return _bad(count, head, line_no, None, "no sequence number")
        if seq != head.next_seq:
            if seq > head.next_seq:
                what = f"seq {seq} follows {head.seq}: {seq - head.next_seq} record(s) removed"
            else:
                what = f"seq {seq} follows {head.seq}: a record inserted or moved"
            return _bad(count, head, line_no, seq, what)
        if record.get("prev") != head.hash:
            return _bad(count, head, line_no, seq, "prev is not the hash of the record before")
        digest = record.get("hash")
        if digest != seal_hash(head.hash, seq, canonical(record)):
            return _bad(count, head, line_no, seq, "its content does not match its hash (changed)")
        head = Head(seq, str(digest))
        count += 1
        want = expected.pop(seq, None)
        if want is not None:
            if want != head.hash:
                return _bad(
                    count, head, line_no, seq, "differs from the head logged for it (rewritten)"
                )
            matched += 1
    if expected:
        seq = min(expected)
        return _bad(
            count,
            head,
            line_no + 1,
            seq,
            f"a head was logged for seq {seq}, but the file ends at {head.seq} (records cut off)",
        )
    return Verdict(count, head, None, matched)


def _bad(count: int, head: Head, line: int, seq: int | None, problem: str) -> Verdict:
    return Verdict(count, head, Finding(line, seq, problem))
