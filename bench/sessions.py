"""``python -m bench.sessions``: the gateway's memory per bound session pair.

A pair is one client session and the upstream session the gateway binds for it. The gateway
runs as its own process (``python -m gateway run``: consent on, the SQLite store, a footer
campaign, the bench sink as the SMSC); this process opens the client sessions over TCP, each a
``bind_transceiver`` answered only once the gateway's upstream bind was, sends ``--messages``
submit_sm on each and leaves it bound and idle. The gateway's memory is read from
``/proc/PID/status`` (VmRSS) and ``/proc/PID/smaps_rollup`` (Pss, Private_Clean +
Private_Dirty) at a baseline and at each step of ``--sessions`` (cumulative: 100, then 900
more for 1,000, ...); per pair is (step - baseline) / pairs.

The baseline is taken after ``--warmup`` pairs were bound, used and left bound (they stay for
the whole run), so what is only paid once (code paths run the first time, caches of the
campaign and the store, the allocator's first arenas) is not charged to the pairs measured.

With ``--tracemalloc`` the gateway runs under ``bench.sessions_probe``, which imports it and
writes a tracemalloc snapshot on SIGUSR1; the report then lists the Python allocations the
pairs of the last step added, by line of code (``--top``). Tracing slows the gateway down and
makes its memory larger, so the RSS figures of such a run are not the ones to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import JsonDict, run_loop
from bench.__main__ import (
    CONFIGURATIONS,
    HOST,
    READY_TIMEOUT_S,
    BenchError,
    Child,
    free_port,
    gateway_config,
    to_toml,
    wait_port,
)
from bench.load import LoadProtocol, submit_templates
from gateway.smpp import codec
from gateway.smpp.constants import CommandStatus, status_name
from gateway.smpp.pdu import BindTransceiver, Unbind

KIB = 1024
TARGET_BYTES = 64 * KIB  # issue 12: a pair under 64 KiB
BIND_CONCURRENCY = 8  # below the gateway's unbound-per-address limit (10)
SETTLE_S = 1.0  # idle before each reading, so late frees and timers have run


@dataclass(frozen=True, slots=True, kw_only=True)
class Memory:
    """One reading of a process's memory, in bytes."""

    rss: int
    pss: int
    private: int

    def minus(self, other: Memory) -> Memory:
        return Memory(
            rss=self.rss - other.rss, pss=self.pss - other.pss, private=self.private - other.private
        )

    def as_dict(self) -> dict[str, int]:
        return {"rss": self.rss, "pss": self.pss, "private": self.private}


def _kib_fields(text: str, names: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            out[key] = int(rest.split()[0]) * KIB  # the kernel writes "NNN kB"
    return out


def memory(pid: int) -> Memory:
    """VmRSS from /proc/PID/status; Pss and private pages from /proc/PID/smaps_rollup."""
    status = _kib_fields(Path(f"/proc/{pid}/status").read_text(), ("VmRSS",))
    rollup = _kib_fields(
        Path(f"/proc/{pid}/smaps_rollup").read_text(), ("Pss", "Private_Clean", "Private_Dirty")
    )
    return Memory(
        rss=status["VmRSS"],
        pss=rollup["Pss"],
        private=rollup["Private_Clean"] + rollup["Private_Dirty"],
    )


def session_config(*, listen_port: int, sink_port: int, tmpdir: Path, pairs: int) -> dict[str, Any]:
    """The bench's footer row (consent on, SQLite, footer always), with room for ``pairs``
    sessions and an upstream bind rate that does not make the run wait."""
    footer = next(c for c in CONFIGURATIONS if c.name == "gateway-footer")
    data = gateway_config(
        footer, listen_port=listen_port, sink_port=sink_port, window=10, tmpdir=tmpdir, services={}
    )
    server = data["server"]
    server["max_sessions"] = pairs + 10
    server["binds"] = {"upstream_rate_per_s": 10_000.0, "upstream_burst": 10_000}
    return data


class Clients:
    """The client sessions of one run (in this process, on one event loop)."""

    def __init__(self, port: int, messages: int, timeout_s: float) -> None:
        self.port = port
        self.messages = messages
        self.timeout_s = timeout_s
        self.templates = submit_templates(max(messages, 1))
        self.bind = codec.encode(BindTransceiver(system_id="bench", password="bench"))
        self.open: list[LoadProtocol] = []

    async def _one(self) -> LoadProtocol:
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: LoadProtocol(self.templates), HOST, self.port),
            self.timeout_s,
        )
        self.open.append(proto)
        status = await proto.request(self.bind, self.timeout_s)
        if status != CommandStatus.ESME_ROK:
            raise BenchError(f"bind_transceiver answered {status_name(status)}")
        if self.messages:
            result = await proto.run(self.messages, self.messages, self.timeout_s, latency=False)
            accepted = result.statuses.get("ESME_ROK", 0)
            if result.timed_out or accepted != self.messages:
                raise BenchError(f"submit_sm on a new pair: {result.statuses}")
        return proto

    async def add(self, count: int) -> None:
        """Open, bind and use ``count`` more pairs, ``BIND_CONCURRENCY`` at a time."""
        left = count
        while left:
            batch = min(left, BIND_CONCURRENCY)
            await asyncio.gather(*(self._one() for _ in range(batch)))
            left -= batch

    async def close(self) -> None:
        unbind = codec.encode(Unbind())
        for proto in self.open:
            with contextlib.suppress(TimeoutError, ConnectionError):
                await proto.request(unbind, 5.0)
            proto.close()
        self.open.clear()


def _signal_snapshot(gateway: Child, path: Path) -> None:
    """Ask the probe to write a tracemalloc snapshot to ``path`` and wait until it has."""
    done = path.with_suffix(".done")
    gateway.proc.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 120
    while not done.exists():
        if gateway.proc.poll() is not None or time.monotonic() > deadline:
            raise BenchError(f"no tracemalloc snapshot from the gateway{gateway.log_tail()}")
        time.sleep(0.1)  # polling for the file the probe writes


async def _measure(gateway: Child, port: int, args: argparse.Namespace, workdir: Path) -> JsonDict:
    clients = Clients(port, args.messages, args.timeout)
    steps: list[JsonDict] = []
    snapshots: list[Path] = []
    try:
        await clients.add(args.warmup)
        await asyncio.sleep(SETTLE_S)  # idle: memory settles, nothing is waited for
        base = memory(gateway.pid)
        if args.tracemalloc:
            snapshots.append(workdir / "base.snap")
            _signal_snapshot(gateway, snapshots[-1])
        bound = 0
        for target in args.sessions:
            await clients.add(target - bound)
            bound = target
            await asyncio.sleep(SETTLE_S)
            now = memory(gateway.pid)
            delta = now.minus(base)
            steps.append(
                {
                    "pairs": bound,
                    "memory": now.as_dict(),
                    "delta": delta.as_dict(),
                    "per_pair": {k: v / bound for k, v in delta.as_dict().items()},
                }
            )
            print(f"{bound} pairs bound", file=sys.stderr, flush=True)
        if args.tracemalloc:
            snapshots.append(workdir / "last.snap")
            _signal_snapshot(gateway, snapshots[-1])
    finally:
        await clients.close()
    result: JsonDict = {"baseline": base.as_dict(), "warmup": args.warmup, "steps": steps}
    if snapshots:
        for key, name in (("lineno", "allocations"), ("filename", "allocations_by_file")):
            result[name] = allocations(snapshots[0], snapshots[1], bound, args.top, key)
    return result


def allocations(before: Path, after: Path, pairs: int, top: int, key: str) -> list[JsonDict]:
    """The lines of code (``key`` "lineno") or files ("filename") whose allocations grew most
    between two snapshots, per pair."""
    import tracemalloc

    old = tracemalloc.Snapshot.load(str(before))
    new = tracemalloc.Snapshot.load(str(after))
    rows: list[JsonDict] = []
    for stat in new.compare_to(old, key)[:top]:
        frame = stat.traceback[0]
        rows.append(
            {
                "where": _short(frame.filename) + (f":{frame.lineno}" if key == "lineno" else ""),
                "bytes_per_pair": stat.size_diff / pairs,
                "blocks_per_pair": stat.count_diff / pairs,
            }
        )
    return rows


def _short(filename: str) -> str:
    marker = f"{os.sep}gateway{os.sep}"
    if marker in filename:
        return "gateway/" + filename.rsplit(marker, 1)[1]
    parts = Path(filename).parts
    return "/".join(parts[-2:])


def run(args: argparse.Namespace) -> JsonDict:
    top = max(args.sessions)
    with tempfile.TemporaryDirectory(prefix="smpp-sessions-") as tmp:
        workdir = Path(tmp)
        sink = Child(
            "sink",
            [sys.executable, "-m", "bench.sink", "--host", HOST, "--port", "0"],
            workdir,
            control=True,
        )
        try:
            sink_port = int(sink.read_json(READY_TIMEOUT_S)["port"])
            wait_port(sink_port, sink)
            port = free_port()
            config = session_config(
                listen_port=port, sink_port=sink_port, tmpdir=workdir, pairs=top + args.warmup
            )
            config_path = workdir / "gateway.toml"
            config_path.write_text(to_toml(config))
            module = "gateway"
            if args.tracemalloc:
                module = "bench.sessions_probe"
                os.environ["SESSIONS_SNAPSHOT_DIR"] = str(workdir)  # read by the probe
            gateway = Child(
                "gateway",
                [sys.executable, "-m", module, "run", "--config", str(config_path)],
                workdir,
                control=False,
            )
            try:
                wait_port(port, gateway)
                result: JsonDict = run_loop(_measure(gateway, port, args, workdir))
            finally:
                status = gateway.stop()
                tail = gateway.log_tail(10)
            result["gateway_exit"] = status
            result["gateway_log"] = tail
            result["sink"] = sink.command("stats")
        finally:
            sink.stop()
    return result


def report(result: JsonDict, command: str) -> str:
    base = result["baseline"]
    lines = [
        f"gateway memory per session pair (client + upstream leg), baseline after "
        f"{result['warmup']} pairs: RSS {base['rss'] / KIB / KIB:.1f} MiB, "
        f"Pss {base['pss'] / KIB / KIB:.1f} MiB, private {base['private'] / KIB / KIB:.1f} MiB",
        "",
        f"{'pairs':>6} {'RSS MiB':>8} {'+RSS MiB':>9} {'RSS/pair KiB':>13} "
        f"{'Pss/pair KiB':>13} {'private/pair KiB':>17}",
    ]
    for step in result["steps"]:
        per = step["per_pair"]
        lines.append(
            f"{step['pairs']:>6,} {step['memory']['rss'] / KIB / KIB:>8.1f} "
            f"{step['delta']['rss'] / KIB / KIB:>9.1f} {per['rss'] / KIB:>13.1f} "
            f"{per['pss'] / KIB:>13.1f} {per['private'] / KIB:>17.1f}"
        )
    worst = max(step["per_pair"]["rss"] for step in result["steps"])
    verdict = "under" if worst < TARGET_BYTES else "OVER"
    lines.append(f"(target: under {TARGET_BYTES // KIB} KiB per pair; worst step {verdict})")
    for name, title in (("allocations_by_file", "file"), ("allocations", "line")):
        if not result.get(name):
            continue
        lines += ["", f"Python allocations added per pair (tracemalloc, by {title}):"]
        for row in result[name]:
            lines.append(
                f"  {row['bytes_per_pair']:>9,.0f} B {row['blocks_per_pair']:>6.1f} blocks  "
                f"{row['where']}"
            )
    if result["gateway_exit"] != 0:
        lines.append(f"\nnote: the gateway exited with status {result['gateway_exit']}")
    if result["gateway_log"]:
        lines.append("\nnote: the gateway logged (warning and above):" + result["gateway_log"])
    lines += ["", f"command: {command}"]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sessions", description=__doc__)
    p.add_argument(
        "--sessions",
        default="100,1000",
        help="comma-separated cumulative pair counts to measure at (default 100,1000)",
    )
    p.add_argument("--messages", type=int, default=3, help="submit_sm sent on each new pair")
    p.add_argument("--warmup", type=int, default=10, help="pairs bound before the baseline")
    p.add_argument("--timeout", type=float, default=30.0, help="bound on each bind / batch, s")
    p.add_argument("--tracemalloc", action="store_true", help="list allocations per pair")
    p.add_argument("--top", type=int, default=25, help="lines of code listed (--tracemalloc)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        steps = sorted({int(s) for s in args.sessions.split(",") if s.strip()})
    except ValueError:
        raise SystemExit("--sessions takes numbers separated by commas") from None
    if not steps or steps[0] < 1 or steps[-1] > 20_000:
        raise SystemExit("--sessions must be between 1 and 20000")
    if not 0 <= args.messages <= 1000 or not 0 <= args.warmup <= 1000:
        raise SystemExit("--messages and --warmup must be 0..1000")
    args.sessions = steps
    shown = sys.orig_argv if argv is None else [sys.executable, "-m", "bench.sessions", *argv]
    try:
        result = run(args)
    except BenchError as exc:
        print(f"bench.sessions: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(report(result, shlex.join(shown)))
    return 0 if result["gateway_exit"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
