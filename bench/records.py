"""``python -m bench.records``: start-up, memory and MT throughput against a large consent store.

For each size in ``--records`` (default 1,000 and 10,000,000) and each ``--store`` (sqlite,
redis): fill a fresh store with that many consent records *fast*, in the store's own layout
(SQLite: the daemon creates the file, then one transaction of ``executemany`` into ``events``
and ``current``, the store's own triggers keeping its counters; Redis: ``redis-cli --pipe``
of ``HSET`` current and ``RPUSH`` history per subscriber, then the record counter), then start
the gateway (``python -m gateway run``, consent on, the bench campaign, the bench sink as the
SMSC) and measure:

- start-up: from starting the process to the first ``bind_transmitter`` answered OK (the
  gateway answers it only once its upstream bind was), polling the port every 10 ms;
- RSS of the gateway right after that bind;
- MT throughput: ``--messages`` submit_sm at window ``--window`` on that session, after an
  unmeasured ``--warmup``, every one to a different number: no lookup is a cache hit, as in a
  bulk campaign to a large list.

Numbers: index ``i`` of a space of ``--space`` numbers (default: 10,000,000, or the largest size
if larger) is ``1 AAA EEE LLLL`` with area codes 202, 212, 312, 415, 617 and exchanges 200-999
(all valid for ``phonenumbers``). A store of N records holds every (space / N)-th number, so
every size spreads over the same range; the record of number ``i`` is an opt-in under the
campaign's number scope, except one in ten (``i % 10 == 9``) an opt-out. The messages go to
numbers spread evenly over the space (never an opted-out one): against the largest store every
lookup finds a record, against the smallest almost none does (found or not, the lookup is one
index seek). The destinations are the same for every size, so the table compares like with like.

Redis runs as a throwaway ``redis-server`` without persistence (or ``--redis-url``, which is
flushed: give it a server of its own), SQLite in a temporary directory. Everything started
is stopped and every file removed at the end. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import multiprocessing
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from bench import JsonDict, run_loop
from bench.__main__ import (
    CONFIGURATIONS,
    HOST,
    READY_TIMEOUT_S,
    BenchError,
    Child,
    cpu_seconds,
    free_port,
    gateway_config,
    redis_service,
    to_toml,
    wait_port,
)
from bench.load import SOURCE_ADDR, LoadProtocol, templates_for
from bench.sessions import memory
from gateway.consent.model import Actor, ConsentEvent, ConsentState, Scope, ScopeKind
from gateway.smpp import codec
from gateway.smpp.constants import CommandStatus, status_name
from gateway.smpp.pdu import BindTransmitter
from gateway.store.base import event_to_json
from gateway.store.redis import _record_to_json
from gateway.store.sqlite import SqliteStore
from gateway.telemetry import logs

AREAS = ("202", "212", "312", "415", "617")
PER_AREA = 8_000_000  # exchanges 200-999, lines 0000-9999
MAX_SPACE = len(AREAS) * PER_AREA
DEFAULT_SPACE: Final = 10_000_000  # the largest default size
SCOPE = Scope(ScopeKind.NUMBER, SOURCE_ADDR).key  # the bench campaign's number scope
EPOCH = 1_700_000_000.0  # the records' times: one second apart from here
INSTANCE = "bench"
CHUNK = 50_000  # rows per executemany / bytes batch to redis-cli
STARTUP_TIMEOUT_S = 120.0


def number(index: int) -> str:
    """The E.164 digits of number ``index`` of the space."""
    area, rest = divmod(index, PER_AREA)
    return f"1{AREAS[area]}{200 + rest // 10_000:03d}{rest % 10_000:04d}"


def record_indices(records: int, space: int) -> range:
    """The numbers a store of ``records`` holds: every (space / records)-th of the space."""
    if not 1 <= records <= space <= MAX_SPACE:
        raise ValueError(f"records must be 1..space and space at most {MAX_SPACE:,}")
    return range(0, records * (space // records), space // records)


def opted_out(index: int) -> bool:
    return index % 10 == 9


def record_event(position: int, index: int) -> ConsentEvent:
    """The one event of number ``index``, the ``position``-th record loaded (an import)."""
    return ConsentEvent(
        event_id=f"b{index:031x}",
        at=EPOCH + position,
        subscriber=number(index),
        scope=SCOPE,
        state=ConsentState.OPTED_OUT if opted_out(index) else ConsentState.OPTED_IN,
        actor=Actor.IMPORT,
        instance=INSTANCE,
        by=f"bench-records:{position + 1}",
    )


class Rows:
    """``record_event``'s rows without building an event per row: the store's own
    serialisations of one sample event per state, with the fields that differ from row to row
    cut out and formatted back in (about 1 us a row instead of 30). ``check`` compares a row
    with what the store's serialisers make of ``record_event``, so a change of either shows."""

    _SENTINELS = ("E" * 32, "98765.4321", "S" * 15, "B" * 12)  # event_id, at, subscriber, by

    def __init__(self) -> None:
        self._body: dict[bool, str] = {}
        self._record: dict[bool, str] = {}
        for out in (False, True):
            sample = dataclasses.replace(
                record_event(0, 9 if out else 0),
                event_id=self._SENTINELS[0],
                at=float(self._SENTINELS[1]),
                subscriber=self._SENTINELS[2],
                by=self._SENTINELS[3],
            )
            self._body[out] = self._template(event_to_json(sample), self._SENTINELS)
            self._record[out] = self._template(
                _record_to_json(sample), (self._SENTINELS[1], self._SENTINELS[0])
            )

    @staticmethod
    def _template(text: str, sentinels: Sequence[str]) -> str:
        """``text`` as a %-format with the sentinels, in this order, as its ``%s``."""
        positions = [text.index(s) for s in sentinels]
        if positions != sorted(positions) or any(text.count(s) != 1 for s in sentinels):
            raise BenchError(f"unexpected serialisation of a consent event: {text}")
        out = text.replace("%", "%%")
        for sentinel in sentinels:
            out = out.replace(sentinel, "%s")
        return out

    def row(self, position: int, index: int) -> tuple[str, str, float, str, str, str]:
        """(event_id, subscriber, at, state, event JSON, current-record JSON) of a record."""
        out = opted_out(index)
        event_id, at, subscriber = f"b{index:031x}", EPOCH + position, number(index)
        by = f"bench-records:{position + 1}"
        return (
            event_id,
            subscriber,
            at,
            _STATES[out],
            self._body[out] % (event_id, repr(at), subscriber, by),
            self._record[out] % (repr(at), event_id),
        )

    def check(self, position: int, index: int) -> None:
        event = record_event(position, index)
        expected = (
            event.event_id,
            event.subscriber,
            event.at,
            event.state.value,
            event_to_json(event),
            _record_to_json(event),
        )
        if self.row(position, index) != expected:
            raise BenchError(f"bench.records makes another row than the store would: {expected}")


_STATES: Final = {False: ConsentState.OPTED_IN.value, True: ConsentState.OPTED_OUT.value}


def destinations(count: int, space: int) -> list[str]:
    """``count`` distinct numbers spread evenly over the space, none of them opted out."""
    step = space // count
    if step < 2:
        raise ValueError("the space must hold at least two numbers per destination")
    out = []
    for k in range(count):
        index = k * step
        out.append(number(index - 1 if opted_out(index) else index))
    return out


# --- filling ----------------------------------------------------------------------------------


async def _create_sqlite(path: Path) -> None:
    store = await SqliteStore.open(path, instance=INSTANCE, create=True)
    await store.close()


_Row = tuple[str, str, float, str, str, str]
_ROWS: Rows | None = None  # one per worker process


def _sqlite_chunk(job: tuple[int, range]) -> list[_Row]:
    """The rows of one chunk (made in a worker process while the parent writes)."""
    global _ROWS  # the worker's own, built once
    if _ROWS is None:
        _ROWS = Rows()
    position, indices = job
    _ROWS.check(position, indices[0])  # a sample per chunk against the store's serialisers
    return [_ROWS.row(position + k, index) for k, index in enumerate(indices)]


def _redis_chunk(job: tuple[int, range, str]) -> bytes:
    """The commands of one chunk, what ``_resp`` makes of them, in one buffer."""
    position, indices, prefix = job
    scope = f"${len(SCOPE)}\r\n{SCOPE}\r\n"
    out: list[str] = []
    for _, subscriber, _, _, body, record in _sqlite_chunk((position, indices)):
        current, history = f"{prefix}:{{{subscriber}}}:c", f"{prefix}:{{{subscriber}}}:h"
        # Every part is ASCII (checked below), so lengths in characters are lengths in bytes.
        out.append(
            f"*4\r\n$4\r\nHSET\r\n${len(current)}\r\n{current}\r\n{scope}"
            f"${len(record)}\r\n{record}\r\n"
            f"*3\r\n$5\r\nRPUSH\r\n${len(history)}\r\n{history}\r\n"
            f"${len(body)}\r\n{body}\r\n"
        )
    text = "".join(out)
    if not text.isascii():
        raise BenchError("a record is not ASCII: the lengths would be wrong")
    return text.encode("ascii")


def _jobs(indices: range, chunk: int = CHUNK) -> Iterator[tuple[int, range]]:
    for start in range(0, len(indices), chunk):
        yield start, indices[start : start + chunk]


@contextlib.contextmanager
def _workers() -> Iterator[Any]:
    """A process pool making the rows while this process writes them (a core each)."""
    processes = max(1, min(2, (os.cpu_count() or 2) - 1))
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        yield pool


def _meta(conn: sqlite3.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT key, value FROM meta").fetchall())


def fill_sqlite(path: Path, indices: range, chunk: int = CHUNK) -> int:
    """Create the store file the daemon's way, then load one record per index in one
    transaction; returns the number loaded.

    ``meta`` (the change counter, the record count) ends as the store's own triggers would
    have left it: the first chunk is written with them, which shows what each row adds; they
    are then dropped for the rest (they would double the cost), and the counters raised by
    that much per row and the triggers created again from their own SQL, in the same
    transaction."""
    asyncio.run(_create_sqlite(path))
    conn = sqlite3.connect(path, isolation_level=None)
    loaded = 0
    try:
        # One transaction: a crash leaves the empty store. In WAL mode every page of it would
        # go through the WAL and be copied again at the checkpoint (and the WAL's index grows
        # with it, slowing each write); a rollback journal holds only the few pages that
        # existed before. The store's WAL mode is set again once the records are in.
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("PRAGMA cache_size = -262144")  # 256 MiB of pages while loading
        conn.execute("BEGIN IMMEDIATE")
        before = _meta(conn)
        triggers: list[tuple[str, str]] = []
        per_row: dict[str, int] = {}
        with _workers() as pool:
            for made in pool.imap(_sqlite_chunk, _jobs(indices, chunk)):
                conn.executemany(
                    "INSERT INTO events (event_id, subscriber, scope, at, state, dedup_key,"
                    f" body) VALUES (?, ?, '{SCOPE}', ?, ?, NULL, ?)",  # a constant, not input
                    [r[:5] for r in made],
                )
                conn.executemany(
                    "INSERT INTO current (subscriber, scope, state, updated_at, last_event_id)"
                    f" VALUES (?, '{SCOPE}', ?, ?, ?)",  # a constant, not input
                    [(r[1], r[3], r[2], r[0]) for r in made],
                )
                if not loaded:
                    per_row, triggers = _drop_insert_triggers(conn, before, len(made))
                loaded += len(made)
        rest = loaded - min(loaded, chunk)
        for key, step in per_row.items():
            conn.execute("UPDATE meta SET value = value + ? WHERE key = ?", (step * rest, key))
        for _, sql in triggers:
            conn.execute(sql)
        conn.execute("COMMIT")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchall()[0][0]
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()
    if mode != "wal":
        raise BenchError(f"{path}: journal mode {mode!r} after the load, not WAL")
    return loaded


def _drop_insert_triggers(
    conn: sqlite3.Connection, before: Mapping[str, int], rows: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """What one row added to each ``meta`` counter (the first ``rows`` were written with the
    triggers), and the triggers that fire on INSERT into events or current, now dropped."""
    after = _meta(conn)
    per_row: dict[str, int] = {}
    for key, value in after.items():
        step, left = divmod(value - before.get(key, 0), rows)
        if left:
            raise BenchError(f"meta {key!r} moved by a fraction of a row per row")
        if step:
            per_row[key] = step
    triggers = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
        " AND tbl_name IN ('events', 'current') AND sql LIKE '%AFTER INSERT%'"
    ).fetchall()
    for name, _ in triggers:
        conn.execute(f'DROP TRIGGER "{name}"')
    return per_row, triggers


def _resp(*parts: str) -> bytes:
    """One command in the Redis protocol (what ``redis-cli --pipe`` reads)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(out)


def redis_commands(indices: range, prefix: str = "gw") -> Iterator[bytes]:
    """The commands that give each index's record the keys the Redis store's append would
    (current hash, history list under the subscriber's hash tag), then the record counter;
    made in worker processes."""
    with _workers() as pool:
        yield from pool.imap(
            _redis_chunk, ((position, part, prefix) for position, part in _jobs(indices))
        )
    yield _resp("INCRBY", f"{prefix}:records", str(len(indices)))


def redis_cli_args(url: str) -> list[str]:
    """``redis-cli`` options for a ``redis://host:port/db`` URL (password from the URL)."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise BenchError("bench.records fills plain redis:// URLs only")
    args = ["-h", parts.hostname or HOST, "-p", str(parts.port or 6379)]
    db = parts.path.strip("/")
    if db:
        args += ["-n", db]
    if parts.password:
        args += ["-a", parts.password, "--no-auth-warning"]
    return args


def fill_redis(url: str, indices: range, prefix: str = "gw") -> int:
    """Flush the database, then pipe the records in with ``redis-cli --pipe``; returns the
    number loaded (the counter redis reports back)."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise BenchError("redis-cli is not on PATH")
    base = [cli, *redis_cli_args(url)]
    subprocess.run([*base, "FLUSHDB"], check=True, capture_output=True, timeout=600)
    with subprocess.Popen(
        [*base, "--pipe"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as pipe:
        assert pipe.stdin is not None
        for block in redis_commands(indices, prefix):
            pipe.stdin.write(block)
        pipe.stdin.close()
        out = (pipe.stdout.read() if pipe.stdout else b"").decode(errors="replace")
        err = (pipe.stderr.read() if pipe.stderr else b"").decode(errors="replace")
        pipe.wait(600)
    if pipe.returncode != 0 or "errors: 0" not in out:
        raise BenchError(f"redis-cli --pipe failed: {out}{err}")
    done = subprocess.run(
        [*base, "GET", f"{prefix}:records"], check=True, capture_output=True, timeout=60
    )
    return int(done.stdout.strip() or 0)


def redis_used_memory(url: str) -> int:
    cli = shutil.which("redis-cli") or "redis-cli"
    done = subprocess.run(
        [cli, *redis_cli_args(url), "INFO", "memory"], check=True, capture_output=True, timeout=60
    )
    for line in done.stdout.decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    return 0


# --- measuring --------------------------------------------------------------------------------


async def _first_bind(port: int, started: float, frames: list[tuple[bytes, bytes]]) -> Any:
    """Connect every 10 ms until the gateway answers a bind OK; the session and the time."""
    loop = asyncio.get_running_loop()
    bind = codec.encode(BindTransmitter(system_id="bench", password="bench"))
    deadline = started + STARTUP_TIMEOUT_S
    while True:
        try:
            _, proto = await loop.create_connection(lambda: LoadProtocol(frames), HOST, port)
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError("the gateway did not accept a connection") from None
            await asyncio.sleep(0.01)  # polling the port: it decides when we go on
            continue
        try:
            status = await proto.request(bind, 30.0)
        except (TimeoutError, ConnectionError):
            proto.close()
            if time.monotonic() > deadline:
                raise BenchError("the gateway did not answer a bind") from None
            await asyncio.sleep(0.01)
            continue
        if status == CommandStatus.ESME_ROK:
            return proto, time.monotonic() - started
        proto.close()
        if time.monotonic() > deadline:
            raise BenchError(f"bind answered {status_name(status)}")
        await asyncio.sleep(0.01)


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    startup_s: float
    rss: int
    throughput: JsonDict
    cpu_s: float | None  # the gateway's CPU during the measured run


async def _drive(
    gateway: Child, port: int, started: float, args: argparse.Namespace, frames: Any
) -> Figures:
    """The first bind (start-up), the RSS, then the warm-up and the measured run on it: the
    session sends ``frames`` in order, the warm-up's first."""
    proto, startup = await _first_bind(port, started, frames)
    try:
        rss = memory(gateway.pid).rss
        if args.warmup:
            await proto.run(args.warmup, args.window, args.timeout, latency=False)
        cpu_before = cpu_seconds(gateway.pid)
        result = await proto.run(args.messages, args.window, args.timeout, latency=False)
        cpu_after = cpu_seconds(gateway.pid)
    finally:
        proto.close()
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return Figures(startup_s=startup, rss=rss, throughput=result.as_dict(), cpu_s=cpu)


def measure(
    store: str, url: str, records: int, args: argparse.Namespace, sink_port: int, workdir: Path
) -> JsonDict:
    """Start the gateway on the filled store and measure; one row of the table."""
    campaign = next(c for c in CONFIGURATIONS if c.name == "gateway-campaign")
    port = free_port()
    data = gateway_config(
        campaign,
        listen_port=port,
        sink_port=sink_port,
        window=args.window,
        tmpdir=workdir,
        services={},
    )
    data["store"] = {"url": url}
    config = workdir / f"gateway-{store}-{records}.toml"
    config.write_text(to_toml(data))
    # Built before the gateway starts, so the first connection attempt is not held up.
    frames = templates_for(destinations(args.warmup + args.messages, args.space))
    started = time.monotonic()
    gateway = Child(
        f"gateway-{store}-{records}",
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        workdir,
        control=False,
    )
    try:
        figures = run_loop(_drive(gateway, port, started, args, frames))
    finally:
        status = gateway.stop()
        tail = gateway.log_tail(10)
    return {
        "store": store,
        "records": records,
        "startup_s": figures.startup_s,
        "rss": figures.rss,
        "throughput": figures.throughput,
        # CPU per message: on a shared machine steadier than the rate (10 ms ticks, so
        # meaningful for runs of a few seconds and more).
        "cpu_us_per_msg": None if figures.cpu_s is None else figures.cpu_s / args.messages * 1e6,
        "gateway_exit": status,
        "gateway_log": tail,
    }


def run(args: argparse.Namespace) -> list[JsonDict]:
    rows: list[JsonDict] = []
    with (
        tempfile.TemporaryDirectory(prefix="smpp-records-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        sink = Child(
            "sink",
            [sys.executable, "-m", "bench.sink", "--host", HOST, "--port", "0"],
            workdir,
            control=True,
        )
        stack.callback(sink.stop)
        sink_port = int(sink.read_json(READY_TIMEOUT_S)["port"])
        wait_port(sink_port, sink)
        for store in args.store:
            redis_url = args.redis_url
            if store == "redis" and redis_url is None:
                redis_url = stack.enter_context(redis_service(workdir))
            for records in args.records:
                _progress(f"{store}: filling {records:,} records")
                indices = record_indices(records, args.space)
                began = time.monotonic()
                extra: JsonDict = {}
                if store == "sqlite":
                    path = workdir / f"consent-{records}.db"
                    loaded = fill_sqlite(path, indices)
                    url = f"sqlite://{path}"
                    extra["file_bytes"] = path.stat().st_size
                else:
                    assert redis_url is not None
                    loaded = fill_redis(redis_url, indices)
                    url = redis_url
                    extra["redis_used_memory"] = redis_used_memory(redis_url)
                fill_s = time.monotonic() - began
                if loaded != records:
                    raise BenchError(f"{store}: loaded {loaded:,} records of {records:,}")
                _progress(f"{store}: {records:,} records in {fill_s:.1f} s; measuring")
                row = measure(store, url, records, args, sink_port, workdir)
                row.update(fill_s=fill_s, **extra)
                rows.append(row)
                if store == "sqlite":
                    for leftover in workdir.glob(f"consent-{records}.db*"):
                        leftover.unlink()  # the next size's file needs the room, not this one
    return rows


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _ratio(mine: float | None, theirs: float | None) -> str:
    return "-" if mine is None or not theirs else f"{mine / theirs:.2f}x"


def report(rows: Sequence[JsonDict], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"gateway against a large consent store: start-up, RSS and MT throughput "
        f"({args.messages:,} submit_sm at window {args.window}, each to another number, "
        f"after {args.warmup:,} unmeasured)",
        "",
        f"{'store':<7} {'records':>11} {'fill s':>8} {'fill rec/s':>11} {'size MiB':>9} "
        f"{'start-up s':>11} {'RSS MiB':>8} {'submit_sm/s':>12} {'cpu us/msg':>11} "
        f"{'OK':>9}  {'vs smallest: rate / cpu / start-up':>34}",
    ]
    smallest: dict[str, JsonDict] = {}
    for row in rows:
        if row["store"] not in smallest or row["records"] < smallest[row["store"]]["records"]:
            smallest[row["store"]] = row
    for row in rows:
        base = smallest[row["store"]]
        rate = row["throughput"]["rate"] or 0.0
        cpu = row.get("cpu_us_per_msg")
        size = row.get("file_bytes") or row.get("redis_used_memory") or 0
        ratios = " / ".join(
            _ratio(mine, theirs)
            for mine, theirs in (
                (rate, base["throughput"]["rate"]),
                (cpu, base.get("cpu_us_per_msg")),
                (row["startup_s"], base["startup_s"]),
            )
        )
        lines.append(
            f"{row['store']:<7} {row['records']:>11,} {row['fill_s']:>8.1f} "
            f"{row['records'] / row['fill_s']:>11,.0f} {size / 2**20:>9,.0f} "
            f"{row['startup_s']:>11.2f} {row['rss'] / 2**20:>8.1f} {rate:>12,.0f} "
            f"{'-' if cpu is None else format(cpu, '.0f'):>11} "
            f"{row['throughput']['accepted']:>9,}  {ratios:>34}"
        )
    lines.append(
        "(vs smallest: each figure against the smallest store of the same kind, measured in "
        "this run; cpu: the gateway's CPU time per measured message; size: the SQLite file, "
        "or Redis used_memory)"
    )
    for row in rows:
        label = f"{row['store']}, {row['records']:,} records"
        throughput = row["throughput"]
        if throughput["accepted"] != throughput["messages"] or throughput["timed_out"]:
            lines.append(f"\nnote, {label}: answers {throughput['statuses']}")
        if row["gateway_exit"] != 0:
            lines.append(f"\nnote, {label}: the gateway exited with status {row['gateway_exit']}")
        if row["gateway_log"]:
            lines.append(f"\nnote, {label}: the gateway logged:" + row["gateway_log"])
    lines += ["", f"command: {command}"]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.records", description=__doc__)
    p.add_argument("--records", default="1000,10000000", help="comma-separated store sizes")
    p.add_argument("--store", default="sqlite,redis", help="sqlite, redis or both")
    p.add_argument(
        "--space", type=int, default=None, help="numbers spanned (default: 1e7 or the largest)"
    )
    p.add_argument("--messages", type=int, default=100_000, help="measured submit_sm")
    p.add_argument("--warmup", type=int, default=5_000, help="unmeasured submit_sm first")
    p.add_argument("--window", type=int, default=100, help="requests outstanding")
    p.add_argument("--timeout", type=float, default=300.0, help="bound on each batch, s")
    p.add_argument("--redis-url", default=None, help="a Redis of its own (it is flushed)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logs.configure(level="warning")  # the stores this process opens log to stderr, not stdout
    try:
        args.records = [int(s) for s in args.records.split(",") if s.strip()]
    except ValueError:
        raise SystemExit("--records takes numbers separated by commas") from None
    args.store = [s.strip() for s in args.store.split(",") if s.strip()]
    if not args.store or any(s not in ("sqlite", "redis") for s in args.store):
        raise SystemExit("--store: sqlite, redis or sqlite,redis")
    if not args.records or min(args.records) < 1:
        raise SystemExit("--records: sizes of at least 1")
    if args.space is None:
        # The same destinations whatever sizes are asked for, so one size alone compares
        # with the table of the default run.
        args.space = max(*args.records, DEFAULT_SPACE)
    total = args.warmup + args.messages
    if args.messages < 1 or args.warmup < 0 or args.space < 2 * total:
        raise SystemExit("--space must hold two numbers per message (warm-up included)")
    if max(args.records) > args.space or args.space > MAX_SPACE:
        raise SystemExit(f"--records at most --space, --space at most {MAX_SPACE:,}")
    shown = sys.orig_argv if argv is None else [sys.executable, "-m", "bench.records", *argv]
    try:
        rows = run(args)
    except BenchError as exc:
        print(f"bench.records: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows))
    else:
        print(report(rows, args, shlex.join(shown)))
    failed = any(r["gateway_exit"] != 0 for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
