"""``smpp-gateway consent import FILE`` / ``consent export``: reading CSV (mapping, bad rows
with their line numbers, normalisation), the plan (what changes, what does not), and the
commands on a real SQLite store and a real Redis: the round trip with bad rows, a second
import that changes nothing, and an import killed midway that leaves the store as it was."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

import gateway.staffimport as staffimport
from gateway.cli import main
from gateway.consent.model import Actor, ConsentRecord, ConsentState
from gateway.staffimport import (
    BadRow,
    ImportOptions,
    ImportUsageError,
    Row,
    columns_of,
    normalise_all,
    parse_mapping,
    parse_scope,
    parse_state_map,
    parse_time,
    plan,
    read_csv,
)
from gateway.store.factory import open_store
from tests.support.redis_server import RedisClusterServers, RedisServer

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_750_000_000.0
US = ImportOptions(default_country="US")


def read(text: str, options: ImportOptions = US) -> Any:
    return read_csv(io.StringIO(text), options, NOW)


def record(subscriber: str, scope: str, state: ConsentState, at: float, eid: str) -> ConsentRecord:
    return ConsentRecord(
        subscriber=subscriber, scope=scope, state=state, updated_at=at, last_event_id=eid
    )


# --- reading ------------------------------------------------------------------------------------


class TestOptions:
    def test_map_and_state_map(self) -> None:
        """--map and --state-map take FIELD=COLUMN lists, repeatable; a value with '=' only once
        may contain commas."""
        assert parse_mapping(["number=Phone,state=Status", "time=Date, Updated"]) == {
            "number": "Phone",
            "state": "Status",
            "time": "Date, Updated",
        }
        assert parse_state_map(["unsubscribed=opted_out,Active=opted_in"]) == {
            "unsubscribed": ConsentState.OPTED_OUT,
            "active": ConsentState.OPTED_IN,
        }
        with pytest.raises(ImportUsageError, match="unknown field 'phone'"):
            parse_mapping(["phone=Number"])
        with pytest.raises(ImportUsageError, match="expected NAME=VALUE"):
            parse_mapping(["number"])
        with pytest.raises(ImportUsageError, match="expected opted_out, opted_in or blocked"):
            parse_state_map(["stop=pending"])

    def test_columns_from_header_and_mapping(self) -> None:
        """Columns are found by name, case-insensitively, in any order; --map renames."""
        header = ["Status", " PHONE ", "extra"]
        options = ImportOptions(mapping={"number": "phone", "state": "status"})
        assert columns_of(header, options) == {"number": 1, "state": 0}
        assert columns_of(None, US) == {f: i for i, f in enumerate(staffimport.FIELDS)}

    def test_missing_columns_are_a_usage_error(self) -> None:
        """A header without number (or without state and no --state) says what it has and
        how to fix it."""
        with pytest.raises(ImportUsageError, match=r"no number column.*--no-header.*15551"):
            columns_of(["15551234567"], ImportOptions(default_state=ConsentState.OPTED_OUT))
        with pytest.raises(ImportUsageError, match="needs --state"):
            columns_of(["number"], US)
        assert columns_of(["number"], ImportOptions(default_state=ConsentState.OPTED_OUT))
        with pytest.raises(ImportUsageError, match="the header has no such column"):
            columns_of(["number", "state"], ImportOptions(mapping={"time": "When"}))


class TestFields:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2024-05-01T12:00:00Z", 1_714_564_800.0),
            ("2024-05-01T14:00:00+02:00", 1_714_564_800.0),
            ("2024-05-01 12:00:00", 1_714_564_800.0),  # no offset: UTC
            ("2024-05-01", 1_714_521_600.0),
            ("1714564800", 1_714_564_800.0),
            ("1714564800.5", 1_714_564_800.5),
            ("", None),
        ],
    )
    def test_times(self, text: str, expected: float | None) -> None:
        """ISO 8601 (UTC without an offset) or epoch seconds; empty: none given."""
        assert parse_time(text, NOW) == expected

    @pytest.mark.parametrize(
        ("text", "reason"),
        [
            ("yesterday", "not ISO 8601"),
            ("1714564800000", "milliseconds"),
            ("2099-01-01", "in the future"),
            ("-5", "not a time"),
        ],
    )
    def test_bad_times(self, text: str, reason: str) -> None:
        found = parse_time(text, NOW)
        assert isinstance(found, str)
        assert reason in found

    def test_scopes_are_keyed_as_the_relay_keys_them(self) -> None:
        """Accounts folded, sender numbers normalised, lists checked; empty: the default."""
        assert parse_scope("", US) == "global:*"
        assert parse_scope("global", US) == "global:*"
        assert parse_scope("campaign:acme", US) == "campaign:acme"
        assert parse_scope("account: ACME ", US) == "account:acme"
        assert parse_scope("number:+1 (555) 123-4567", US) == "number:15551234567"
        assert parse_scope("number:15550100", US) == "number:15550100"
        assert parse_scope("list:acme/promo", US) == "list:acme/promo"
        assert parse_scope("", ImportOptions(default_scope="campaign:x")) == "campaign:x"
        for bad in ("galaxy:x", "campaign:", "list:acme", "number:#1", "acme"):
            with pytest.raises(ValueError, match="scope"):
                parse_scope(bad, US)


class TestReadCsv:
    def test_bad_rows_are_named_by_line_and_skipped(self) -> None:
        """Each bad row is reported with its line (the header is line 1; a quoted note over
        two lines counts both; blank lines count as lines but not as rows)."""
        text = (
            "number,scope,state,time,source,note\n"  # 1
            "(555) 222-0000,,opted_out,,,\n"  # 2
            '+15552220001,campaign:acme,opted_in,,web,"two\nlines"\n'  # 3-4
            "\n"  # 5
            "not a number,,opted_out,,,\n"  # 6
            "15552220002,galaxy:x,opted_out,,,\n"  # 7
            "15552220003,,pending,,,\n"  # 8
            "15552220004,campaign:acme,blocked,,,\n"  # 9
            "15552220005,,opted_out,tomorrow,,\n"  # 10
            ",,opted_out,,,\n"  # 11
            "+1 555 222 0006,,opted_out,2024-05-01T12:00:00Z,crm,by phone\n"  # 12
        )
        parsed = read(text)
        assert parsed.read == 9
        assert [(b.line, b.reason.split(":")[0]) for b in parsed.bad] == [
            (6, "not a phone number"),
            (7, "scope 'galaxy"),
            (8, "state 'pending' is none of opted_out, opted_in, blocked (--state-map adds words)"),
            (9, "blocked is global"),
            (10, "time 'tomorrow' is not ISO 8601 (2024-05-01T12"),
            (11, "no number"),
        ]
        assert parsed.rows == [
            Row(2, "15552220000", "global:*", ConsentState.OPTED_OUT, None, None),
            Row(3, "15552220001", "campaign:acme", ConsentState.OPTED_IN, None, "[web] two\nlines"),
            Row(
                12,
                "15552220006",
                "global:*",
                ConsentState.OPTED_OUT,
                1_714_564_800.0,
                "[crm] by phone",
            ),
        ]

    def test_another_platforms_export(self) -> None:
        """A byte order mark, other column names and state words, through --map and
        --state-map; columns the import does not know are ignored."""
        text = (
            "\ufeffPhone Number,Status,Updated,Carrier\n"
            "5552220000,UNSUBSCRIBED,2024-05-01T12:00:00Z,x\n"
            "5552220001,Active,,y\n"
        )
        options = ImportOptions(
            mapping=parse_mapping(["number=phone number,state=status,time=updated"]),
            state_map=parse_state_map(["unsubscribed=opted_out,active=opted_in"]),
        )
        parsed = read_csv(io.StringIO(text.removeprefix("\ufeff")), options, NOW)
        assert parsed.bad == []
        assert [(r.subscriber, r.state, r.at) for r in parsed.rows] == [
            ("15552220000", ConsentState.OPTED_OUT, 1_714_564_800.0),
            ("15552220001", ConsentState.OPTED_IN, None),
        ]

    def test_a_plain_list_without_header(self) -> None:
        """--no-header with --state: a suppression list, one number a line, global scope."""
        options = ImportOptions(header=False, default_state=ConsentState.OPTED_OUT)
        parsed = read("15552220000\n+44 7700 900123\n12345\n", options)
        assert [(r.line, r.subscriber, r.scope) for r in parsed.rows] == [
            (1, "15552220000", "global:*"),
            (2, "447700900123", "global:*"),
            (3, "12345", "global:*"),  # a short code is a subscriber too
        ]

    def test_unusable_files(self) -> None:
        with pytest.raises(ImportUsageError, match="empty"):
            read("")
        with pytest.raises(ImportUsageError, match="no number column"):
            read("phone,state\n1555,opted_out\n")

    def test_many_numbers_are_normalised_in_worker_processes_alike(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Past the threshold numbers go to worker processes; the answers are the same."""
        numbers = [f"(202) {2000000 + i * 37:07d}" for i in range(60)] + ["abc", "+15550100"]
        alone = normalise_all(numbers, US)
        monkeypatch.setattr(staffimport, "_PARALLEL_AT", 10)
        monkeypatch.setattr(staffimport, "_NORMALISE_CHUNK", 7)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        assert normalise_all(numbers, US) == alone
        assert alone["abc"] is None
        assert alone["+15550100"] is None
        assert alone[numbers[0]] == "12022000000"


# --- the plan -----------------------------------------------------------------------------------

A, B = "15552220000", "15552220001"
G, C = "global:*", "campaign:acme"


def row(line: int, sub: str, scope: str, state: ConsentState, at: float | None) -> Row:
    return Row(line, sub, scope, state, at, None)


def planned(rows: list[Row], current: dict[str, dict[str, ConsentRecord]]) -> Any:
    return plan(rows, current, now=NOW, source_name="list.csv", instance="gw/cli")


class TestPlan:
    def test_events_carry_import_file_and_line(self) -> None:
        """Each change: actor import, by FILE:LINE, the row's time (now where it has none),
        planned against the record it replaces."""
        existing = record(B, C, ConsentState.OPTED_IN, 100.0, "e1")
        result = planned(
            [
                row(2, A, G, ConsentState.OPTED_OUT, 500.0),
                row(3, B, C, ConsentState.OPTED_OUT, None),
            ],
            {B: {C: existing}},
        )
        assert [(c.event.by, c.event.at, c.expected) for c in result.changes] == [
            ("list.csv:2", 500.0, None),
            ("list.csv:3", NOW, "e1"),
        ]
        assert all(c.event.actor is Actor.IMPORT for c in result.changes)
        assert all(c.event.instance == "gw/cli" for c in result.changes)

    def test_newest_row_of_a_pair_counts(self) -> None:
        """Rows of one number and scope collapse: the newest (then the last line) wins."""
        result = planned(
            [
                row(2, A, G, ConsentState.OPTED_IN, 300.0),
                row(3, A, G, ConsentState.OPTED_OUT, 200.0),
                row(4, A, G, ConsentState.OPTED_IN, 300.0),
            ],
            {},
        )
        assert [c.event.by for c in result.changes] == ["list.csv:4"]
        assert result.superseded == 2

    def test_nothing_to_change(self) -> None:
        """The same state, or a store record newer than the row: no event."""
        current = {
            A: {G: record(A, G, ConsentState.OPTED_OUT, 100.0, "e1")},
            B: {G: record(B, G, ConsentState.OPTED_IN, 900.0, "e2")},
        }
        result = planned(
            [
                row(2, A, G, ConsentState.OPTED_OUT, 500.0),
                row(3, B, G, ConsentState.OPTED_OUT, 500.0),
            ],
            current,
        )
        assert result.changes == []
        assert (result.same, result.older) == (1, 1)

    def test_a_timeless_row_is_a_change_made_now(self) -> None:
        """Without a time, a row is unchanged only if no newer record elsewhere decides: an
        opt-out list imported after a START to a campaign opts the number out again."""
        current = {
            A: {
                G: record(A, G, ConsentState.OPTED_OUT, 100.0, "e1"),
                C: record(A, C, ConsentState.OPTED_IN, 200.0, "e2"),
            },
            B: {G: record(B, G, ConsentState.OPTED_OUT, 100.0, "e3")},
        }
        result = planned(
            [
                row(2, A, G, ConsentState.OPTED_OUT, None),
                row(3, B, G, ConsentState.OPTED_OUT, None),
            ],
            current,
        )
        assert [(c.event.subscriber, c.expected) for c in result.changes] == [(A, "e1")]
        assert result.same == 1

    def test_an_import_never_lifts_a_block(self) -> None:
        """Blocked in the store or by the file: an opt-in is a bad row, a global opt-out is
        unchanged (blocked is opted out already), another scope's opt-out is recorded."""
        current = {A: {G: record(A, G, ConsentState.BLOCKED, 100.0, "e1")}}
        result = planned(
            [
                row(2, A, C, ConsentState.OPTED_IN, None),
                row(3, A, G, ConsentState.OPTED_OUT, None),
                row(4, A, "campaign:other", ConsentState.OPTED_OUT, None),
                row(5, B, G, ConsentState.BLOCKED, None),
                row(6, B, C, ConsentState.OPTED_IN, None),
            ],
            current,
        )
        assert [b.line for b in result.bad] == [2, 6]
        assert "never lifts a block" in result.bad[0].reason
        assert [c.event.by for c in result.changes] == ["list.csv:4", "list.csv:5"]
        assert result.kept_block == 1


# --- the commands -------------------------------------------------------------------------------


class Cli:
    """``smpp-gateway consent ...`` in-process on one config."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, action: str, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(["consent", action, *args, "--config", str(self.config)])
        finally:
            structlog.reset_defaults()
        out, err = self.capsys.readouterr()
        return code, out, err


def write_config(directory: Path, url: str) -> Path:
    path = directory / "gateway.toml"
    path.write_text(
        f'[upstream]\naddress = "127.0.0.1:2776"\n\n[store]\nurl = "{url}"\n'
        '\n[consent]\ndefault_country = "US"\n\n[logging]\nlevel = "warning"\n',
        encoding="utf-8",
    )
    return path


def create_store(url: str) -> None:
    async def create() -> None:
        store = await open_store(url, instance="daemon", create=True)
        await store.close()

    asyncio.run(create())


def sqlite_cli(directory: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    directory.mkdir(parents=True, exist_ok=True)
    url = f"sqlite://{directory / 'consent.db'}"
    create_store(url)
    return Cli(write_config(directory, url), capsys)


async def _store_state(url: str) -> tuple[list[ConsentRecord], int, dict[str, Any]]:
    store = await open_store(url, instance="check")
    try:
        records = [r async for r in store.export()]
        histories = await store.history_many(sorted({r.subscriber for r in records}))
        return records, await store.record_count(), histories
    finally:
        await store.close()


def store_state(url: str) -> tuple[list[ConsentRecord], int, dict[str, Any]]:
    return asyncio.run(_store_state(url))


async def _record_count(url: str) -> int:
    store = await open_store(url, instance="check")
    try:
        return await store.record_count()
    finally:
        await store.close()


def record_count(url: str) -> int:
    """``store_state(url)[1]`` without reading back every record and its history."""
    return asyncio.run(_record_count(url))


LIST = (
    "number,scope,state,time,source,note\n"
    "(555) 222-0000,,opted_out,2024-05-01T12:00:00Z,keyword,STOP\n"  # 2
    "+15552220001,campaign:acme,opted_in,2024-05-02T08:30:00Z,web,signup form\n"  # 3
    "15552220002,,blocked,2024-05-03T00:00:00Z,,fraud ticket 42\n"  # 4
    "15552220002,campaign:acme,opted_in,,,\n"  # 5: blocked: refused
    "abc,,opted_out,,,\n"  # 6
    "15552220003,list:acme,opted_out,,,\n"  # 7
    "15552220000,,opted_out,2023-01-01T00:00:00Z,old,older row\n"  # 8: superseded
    "+1 555 222 0004,account:ACME,opted_out,2024-05-04T00:00:00Z,,\n"  # 9
)
SUMMARY_LINE = "8 rows read, 4 changed, 1 unchanged, 3 bad"


def summary_line(out: str) -> str:
    return out.strip().splitlines()[-1]


def exported_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


class TestSqlite:
    def test_round_trip_with_bad_rows_and_a_second_import(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Import with bad rows (named, skipped, exit 1), export, import the export into
        another store (exit 0): the same records; the same file again changes nothing; and
        that store's export is the same after a re-import of its own export."""
        first = sqlite_cli(tmp_path / "a", capsys)
        path = tmp_path / "list.csv"
        path.write_text(LIST, encoding="utf-8")
        code, out, err = first("import", str(path))
        assert code == 1
        assert summary_line(out) == SUMMARY_LINE
        assert "2 opted out, 1 opted in, 1 blocked" in out
        assert "line 5: 15552220002 is blocked" in err
        assert "line 6: not a phone number: 'abc'" in err
        assert "line 7: scope 'list:acme': a list scope is list:CAMPAIGN/LIST" in err

        code, out, err = first("import", str(path))
        assert code == 1
        assert summary_line(out) == "8 rows read, 0 changed, 5 unchanged, 3 bad"

        code, exported, err = first("export")
        assert code == 0
        assert "4 records exported" in err
        rows = exported_rows(exported)
        assert exported == (
            "number,scope,state,time,source,note\n"
            "+15552220000,global:*,opted_out,2024-05-01T12:00:00Z,import:list.csv:2,"
            "[keyword] STOP\n"
            "+15552220001,campaign:acme,opted_in,2024-05-02T08:30:00Z,import:list.csv:3,"
            "[web] signup form\n"
            "+15552220002,global:*,blocked,2024-05-03T00:00:00Z,import:list.csv:4,fraud ticket 42\n"
            "+15552220004,account:acme,opted_out,2024-05-04T00:00:00Z,import:list.csv:9,\n"
        )

        second = sqlite_cli(tmp_path / "b", capsys)
        dump = tmp_path / "export.csv"
        dump.write_text(exported, encoding="utf-8")
        code, out, err = second("import", str(dump), "--json")
        assert code == 0, err
        summary = json.loads(out)
        assert (summary["read"], summary["changed"], summary["bad"]) == (4, 4, 0)
        code, again, _ = second("export")
        moved = exported_rows(again)
        assert [r[:4] for r in moved] == [r[:4] for r in rows]  # number, scope, state, time
        assert moved[1][4:] == ["import:export.csv:2", "[import:list.csv:2] [keyword] STOP"]

        out_file = tmp_path / "again.csv"
        assert second("export", "--output", str(out_file))[0] == 0
        assert out_file.read_text(encoding="utf-8") == again
        code, out, _ = second("import", str(out_file))
        assert (code, summary_line(out)) == (0, "4 rows read, 0 changed, 4 unchanged, 0 bad")
        assert second("export")[1] == again

    def test_history_shows_the_import_and_its_line(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``consent history`` names the actor import and FILE:LINE; the event keeps the row's
        time and its words; "(555) 222-0000" with default_country US is 15552220000."""
        cli = sqlite_cli(tmp_path, capsys)
        path = tmp_path / "optouts.csv"
        path.write_text("number,state,note\n(555) 222-0000,opted_out,asked by phone\n", "utf-8")
        assert cli("import", str(path))[0] == 0
        code, out, _ = cli("history", "15552220000")
        assert code == 0
        assert "import" in out
        assert "optouts.csv:2" in out
        _, count, histories = store_state(f"sqlite://{tmp_path / 'consent.db'}")
        assert count == 1
        (event,) = histories["15552220000"]
        assert (event.actor, event.by, event.words) == (
            Actor.IMPORT,
            "optouts.csv:2",
            "asked by phone",
        )
        assert event.instance is not None
        assert event.instance.endswith("/cli")

    def test_plain_list_dry_run_and_usage_errors(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """--dry-run counts and writes nothing; a header without the columns, or a file that
        cannot be read, is exit 2 and nothing is written; --no-header --state reads a list."""
        cli = sqlite_cli(tmp_path, capsys)
        url = f"sqlite://{tmp_path / 'consent.db'}"
        path = tmp_path / "plain.txt"
        path.write_text("15552220000\n15552220001\n15552220000\n", encoding="utf-8")
        code, out, _ = cli("import", str(path), "--no-header", "--state", "opted_out", "--dry-run")
        assert code == 0
        assert "dry run, nothing written: would be 2 opted out" in out
        assert summary_line(out) == "3 rows read, 2 changed, 1 unchanged, 0 bad"
        assert store_state(url)[1] == 0

        code, _, err = cli("import", str(path))
        assert code == 2
        assert "--no-header" in err
        code, _, err = cli("import", str(tmp_path / "missing.csv"))
        assert code == 2
        assert "cannot read" in err
        latin = tmp_path / "latin.csv"
        latin.write_bytes(b"number,state,note\n15552220000,opted_out,caf\xe9\n")
        assert cli("import", str(latin))[0] == 2
        assert cli("import", str(latin), "--encoding", "latin-1")[0] == 0
        assert store_state(url)[1] == 1
        assert cli("import", str(path), "--state", "pending")[0] == 2

        code, out, _ = cli("import", str(path), "--no-header", "--state", "opted_out")
        assert (code, summary_line(out)) == (0, "3 rows read, 1 changed, 2 unchanged, 0 bad")
        assert store_state(url)[1] == 2

    def test_no_store_is_exit_1(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The CLI never creates a store: without one, the import fails and says so."""
        cli = Cli(write_config(tmp_path, f"sqlite://{tmp_path / 'none.db'}"), capsys)
        path = tmp_path / "list.csv"
        path.write_text("number,state\n15552220000,opted_out\n", encoding="utf-8")
        code, _, err = cli("import", str(path))
        assert code == 1
        assert "no consent store" in err
        assert not (tmp_path / "none.db").exists()


def _big_list(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("number,scope,state,time,source,note\n")
        for i in range(rows):
            out.write(f"+1202{2_000_000 + i},global:*,opted_out,2024-05-01T12:00:00Z,crm,row {i}\n")


def _import_process(config: Path, path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gateway", "consent", "import", str(path), "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.timeout(300)
def test_import_killed_midway_leaves_the_store_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``consent import`` of 150,000 rows killed (SIGKILL) while its transaction is being
    written (the WAL file growing): the store is exactly as before (records, count, the
    existing history); run again, the import goes through whole."""
    cli = sqlite_cli(tmp_path, capsys)
    url = f"sqlite://{tmp_path / 'consent.db'}"
    seed = tmp_path / "seed.csv"
    seed.write_text("number,state\n15552220000,opted_in\n+12022000007,opted_in\n", "utf-8")
    assert cli("import", str(seed))[0] == 0
    before = store_state(url)
    path = tmp_path / "big.csv"
    _big_list(path, 150_000)
    wal = tmp_path / "consent.db-wal"
    process = _import_process(cli.config, path)
    try:
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            if wal.exists() and wal.stat().st_size > 8 << 20:  # inside the transaction
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.002)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        stdout, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"not killed midway: {stdout}{stderr}"
    assert "rows read" not in stdout
    assert store_state(url) == before
    code, out, _ = cli("import", str(path))
    assert (code, summary_line(out)) == (
        0,
        "150000 rows read, 149999 changed, 1 unchanged, 0 bad",  # +12022000007 was opted in
    )
    assert record_count(url) == 150_001


@pytest.mark.redis
class TestRedis:
    @pytest.mark.parametrize("server", ["redis_server", "redis_cluster"])
    def test_round_trip_and_second_import(
        self,
        server: str,
        request: pytest.FixtureRequest,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The same round trip on a real Redis and on a real three-master cluster: bad rows
        skipped, export, import elsewhere, a second import that changes nothing."""
        running: RedisServer | RedisClusterServers = request.getfixturevalue(server)
        url_a = f"{running.url}?prefix=imp{os.getpid()}a{time.time_ns()}"
        url_b = f"{running.url}?prefix=imp{os.getpid()}b{time.time_ns()}"
        first = Cli(write_config(tmp_path, url_a), capsys)
        path = tmp_path / "list.csv"
        path.write_text(LIST, encoding="utf-8")
        code, out, _ = first("import", str(path))
        assert (code, summary_line(out)) == (1, SUMMARY_LINE)
        code, out, _ = first("import", str(path))
        assert summary_line(out) == "8 rows read, 0 changed, 5 unchanged, 3 bad"
        code, exported, _ = first("export")
        assert code == 0
        rows = exported_rows(exported)
        assert len(rows) == 5
        assert "+15552220000,global:*,opted_out,2024-05-01T12:00:00Z,import:list.csv:2" in {
            ",".join(r[:5]) for r in rows
        }

        (tmp_path / "b").mkdir()
        second = Cli(write_config(tmp_path / "b", url_b), capsys)
        dump = tmp_path / "export.csv"
        dump.write_text(exported, encoding="utf-8")
        code, out, _ = second("import", str(dump))
        assert (code, summary_line(out)) == (0, "4 rows read, 4 changed, 0 unchanged, 0 bad")
        code, again, _ = second("export")
        # Redis exports in its scan order (each number's scopes together), not sorted.
        assert sorted(r[:4] for r in exported_rows(again)) == sorted(r[:4] for r in rows)
        code, out, _ = second("import", str(dump))
        assert summary_line(out) == "4 rows read, 0 changed, 4 unchanged, 0 bad"
        _, count, histories = store_state(url_b)
        assert count == 4
        assert all(len(events) == 1 for events in histories.values())


def test_bad_row_report_is_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """The first 100 bad rows are named, then one line counts the rest."""
    staffimport._report_bad([BadRow(i, "no number") for i in range(2, 252)])
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 101
    assert err[0] == "line 2: no number"
    assert err[-1] == "... and 150 more bad rows"
