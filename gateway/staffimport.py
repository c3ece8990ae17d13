"""``smpp-gateway consent import FILE`` / ``consent export``: consent lists as CSV.

The file: a header line, then one row per consent fact, columns (any order, more allowed and
ignored; names compared case-insensitively)::

    number,scope,state,time,source,note

- ``number``: the subscriber, in any form ``consent opt-out NUMBER`` takes (``+`` means
  international, anything else is read with ``consent.default_country``), normalised as the
  relay normalises destinations (``gateway.consent.numbers``). Required.
- ``scope``: a scope key, ``global:*`` (everything; also ``global``), ``campaign:NAME``,
  ``account:SYSTEM_ID`` (keyed as ``consent.account_match`` keys it), ``number:SENDER``
  (normalised) or ``list:CAMPAIGN/LIST``; empty or absent: ``--scope`` (default ``global:*``).
- ``state``: ``opted_out``, ``opted_in`` or ``blocked`` (blocks are ``global:*`` only);
  ``--state-map`` adds other words; empty or absent: ``--state``.
- ``time``: when it happened, ISO 8601 (``2024-05-01T12:00:00Z``; without an offset: UTC; a
  date alone: its midnight UTC) or seconds since the epoch; empty or absent: now.
- ``source``, ``note``: free text, recorded as the event's words (``[source] note``).

``--map FIELD=COLUMN`` reads a field from a column of another name (another platform's export:
``--map number=Phone,state=Status``), ``--no-header`` reads a file without a header line whose
columns are the ones above in that order (a plain list of numbers is the first column only).

What an import does (``plan``, pure; ``import_file``, the store part):

- Every row is checked first; a bad row is reported with its line number and reason and
  skipped (the header is line 1). The others are applied in one all-or-nothing step.
- Per (number, scope) the newest row (by time, then line) counts; the others in the file are
  superseded. A row changes nothing where the store already has that state, where the store's
  record is newer than the row's time (an old export never undoes a newer STOP or START), and
  for an opt-out of a blocked number (blocked is opted out of everything; an import never
  unblocks). An opt-in of a number that is blocked (in the store or by the file) is a bad row:
  an opt-in never lifts a block.
- Each change is an event with actor ``import``, ``by`` ``FILE:LINE`` (the file's name, not its
  directory) and the row's time, planned against the record it replaces: if that record changed
  while the import ran (a STOP meanwhile), the newer change stays (``ImportChange``). So an
  import run twice changes nothing the second time, and a retry after a failure applies only
  what is still missing.
- All or nothing: see ``ConsentStore.import_changes`` (SQLite: one transaction; Redis: staged,
  committed, applied; an import cut off after its commit point is completed by the next
  ``consent import`` before anything else).

Export writes the same header, one row per current record ordered by (number, scope):
``+DIGITS`` for numbers (digits alone for short codes), the scope key, the state, the record's
time (ISO 8601 UTC, whole seconds), ``source`` the actor of the last event (with ``:BY`` where
it has one: ``keyword``, ``admin:alice``, ``import:list.csv:17``) and ``note`` its words (a
subscriber's words, a staff reason). Imported elsewhere it gives the same numbers, scopes,
states and times; the note then carries the source (``[keyword] STOP``).

Exit codes (PRODUCT.md section 7): 0 when no row was bad; 1 when some rows were bad and
skipped (the good ones were applied), or when the store failed (nothing was applied); 2 for a
usage error, a file that cannot be read or a header without the columns needed (nothing read).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import gc
import json
import math
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import IO, Any, Final

from tqdm import tqdm

from gateway.config import GatewayConfig
from gateway.consent.campaign import AccountMatch, account_key
from gateway.consent.model import (
    GLOBAL_SCOPE,
    Actor,
    AddressKind,
    ConsentEvent,
    ConsentRecord,
    ConsentState,
    Scope,
    ScopeKind,
)
from gateway.consent.numbers import normalise
from gateway.store.base import (
    ConsentStore,
    ImportChange,
    StoreError,
    StoreNotFoundError,
)
from gateway.telemetry import logs

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

FIELDS: Final = ("number", "scope", "state", "time", "source", "note")
HEADER: Final = FIELDS
STATES: Final = {
    "opted_out": ConsentState.OPTED_OUT,
    "opted_in": ConsentState.OPTED_IN,
    "blocked": ConsentState.BLOCKED,
}
MAX_BAD_SHOWN: Final = 100  # bad rows named on stderr; the rest are counted
FUTURE_SKEW_S: Final = 300.0  # a row's time may be this far ahead of the clock
_PARALLEL_AT: Final = 20_000  # distinct numbers from which normalising uses every core
_NORMALISE_CHUNK: Final = 5_000
_CHECK_CHUNK: Final = 10_000  # subscribers per current_many call (a progress step)
_EXPORT_CHUNK: Final = 2_000  # records whose last events are read at once

log = logs.get_logger()


class ImportUsageError(Exception):
    """The options or the file cannot be used at all (exit 2); nothing was read into the store."""


# --- options ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ImportOptions:
    """How rows are read: where the fields are, the defaults, how numbers are normalised."""

    mapping: Mapping[str, str] = dataclasses.field(default_factory=dict)  # field -> column
    state_map: Mapping[str, ConsentState] = dataclasses.field(default_factory=dict)
    default_state: ConsentState | None = None
    default_scope: str = GLOBAL_SCOPE.key
    header: bool = True
    default_country: str = "US"
    short_code_max_length: int = 8
    account_match: AccountMatch = AccountMatch.FOLD


def _pairs(values: Sequence[str] | None, what: str) -> list[tuple[str, str]]:
    """``A=B,C=D`` (repeatable) as pairs; a column name may not contain a comma here (give
    such a mapping in its own ``--map``)."""
    found: list[tuple[str, str]] = []
    for value in values or ():
        parts = [value] if value.count("=") == 1 else value.split(",")
        for part in parts:
            key, sep, target = part.partition("=")
            if not sep or not key.strip() or not target.strip():
                raise ImportUsageError(f"{what}: expected NAME=VALUE, got {part.strip()!r}")
            found.append((key.strip(), target.strip()))
    return found


def parse_mapping(values: Sequence[str] | None) -> dict[str, str]:
    """``--map number=Phone,state=Status`` -> {"number": "Phone", "state": "Status"}."""
    mapping: dict[str, str] = {}
    for field, column in _pairs(values, "--map"):
        name = field.casefold()
        if name not in FIELDS:
            raise ImportUsageError(f"--map: unknown field {field!r} (fields: {', '.join(FIELDS)})")
        mapping[name] = column
    return mapping


def parse_state(text: str, what: str) -> ConsentState:
    state = STATES.get(text.strip().casefold())
    if state is None:
        raise ImportUsageError(f"{what}: expected opted_out, opted_in or blocked, got {text!r}")
    return state


def parse_state_map(values: Sequence[str] | None) -> dict[str, ConsentState]:
    """``--state-map unsubscribed=opted_out,STOP=opted_out``: words of another platform."""
    return {
        word.casefold(): parse_state(state, f"--state-map {word}")
        for word, state in _pairs(values, "--state-map")
    }


# --- rows ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One good row: what it says, normalised (``at`` is None where it gave no time)."""

    line: int
    subscriber: str
    scope: str
    state: ConsentState
    at: float | None
    words: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class BadRow:
    line: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class RawRow:
    """A row as read, before numbers are normalised (that is done for all rows at once)."""

    line: int
    number: str
    scope: str
    state: ConsentState
    at: float | None
    words: str | None


def columns_of(header: Sequence[str] | None, options: ImportOptions) -> dict[str, int]:
    """Where each field is: from the header (and ``--map``), or, without a header, the
    documented order. Raises ImportUsageError when a field needed is not there."""
    if header is None:
        if options.mapping:
            raise ImportUsageError("--map needs a header line (it names the file's columns)")
        columns = {field: index for index, field in enumerate(FIELDS)}
    else:
        names = [cell.strip().casefold() for cell in header]
        columns = {}
        for field in FIELDS:
            wanted = options.mapping.get(field, field).casefold()
            if wanted in names:
                columns[field] = names.index(wanted)
            elif field in options.mapping:
                raise ImportUsageError(
                    f"--map {field}={options.mapping[field]}: the header has no such column"
                    f" (it has: {', '.join(c.strip() for c in header)})"
                )
    missing = [f for f in ("number", "state") if f not in columns and not _has_default(f, options)]
    if missing:
        shown = ", ".join(c.strip() for c in header) if header is not None else ""
        hint = " (a file without a state column needs --state)" if "state" in missing else ""
        first_line = (
            "; the first line is read as the header: a list without one needs --no-header"
            if "number" in missing
            else ""
        )
        raise ImportUsageError(
            f"the header has no {' and no '.join(missing)} column{hint}{first_line}"
            f" (it has: {shown or 'nothing'}; --map FIELD=COLUMN names another column)"
        )
    return columns


def _has_default(field: str, options: ImportOptions) -> bool:
    return field == "state" and options.default_state is not None


def parse_time(text: str, now: float) -> float | str | None:
    """A row's time as epoch seconds, None for an empty cell, or the reason it is bad."""
    text = text.strip()
    if not text:
        return None
    try:
        at = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return f"time {text!r} is not ISO 8601 (2024-05-01T12:00:00Z) or epoch seconds"
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        at = moment.timestamp()
    else:
        if not math.isfinite(at) or at < 0:
            return f"time {text!r} is not a time"
        if at > 1e11:
            return f"time {text!r}: epoch seconds expected (this looks like milliseconds)"
    if at > now + FUTURE_SKEW_S:
        return f"time {text!r} is in the future"
    return at


def parse_scope(text: str, options: ImportOptions) -> str:
    """A scope key as the relay keys it; ValueError with the reason when it is not one."""
    text = text.strip()
    if not text:
        return options.default_scope
    if text.casefold() in ("global", "global:*", "*"):
        return GLOBAL_SCOPE.key
    kind_text, sep, name = text.partition(":")
    try:
        kind = ScopeKind(kind_text.strip().casefold())
    except ValueError:
        kind = None
    name = name.strip()
    if not sep or kind is None or not name or kind is ScopeKind.GLOBAL:
        raise ValueError(
            f"scope {text!r} is not global:*, campaign:NAME, account:ID, number:SENDER"
            " or list:CAMPAIGN/LIST"
        )
    if kind is ScopeKind.ACCOUNT:
        name = account_key(name, options.account_match)
    elif kind is ScopeKind.NUMBER:
        sender = normalise(
            name,
            1 if name.startswith("+") else 0,
            1,
            options.default_country,
            short_code_max_length=options.short_code_max_length,
        )
        if sender is None or sender.kind is AddressKind.UNREADABLE:
            raise ValueError(f"scope {text!r}: {name!r} is not a sender number or name")
        name = sender.value
    elif kind is ScopeKind.LIST:
        campaign, slash, list_name = name.partition("/")
        if not slash or not campaign.strip() or not list_name.strip():
            raise ValueError(f"scope {text!r}: a list scope is list:CAMPAIGN/LIST")
        name = f"{campaign.strip()}/{list_name.strip()}"
    return Scope(kind, name).key


def parse_row(
    cells: Sequence[str], line: int, columns: Mapping[str, int], options: ImportOptions, now: float
) -> RawRow | BadRow:
    """One data row (its number still as written)."""

    def cell(field: str) -> str:
        index = columns.get(field)
        return cells[index].strip() if index is not None and index < len(cells) else ""

    number = cell("number")
    if not number:
        return BadRow(line, "no number")
    state_text = cell("state")
    if state_text:
        state = options.state_map.get(state_text.casefold()) or STATES.get(state_text.casefold())
        if state is None:
            known = ", ".join([*STATES, *options.state_map])
            return BadRow(line, f"state {state_text!r} is none of {known} (--state-map adds words)")
    elif options.default_state is not None:
        state = options.default_state
    else:
        return BadRow(line, "no state (--state gives one for rows without)")
    try:
        scope = parse_scope(cell("scope"), options)
    except ValueError as exc:
        return BadRow(line, str(exc))
    if state is ConsentState.BLOCKED and scope != GLOBAL_SCOPE.key:
        return BadRow(line, f"blocked is global: a block cannot be for {scope} alone")
    at = parse_time(cell("time"), now)
    if isinstance(at, str):
        return BadRow(line, at)
    source, note = cell("source"), cell("note")
    if source:
        words: str | None = f"[{source}] {note}" if note else f"[{source}]"
    else:
        words = note or None
    return RawRow(line, number, scope, state, at, words)


def subscriber_of(number: str, default_country: str, short_code_max_length: int) -> str | None:
    """A number as ``consent opt-out NUMBER`` reads it: the subscriber key, or None."""
    text = number.strip()
    address = normalise(
        text,
        1 if text.startswith("+") else 0,
        1,
        default_country,
        short_code_max_length=short_code_max_length,
    )
    if address is None or not address.is_subscriber:
        return None
    return address.value


def _normalise_chunk(numbers: list[str], country: str, short_code_max: int) -> list[str | None]:
    return [subscriber_of(n, country, short_code_max) for n in numbers]


class Normaliser:
    """Each distinct number's subscriber key, worked out while the file is still being read.

    A first sight of a number costs the ``phonenumbers`` parse (tens of microseconds), so once
    a file has more than ``_PARALLEL_AT`` distinct numbers they go, in chunks, to worker
    processes on every core while this process goes on reading; a small file never starts one.
    Without worker processes (a main module that cannot be imported twice, no /dev/shm) the
    same work is done here."""

    def __init__(self, options: ImportOptions, progress: Callable[[int, int], None] | None) -> None:
        self._args = (options.default_country, options.short_code_max_length)
        self._progress = progress
        self.found: dict[str, str | None] = {}
        self._seen: set[str] = set()
        self._pending: list[str] = []
        self._pool: ProcessPoolExecutor | None = None
        self._submitted: list[tuple[list[str], Future[list[str | None]]]] = []
        self._parallel = (os.cpu_count() or 1) > 1

    def add(self, number: str) -> None:
        if number in self._seen:
            return
        self._seen.add(number)
        self._pending.append(number)
        if self._pool is None and len(self._pending) >= _PARALLEL_AT and self._parallel:
            try:
                # spawn: a fresh interpreter, never a fork of this one and its threads.
                self._pool = ProcessPoolExecutor(
                    max_workers=os.cpu_count(), mp_context=multiprocessing.get_context("spawn")
                )
            except (OSError, RuntimeError):
                self._parallel = False
        if self._pool is not None and len(self._pending) >= _NORMALISE_CHUNK:
            self._submit()

    def _submit(self) -> None:
        part, self._pending = self._pending, []
        assert self._pool is not None
        try:
            self._submitted.append((part, self._pool.submit(_normalise_chunk, part, *self._args)))
        except (BrokenProcessPool, RuntimeError):
            self._local(part)

    def _local(self, part: list[str]) -> None:
        self.found.update(zip(part, _normalise_chunk(part, *self._args), strict=True))
        if self._progress is not None:
            self._progress(len(part), len(self._seen))

    def close(self) -> None:
        """Stop the worker processes (the file turned out unusable)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def finish(self) -> dict[str, str | None]:
        """Every number added, normalised."""
        try:
            if self._pool is not None and self._pending:
                self._submit()
            for part, future in self._submitted:
                try:
                    results = future.result()
                except (BrokenProcessPool, OSError, RuntimeError):
                    self._local(part)
                    continue
                self.found.update(zip(part, results, strict=True))
                if self._progress is not None:
                    self._progress(len(part), len(self._seen))
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
        for start in range(0, len(self._pending), _NORMALISE_CHUNK):
            self._local(self._pending[start : start + _NORMALISE_CHUNK])
        self._pending = []
        return self.found


def normalise_all(
    numbers: Iterable[str],
    options: ImportOptions,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, str | None]:
    """Each distinct number's subscriber key (see ``Normaliser``)."""
    normaliser = Normaliser(options, progress)
    for number in numbers:
        normaliser.add(number)
    return normaliser.finish()


@dataclasses.dataclass(slots=True)
class ParsedFile:
    rows: list[Row]
    bad: list[BadRow]
    read: int  # data rows (blank lines are not rows)


def read_csv(
    lines: Iterable[str],
    options: ImportOptions,
    now: float,
    *,
    delimiter: str = ",",
    progress: Callable[[str, int, int | None], None] | None = None,
) -> ParsedFile:
    """Read and check every row (no I/O beyond ``lines``). ImportUsageError for a file that
    cannot be read at all (its header, broken quoting)."""
    reader = csv.reader(lines, delimiter=delimiter)
    normaliser = Normaliser(
        options, None if progress is None else lambda n, total: progress("normalising", n, total)
    )
    raw: list[RawRow] = []
    bad: list[BadRow] = []
    read = 0
    columns: dict[str, int] | None = None if options.header else columns_of(None, options)
    line = 1  # where the next record starts
    try:
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue  # a blank line
            if columns is None:
                columns = columns_of(cells, options)
                continue
            read += 1
            parsed = parse_row(cells, start, columns, options, now)
            if isinstance(parsed, BadRow):
                bad.append(parsed)
            else:
                raw.append(parsed)
                normaliser.add(parsed.number)
    except csv.Error as exc:
        normaliser.close()
        raise ImportUsageError(f"line {line}: not CSV: {exc}") from exc
    except BaseException:
        normaliser.close()
        raise
    if columns is None:
        normaliser.close()
        raise ImportUsageError("the file is empty: no header line")
    subscribers = normaliser.finish()
    rows: list[Row] = []
    for r in raw:
        subscriber = subscribers[r.number]
        if subscriber is None:
            bad.append(BadRow(r.line, f"not a phone number: {r.number!r}"))
        else:
            rows.append(Row(r.line, subscriber, r.scope, r.state, r.at, r.words))
    bad.sort(key=lambda b: b.line)
    return ParsedFile(rows=rows, bad=bad, read=read)


# --- the plan (pure) ----------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Plan:
    """What an import will do, decided against the records as they were read."""

    changes: list[ImportChange]
    bad: list[BadRow]  # refused by the rules (an opt-in of a blocked number)
    superseded: int = 0  # an older row of the same number and scope in the file
    same: int = 0  # the store has that already
    older: int = 0  # the store's record is newer than the row
    kept_block: int = 0  # an opt-out of a blocked number: the block stays


def _decided(row: Row, now: float) -> tuple[float, int]:
    return (now if row.at is None else row.at, row.line)


def plan(
    rows: Sequence[Row],
    current: Mapping[str, Mapping[str, ConsentRecord]],
    *,
    now: float,
    source_name: str,
    instance: str,
    new_id: Callable[[], str] = lambda: os.urandom(16).hex(),
) -> Plan:
    """The changes ``rows`` make to the records ``current`` (subscriber -> scope -> record)."""
    winners: dict[tuple[str, str], Row] = {}
    superseded = 0
    for row in rows:
        key = (row.subscriber, row.scope)
        held = winners.get(key)
        if held is None:
            winners[key] = row
            continue
        superseded += 1
        if _decided(row, now) > _decided(held, now):
            winners[key] = row
    result = Plan(changes=[], bad=[], superseded=superseded)

    def applies(row: Row) -> bool | str:
        """True: a change; False: nothing to change; a string: the reason it is refused."""
        records = current.get(row.subscriber, {})
        record = records.get(row.scope)
        if row.at is None:
            # A row without a time is a change made now (as ``consent opt-out`` makes it):
            # nothing to do only where the record has that state and no other scope has a
            # newer, different record that could decide instead.
            if record is None or record.state is not row.state:
                return True
            newer = any(
                other.updated_at >= record.updated_at
                and other.state not in (row.state, ConsentState.UNKNOWN)
                for key, other in records.items()
                if key != row.scope
            )
            if newer:
                return True
            result.same += 1
            return False
        if record is not None and record.state is row.state:
            result.same += 1
            return False
        if record is not None and record.updated_at > row.at:
            result.older += 1
            return False
        return True

    # Who is blocked once the import is done: blocked in the store (an import never unblocks),
    # or by a block in the file that will be applied.
    blocked = {
        subscriber
        for subscriber, records in current.items()
        if (record := records.get(GLOBAL_SCOPE.key)) is not None
        and record.state is ConsentState.BLOCKED
    }
    for (subscriber, scope), row in winners.items():
        if scope == GLOBAL_SCOPE.key and row.state is ConsentState.BLOCKED:
            record = current.get(subscriber, {}).get(scope)
            if record is None or row.at is None or record.updated_at <= row.at:
                blocked.add(subscriber)

    for row in sorted(winners.values(), key=lambda r: r.line):
        if row.subscriber in blocked and row.state is not ConsentState.BLOCKED:
            if row.state is ConsentState.OPTED_IN:
                result.bad.append(
                    BadRow(
                        row.line,
                        f"{row.subscriber} is blocked (in the store or by this file):"
                        " an import never lifts a block",
                    )
                )
                continue
            if row.scope == GLOBAL_SCOPE.key:
                record = current.get(row.subscriber, {}).get(GLOBAL_SCOPE.key)
                if record is not None and record.state is ConsentState.BLOCKED:
                    result.kept_block += 1  # blocked is opted out of everything already
                    continue
        if applies(row) is not True:
            continue
        record = current.get(row.subscriber, {}).get(row.scope)
        event = ConsentEvent(
            event_id=new_id(),
            at=now if row.at is None else row.at,
            subscriber=row.subscriber,
            scope=row.scope,
            state=row.state,
            actor=Actor.IMPORT,
            words=row.words,
            instance=instance,
            by=f"{source_name}:{row.line}",
        )
        expected = None if record is None else record.last_event_id
        result.changes.append(ImportChange(event=event, expected=expected))
    result.bad.sort(key=lambda b: b.line)
    return result


# --- summary ------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class Summary:
    read: int = 0
    changed: int = 0
    unchanged: int = 0
    bad: int = 0
    opted_out: int = 0
    opted_in: int = 0
    blocked: int = 0
    same: int = 0
    older: int = 0
    superseded: int = 0
    kept_block: int = 0
    changed_meanwhile: int = 0
    resumed: int = 0  # events of an earlier, interrupted import completed first (Redis)
    dry_run: bool = False
    seconds: float = 0.0

    def line(self) -> str:
        """The summary line of PRODUCT.md section 7, exactly."""
        return (
            f"{self.read} rows read, {self.changed} changed, {self.unchanged} unchanged,"
            f" {self.bad} bad"
        )

    def details(self) -> str:
        rate = self.read / self.seconds if self.seconds > 0 else 0.0
        head = "dry run, nothing written: would be " if self.dry_run else ""
        return (
            f"{head}{self.opted_out} opted out, {self.opted_in} opted in, {self.blocked} blocked;"
            f" unchanged: {self.same} already so, {self.older} older than the store's record,"
            f" {self.superseded} superseded in the file, {self.kept_block} opt-outs of blocked"
            f" numbers, {self.changed_meanwhile} changed meanwhile;"
            f" {self.seconds:.1f} s ({rate:,.0f} rows/s)"
        )

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- the store part -----------------------------------------------------------------------------


class _Progress:
    """A progress bar on stderr when it is a terminal (tqdm), nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: tqdm[Any] | None = None
        self._stage = ""

    def __call__(self, stage: str, step: int, total: int | None) -> None:
        if not self.enabled:
            return
        if stage != self._stage or self._bar is None:
            self.close()
            self._stage = stage
            unit_scale = stage == "reading"
            self._bar = tqdm(
                total=total,
                desc=stage,
                unit="B" if stage == "reading" else " rows",
                unit_scale=unit_scale,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )
        self._bar.update(step)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _lines(path: str, encoding: str, progress: _Progress) -> Iterator[str]:
    """The file's lines, decoded, counting bytes read for the progress bar."""
    size = os.path.getsize(path) if path != "-" else None
    with open(sys.stdin.fileno() if path == "-" else path, "rb", closefd=path != "-") as file:
        pending = 0
        first = True
        for raw in file:
            text = raw.decode(encoding)
            if first:
                text = text.removeprefix("\ufeff")  # a byte order mark (Excel's UTF-8 CSV)
                first = False
            pending += len(raw)
            if pending >= 1 << 20:
                progress("reading", pending, size)
                pending = 0
            yield text
        if pending:
            progress("reading", pending, size)


def read_file(
    path: str, options: ImportOptions, now: float, *, encoding: str, delimiter: str, bar: _Progress
) -> ParsedFile:
    try:
        return read_csv(
            _lines(path, encoding, bar), options, now, delimiter=delimiter, progress=bar
        )
    except UnicodeDecodeError as exc:
        raise ImportUsageError(
            f"{path}: not {encoding} text ({exc.reason}); see --encoding"
        ) from exc
    except OSError as exc:
        raise ImportUsageError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except LookupError as exc:
        raise ImportUsageError(f"--encoding: {exc}") from exc


async def import_rows(
    store: ConsentStore,
    parsed: ParsedFile,
    *,
    source_name: str,
    instance: str,
    now: float,
    dry_run: bool,
    bar: Callable[[str, int, int | None], None] | None = None,
    before_write: Callable[[Sequence[ConsentEvent]], None] | None = None,
) -> Summary:
    """Plan against the store's records, then apply in one all-or-nothing step.
    ``before_write`` is told the events just before the store writes them (the audit trail
    makes their records meanwhile)."""
    summary = Summary(read=parsed.read, dry_run=dry_run)
    if not dry_run:
        # An earlier import cut off after its commit point is completed first (Redis), so
        # this one is planned against the records as that import left them.
        summary.resumed = (await store.resume_imports()).appended
    subscribers = list(dict.fromkeys(r.subscriber for r in parsed.rows))
    current: dict[str, Mapping[str, ConsentRecord]] = {}
    for start in range(0, len(subscribers), _CHECK_CHUNK):
        part = subscribers[start : start + _CHECK_CHUNK]
        current.update(await store.current_many(part))
        if bar is not None:
            bar("checking", len(part), len(subscribers))
    decided = plan(parsed.rows, current, now=now, source_name=source_name, instance=instance)
    conflicts: frozenset[str] = frozenset()
    if decided.changes and not dry_run:
        if bar is not None:
            bar("writing", 0, len(decided.changes))
        if before_write is not None:
            before_write([c.event for c in decided.changes])
        outcome = await store.import_changes(decided.changes)
        conflicts = outcome.conflicts
        if bar is not None:
            bar("writing", len(decided.changes), len(decided.changes))
    bad = sorted([*parsed.bad, *decided.bad], key=lambda b: b.line)
    parsed.bad[:] = bad
    summary.bad = len(bad)
    for change in decided.changes:
        if change.event.event_id in conflicts:
            continue
        summary.changed += 1
        state = change.event.state
        if state is ConsentState.OPTED_OUT:
            summary.opted_out += 1
        elif state is ConsentState.OPTED_IN:
            summary.opted_in += 1
        else:
            summary.blocked += 1
    summary.same = decided.same
    summary.older = decided.older
    summary.superseded = decided.superseded
    summary.kept_block = decided.kept_block
    summary.changed_meanwhile = len(conflicts)
    summary.unchanged = summary.read - summary.changed - summary.bad
    return summary


def export_number(subscriber: str, short_code_max_length: int) -> str:
    """A subscriber key as export writes it: ``+`` before a number, so that reading it back
    never depends on the default country; a short code's digits alone."""
    return subscriber if len(subscriber) <= short_code_max_length else f"+{subscriber}"


def _export_row(
    record: ConsentRecord, last: ConsentEvent | None, short_code_max_length: int
) -> list[str]:
    source = ""
    note = ""
    if last is not None:
        source = last.actor.value + (f":{last.by}" if last.by else "")
        note = last.words or ""
    return [
        export_number(record.subscriber, short_code_max_length),
        record.scope,
        record.state.value,
        time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.updated_at)),
        source,
        note,
    ]


async def export_csv(
    store: ConsentStore,
    out: IO[str],
    *,
    short_code_max_length: int,
    progress: Callable[[int], object] | None = None,
) -> int:
    """Every current record as a CSV row (with its last event's source and note); the number
    of rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HEADER)
    written = 0
    batch: list[ConsentRecord] = []

    async def flush() -> None:
        nonlocal written
        histories = await store.history_many([r.subscriber for r in batch])
        for record in batch:
            last = next(
                (
                    e
                    for e in reversed(histories.get(record.subscriber, []))
                    if e.event_id == record.last_event_id
                ),
                None,
            )
            writer.writerow(_export_row(record, last, short_code_max_length))
        written += len(batch)
        if progress is not None:
            progress(len(batch))
        batch.clear()

    async for record in store.export():
        batch.append(record)
        if len(batch) >= _EXPORT_CHUNK:
            await flush()
    if batch:
        await flush()
    return written


# --- the command --------------------------------------------------------------------------------


def options_from(args: argparse.Namespace, config: GatewayConfig) -> ImportOptions:
    consent = config.consent
    default_scope = GLOBAL_SCOPE.key
    base = ImportOptions(
        default_country=consent.default_country,
        short_code_max_length=consent.short_code_max_length,
        account_match=consent.account_match,
    )
    if args.scope is not None:
        try:
            default_scope = parse_scope(args.scope, base)
        except ValueError as exc:
            raise ImportUsageError(f"--scope: {exc}") from exc
    default_state = None if args.state is None else parse_state(args.state, "--state")
    if default_state is ConsentState.BLOCKED and default_scope != GLOBAL_SCOPE.key:
        raise ImportUsageError("--state blocked goes with the global scope only")
    return dataclasses.replace(
        base,
        mapping=parse_mapping(args.map),
        state_map=parse_state_map(args.state_map),
        default_state=default_state,
        default_scope=default_scope,
        header=not args.no_header,
    )


def _report_bad(bad: Sequence[BadRow]) -> None:
    for row in bad[:MAX_BAD_SHOWN]:
        print(f"line {row.line}: {row.reason}", file=sys.stderr)
    if len(bad) > MAX_BAD_SHOWN:
        print(f"... and {len(bad) - MAX_BAD_SHOWN} more bad rows", file=sys.stderr)


async def _run_import(
    args: argparse.Namespace, config: GatewayConfig, parsed: ParsedFile, now: float, bar: _Progress
) -> Summary:
    from gateway.staffcli import open_staff_store, staff_audit  # the staff tools' store

    instance = f"{config.instance}/cli"
    store = await open_staff_store(config, instance)
    audit = staff_audit(store)
    try:
        source_name = "stdin" if args.file == "-" else os.path.basename(args.file)
        return await import_rows(
            store,
            parsed,
            source_name=source_name,
            instance=instance,
            now=now,
            dry_run=args.dry_run,
            bar=bar,
            before_write=None if audit is None else audit.prepare,
        )
    finally:
        if audit is not None:
            audit.close()
        await store.close()


def run_import(args: argparse.Namespace, config: GatewayConfig) -> int:
    # Millions of rows are millions of long-lived objects, which the cyclic garbage collector
    # would walk again and again to find no garbage (about a tenth of the time).
    gc.disable()
    try:
        return _import_command(args, config)
    finally:
        gc.enable()


def _import_command(args: argparse.Namespace, config: GatewayConfig) -> int:
    started = time.monotonic()
    now = time.time()
    bar = _Progress(sys.stderr.isatty())
    try:
        options = options_from(args, config)
        parsed = read_file(
            args.file,
            options,
            now,
            encoding=args.encoding,
            delimiter=args.delimiter,
            bar=bar,
        )
    except ImportUsageError as exc:
        bar.close()
        print(f"smpp-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        summary = asyncio.run(_run_import(args, config, parsed, now, bar))
    except StoreNotFoundError as exc:
        bar.close()
        print(f"smpp-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except StoreError as exc:
        bar.close()
        print(f"smpp-gateway: store error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        bar.close()
    summary.seconds = time.monotonic() - started
    _report_bad(parsed.bad)
    log.info(
        logs.CONSENT_IMPORTED,
        file=os.path.basename(args.file),
        rows=summary.read,
        changed=summary.changed,
        unchanged=summary.unchanged,
        bad=summary.bad,
        resumed=summary.resumed,
        dry_run=summary.dry_run,
    )
    if summary.resumed:
        print(
            f"first completed an earlier import that had been cut off: {summary.resumed}"
            " changes applied",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps(summary.as_json()))
    else:
        print(summary.details())
        print(summary.line())
    return EXIT_OK if summary.bad == 0 else EXIT_FAILED


async def _run_export(args: argparse.Namespace, config: GatewayConfig, out: IO[str]) -> int:
    from gateway.staffcli import open_staff_store

    store = await open_staff_store(config, f"{config.instance}/cli")
    bar: tqdm[Any] | None = None
    try:
        if sys.stderr.isatty():
            total = await store.record_count()
            bar = tqdm(total=total, desc="exporting", unit=" rows", file=sys.stderr, leave=False)
        return await export_csv(
            store,
            out,
            short_code_max_length=config.consent.short_code_max_length,
            progress=None if bar is None else bar.update,
        )
    finally:
        if bar is not None:
            bar.close()
        await store.close()


def run_export(args: argparse.Namespace, config: GatewayConfig) -> int:
    """CSV on stdout, or into ``--output`` (written beside it and renamed when complete, so a
    failed export never leaves half a file under that name)."""
    try:
        if args.output is None or args.output == "-":
            written = asyncio.run(_run_export(args, config, sys.stdout))
        else:
            directory = os.path.dirname(os.path.abspath(args.output))
            fd, temporary = tempfile.mkstemp(prefix=".export-", suffix=".csv", dir=directory)
            try:
                with open(fd, "w", encoding="utf-8", newline="") as out:
                    written = asyncio.run(_run_export(args, config, out))
                os.replace(temporary, args.output)
            except BaseException:
                os.unlink(temporary)
                raise
    except StoreNotFoundError as exc:
        print(f"smpp-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except StoreError as exc:
        print(f"smpp-gateway: store error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"smpp-gateway: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{written} records exported", file=sys.stderr)
    return EXIT_OK


def add_arguments(csub: Any) -> None:
    """``consent import`` and ``consent export`` on the ``consent`` subparsers."""
    imp = csub.add_parser(
        "import",
        help="import a CSV list (number,scope,state,time,source,note): all or nothing",
        description=(
            "Import consent rows from CSV with the header number,scope,state,time,source,note."
            " Bad rows are named (line N: reason) and skipped; the others are applied all or"
            " nothing; rows that change nothing add nothing, so importing twice is harmless."
            " Exit 0: no bad row; 1: bad rows skipped, or the store failed; 2: unusable file."
        ),
    )
    imp.add_argument("file", metavar="FILE", help="the CSV file ('-' for standard input)")
    imp.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
    imp.add_argument(
        "--map",
        action="append",
        metavar="FIELD=COLUMN[,...]",
        help="read a field from a column of another name (e.g. number=Phone,state=Status)",
    )
    imp.add_argument(
        "--state-map",
        action="append",
        metavar="WORD=STATE[,...]",
        help="another export's state words (e.g. unsubscribed=opted_out,active=opted_in)",
    )
    imp.add_argument(
        "--state", help="the state of rows without one (opted_out, opted_in or blocked)"
    )
    imp.add_argument("--scope", help="the scope of rows without one (default global:*)")
    imp.add_argument(
        "--no-header",
        action="store_true",
        help="the file has no header line: its columns are number,scope,state,time,source,note",
    )
    imp.add_argument("--delimiter", default=",", help="the field separator (default ',')")
    imp.add_argument("--encoding", default="utf-8", help="the file's encoding (default utf-8)")
    imp.add_argument(
        "--dry-run", action="store_true", help="check and count only: nothing is written"
    )
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")

    exp = csub.add_parser("export", help="write every current record as CSV (the import's format)")
    exp.add_argument("--config", required=True, metavar="FILE", help="TOML config file")
    exp.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")


def run(args: argparse.Namespace, config: GatewayConfig) -> int:
    """``consent import`` / ``consent export``: logs on stderr, as the other staff commands."""
    logs.configure(
        level=config.logging.level,
        log_bodies=config.logging.log_bodies,
        json=config.logging.format == "json",
        stream=sys.stderr,
    )
    if len(args.delimiter if args.action == "import" else ",") != 1:
        print("smpp-gateway: --delimiter must be one character", file=sys.stderr)
        return EXIT_USAGE
    if args.action == "import":
        return run_import(args, config)
    return run_export(args, config)
