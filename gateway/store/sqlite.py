"""Embedded consent store: one SQLite file (the default, ``sqlite:///path/to/consent.db``).

Durability: the database runs in WAL mode with ``synchronous=FULL``, so ``append`` returns only
after its transaction is committed and the WAL is fsync'ed: a killed process or a power cut
loses nothing that was acknowledged. The ``events`` table is append-only (triggers abort any
UPDATE or DELETE), ``current`` is the projection, written in the same transaction.

Threads: all writes go through one dedicated writer thread with its own connection. Jobs that
queue up while a commit is in progress are committed together (group commit: one fsync for a
burst of opt-outs), each inside its own savepoint so one failing job does not undo the others.
Cache misses, history and export are read by a second thread with its own connection (WAL
readers never wait for the writer). The event loop thread only touches the in-process cache and
a small probe connection.

Cache coherence: ``current()`` answers from an in-process LRU (``gateway.store.cache``). This
store object updates it for its own writes once they commit. Other processes may write the same
file (the CLI next to the running daemon, or one daemon process per core): before the cache
answers, the probe runs ``PRAGMA data_version`` (about 4 microseconds; it changes whenever
another connection committed). Only when it changed does the probe read ``meta.change_seq``, a
counter that triggers bump on every change of ``events`` and ``current``; if the counter moved
past what this object's own commits account for, the whole cache is dropped. A write never
bypasses the counter, even one made by hand with the sqlite3 shell. ``change_check_interval_s``
trades that check for a bounded delay before other processes' changes are seen (0, the
default, checks once per turn of the event loop: every PDU of one read is decided in one turn,
and a change committed elsewhere during a turn is a race the next turn settles).

Fail closed: SQLite itself goes on writing into a file whose directory was removed or moved
away (the open descriptor keeps the unlinked inode alive), and root ignores a file's mode bits.
So the store checks the file itself (``_StoreFile.check``, a stat and a 16-byte read, about a
microsecond): that the path still names the inode it opened (same ``st_dev`` / ``st_ino``), that
the mode still has a read and a write bit (so "read-only" means the same for every user), and
that the SQLite header magic is still at offset 0. The writer checks before each batch and again
after its COMMIT, before any result is delivered: a batch committed into a file that is no
longer the store fails as a whole with StoreUnavailableError, so nothing is acknowledged into
the void (a retry with the same dedup_key is a no-op later, if the file comes back). The reader
checks before each job; the event loop checks before the cache answers (once per turn, with
``PRAGMA data_version``). A file *replaced* by another one (another inode) is never adopted by
a running store: it stays unavailable until the gateway is restarted. The original file coming
back (the directory moved away and back) works again. Every ``sqlite3.Error`` (corrupt file,
disk I/O, lock, read-only) is StoreUnavailableError, with the path in the message.

Files are created only by ``open(..., create=True)`` (the daemon); every other connection uses a
``file:...?mode=rw`` URI, so nothing ever creates an empty database in place of a missing one.

Start-up cost does not depend on the number of records: nothing is loaded at start. Schema
versions live in ``PRAGMA user_version``; ``_MIGRATIONS[n]`` brings version n-1 to n, run in
one transaction on open. A file with a newer version than this code knows is refused. Version 2
adds the record count (``meta`` row ``records``, kept by triggers on ``current``) and the
``meta`` row ``probe`` that ``probe()`` writes (no trigger, so it changes no consent data and
no change counter). Version 3 adds the table ``message_ids``. Version 4 adds the table
``replies`` (auto-reply records, below).

Message ids (``put_message_ids`` / ``get_message_ids``): the table ``message_ids``
(``upstream_id`` primary key, ``client_ids`` a JSON list, ``account``, ``expires`` in wall-clock
seconds, since several processes share the file; an index on ``expires``). They are not consent
data: no trigger bumps ``meta.change_seq`` for them (a put never drops any process's consent
cache) and they are not in ``record_count``; the ``meta`` row ``message_ids`` counts them
(triggers on the table). A put is one writer job, committed and fsync'ed like every write.
It deletes expired rows, writes the entries (an upsert: a later put for an upstream id replaces
the earlier one), and when the table then holds more than ``max_message_ids`` rows (a URL
parameter, default 1,000,000) deletes the surplus, those that expire first. Each of the two
deletes takes at most ``_PURGE_BATCH`` rows more than the put writes, found through the index
on ``expires``: no put is a long transaction holding up the opt-outs queued behind it, and a
bound lowered by the operator is reached over a few puts. A get reads through the reader
thread and treats a row whose ``expires`` has passed as absent.

Auto-reply records (``record_reply`` / ``replies``): the table ``replies`` (``seq`` in record
order, ``reply_id`` unique per subscriber, ``event_id``, ``subscriber``, ``at``, ``body``: the
record as JSON; indexes on (subscriber, seq) and event_id). A trigger refuses UPDATE: a record
is never changed. They are not consent data: no trigger bumps ``meta.change_seq`` (no
process's cache is dropped for them) and they are not in ``record_count``. A record is one
writer job (committed and fsync'ed with the batch it joins); it then deletes that
subscriber's rows beyond the newest ``max_replies`` (a URL parameter, default 1,000), so
each insert deletes at most a few rows, found through the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Generic, TypeVar

from gateway.consent.caps import CapReservation, CapVerdict, admits
from gateway.consent.model import ConsentEvent, ConsentRecord, ConsentState
from gateway.store.base import (
    MAX_REPLIES_PER_SUBSCRIBER,
    ImportChange,
    ImportOutcome,
    MessageIds,
    ReplyRecord,
    ResumedImports,
    StoreError,
    StoreNotFoundError,
    StoreUnavailableError,
    batches,
    check_import_changes,
    event_from_json,
    event_to_json,
    reply_from_json,
    reply_to_json,
)
from gateway.store.batch import BatchLoader
from gateway.store.cache import ConsentCache, SeenCache
from gateway.telemetry import logs

T = TypeVar("T")

_log = logs.get_logger()

SCHEMA_VERSION: Final = 5
# The first 16 bytes of every SQLite 3 database file.
SQLITE_MAGIC: Final = b"SQLite format 3\x00"

_BUMP: Final = "UPDATE meta SET value = value + 1 WHERE key = 'change_seq';"

_MIGRATIONS: Final[dict[int, tuple[str, ...]]] = {
    1: (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT INTO meta (key, value) VALUES ('change_seq', 0)",
        """CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL,
            subscriber TEXT NOT NULL,
            scope TEXT NOT NULL,
            at REAL NOT NULL,
            state TEXT NOT NULL,
            dedup_key TEXT,
            body TEXT NOT NULL
        )""",
        "CREATE INDEX events_by_subscriber ON events (subscriber, seq)",
        """CREATE TRIGGER events_no_update BEFORE UPDATE ON events
            BEGIN SELECT RAISE(ABORT, 'consent events are append-only'); END""",
        """CREATE TRIGGER events_no_delete BEFORE DELETE ON events
            BEGIN SELECT RAISE(ABORT, 'consent events are append-only'); END""",
        f"CREATE TRIGGER events_bump AFTER INSERT ON events BEGIN {_BUMP} END",
        """CREATE TABLE current (
            subscriber TEXT NOT NULL,
            scope TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_at REAL NOT NULL,
            last_event_id TEXT NOT NULL,
            PRIMARY KEY (subscriber, scope)
        ) WITHOUT ROWID""",
        f"CREATE TRIGGER current_bump_insert AFTER INSERT ON current BEGIN {_BUMP} END",
        f"CREATE TRIGGER current_bump_update AFTER UPDATE ON current BEGIN {_BUMP} END",
        f"CREATE TRIGGER current_bump_delete AFTER DELETE ON current BEGIN {_BUMP} END",
        """CREATE TABLE footer_seen (
            subscriber TEXT NOT NULL,
            campaign TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (subscriber, campaign)
        ) WITHOUT ROWID""",
        """CREATE TABLE dedup (
            subscriber TEXT NOT NULL,
            dedup_key TEXT NOT NULL,
            event_id TEXT NOT NULL,
            PRIMARY KEY (subscriber, dedup_key)
        ) WITHOUT ROWID""",
    ),
    2: (
        # The number of current records, counted once here and kept by triggers from now on
        # (the projection is written with an upsert: a new scope fires INSERT, a change UPDATE).
        "INSERT OR REPLACE INTO meta (key, value) SELECT 'records', count(*) FROM current",
        """CREATE TRIGGER current_count_insert AFTER INSERT ON current
            BEGIN UPDATE meta SET value = value + 1 WHERE key = 'records'; END""",
        """CREATE TRIGGER current_count_delete AFTER DELETE ON current
            BEGIN UPDATE meta SET value = value - 1 WHERE key = 'records'; END""",
        # Written by probe(): a real write that no trigger sees and no consent data depends on.
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('probe', 0)",
    ),
    3: (
        # Which ids a client was given for a part sent upstream under another id (receipts).
        # Not consent data: nothing here touches change_seq or the record count.
        """CREATE TABLE message_ids (
            upstream_id TEXT PRIMARY KEY,
            client_ids TEXT NOT NULL,
            account TEXT NOT NULL,
            expires REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX message_ids_by_expiry ON message_ids (expires)",
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('message_ids', 0)",
        # Puts are upserts: a new upstream id fires INSERT, a replaced one UPDATE.
        """CREATE TRIGGER message_ids_count_insert AFTER INSERT ON message_ids
            BEGIN UPDATE meta SET value = value + 1 WHERE key = 'message_ids'; END""",
        """CREATE TRIGGER message_ids_count_delete AFTER DELETE ON message_ids
            BEGIN UPDATE meta SET value = value - 1 WHERE key = 'message_ids'; END""",
    ),
    4: (
        # Auto-reply records (confirmations and what the SMSC answered). Not consent data:
        # nothing here touches change_seq or the record count.
        """CREATE TABLE replies (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            reply_id TEXT NOT NULL,
            event_id TEXT,
            subscriber TEXT NOT NULL,
            at REAL NOT NULL,
            body TEXT NOT NULL,
            UNIQUE (subscriber, reply_id)
        )""",
        "CREATE INDEX replies_by_subscriber ON replies (subscriber, seq)",
        "CREATE INDEX replies_by_event ON replies (event_id)",
        """CREATE TRIGGER replies_no_update BEFORE UPDATE ON replies
            BEGIN SELECT RAISE(ABORT, 'auto-reply records are never changed'); END""",
    ),
    5: (
        # Frequency caps: the messages counted per subscriber and counter key, trimmed to the
        # window on every reservation (so at most the cap's count rows each). Not consent data.
        """CREATE TABLE sends (
            subscriber TEXT NOT NULL,
            counter TEXT NOT NULL,
            token TEXT NOT NULL,
            at REAL NOT NULL,
            PRIMARY KEY (subscriber, counter, token)
        ) WITHOUT ROWID""",
    ),
}

# Auto-reply records kept per subscriber by default (``max_replies``; the oldest go).
MAX_REPLIES: Final = MAX_REPLIES_PER_SUBSCRIBER
# Message-id mappings kept at most by default (``max_message_ids``; those expiring first go).
MAX_MESSAGE_IDS: Final = 1_000_000
# Rows a put deletes at most per statement, beyond the number of entries it writes.
_PURGE_BATCH: Final = 1000

_MAX_BATCH: Final = 256
_IMPORT_CHUNK: Final = 500
_EXPORT_PAGE: Final = 1000


def _translate(exc: BaseException, path: str) -> StoreError:
    """Every sqlite3 failure (I/O, lock, full disk, read-only, corrupt file) is "unavailable"."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, sqlite3.Error):
        what = str(exc) or type(exc).__name__
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(
            exc, sqlite3.OperationalError | sqlite3.IntegrityError
        ):
            what += ": the file is corrupt or not a consent store"
        return StoreUnavailableError(f"sqlite: {what} ({path})")
    return StoreError(f"sqlite job failed: {exc!r}")


def _not_found(path: str) -> str:
    return f"no consent store at {path}; the daemon creates it on first start"


def _locate(name: str, create: bool) -> tuple[str, bool]:
    """The absolute path of ``name`` and whether it exists; creates its directory if asked."""
    absolute = os.path.abspath(name)
    if os.path.exists(absolute):
        return absolute, True
    if not create:
        raise StoreNotFoundError(_not_found(name))
    # The first run creates the state directory (the example config keeps it beside the
    # working directory); a missing parent would surface as "unable to open".
    try:
        Path(absolute).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"sqlite: cannot create the directory of {name}: {exc}") from exc
    # Numbers and their words are personal data: the file is the service user's alone, whatever
    # the umask (SQLite gives its -wal and -shm files the database file's permissions). An
    # empty file is a valid empty database.
    try:
        os.close(os.open(absolute, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # another process created it meanwhile
    except OSError as exc:
        raise StoreError(f"sqlite: cannot create {name}: {exc.strerror}") from exc
    return absolute, False


def _uri(path: str, mode: str) -> str:
    """A ``file:`` URI for ``path``: ``mode=rw`` never creates the file, ``rwc`` may."""
    return f"{Path(path).as_uri()}?mode={mode}"


def _connect(uri: str, busy_timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(
        uri, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False, uri=True
    )
    conn.execute("PRAGMA synchronous = FULL")
    return conn


class _StoreFile:
    """The database file as it was opened: its identity, and a descriptor to read its header.

    ``check`` raises StoreUnavailableError when the path no longer names that file (removed,
    its directory moved away, replaced by another file), when its mode lost every read or
    every write bit, or when the SQLite header is gone. It is safe from any thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreUnavailableError(f"sqlite: {path} was removed while opening") from None
        except OSError as exc:
            raise StoreUnavailableError(f"sqlite: cannot read {path}: {exc.strerror}") from None
        st = os.fstat(self._fd)
        self.identity = (st.st_dev, st.st_ino)

    def check(self) -> None:
        path = self.path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise StoreUnavailableError(
                f"sqlite: {path} was removed or its directory moved away"
            ) from None
        except OSError as exc:
            raise StoreUnavailableError(f"sqlite: cannot stat {path}: {exc.strerror}") from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise StoreUnavailableError(
                f"sqlite: {path} was replaced; restart the gateway to use the new file"
            )
        if not st.st_mode & 0o444:
            raise StoreUnavailableError(
                f"sqlite: {path} was made unreadable (mode {stat.filemode(st.st_mode)})"
            )
        if not st.st_mode & 0o222:
            raise StoreUnavailableError(
                f"sqlite: {path} was made read-only (mode {stat.filemode(st.st_mode)})"
            )
        try:
            header = os.pread(self._fd, len(SQLITE_MAGIC), 0)
        except OSError as exc:
            raise StoreUnavailableError(f"sqlite: cannot read {path}: {exc.strerror}") from None
        if header != SQLITE_MAGIC:
            raise StoreUnavailableError(
                f"sqlite: {path} is corrupt: the SQLite header was overwritten"
            )

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _read_seq(conn: sqlite3.Connection) -> int:
    rows = conn.execute("SELECT value FROM meta WHERE key = 'change_seq'").fetchall()
    return int(rows[0][0]) if rows else 0


@dataclass(slots=True, kw_only=True)
class _Job(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    future: asyncio.Future[T]
    touched: tuple[str, ...] = ()
    raw: bool = False  # run outside the batch transaction (schema migration)


# (change_seq before, after, subscribers written, doubtful: the file was wrong after COMMIT)
_CommitHook = Callable[[int, int, list[str], bool], None]
_Commit = tuple[int, int, list[str], bool]


@dataclass(slots=True, kw_only=True)
class _Outcome:
    job: _Job[Any]
    value: Any = None
    error: BaseException | None = None
    broke: bool = False  # the database failed under the connection: make a new one


@dataclass(kw_only=True)
class _Worker:
    """One thread owning one connection; jobs run in submission order."""

    path: str
    uri: str
    name: str
    busy_timeout_s: float
    loop: asyncio.AbstractEventLoop
    writer: bool
    on_commit: _CommitHook | None = None
    # The file check, set once the file is open; it runs before every job (and after COMMIT).
    check: Callable[[], None] | None = None
    _queue: queue.SimpleQueue[_Job[Any] | None] = field(default_factory=queue.SimpleQueue)
    _thread: threading.Thread | None = None
    _closed: bool = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        touched: tuple[str, ...] = (),
        raw: bool = False,
    ) -> asyncio.Future[T]:
        if self._closed:
            raise StoreError("store is closed")
        future: asyncio.Future[T] = self.loop.create_future()
        self._queue.put(_Job(fn=fn, future=future, touched=touched, raw=raw))
        return future

    async def stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # --- worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        connect_error: BaseException | None = None

        def connect() -> None:
            nonlocal conn, connect_error
            try:
                conn = _connect(self.uri, self.busy_timeout_s)
                connect_error = None
            except sqlite3.Error as exc:
                conn = None
                connect_error = _translate(exc, self.path)

        connect()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch: list[_Job[Any]] = [first]
                stopping = False
                while self.writer and not first.raw and len(batch) < _MAX_BATCH:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    if nxt.raw:
                        self._queue.put(nxt)  # raw jobs are never batched; rare (open only)
                        break
                    batch.append(nxt)
                if conn is None:
                    connect()  # the file may be back: a broken connection is made anew
                broken = False
                if conn is None:
                    error = connect_error or StoreUnavailableError("sqlite: no connection")
                    self._deliver([_Outcome(job=j, error=error) for j in batch])
                elif self.writer and not first.raw:
                    broken = self._write_batch(conn, batch)
                else:
                    outcomes = [self._run_one(conn, job) for job in batch]
                    broken = any(o.broke for o in outcomes)
                    self._deliver(outcomes)
                if broken and conn is not None:
                    # The database failed under this connection (I/O, a file gone and back, a
                    # lock): it may stay broken, so the next job gets a new one.
                    with contextlib.suppress(sqlite3.Error):
                        conn.close()
                    conn = None
                if stopping:
                    return
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):  # a corrupt file may fail its close
                    conn.close()

    def _run_one(self, conn: sqlite3.Connection, job: _Job[Any]) -> _Outcome:
        try:
            if self.check is not None and not job.raw:
                self.check()
            return _Outcome(job=job, value=job.fn(conn))
        except sqlite3.Error as exc:
            return _Outcome(job=job, error=_translate(exc, self.path), broke=True)
        except StoreError as exc:
            return _Outcome(job=job, error=_translate(exc, self.path))
        except Exception as exc:  # noqa: BLE001 - a job is a task boundary: hand the bug over
            return _Outcome(job=job, error=exc)

    def _write_batch(self, conn: sqlite3.Connection, batch: list[_Job[Any]]) -> bool:
        """Run and commit the batch; True when the database failed under the connection."""
        outcomes: list[_Outcome] = []
        try:
            if self.check is not None:
                self.check()  # never write into a file that is no longer the store
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = _read_seq(conn)
                for job in batch:
                    conn.execute("SAVEPOINT job")
                    try:
                        value = job.fn(conn)
                    except sqlite3.IntegrityError as exc:
                        # This job's data broke a constraint: only this job fails.
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        outcomes.append(_Outcome(job=job, error=_translate(exc, self.path)))
                        continue
                    except sqlite3.Error:
                        raise  # the database failed (I/O, lock, corrupt): the whole batch fails
                    except Exception as exc:  # noqa: BLE001 - a job is a task boundary
                        conn.execute("ROLLBACK TO job")
                        conn.execute("RELEASE job")
                        outcomes.append(_Outcome(job=job, error=_translate(exc, self.path)))
                        continue
                    conn.execute("RELEASE job")
                    outcomes.append(_Outcome(job=job, value=value))
                after = _read_seq(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except (sqlite3.Error, StoreError) as exc:
            error = _translate(exc, self.path)
            self._deliver([_Outcome(job=job, error=error) for job in batch])
            return isinstance(exc, sqlite3.Error)
        touched = [s for o in outcomes if o.error is None for s in o.job.touched]
        if self.check is not None:
            try:
                # Committed, but into the store? A file removed, replaced, made read-only or
                # overwritten meanwhile got the batch instead: none of it may be acknowledged.
                self.check()
            except StoreUnavailableError as exc:
                error = StoreUnavailableError(f"{exc} (a write was not acknowledged)")
                self._deliver(
                    [_Outcome(job=job, error=error) for job in batch],
                    commit=(before, after, touched, True),
                )
                return True
        self._deliver(outcomes, commit=(before, after, touched, False))
        return False

    def _deliver(self, outcomes: list[_Outcome], commit: _Commit | None = None) -> None:
        def settle() -> None:
            # Runs on the loop: the cache learns of the commit before any caller resumes.
            if commit is not None and self.on_commit is not None:
                self.on_commit(*commit)
            for outcome in outcomes:
                future = outcome.job.future
                if future.done():
                    continue
                if outcome.error is not None:
                    future.set_exception(outcome.error)
                else:
                    future.set_result(outcome.value)

        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
            self.loop.call_soon_threadsafe(settle)


# --- jobs (run on the worker threads) ---------------------------------------------------------


def _reserve_sends(conn: sqlite3.Connection, batch: list[CapReservation]) -> list[CapVerdict]:
    """``gateway.consent.caps.reserve_all`` on the ``sends`` table, in the caller's
    transaction. A counter is trimmed and counted once per batch, then its count and its oldest
    send are carried along in the job: it is trimmed again only when a later reservation's
    window could leave a send out."""
    verdicts: list[CapVerdict] = []
    # Per counter: how many it holds, and the time of its oldest send (inf: none).
    known: dict[tuple[str, str], list[float]] = {}
    for r in batch:
        where = (r.subscriber, r.key)
        horizon = r.now - r.window_s
        seen = known.get(where)
        if seen is None or horizon >= seen[1]:
            conn.execute(
                "DELETE FROM sends WHERE subscriber = ? AND counter = ? AND at <= ?",
                (*where, horizon),
            )
            row = conn.execute(
                "SELECT count(*), min(at), coalesce(max(token = ?), 0) FROM sends"
                " WHERE subscriber = ? AND counter = ?",
                (r.token, *where),
            ).fetchall()[0]
            counted, already = int(row[0]), bool(row[2])
            seen = known[where] = [counted, math.inf if row[1] is None else float(row[1])]
        else:
            counted = int(seen[0])
            already = bool(
                conn.execute(
                    "SELECT 1 FROM sends WHERE subscriber = ? AND counter = ? AND token = ?",
                    (*where, r.token),
                ).fetchall()
            )
        if not admits(counted, limit=r.limit, already=already):
            verdicts.append(CapVerdict(False, counted))
        elif already:
            verdicts.append(CapVerdict(True, counted))
        else:
            conn.execute(
                "INSERT INTO sends (subscriber, counter, token, at) VALUES (?, ?, ?, ?)",
                (*where, r.token, r.now),
            )
            seen[0] = counted + 1
            seen[1] = min(seen[1], r.now)
            verdicts.append(CapVerdict(True, counted + 1))
    return verdicts


def _migrate(conn: sqlite3.Connection, *, path: str, create: bool) -> int:
    # Read before anything is written: without ``create`` a file with no schema (empty, or
    # another database) is not a consent store, and it is left exactly as it is.
    if not create and int(conn.execute("PRAGMA user_version").fetchall()[0][0]) == 0:
        raise StoreNotFoundError(
            f"{path} is not a consent store (empty, or another database); "
            "the daemon creates its store on first start"
        )
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
    if str(mode).lower() != "wal":
        raise StoreError(f"sqlite: cannot use WAL journal mode (got {mode})")
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _upgrade(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version


def _upgrade(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations inside the caller's transaction; returns the old version."""
    version = int(conn.execute("PRAGMA user_version").fetchall()[0][0])
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"sqlite: schema version {version} is newer than this gateway's {SCHEMA_VERSION}"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        for statement in _MIGRATIONS[target]:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return version


def _append(conn: sqlite3.Connection, event: ConsentEvent) -> bool:
    if event.dedup_key is not None:
        cursor = conn.execute(
            "INSERT OR IGNORE INTO dedup (subscriber, dedup_key, event_id) VALUES (?, ?, ?)",
            (event.subscriber, event.dedup_key, event.event_id),
        )
        if cursor.rowcount == 0:
            return False
    conn.execute(
        "INSERT INTO events (event_id, subscriber, scope, at, state, dedup_key, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            event.event_id,
            event.subscriber,
            event.scope,
            event.at,
            event.state.value,
            event.dedup_key,
            event_to_json(event),
        ),
    )
    conn.execute(
        "INSERT INTO current (subscriber, scope, state, updated_at, last_event_id)"
        " VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (subscriber, scope) DO UPDATE SET state = excluded.state,"
        " updated_at = excluded.updated_at, last_event_id = excluded.last_event_id",
        (event.subscriber, event.scope, event.state.value, event.at, event.event_id),
    )
    return True


# --- batched reads and the all-or-nothing import (``consent import``) ---------------------------

_MANY_PER_QUERY: Final = 500  # subscribers per ``IN (...)`` (well below SQLite's variable limit)
_MANY_PER_JOB: Final = 4000  # subscribers per reader job (a thread hop per few thousand)


def _load_current_many(
    conn: sqlite3.Connection, subscribers: list[str]
) -> dict[str, Mapping[str, ConsentRecord]]:
    found: dict[str, dict[str, ConsentRecord]] = {s: {} for s in subscribers}
    for start in range(0, len(subscribers), _MANY_PER_QUERY):
        part = subscribers[start : start + _MANY_PER_QUERY]
        rows = conn.execute(
            f"SELECT {_RECORD_COLUMNS} FROM current"  # noqa: S608 - placeholders only
            f" WHERE subscriber IN ({','.join('?' * len(part))})",
            part,
        ).fetchall()
        for row in rows:
            found[row[0]][row[1]] = _record(row)
    return {s: MappingProxyType(records) for s, records in found.items()}


def _load_history_many(
    conn: sqlite3.Connection, subscribers: list[str]
) -> dict[str, list[ConsentEvent]]:
    found: dict[str, list[ConsentEvent]] = {s: [] for s in subscribers}
    for start in range(0, len(subscribers), _MANY_PER_QUERY):
        part = subscribers[start : start + _MANY_PER_QUERY]
        rows = conn.execute(
            "SELECT subscriber, body FROM events"  # noqa: S608 - placeholders only
            f" WHERE subscriber IN ({','.join('?' * len(part))}) ORDER BY seq",
            part,
        ).fetchall()
        for subscriber, body in rows:
            found[subscriber].append(event_from_json(body))
    return found


# The import is staged in a table of the writer connection's own temporary database (never in
# the store file), then moved into ``events`` and ``current`` by set-based statements, in the
# one transaction of the writer job: it commits whole or not at all.
_STAGE: Final = "temp.import_stage"
_STAGE_CONFLICTS: Final = (
    f"SELECT s.ord, s.event_id FROM {_STAGE} AS s LEFT JOIN current AS c"  # noqa: S608
    " ON c.subscriber = s.subscriber AND c.scope = s.scope"
    " WHERE c.last_event_id IS NOT s.expected"
)
_STAGE_TO_EVENTS: Final = (
    "INSERT INTO events (event_id, subscriber, scope, at, state, dedup_key, body)"  # noqa: S608
    f" SELECT event_id, subscriber, scope, at, state, NULL, body FROM {_STAGE} ORDER BY ord"
)
# ``WHERE true``: an upsert after a SELECT needs it (or SQLite reads ON as a join's).
_STAGE_TO_CURRENT: Final = (
    "INSERT INTO current (subscriber, scope, state, updated_at, last_event_id)"  # noqa: S608
    f" SELECT subscriber, scope, state, at, event_id FROM {_STAGE} WHERE true ORDER BY ord"
    " ON CONFLICT (subscriber, scope) DO UPDATE SET state = excluded.state,"
    " updated_at = excluded.updated_at, last_event_id = excluded.last_event_id"
)


def _import_changes(
    conn: sqlite3.Connection, rows: list[tuple[int, str, str, str, float, str, str, str | None]]
) -> tuple[int, frozenset[str]]:
    conn.execute(f"DROP TABLE IF EXISTS {_STAGE}")
    conn.execute(
        f"CREATE TABLE {_STAGE} (ord INTEGER PRIMARY KEY, subscriber TEXT NOT NULL,"
        " scope TEXT NOT NULL, state TEXT NOT NULL, at REAL NOT NULL, event_id TEXT NOT NULL,"
        " body TEXT NOT NULL, expected TEXT)"
    )
    conn.executemany(f"INSERT INTO {_STAGE} VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)  # noqa: S608
    refused = conn.execute(_STAGE_CONFLICTS).fetchall()
    if refused:
        conn.executemany(
            f"DELETE FROM {_STAGE} WHERE ord = ?",  # noqa: S608
            [(ordinal,) for ordinal, _ in refused],
        )
    conn.execute(_STAGE_TO_EVENTS)
    conn.execute(_STAGE_TO_CURRENT)
    conn.execute(f"DROP TABLE {_STAGE}")
    return len(rows) - len(refused), frozenset(event_id for _, event_id in refused)


_PUT_MESSAGE_IDS: Final = (
    "INSERT INTO message_ids (upstream_id, client_ids, account, expires) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (upstream_id) DO UPDATE SET client_ids = excluded.client_ids,"
    " account = excluded.account, expires = excluded.expires"
)
# Bounded deletes (DELETE ... LIMIT is a compile-time option of SQLite): the keys to delete
# come from the expiry index, at most ``limit`` of them.
_PURGE_EXPIRED: Final = (
    "DELETE FROM message_ids WHERE upstream_id IN"
    " (SELECT upstream_id FROM message_ids WHERE expires <= ? ORDER BY expires LIMIT ?)"
)
_DROP_FIRST_EXPIRING: Final = (
    "DELETE FROM message_ids WHERE upstream_id IN"
    " (SELECT upstream_id FROM message_ids ORDER BY expires LIMIT ?)"
)


def _message_id_count(conn: sqlite3.Connection) -> int:
    rows = conn.execute("SELECT value FROM meta WHERE key = 'message_ids'").fetchall()
    if rows:
        return int(rows[0][0])
    # The counter row was deleted by hand: count once and keep counting from here.
    conn.execute("INSERT INTO meta (key, value) SELECT 'message_ids', count(*) FROM message_ids")
    return _message_id_count(conn)


def _put_message_ids(
    conn: sqlite3.Connection, rows: list[tuple[str, str, str, float]], max_rows: int
) -> None:
    limit = _PURGE_BATCH + len(rows)
    conn.execute(_PURGE_EXPIRED, (time.time(), limit))
    conn.executemany(_PUT_MESSAGE_IDS, rows)
    excess = _message_id_count(conn) - max_rows
    if excess > 0:
        conn.execute(_DROP_FIRST_EXPIRING, (min(excess, limit),))


def _get_message_ids(conn: sqlite3.Connection, upstream_id: str) -> MessageIds | None:
    rows = conn.execute(
        "SELECT client_ids, account FROM message_ids WHERE upstream_id = ? AND expires > ?",
        (upstream_id, time.time()),
    ).fetchall()
    if not rows:
        return None
    raw, account = rows[0]
    try:
        client_ids = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise StoreUnavailableError(f"sqlite: undecodable message ids: {exc}") from exc
    if (
        not isinstance(client_ids, list)
        or not all(isinstance(i, str) for i in client_ids)
        or not isinstance(account, str)
    ):
        raise StoreUnavailableError("sqlite: undecodable message ids: not a list of strings")
    return MessageIds(upstream_id=upstream_id, client_ids=tuple(client_ids), account=account)


def _record_reply(conn: sqlite3.Connection, reply: ReplyRecord, max_rows: int) -> bool:
    cursor = conn.execute(
        "INSERT OR IGNORE INTO replies (reply_id, event_id, subscriber, at, body)"
        " VALUES (?, ?, ?, ?, ?)",
        (reply.reply_id, reply.event_id, reply.subscriber, reply.at, reply_to_json(reply)),
    )
    if cursor.rowcount == 0:
        return False
    # The subscriber's rows beyond the newest max_rows (normally none, or the one just pushed
    # out): everything up to the seq of the (max_rows + 1)-th newest.
    conn.execute(
        "DELETE FROM replies WHERE subscriber = ? AND seq <= (SELECT seq FROM replies"
        " WHERE subscriber = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
        (reply.subscriber, reply.subscriber, max_rows),
    )
    return True


def _load_replies(conn: sqlite3.Connection, subscriber: str) -> list[ReplyRecord]:
    rows = conn.execute(
        "SELECT body FROM replies WHERE subscriber = ? ORDER BY seq", (subscriber,)
    ).fetchall()
    return [reply_from_json(row[0]) for row in rows]


def _read_records(conn: sqlite3.Connection) -> int:
    rows = conn.execute("SELECT value FROM meta WHERE key = 'records'").fetchall()
    if not rows:
        raise StoreUnavailableError("sqlite: the record count is missing from meta")
    return int(rows[0][0])


def _touch_probe(conn: sqlite3.Connection) -> None:
    cursor = conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'probe'")
    if cursor.rowcount != 1:
        raise StoreUnavailableError("sqlite: the probe row is missing from meta")


def read_record_count(path: str) -> int:
    """The record count of the store file at ``path``, for ``check-config``.

    Read-only: nothing is created, migrated or written (a file of schema version 1, which
    has no counter yet, is counted with one scan). Raises StoreNotFoundError when there is no
    file, StoreUnavailableError when it cannot be read or is not a consent store, StoreError
    when it was written by a newer gateway.
    """
    if not os.path.exists(path):
        raise StoreNotFoundError(_not_found(path))
    try:
        with open(path, "rb") as file:
            header = file.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise StoreUnavailableError(f"sqlite: cannot read {path}: {exc.strerror}") from None
    if header != SQLITE_MAGIC:
        raise StoreUnavailableError(f"sqlite: {path} is corrupt: it has no SQLite header")
    try:
        conn = sqlite3.connect(_uri(os.path.abspath(path), "ro"), uri=True)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchall()[0][0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"sqlite: schema version {version} of {path} is newer than this "
                    f"gateway's {SCHEMA_VERSION}"
                )
            if version == 0:
                raise StoreUnavailableError(
                    f"sqlite: {path} is not a consent store (empty, or another database)"
                )
            if version == 1:
                return int(conn.execute("SELECT count(*) FROM current").fetchall()[0][0])
            return _read_records(conn)
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise _translate(exc, path) from exc


def _record(row: tuple[Any, ...]) -> ConsentRecord:
    return ConsentRecord(
        subscriber=row[0],
        scope=row[1],
        state=ConsentState(row[2]),
        updated_at=float(row[3]),
        last_event_id=row[4],
    )


_RECORD_COLUMNS: Final = "subscriber, scope, state, updated_at, last_event_id"


# --- the store --------------------------------------------------------------------------------


class SqliteStore:
    """ConsentStore on one SQLite file; build it with ``await SqliteStore.open(path)``."""

    def __init__(
        self,
        *,
        path: str,
        instance: str,
        writer: _Worker,
        reader: _Worker,
        cache_size: int,
        change_check_interval_s: float,
        max_message_ids: int = MAX_MESSAGE_IDS,
        max_replies: int = MAX_REPLIES,
    ) -> None:
        self.path = path
        self._max_message_ids = max_message_ids
        self._max_replies = max_replies
        self.instance = instance
        self._writer = writer
        self._reader = reader
        self._cache = ConsentCache(cache_size)
        self._seen = SeenCache(cache_size)
        self._batch = BatchLoader(self._cache, lambda subscribers: self.current_many(subscribers))
        self._check_interval_s = change_check_interval_s
        self._next_check = 0.0
        self._probe: sqlite3.Connection | None = None
        self._file: _StoreFile | None = None
        self._data_version = -1
        self._checked_this_turn = False
        # False after a failed check: then every call checks again, nothing is skipped.
        self._trusted = False
        self._known_seq = -1
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        instance: str = "",
        create: bool = False,
        cache_size: int = 100_000,
        busy_timeout_s: float = 5.0,
        change_check_interval_s: float = 0.0,
        max_message_ids: int = MAX_MESSAGE_IDS,
        max_replies: int = MAX_REPLIES,
    ) -> SqliteStore:
        """Open (migrating) the database file at ``path``.

        A missing file raises StoreNotFoundError unless ``create`` is true (the daemon passes
        it; the CLI and the config checker never do), in which case the file and its directory
        are created and ``store_created`` is logged. ``max_message_ids`` bounds the rows of
        the ``message_ids`` table, ``max_replies`` the auto-reply records kept per subscriber
        (see the module docstring).
        """
        loop = asyncio.get_running_loop()
        name = str(path)
        if name == ":memory:" or name.startswith("file:"):
            raise StoreError("sqlite: a file path is required (in memory is not durable)")
        if max_message_ids < 1:
            raise StoreError("sqlite: max_message_ids must be at least 1")
        if max_replies < 1:
            raise StoreError("sqlite: max_replies must be at least 1")
        absolute, existed = _locate(name, create)
        common: dict[str, Any] = {"path": name, "busy_timeout_s": busy_timeout_s, "loop": loop}
        # Only this first connection may create the file; every later one opens it or fails.
        writer = _Worker(
            name="consent-sqlite-writer",
            writer=True,
            uri=_uri(absolute, "rwc" if create else "rw"),
            **common,
        )
        reader = _Worker(
            name="consent-sqlite-reader", writer=False, uri=_uri(absolute, "rw"), **common
        )
        store = cls(
            path=name,
            instance=instance,
            writer=writer,
            reader=reader,
            cache_size=cache_size,
            change_check_interval_s=change_check_interval_s,
            max_message_ids=max_message_ids,
            max_replies=max_replies,
        )
        writer.on_commit = store._on_commit
        writer.start()
        try:
            await writer.submit(lambda conn: _migrate(conn, path=name, create=create), raw=True)
            store._file = _StoreFile(absolute)
            store._file.check()  # a read-only or damaged file is refused at start as well
            writer.check = reader.check = store._file.check
            reader.start()
            try:
                store._probe = _connect(_uri(absolute, "rw"), busy_timeout_s)
            except sqlite3.Error as exc:
                raise _translate(exc, name) from exc
        except BaseException:
            await store.close()
            raise
        if not existed:
            _log.info(logs.STORE_CREATED, path=absolute)
        return store

    # --- cache coherence (event loop thread) --------------------------------------------------

    def _on_commit(self, before: int, after: int, touched: list[str], doubtful: bool) -> None:
        if doubtful:
            # Committed into a file that is no longer the store: trust no cached answer.
            self._cache.clear()
            self._known_seq = -1
            self._trusted = False
            return
        if before == self._known_seq:
            for subscriber in touched:
                self._cache.invalidate(subscriber)
        else:
            self._cache.clear()  # someone else committed in between: trust nothing
        self._known_seq = after

    def _validate(self) -> bool:
        """Drop the cache if another connection changed the data; False if unsure."""
        if self._trusted:
            if self._check_interval_s > 0:
                now = time.monotonic()
                if now < self._next_check:
                    return True
                self._next_check = now + self._check_interval_s
            elif self._checked_this_turn:
                return True
            else:
                try:
                    asyncio.get_running_loop().call_soon(self._end_turn)
                    self._checked_this_turn = True
                except RuntimeError:
                    pass  # no loop (a synchronous caller): check every time
        probe = self._probe
        file = self._file
        if probe is None or file is None:
            return False
        try:
            # Is the path still our file, writable and intact? Else other processes may be
            # writing a different file now, and nothing cached can be trusted.
            file.check()
            version = probe.execute("PRAGMA data_version").fetchall()[0][0]
            if version == self._data_version:
                self._trusted = True
                return True
            seq = _read_seq(probe)
        except (sqlite3.Error, StoreUnavailableError):
            self._cache.clear()
            self._trusted = False
            return False
        self._data_version = version
        if seq != self._known_seq:
            self._cache.clear()
            self._known_seq = seq
        self._trusted = True
        return True

    def _end_turn(self) -> None:
        self._checked_this_turn = False

    # --- ConsentStore -------------------------------------------------------------------------

    async def append(self, event: ConsentEvent) -> bool:
        return await self._writer.submit(
            lambda conn: _append(conn, event), touched=(event.subscriber,)
        )

    def cached_current(self, subscriber: str) -> Mapping[str, ConsentRecord] | None:
        if self._closed or not self._validate():
            return None
        return self._cache.get(subscriber)

    async def current(self, subscriber: str) -> Mapping[str, ConsentRecord]:
        hit = self.cached_current(subscriber)
        if hit is not None:
            return hit
        # The misses of this loop turn share one reader job (one file check, one wake-up).
        return await self._batch.load(subscriber)

    async def history(self, subscriber: str, scope: str | None = None) -> list[ConsentEvent]:
        def load(conn: sqlite3.Connection) -> list[ConsentEvent]:
            if scope is None:
                rows = conn.execute(
                    "SELECT body FROM events WHERE subscriber = ? ORDER BY seq", (subscriber,)
                ).fetchall()
            else:
                rows = conn.execute(
                    "SELECT body FROM events WHERE subscriber = ? AND scope = ? ORDER BY seq",
                    (subscriber, scope),
                ).fetchall()
            return [event_from_json(row[0]) for row in rows]

        return await self._reader.submit(load)

    def cached_footer_seen(self, subscriber: str, campaign: str) -> bool | None:
        return self._seen.get(subscriber, campaign)

    async def footer_seen(self, subscriber: str, campaign: str) -> bool:
        if self._seen.get(subscriber, campaign):
            return True

        def load(conn: sqlite3.Connection) -> bool:
            rows = conn.execute(
                "SELECT 1 FROM footer_seen WHERE subscriber = ? AND campaign = ?",
                (subscriber, campaign),
            ).fetchall()
            return bool(rows)

        seen = await self._reader.submit(load)
        if seen:
            self._seen.add(subscriber, campaign)
        return seen

    async def mark_footer_seen(self, subscriber: str, campaign: str, at: float) -> None:
        def mark(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO footer_seen (subscriber, campaign, at) VALUES (?, ?, ?)",
                (subscriber, campaign, at),
            )

        await self._writer.submit(mark)
        self._seen.add(subscriber, campaign)

    async def reserve_send(
        self, subscriber: str, key: str, token: str, *, limit: int, window_s: float, now: float
    ) -> CapVerdict:
        reservation = CapReservation(subscriber, key, token, limit, window_s, now)
        return (await self.reserve_sends([reservation]))[0]

    async def reserve_sends(self, batch: Sequence[CapReservation]) -> list[CapVerdict]:
        # One job of the writer for the whole batch, inside its BEGIN IMMEDIATE transaction:
        # every check and its insert hold the database's write lock together, across processes
        # too, and the batch is committed as one (one hand-off, one savepoint, one commit).
        items = list(batch)
        if not items:
            return []
        return await self._writer.submit(lambda conn: _reserve_sends(conn, items))

    async def release_send(self, subscriber: str, key: str, token: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM sends WHERE subscriber = ? AND counter = ? AND token = ?",
                (subscriber, key, token),
            )

        await self._writer.submit(run)

    async def sends_counted(self, subscriber: str, key: str, window_s: float, now: float) -> int:
        def load(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT count(*) FROM sends WHERE subscriber = ? AND counter = ? AND at > ?",
                (subscriber, key, now - window_s),
            ).fetchall()
            return int(rows[0][0])

        return await self._reader.submit(load)

    async def export(self) -> AsyncIterator[ConsentRecord]:
        after: tuple[str, str] = ("", "")
        while True:

            def page(
                conn: sqlite3.Connection, start: tuple[str, str] = after
            ) -> list[ConsentRecord]:
                rows = conn.execute(
                    f"SELECT {_RECORD_COLUMNS} FROM current"  # noqa: S608
                    " WHERE (subscriber, scope) > (?, ?) ORDER BY subscriber, scope LIMIT ?",
                    (*start, _EXPORT_PAGE),
                ).fetchall()
                return [_record(row) for row in rows]

            records = await self._reader.submit(page)
            for record in records:
                yield record
            if len(records) < _EXPORT_PAGE:
                return
            after = (records[-1].subscriber, records[-1].scope)

    async def import_events(
        self, events: Iterable[ConsentEvent] | AsyncIterable[ConsentEvent]
    ) -> int:
        appended = 0
        async for chunk in batches(events, _IMPORT_CHUNK):

            def run(conn: sqlite3.Connection, chunk: list[ConsentEvent] = chunk) -> int:
                return sum(_append(conn, event) for event in chunk)

            touched = tuple({event.subscriber for event in chunk})
            appended += await self._writer.submit(run, touched=touched)
        return appended

    async def current_many(
        self, subscribers: Iterable[str]
    ) -> dict[str, Mapping[str, ConsentRecord]]:
        """Reader jobs of a few thousand subscribers, ``IN (...)`` queries of 500."""
        wanted = list(dict.fromkeys(subscribers))
        found: dict[str, Mapping[str, ConsentRecord]] = {}
        for start in range(0, len(wanted), _MANY_PER_JOB):
            part = wanted[start : start + _MANY_PER_JOB]

            def load(conn: sqlite3.Connection, part: list[str] = part) -> Any:
                return _load_current_many(conn, part)

            found.update(await self._reader.submit(load))
        return found

    async def history_many(self, subscribers: Iterable[str]) -> dict[str, list[ConsentEvent]]:
        wanted = list(dict.fromkeys(subscribers))
        found: dict[str, list[ConsentEvent]] = {}
        for start in range(0, len(wanted), _MANY_PER_JOB):
            part = wanted[start : start + _MANY_PER_JOB]

            def load(conn: sqlite3.Connection, part: list[str] = part) -> Any:
                return _load_history_many(conn, part)

            found.update(await self._reader.submit(load))
        return found

    async def import_changes(self, changes: Sequence[ImportChange]) -> ImportOutcome:
        """One writer job, so one transaction: the changes are staged in a temporary table,
        checked against ``current`` and moved into ``events`` and ``current`` together, or
        (any failure, a killed process) not at all. The job holds the database's write lock
        while it runs: other processes' writes wait for it (``busy_timeout_s``)."""
        if self._closed:
            raise StoreError("store is closed")
        check_import_changes(changes)
        if not changes:
            return ImportOutcome(appended=0)
        rows = [
            (
                ordinal,
                c.event.subscriber,
                c.event.scope,
                c.event.state.value,
                c.event.at,
                c.event.event_id,
                event_to_json(c.event),
                c.expected,
            )
            for ordinal, c in enumerate(changes)
        ]
        touched = tuple(dict.fromkeys(c.event.subscriber for c in changes))
        appended, conflicts = await self._writer.submit(
            lambda conn: _import_changes(conn, rows), touched=touched
        )
        return ImportOutcome(appended=appended, conflicts=conflicts)

    async def resume_imports(self) -> ResumedImports:
        """Nothing to resume: an import commits in one transaction."""
        if self._closed:
            raise StoreError("store is closed")
        return ResumedImports()

    async def put_message_ids(self, entries: Iterable[MessageIds], ttl_s: float) -> None:
        """One writer job for all ``entries`` (see the module docstring for the bounds)."""
        if self._closed:
            raise StoreError("store is closed")
        if not math.isfinite(ttl_s):
            raise StoreError(f"sqlite: ttl_s must be a finite number of seconds, not {ttl_s}")
        expires = time.time() + ttl_s
        rows = [
            (
                entry.upstream_id,
                json.dumps(list(entry.client_ids), separators=(",", ":"), ensure_ascii=False),
                entry.account,
                expires,
            )
            for entry in entries
        ]
        if not rows:
            return
        max_rows = self._max_message_ids
        await self._writer.submit(lambda conn: _put_message_ids(conn, rows, max_rows))

    async def get_message_ids(self, upstream_id: str) -> MessageIds | None:
        return await self._reader.submit(lambda conn: _get_message_ids(conn, upstream_id))

    async def record_reply(self, reply: ReplyRecord) -> bool:
        """One writer job: the row, then the subscriber's rows beyond ``max_replies``."""
        max_rows = self._max_replies
        return await self._writer.submit(lambda conn: _record_reply(conn, reply, max_rows))

    async def replies(self, subscriber: str) -> list[ReplyRecord]:
        return await self._reader.submit(lambda conn: _load_replies(conn, subscriber))

    async def record_count(self) -> int:
        """The ``meta`` counter kept by triggers on ``current`` (schema version 2)."""
        return await self._reader.submit(_read_records)

    async def ping(self) -> None:
        """The file check, then a read of ``meta`` (``SELECT 1`` reads no page of the file)."""
        await self._reader.submit(_read_records)

    async def probe(self) -> None:
        """The file check, a committed write of the ``meta`` row 'probe' through the writer
        thread (no trigger: no consent data and no change counter moves), the check again;
        then a read through the reader thread, whose connection may fail on its own (it
        reopens the WAL files after they were gone): the store works only if both do."""
        await self._writer.submit(_touch_probe)
        await self._reader.submit(_read_records)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._seen.clear()
        self._known_seq = -1
        self._data_version = -1
        self._trusted = False

    async def close(self) -> None:
        self._closed = True
        self._cache.disable()
        await self._writer.stop()
        await self._reader.stop()
        if self._probe is not None:
            with contextlib.suppress(sqlite3.Error):
                self._probe.close()
            self._probe = None
        if self._file is not None:
            self._file.close()
            self._file = None
