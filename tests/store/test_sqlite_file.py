"""The SQLite store checks its own file: removed, moved away and back, replaced, made read-only
or unreadable, header overwritten. Each of them is StoreUnavailableError, never an answer."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import structlog

from gateway.consent.model import ConsentState
from gateway.store.base import StoreNotFoundError, StoreUnavailableError
from gateway.store.guard import FailClosedStore
from gateway.store.sqlite import SQLITE_MAGIC, SqliteStore, _append
from gateway.telemetry import logs
from tests.store.test_contract import SCOPE_NUMBER, SUB_A, SUB_B, make_event, mids

WAIT_S = 10.0


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def db_path(state_dir: Path) -> Path:
    return state_dir / "consent.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    """The bare backend (no guard), created as the daemon creates it."""
    store = await SqliteStore.open(db_path, instance="t", create=True)
    yield store
    await store.close()


@pytest.fixture
async def guarded(db_path: Path) -> AsyncIterator[FailClosedStore]:
    """The backend behind the fail-closed guard (as open_store gives it), probing every 10 ms."""
    inner = await SqliteStore.open(db_path, instance="t", create=True)
    store = FailClosedStore(inner, recovery_interval_s=0.01)
    yield store
    await store.close()


@pytest.fixture
def restore_mode(db_path: Path) -> Iterator[None]:
    """Whatever a test did to the file's mode, make it writable again for the clean-up."""
    yield
    if db_path.exists():
        db_path.chmod(0o644)


def count_events(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    finally:
        conn.close()


# File operations of the tests (instant, local): plain functions, as the store sees them happen.


def move(source: Path, target: Path) -> None:
    source.rename(target)


def chmod(path: Path, mode: int) -> None:
    path.chmod(mode)


def exists(path: Path) -> bool:
    return path.exists()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def overwrite_header(path: Path) -> None:
    with path.open("r+b") as file:
        file.write(b"\x00" * len(SQLITE_MAGIC))


class TestMovedAway:
    async def test_append_is_refused_and_nothing_is_stored(
        self, store: SqliteStore, state_dir: Path, tmp_path: Path
    ) -> None:
        """With its directory renamed away the store refuses the write before it runs: the
        moved file holds nothing of it, and nothing is created at the old path."""
        await store.append(make_event(SUB_B))
        moved = tmp_path / "moved"
        move(state_dir, moved)
        with pytest.raises(StoreUnavailableError, match="removed or its directory moved"):
            await store.append(make_event(dedup_key="away"))
        with pytest.raises(StoreUnavailableError, match=r"consent\.db"):
            await store.current(SUB_A)
        with pytest.raises(StoreUnavailableError):
            await store.ping()
        assert store.cached_current(SUB_B) is None
        assert not exists(state_dir)
        assert count_events(moved / "consent.db") == 1

    async def test_moved_back_recovers_with_everything(
        self, guarded: FailClosedStore, state_dir: Path, tmp_path: Path
    ) -> None:
        """The same file back at its path (same inode): the probe passes, the guard recovers,
        and what was acknowledged before is all there."""
        acknowledged = [make_event(f"1555000{i:04d}", dedup_key=f"k{i}") for i in range(5)]
        for event in acknowledged:
            assert await guarded.append(event) is True
        moved = tmp_path / "moved"
        move(state_dir, moved)
        with pytest.raises(StoreUnavailableError):
            await guarded.append(make_event(dedup_key="late"))
        assert guarded.fault is not None
        move(moved, state_dir)
        await guarded.wait_healthy(WAIT_S)
        assert await guarded.record_count() == 5
        assert await guarded.append(acknowledged[0]) is False  # dedup kept
        assert await guarded.append(make_event(dedup_key="late")) is True
        assert count_events(state_dir / "consent.db") == 6

    async def test_message_ids_are_refused_and_nothing_is_stored(
        self, store: SqliteStore, state_dir: Path, tmp_path: Path
    ) -> None:
        """With its directory moved away, a put of message ids raises StoreUnavailableError
        before it runs (the moved file keeps only the earlier put) and a get is refused."""
        await store.put_message_ids([mids("up-1", "gw-1")], 60.0)
        moved = tmp_path / "moved"
        move(state_dir, moved)
        with pytest.raises(StoreUnavailableError, match="removed or its directory moved"):
            await store.put_message_ids([mids("up-2", "gw-2")], 60.0)
        with pytest.raises(StoreUnavailableError, match="removed or its directory moved"):
            await store.get_message_ids("up-1")
        assert not exists(state_dir)
        conn = sqlite3.connect(moved / "consent.db")
        try:
            rows = conn.execute("SELECT upstream_id FROM message_ids").fetchall()
        finally:
            conn.close()
        assert rows == [("up-1",)]

    async def test_removed_directory_stays_unavailable(
        self, guarded: FailClosedStore, state_dir: Path
    ) -> None:
        """rm -rf of the state directory: every call refused, the probe keeps failing, and no
        new empty store appears at the path."""
        await guarded.append(make_event())
        shutil.rmtree(state_dir)
        with pytest.raises(StoreUnavailableError, match="removed"):
            await guarded.append(make_event(SUB_B))
        for _ in range(3):
            with pytest.raises(StoreUnavailableError, match="removed"):
                await guarded.probe()
        assert not exists(state_dir)


class TestReplaced:
    async def test_copy_in_place_stays_unavailable(
        self, guarded: FailClosedStore, db_path: Path, tmp_path: Path
    ) -> None:
        """A copy of the file put in its place is another inode: never adopted, the reason
        says to restart, and the probe keeps failing however often it runs."""
        await guarded.append(make_event())
        copy = tmp_path / "copy.db"
        shutil.copyfile(db_path, copy)
        os.replace(copy, db_path)
        with pytest.raises(StoreUnavailableError, match="was replaced; restart the gateway"):
            await guarded.current(SUB_B)
        for _ in range(3):
            with pytest.raises(StoreUnavailableError, match="was replaced"):
                await guarded.probe()
        assert guarded.fault is not None
        assert "was replaced; restart the gateway to use the new file" in guarded.fault

    async def test_cache_stops_answering_when_replaced(
        self, store: SqliteStore, db_path: Path, tmp_path: Path
    ) -> None:
        """The per-turn check of the event loop notices the new file: no cached answer, even
        though nothing in the old file changed (other processes now write the new one)."""
        await store.append(make_event())
        await store.current(SUB_A)
        await store.current(SUB_B)
        assert store.cached_current(SUB_B) == {}
        copy = tmp_path / "copy.db"
        shutil.copyfile(db_path, copy)
        os.replace(copy, db_path)
        await asyncio.sleep(0)  # the next turn of the event loop: the store checks once a turn
        assert store.cached_current(SUB_A) is None
        assert store.cached_current(SUB_B) is None


class TestModeAndHeader:
    @pytest.mark.usefixtures("restore_mode")
    async def test_read_only_file_is_unavailable_until_writable(
        self, guarded: FailClosedStore, db_path: Path
    ) -> None:
        """chmod a-w: refused for every user (root included, whose descriptor would still
        write); writable again: the guard recovers and the refused write can be retried."""
        await guarded.append(make_event(SUB_B))
        chmod(db_path, 0o444)
        with pytest.raises(StoreUnavailableError, match="made read-only"):
            await guarded.append(make_event(dedup_key="ro"))
        assert count_events(db_path) == 1
        chmod(db_path, 0o644)
        await guarded.wait_healthy(WAIT_S)
        assert await guarded.append(make_event(dedup_key="ro")) is True
        assert count_events(db_path) == 2

    @pytest.mark.usefixtures("restore_mode")
    async def test_read_only_file_refuses_writes(self, store: SqliteStore, db_path: Path) -> None:
        """chmod a-w: the write is refused before it runs (root's descriptor could still write)."""
        await store.append(make_event(SUB_B))
        chmod(db_path, 0o444)
        with pytest.raises(StoreUnavailableError, match="made read-only"):
            await store.append(make_event())
        assert count_events(db_path) == 1

    @pytest.mark.usefixtures("restore_mode")
    async def test_unreadable_file_is_unavailable(self, store: SqliteStore, db_path: Path) -> None:
        """chmod a-r (here 000): reads are refused as well."""
        await store.append(make_event())
        chmod(db_path, 0o000)
        with pytest.raises(StoreUnavailableError, match="made unreadable"):
            await store.history(SUB_A)

    async def test_overwritten_header_refuses_reads_and_writes(
        self, store: SqliteStore, db_path: Path
    ) -> None:
        """The first 16 bytes zeroed: every read and write is refused, the cache stops."""
        await store.append(make_event())
        assert (await store.current(SUB_A))[SCOPE_NUMBER].state is ConsentState.OPTED_OUT
        overwrite_header(db_path)
        await asyncio.sleep(0)  # the next turn of the event loop
        assert store.cached_current(SUB_A) is None
        for call in (
            store.current(SUB_A),
            store.history(SUB_A),
            store.footer_seen(SUB_A, "acme"),
            store.record_count(),
            store.ping(),
            store.append(make_event(SUB_B)),
            store.probe(),
        ):
            with pytest.raises(StoreUnavailableError, match="header was overwritten"):
                await call

    async def test_garbage_file_is_unavailable_with_its_path(self, tmp_path: Path) -> None:
        """A file that is not a database: sqlite3's DatabaseError becomes StoreUnavailableError
        naming the path (not a bare StoreError that callers would not catch)."""
        path = tmp_path / "garbage.db"
        path.write_bytes(os.urandom(4096))
        with pytest.raises(StoreUnavailableError, match=r"not a database.*garbage\.db"):
            await SqliteStore.open(path)


class TestAfterCommit:
    async def test_file_gone_right_after_commit_fails_the_batch(
        self, store: SqliteStore, state_dir: Path, tmp_path: Path
    ) -> None:
        """A batch committed while the directory was moved away is reported failed to every
        job (it landed in a file that was not the store then); once the file is back the
        retry with the same dedup_key is a no-op."""
        moved = tmp_path / "moved"
        event = make_event(dedup_key="mo:1")

        def append_then_move(conn: sqlite3.Connection) -> bool:
            added = _append(conn, event)
            move(state_dir, moved)  # between this job and the check after the COMMIT
            return added

        first = store._writer.submit(append_then_move, touched=(SUB_A,))
        second = store.append(make_event(SUB_B))  # queued behind it: the same batch or later
        with pytest.raises(StoreUnavailableError, match="not acknowledged"):
            await first
        with pytest.raises(StoreUnavailableError):
            await second
        assert store.cached_current(SUB_A) is None
        move(moved, state_dir)
        assert count_events(state_dir / "consent.db") >= 1  # it was committed, not acknowledged
        assert await store.append(event) is False


class TestCreation:
    async def test_open_never_creates_without_create(self, db_path: Path) -> None:
        """Without create=True a missing file is StoreNotFoundError naming the path."""
        with pytest.raises(StoreNotFoundError, match="the daemon creates it on first start"):
            await SqliteStore.open(db_path)
        assert not exists(db_path.parent)

    async def test_empty_file_is_not_made_a_store(self, tmp_path: Path) -> None:
        """Without create=True an empty file (or another database) is not turned into a
        consent store: refused, and left byte for byte as it was."""
        path = tmp_path / "empty.db"
        path.write_bytes(b"")
        with pytest.raises(StoreNotFoundError, match="is not a consent store"):
            await SqliteStore.open(path)
        assert path.read_bytes() == b""
        assert listing(tmp_path) == ["empty.db"]

    async def test_creation_is_logged_once(self, db_path: Path) -> None:
        """store_created is logged when the file is created, not when it is opened again."""
        with structlog.testing.capture_logs() as captured:
            first = await SqliteStore.open(db_path, create=True)
            await first.close()
            again = await SqliteStore.open(db_path, create=True)
            await again.close()
        created = [e for e in captured if e["event"] == logs.STORE_CREATED]
        assert created == [{"event": "store_created", "path": str(db_path), "log_level": "info"}]

    @pytest.mark.usefixtures("restore_mode")
    async def test_read_only_file_is_refused_at_open(self, db_path: Path) -> None:
        """A file already read-only at start is refused too (root could open it for writing)."""
        store = await SqliteStore.open(db_path, create=True)
        await store.close()
        chmod(db_path, 0o444)
        with pytest.raises(StoreUnavailableError, match=r"read-?only"):
            await SqliteStore.open(db_path)
