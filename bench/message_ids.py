"""``python -m bench.message_ids``: what keeping message ids costs on SQLite and on Redis.

The gateway keeps, for the parts of long messages it answers before the SMSC or adds itself,
which ids it gave the client (``put_message_ids``), and looks them up when a delivery receipt
comes back (``get_message_ids``). This measures both through ``open_store`` (the fail-closed
guard included, as the daemon has it), per call: a put of 10 entries awaited one at a time (the
latency one caller sees), the same puts with ``--concurrency`` of them in flight (what a busy
gateway pays per put: SQLite commits the queued ones together), and a get that finds its entry
and one that does not. The table is filled with ``--prefill`` entries first, so the figures are
those of a store that is not empty.

SQLite runs on a file in a temporary directory (``--dir``), WAL with ``synchronous=FULL`` as
always: each commit is an fsync. Redis is a throwaway server without persistence unless
``--redis-url`` names another one (start one with ``--appendonly yes --appendfsync always`` to
measure what the README recommends). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.__main__ import redis_service
from gateway.eventloop import run_loop
from gateway.store.base import ConsentStore, MessageIds
from gateway.store.factory import open_store
from gateway.telemetry import logs

TTL_S = 172_800.0  # two days, the default of text.receipt_ids_ttl_s
ENTRIES_PER_PUT = 10


def _entries(start: int, count: int) -> list[MessageIds]:
    # Ids shaped like an SMSC's and a gateway's (hex, a few dozen characters).
    return [
        MessageIds(
            upstream_id=f"{i:016x}-smsc",
            client_ids=(f"gw-{i:012x}",),
            account="acme_sys",
        )
        for i in range(start, start + count)
    ]


def _summary(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    return {
        "mean_us": statistics.fmean(ordered) / 1000,
        "p50_us": ordered[len(ordered) // 2] / 1000,
        "p99_us": ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] / 1000,
    }


async def _measure(store: ConsentStore, calls: int, concurrency: int, prefill: int) -> Any:
    for start in range(0, prefill, 1000):
        await store.put_message_ids(_entries(start, min(1000, prefill - start)), TTL_S)
    next_id = prefill
    rows: dict[str, dict[str, float]] = {}

    samples: list[int] = []
    for _ in range(calls):
        batch = _entries(next_id, ENTRIES_PER_PUT)
        next_id += ENTRIES_PER_PUT
        started = time.perf_counter_ns()
        await store.put_message_ids(batch, TTL_S)
        samples.append(time.perf_counter_ns() - started)
    rows[f"put {ENTRIES_PER_PUT}, one at a time"] = _summary(samples)

    batches = [_entries(next_id + i * ENTRIES_PER_PUT, ENTRIES_PER_PUT) for i in range(calls)]
    next_id += calls * ENTRIES_PER_PUT
    started = time.perf_counter_ns()
    for first in range(0, calls, concurrency):
        chunk = batches[first : first + concurrency]
        await asyncio.gather(*(store.put_message_ids(b, TTL_S) for b in chunk))
    mean_us = (time.perf_counter_ns() - started) / calls / 1000
    rows[f"put {ENTRIES_PER_PUT}, {concurrency} in flight"] = {"mean_us": mean_us}

    for name, present in (("get, found", True), ("get, absent", False)):
        samples = []
        for i in range(calls):
            # Found: one of the latest 100,000 ids (older ones may be past the row bound).
            recent = next_id - 1 - (i * 7919) % min(next_id, 100_000)
            upstream_id = f"{recent:016x}-smsc" if present else f"none-{i}"
            started = time.perf_counter_ns()
            found = await store.get_message_ids(upstream_id)
            samples.append(time.perf_counter_ns() - started)
            if (found is not None) != present:
                raise SystemExit(f"{name}: unexpected answer for {upstream_id}")
        rows[name] = _summary(samples)
    return rows


@contextlib.contextmanager
def _redis(url: str | None, log_dir: Path) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with redis_service(log_dir) as started:
        yield started


async def _run(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    backends = [b for b in args.backends.split(",") if b]
    if "sqlite" in backends:
        store = await open_store(f"sqlite://{base / 'consent.db'}", instance="bench", create=True)
        try:
            results["sqlite"] = await _measure(store, args.calls, args.concurrency, args.prefill)
        finally:
            await store.close()
    if "redis" in backends:
        with _redis(args.redis_url, base) as url:
            prefix = f"bench{time.time_ns()}"
            separator = "&" if "?" in url else "?"
            store = await open_store(f"{url}{separator}prefix={prefix}", instance="bench")
            try:
                results["redis"] = await _measure(store, args.calls, args.concurrency, args.prefill)
            finally:
                await store.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per row")
    parser.add_argument("--concurrency", type=int, default=50, help="puts in flight at once")
    parser.add_argument("--prefill", type=int, default=100_000, help="entries put first")
    parser.add_argument("--backends", default="sqlite,redis", help="sqlite, redis or both")
    parser.add_argument("--redis-url", help="a Redis to use instead of a throwaway one")
    parser.add_argument("--dir", type=Path, help="where the SQLite file goes (default: a tmp)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logs.configure(level="warning")  # JSON lines on stderr; stdout is the result
    results: dict[str, Any] = {}

    async def go(base: Path) -> None:
        results.update(await _run(args, base))

    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
        run_loop(go(args.dir))
    else:
        with tempfile.TemporaryDirectory(prefix="bench-mids-") as tmp:
            run_loop(go(Path(tmp)))
    if args.json:
        print(json.dumps({"results": results, "calls": args.calls, "prefill": args.prefill}))
        return 0
    print(f"{'backend':<8} {'row':<28} {'mean us':>9} {'p50 us':>9} {'p99 us':>9}")
    for backend, rows in results.items():
        for name, figures in rows.items():
            cells = [figures.get(k) for k in ("mean_us", "p50_us", "p99_us")]
            shown = " ".join(f"{c:>9.1f}" if c is not None else f"{'':>9}" for c in cells)
            print(f"{backend:<8} {name:<28} {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
