"""SQLite-specific behaviour: append-only table, schema versions, other writers, locks."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.consent.model import ConsentState
from gateway.store.base import MessageIds, StoreError, StoreUnavailableError, event_to_json
from gateway.store.sqlite import (
    _MIGRATIONS,
    _PURGE_BATCH,
    SCHEMA_VERSION,
    SqliteStore,
    read_record_count,
)
from tests.store.test_contract import SCOPE_NUMBER, SUB_A, make_event, make_reply, mids


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "consent.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(db_path, instance="t", busy_timeout_s=0.2, create=True)
    yield store
    await store.close()


class TestSchema:
    async def test_events_table_rejects_update_and_delete(
        self, store: SqliteStore, db_path: Path
    ) -> None:
        """The audit trail cannot be changed or shortened, even with plain SQL."""
        await store.append(make_event())
        conn = sqlite3.connect(db_path)
        try:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute("UPDATE events SET state = 'opted_in'")
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute("DELETE FROM events")
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
        finally:
            conn.close()

    async def test_file_is_wal_and_versioned(self, store: SqliteStore, db_path: Path) -> None:
        """The database uses WAL and records its schema version."""
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            conn.close()

    async def test_created_files_are_the_owners_alone(self, db_path: Path) -> None:
        """The numbers and words in the store are personal data: the file, its WAL and its
        shared memory are 0600 whatever the umask (here the usual 022)."""
        umask = os.umask(0o022)
        try:
            store = await SqliteStore.open(db_path, instance="t", create=True)
            try:
                await store.append(make_event())
                for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
                    assert path.stat().st_mode & 0o777 == 0o600, path
            finally:
                await store.close()
        finally:
            os.umask(umask)

    async def test_newer_schema_is_refused(self, db_path: Path) -> None:
        """A file written by a newer gateway is not opened (no silent downgrade)."""
        conn = sqlite3.connect(db_path)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
        with pytest.raises(StoreError, match="newer"):
            await SqliteStore.open(db_path)

    async def test_in_memory_database_is_refused(self) -> None:
        """An in-memory SQLite database is not durable and is refused."""
        with pytest.raises(StoreError, match="not durable"):
            await SqliteStore.open(":memory:")


def write_old_file(path: Path, version: int, records: list[tuple[str, str]]) -> None:
    """A store file as schema ``version`` left it, with ``records`` in ``current``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for step in range(1, version + 1):
            for statement in _MIGRATIONS[step]:
                conn.execute(statement)
        conn.executemany(
            "INSERT INTO current (subscriber, scope, state, updated_at, last_event_id)"
            " VALUES (?, ?, 'opted_out', 1.0, 'e')",
            records,
        )
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


def write_v1_file(path: Path, records: list[tuple[str, str]]) -> None:
    """A store file as the first schema version left it, with ``records`` in ``current``."""
    write_old_file(path, 1, records)


class TestRecordCount:
    async def test_v1_file_is_upgraded_with_its_count(self, db_path: Path) -> None:
        """A version 1 file (no counter) opens upgraded with the count of its records, which
        the triggers then keep: a new scope counts, a changed one does not."""
        write_v1_file(db_path, [(SUB_A, SCOPE_NUMBER), (SUB_A, "global:*"), ("15550000002", "x")])
        assert read_record_count(str(db_path)) == 3  # read-only: counted, not upgraded
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (1,)
        finally:
            conn.close()
        store = await SqliteStore.open(db_path)
        try:
            assert await store.record_count() == 3
            await store.append(make_event(SUB_A, SCOPE_NUMBER, ConsentState.OPTED_IN))
            assert await store.record_count() == 3
            await store.append(make_event(SUB_A, "campaign:new"))
            assert await store.record_count() == 4
        finally:
            await store.close()
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert conn.execute("SELECT value FROM meta WHERE key = 'records'").fetchone() == (4,)
        finally:
            conn.close()
        assert read_record_count(str(db_path)) == 4

    async def test_deleted_rows_are_uncounted(self, store: SqliteStore, db_path: Path) -> None:
        """A row deleted from current by hand (the sqlite3 shell) leaves the count right."""
        await store.append(make_event(SUB_A))
        await store.append(make_event("15550000002"))
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("DELETE FROM current WHERE subscriber = ?", (SUB_A,))
        conn.close()
        assert await store.record_count() == 1

    async def test_probe_writes_only_its_meta_row(self, store: SqliteStore, db_path: Path) -> None:
        """probe() commits a write of meta 'probe' and moves no change counter."""
        await store.append(make_event())
        conn = sqlite3.connect(db_path)
        try:
            before = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            await store.probe()
            after = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
        assert after == {**before, "probe": before["probe"] + 1}


class TestOtherWriters:
    async def test_hand_edit_of_current_drops_the_cache(
        self, store: SqliteStore, db_path: Path
    ) -> None:
        """A change made by another process, even plain SQL, is seen from the next turn of the
        event loop on (the store checks once per turn: one read's PDUs share one check)."""
        await store.append(make_event(state=ConsentState.OPTED_IN))
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_IN
        assert store.cached_current(SUB_A) is not None
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute("UPDATE current SET state = 'blocked'")
        conn.close()
        await asyncio.sleep(0)  # the next turn of the loop, not a wait for time to pass
        assert store.cached_current(SUB_A) is None
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.BLOCKED

    async def test_own_writes_keep_other_entries_cached(self, store: SqliteStore) -> None:
        """A write through this object drops only its own subscriber's entry."""
        await store.current("15550000009")
        await store.append(make_event())
        assert store.cached_current("15550000009") == {}
        assert store.cached_current(SUB_A) is None

    async def test_cli_process_and_daemon_share_the_file(self, db_path: Path) -> None:
        """A second store object (the CLI) writing the file is seen by the daemon's cache."""
        daemon = await SqliteStore.open(db_path, create=True)
        cli = await SqliteStore.open(db_path)
        try:
            assert await daemon.current(SUB_A) == {}
            await cli.append(make_event(state=ConsentState.BLOCKED))
            await cli.close()
            cached = daemon.cached_current(SUB_A)
            assert cached is None
            assert (await daemon.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.BLOCKED
        finally:
            await daemon.close()


class TestWrites:
    async def test_concurrent_appends_are_all_committed(
        self, store: SqliteStore, db_path: Path
    ) -> None:
        """Appends queued together (group commit) are each stored and acknowledged once."""
        events = [make_event(f"1555000{i:04d}", dedup_key=f"k{i % 150}") for i in range(200)]
        results = await asyncio.gather(*(store.append(e) for e in events))
        assert sum(results) == 200
        again = await asyncio.gather(*(store.append(e) for e in events[:20]))
        assert not any(again)
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("SELECT count(*) FROM events").fetchone() == (200,)
        finally:
            conn.close()

    async def test_lock_held_too_long_is_unavailable(
        self, store: SqliteStore, db_path: Path
    ) -> None:
        """A write lock held elsewhere past busy_timeout raises StoreUnavailableError quickly."""
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await store.append(make_event())
            assert time.monotonic() - started < 2.0
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await store.append(make_event()) is True
        assert len(await store.history(SUB_A)) == 1


def meta(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())
    finally:
        conn.close()


def message_id_rows(path: Path) -> list[str]:
    """The upstream ids in the table, expired rows included, in key order."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT upstream_id FROM message_ids ORDER BY upstream_id")
        return [row[0] for row in rows.fetchall()]
    finally:
        conn.close()


def put_rows(n: int, prefix: str) -> list[MessageIds]:
    return [mids(f"{prefix}{i:05d}", f"gw-{i}") for i in range(n)]


class TestMessageIds:
    @pytest.mark.parametrize("version", [1, 2])
    async def test_old_file_is_upgraded(self, db_path: Path, version: int) -> None:
        """A file of schema version 1 or 2 opens as the current version with its records
        intact, keeps message ids from then on, and they do not count as records."""
        write_old_file(db_path, version, [(SUB_A, SCOPE_NUMBER), ("15550000002", "x")])
        store = await SqliteStore.open(db_path)
        try:
            assert await store.record_count() == 2
            assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
            assert await store.get_message_ids("up-1") is None
            await store.put_message_ids([mids("up-1", "gw-1")], 60.0)
            assert await store.get_message_ids("up-1") == mids("up-1", "gw-1")
            assert await store.record_count() == 2
        finally:
            await store.close()
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        finally:
            conn.close()
        assert meta(db_path)["message_ids"] == 1
        assert read_record_count(str(db_path)) == 2

    async def test_bound_drops_those_expiring_first(self, db_path: Path) -> None:
        """Over max_message_ids rows, a put deletes the rows that expire first, its own
        entries included when they are those, and the counter matches the table."""
        store = await SqliteStore.open(db_path, create=True, max_message_ids=5)
        try:
            for i, ttl_s in enumerate((100.0, 101.0, 102.0)):
                await store.put_message_ids([mids(f"a{i}", "gw")], ttl_s)
            await store.put_message_ids(put_rows(4, "b"), 200.0)
            assert message_id_rows(db_path) == ["a2", "b00000", "b00001", "b00002", "b00003"]
            assert await store.get_message_ids("a0") is None
            await store.put_message_ids(put_rows(8, "c"), 300.0)
            kept = message_id_rows(db_path)
            assert len(kept) == 5
            assert all(upstream_id.startswith("c") for upstream_id in kept)
            assert meta(db_path)["message_ids"] == 5
        finally:
            await store.close()

    async def test_expired_rows_are_purged_by_later_puts(
        self, store: SqliteStore, db_path: Path
    ) -> None:
        """Rows whose time has passed are deleted by the next put, not left to grow."""
        await store.put_message_ids(put_rows(20, "old"), -1.0)
        assert len(message_id_rows(db_path)) == 20  # written, but already absent for get
        assert await store.get_message_ids("old00003") is None
        await store.put_message_ids([mids("new", "gw")], 60.0)
        assert message_id_rows(db_path) == ["new"]
        assert meta(db_path)["message_ids"] == 1

    async def test_lowered_bound_is_reached_over_a_few_puts(self, db_path: Path) -> None:
        """Reopened with a much smaller bound, each put deletes a bounded number of rows, and a
        few puts bring the table down to the bound."""
        store = await SqliteStore.open(db_path, create=True)
        await store.put_message_ids(put_rows(2500, "old"), 60.0)
        await store.close()
        store = await SqliteStore.open(db_path, max_message_ids=10)
        try:
            counts = []
            for i in range(4):
                await store.put_message_ids([mids(f"new{i}", "gw")], 120.0)
                counts.append(len(message_id_rows(db_path)))
            assert counts[0] == 2501 - (_PURGE_BATCH + 1)
            assert counts[-1] == 10
            assert meta(db_path)["message_ids"] == 10
            assert await store.get_message_ids("new3") == mids("new3", "gw")
        finally:
            await store.close()

    async def test_puts_do_not_bump_the_change_counter(self, db_path: Path) -> None:
        """Puts from this process and from another leave meta.change_seq and the record count
        alone, so no process drops its consent cache because of them."""
        daemon = await SqliteStore.open(db_path, create=True)
        other = await SqliteStore.open(db_path)
        try:
            await daemon.append(make_event())
            await daemon.current(SUB_A)
            before = meta(db_path)
            await other.put_message_ids(put_rows(10, "p"), 60.0)
            await daemon.put_message_ids(put_rows(10, "q"), 60.0)
            await daemon.put_message_ids(put_rows(10, "q"), -1.0)  # replaced, and purged later
            await asyncio.sleep(0)  # the next turn of the loop: the daemon checks the file
            assert daemon.cached_current(SUB_A) is not None
            after = meta(db_path)
            assert after["change_seq"] == before["change_seq"]
            assert after["records"] == before["records"] == 1
        finally:
            await other.close()
            await daemon.close()

    async def test_undecodable_row_is_unavailable(self, store: SqliteStore, db_path: Path) -> None:
        """A row edited by hand into something that does not decode raises
        StoreUnavailableError, like any stored data that does not decode."""
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.executemany(
            "INSERT INTO message_ids (upstream_id, client_ids, account, expires)"
            " VALUES (?, ?, ?, ?)",
            [("bad-json", "[1, ", "a", 4e9), ("bad-type", "[1, 2]", "a", 4e9)],
        )
        conn.close()
        for upstream_id in ("bad-json", "bad-type"):
            with pytest.raises(StoreUnavailableError, match="undecodable message ids"):
                await store.get_message_ids(upstream_id)

    @pytest.mark.parametrize("ttl_s", [float("inf"), float("nan")])
    async def test_non_finite_ttl_is_misuse(self, store: SqliteStore, ttl_s: float) -> None:
        """A ttl that is not a finite number is a caller's error, not an unavailable store."""
        with pytest.raises(StoreError, match="finite") as info:
            await store.put_message_ids([mids("up-1", "gw")], ttl_s)
        assert not isinstance(info.value, StoreUnavailableError)

    async def test_max_message_ids_must_be_positive(self, db_path: Path) -> None:
        """A bound below one row is refused when the store is opened."""
        with pytest.raises(StoreError, match="max_message_ids"):
            await SqliteStore.open(db_path, create=True, max_message_ids=0)


class TestReplies:
    async def test_v3_file_is_upgraded_to_v4(self, db_path: Path) -> None:
        """A file of schema version 3 (the previous one) with events, records and message ids
        opens as version 4: all of it intact, the replies table there and empty, and replies
        recorded from then on; the read-only count still works on it."""
        write_old_file(db_path, 3, [(SUB_A, SCOPE_NUMBER), ("15550000002", "x")])
        conn = sqlite3.connect(db_path, isolation_level=None)
        try:
            event = make_event(SUB_A, "campaign:old")
            conn.execute(
                "INSERT INTO events (event_id, subscriber, scope, at, state, dedup_key, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    SUB_A,
                    event.scope,
                    event.at,
                    "opted_out",
                    None,
                    event_to_json(event),
                ),
            )
            conn.execute(
                "INSERT INTO message_ids (upstream_id, client_ids, account, expires)"
                " VALUES ('up-old', '[\"gw-old\"]', 'acme_sys', 4e9)"
            )
            assert (
                conn.execute("SELECT name FROM sqlite_master WHERE name = 'replies'").fetchall()
                == []
            )
        finally:
            conn.close()
        assert read_record_count(str(db_path)) == 2  # read-only: not upgraded by this
        store = await SqliteStore.open(db_path)
        try:
            assert await store.history(SUB_A) == [event]
            assert await store.record_count() == 2
            assert await store.get_message_ids("up-old") == mids("up-old", "gw-old")
            assert await store.replies(SUB_A) == []
            reply = make_reply(event_id=event.event_id)
            assert await store.record_reply(reply) is True
            assert await store.replies(SUB_A) == [reply]
            assert await store.record_count() == 2
        finally:
            await store.close()
        conn = sqlite3.connect(db_path)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert conn.execute(
                "SELECT reply_id, event_id, subscriber FROM replies"
            ).fetchall() == [(reply.reply_id, event.event_id, SUB_A)]
        finally:
            conn.close()
        assert read_record_count(str(db_path)) == 2

    async def test_records_are_never_updated(self, store: SqliteStore, db_path: Path) -> None:
        """A trigger refuses UPDATE of a reply record, even with plain SQL."""
        await store.record_reply(make_reply())
        conn = sqlite3.connect(db_path)
        try:
            with pytest.raises(sqlite3.IntegrityError, match="never changed"):
                conn.execute("UPDATE replies SET body = '{}'")
        finally:
            conn.close()

    async def test_records_bump_no_change_counter(self, store: SqliteStore, db_path: Path) -> None:
        """Recording replies moves neither meta.change_seq (no process drops its cache) nor the
        record count."""
        before = meta(db_path)
        for i in range(3):
            await store.record_reply(make_reply(at=float(i)))
        after = meta(db_path)
        assert after["change_seq"] == before["change_seq"]
        assert after["records"] == before["records"]

    async def test_trim_deletes_only_that_subscribers_oldest(self, db_path: Path) -> None:
        """With max_replies=2, rows beyond the newest two of one subscriber are deleted."""
        store = await SqliteStore.open(db_path, create=True, max_replies=2)
        try:
            for i in range(4):
                await store.record_reply(make_reply(reply_id=f"a{i}", at=float(i)))
            await store.record_reply(make_reply("15550000002", reply_id="b0"))
        finally:
            await store.close()
        conn = sqlite3.connect(db_path)
        try:
            rows = conn.execute("SELECT reply_id FROM replies ORDER BY seq").fetchall()
        finally:
            conn.close()
        assert [r[0] for r in rows] == ["a2", "a3", "b0"]

    async def test_undecodable_row_is_unavailable(self, store: SqliteStore, db_path: Path) -> None:
        """A row whose JSON does not decode to a record raises StoreUnavailableError."""
        conn = sqlite3.connect(db_path, isolation_level=None)
        conn.execute(
            "INSERT INTO replies (reply_id, event_id, subscriber, at, body)"
            " VALUES ('x', NULL, ?, 1.0, '{\"reply_id\": \"x\"}')",
            (SUB_A,),
        )
        conn.close()
        with pytest.raises(StoreUnavailableError, match="undecodable stored auto-reply"):
            await store.replies(SUB_A)

    async def test_max_replies_must_be_positive(self, db_path: Path) -> None:
        """A bound below one record is refused when the store is opened."""
        with pytest.raises(StoreError, match="max_replies"):
            await SqliteStore.open(db_path, create=True, max_replies=0)
