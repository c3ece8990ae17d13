"""SQLite-specific behaviour: append-only table, schema versions, other writers, locks."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.consent.model import ConsentState
from gateway.store.base import StoreError, StoreUnavailableError
from gateway.store.sqlite import _MIGRATIONS, SCHEMA_VERSION, SqliteStore, read_record_count
from tests.store.test_contract import SCOPE_NUMBER, SUB_A, make_event


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


def write_v1_file(path: Path, records: list[tuple[str, str]]) -> None:
    """A store file as the first schema version left it, with ``records`` in ``current``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in _MIGRATIONS[1]:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO current (subscriber, scope, state, updated_at, last_event_id)"
            " VALUES (?, ?, 'opted_out', 1.0, 'e')",
            records,
        )
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()


class TestRecordCount:
    async def test_v1_file_is_upgraded_with_its_count(self, db_path: Path) -> None:
        """A version 1 file (no counter) opens as version 2 with the count of its records,
        which the triggers then keep: a new scope counts, a changed one does not."""
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
