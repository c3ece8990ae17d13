"""``python -m bench.consent_import``: what ``consent import`` of a large list costs.

Writes a CSV of ``--rows`` opt-outs (distinct, valid US numbers ``+1202NXXXXXX``, one in ten
written as ``(202) NXX-XXXX`` so normalising has separators to drop; a time and a note on each
row), then runs the real command (``python -m gateway consent import FILE --config ... --json``,
a process of its own, start-up included) twice on a store the daemon's way created: the first
import (every row a new opt-out) and the same file again (every row unchanged: the second,
no-op import), and ``consent export`` of the result. SQLite runs on a file in a temporary
directory (WAL, ``synchronous=FULL`` as always); Redis on a throwaway ``redis-server`` with
``appendonly yes`` and ``appendfsync always`` (what the README recommends), or ``--redis-url``.
Prints seconds and rows per second per step; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.__main__ import ROOT, Child, free_port, wait_port
from gateway.store.factory import open_store

HOST = "127.0.0.1"


def write_csv(path: Path, rows: int) -> None:
    """``rows`` distinct opt-outs of valid numbers (exchanges 200-999 of area code 202)."""
    if rows > 8_000_000:
        raise SystemExit("--rows: at most 8,000,000 distinct numbers are generated")
    with path.open("w", encoding="utf-8") as out:
        out.write("number,scope,state,time,source,note\n")
        for i in range(rows):
            local = 2_000_000 + i
            if i % 10 == 0:
                number = f"(202) {local // 10_000:03d}-{local % 10_000:04d}"
            else:
                number = f"+1202{local}"
            out.write(f'"{number}",global:*,opted_out,2024-05-01T12:00:00Z,crm,row {i}\n')


@contextlib.contextmanager
def _redis(url: str | None, directory: Path) -> Iterator[str]:
    """The URL to use: ``url``, or a throwaway redis-server that fsyncs every write."""
    if url is not None:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH (or give --redis-url)")
    port = free_port()
    data = directory / "redis"
    data.mkdir(exist_ok=True)
    argv = [binary, "--bind", HOST, "--port", str(port), "--dir", str(data), "--save", ""]
    argv += ["--appendonly", "yes", "--appendfsync", "always"]
    child = Child("redis", argv, directory, control=False)
    try:
        wait_port(port, child)
        yield f"redis://{HOST}:{port}/0"
    finally:
        child.stop()


def _config(directory: Path, url: str, audit: bool) -> Path:
    path = directory / "gateway.toml"
    text = f'[upstream]\naddress = "127.0.0.1:2776"\n\n[store]\nurl = "{url}"\n\n'
    text += '[logging]\nlevel = "warning"\n\n'
    # With the trail on, every imported change is also a hash-chained record in audit.jsonl.
    text += (
        f'[audit]\npath = "{directory / "audit.jsonl"}"\n'
        if audit
        else "[audit]\nenabled = false\n"
    )
    path.write_text(text, encoding="utf-8")
    return path


def _create(url: str) -> None:
    async def create() -> None:
        store = await open_store(url, instance="bench", create=True)
        await store.close()

    asyncio.run(create())


def _gateway(*args: str) -> tuple[float, str]:
    """Run ``python -m gateway ARGS``; (seconds, stdout). Exits on failure."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"gateway {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
    return seconds, done.stdout


def measure(
    store: str, rows: int, directory: Path, redis_url: str | None, audit: bool
) -> dict[str, Any]:
    csv_path = directory / "list.csv"
    write_csv(csv_path, rows)
    with contextlib.ExitStack() as stack:
        if store == "sqlite":
            url = f"sqlite://{directory / 'consent.db'}"
        else:
            base = stack.enter_context(_redis(redis_url, directory))
            url = f"{base}{'&' if '?' in base else '?'}prefix=bench{time.time_ns()}"
        _create(url)
        config = str(_config(directory, url, audit))
        result: dict[str, Any] = {"store": store, "audit": audit, "rows": rows}
        for step in ("first import", "second import"):
            seconds, out = _gateway(
                "consent", "import", str(csv_path), "--config", config, "--json"
            )
            summary = json.loads(out)
            result[step] = {
                "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds),
                "changed": summary["changed"],
                "unchanged": summary["unchanged"],
                "bad": summary["bad"],
            }
        out_path = directory / "export.csv"
        seconds, _ = _gateway("consent", "export", "--config", config, "--output", str(out_path))
        with out_path.open(encoding="utf-8") as exported:
            records = sum(1 for _ in exported) - 1
        result["export"] = {
            "seconds": round(seconds, 2),
            "rows_per_s": round(records / seconds),
            "records": records,
        }
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the CSV")
    parser.add_argument(
        "--store", default="sqlite,redis", help="sqlite, redis or both (comma-separated)"
    )
    parser.add_argument(
        "--audit",
        default="on,off",
        help="on (the audit trail records every change, as by default), off, or both",
    )
    parser.add_argument("--redis-url", help="a Redis to use instead of a throwaway one")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    audits = [a for a in args.audit.split(",") if a]
    if not audits or set(audits) - {"on", "off"}:
        raise SystemExit(f"--audit: on, off or on,off, not {args.audit!r}")
    results = []
    for store in [s for s in args.store.split(",") if s]:
        if store not in ("sqlite", "redis"):
            raise SystemExit(f"--store: sqlite or redis, not {store!r}")
        for audit in audits:
            with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
                results.append(measure(store, args.rows, Path(tmp), args.redis_url, audit == "on"))
    if args.json:
        print(json.dumps({"results": results, "cpus": os.cpu_count()}))
        return 0
    print(
        f"{'store':<7} {'audit':<5} {'step':<14} {'rows':>10} {'seconds':>8} {'rows/s':>9}  result"
    )
    for result in results:
        for step in ("first import", "second import", "export"):
            row = result[step]
            if step == "export":
                what = f"{row['records']} records"
            else:
                what = f"{row['changed']} changed, {row['unchanged']} unchanged, {row['bad']} bad"
            print(
                f"{result['store']:<7} {'on' if result['audit'] else 'off':<5} {step:<14}"
                f" {result['rows']:>10} {row['seconds']:>8.1f}"
                f" {row['rows_per_s']:>9,}  {what}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
