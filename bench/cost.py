"""CPU per message of the middle (relay or gateway), at window 1 and at the throughput window.

``python -m bench`` reports rates and latencies; this reports what they cost. For each row it
starts the sink and the middle as ``python -m bench`` does, warms up, then runs the load at
``--window`` and at window 1 and reads the middle's CPU time (``/proc/PID/stat``, user +
system, the whole process tree) and its read and write system calls (``/proc/PID/io``) around
each run. Dividing by the messages gives microseconds of middle CPU per submit_sm (its request
and its response through both legs).

Why it exists: at window 1 a message's round trip is serial, so the middle's CPU per message is
part of the latency, and it is not the same CPU as at window 100. Between two messages the
middle sleeps and the load generator and the sink run, on a machine with few cores on the same
ones, so every message starts with cold caches; and the per-read work (the loop's callback, the
timers, the flush) is paid once per message instead of once per read of fifty. The ratio of the
two columns shows that, row by row.

Run as ``python -m bench.cost [--configs relay,gateway-footer] [--messages N]
[--latency-messages N] [--window 100] [--json]``. Needs ``/proc`` (Linux).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from bench.__main__ import (
    BenchError,
    Configuration,
    Options,
    run_load,
    select_configs,
    tree_cpu_seconds,
)
from bench.profile import io_calls, warm_middle

DEFAULT_CONFIGS: Final = "relay,parsing-relay,gateway-passthrough,gateway,gateway-footer"


@dataclass(frozen=True, slots=True)
class Cost:
    """One run of one row: the middle's CPU and system calls per submit_sm."""

    window: int
    messages: int
    cpu_us: float | None  # middle CPU per submit_sm
    reads: float | None  # read-like system calls per submit_sm
    writes: float | None
    p50_us: float | None  # the load generator's p50 (window 1 only)


@dataclass(frozen=True, slots=True)
class RowCost:
    name: str
    label: str
    batched: Cost
    serial: Cost  # window 1


def _measure(
    middle_pid: int,
    port: int,
    log_dir: Path,
    opts: Options,
    *,
    window: int,
    messages: int,
    tag: str,
) -> Cost:
    cpu_before = tree_cpu_seconds(middle_pid)
    calls_before = io_calls(middle_pid)
    result = run_load(port, log_dir, opts, messages=messages, window=window,
                      latency=window == 1, tag=tag)  # fmt: skip
    cpu_after = tree_cpu_seconds(middle_pid)
    calls_after = io_calls(middle_pid)
    if result.get("accepted") != messages:
        raise BenchError(f"{tag}: {messages - int(result.get('accepted', 0))} not answered OK")
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    reads = writes = None
    if calls_before is not None and calls_after is not None:
        reads = (calls_after[0] - calls_before[0]) / messages
        writes = (calls_after[1] - calls_before[1]) / messages
    p50 = (result.get("latency_us") or {}).get("p50")
    return Cost(
        window=window,
        messages=messages,
        cpu_us=None if cpu is None else cpu / messages * 1e6,
        reads=reads,
        writes=writes,
        p50_us=None if p50 is None else float(p50),
    )


def measure(config: Configuration, opts: Options) -> RowCost:
    """Sink and middle up, a warm-up, the run at ``opts.window`` and the run at window 1."""
    with warm_middle(config, opts, "smpp-cost-") as (middle, log_dir):
        assert middle.child is not None
        pid = middle.child.pid
        batched = _measure(pid, middle.port, log_dir, opts, window=opts.window,
                           messages=opts.messages, tag=config.name)  # fmt: skip
        serial = _measure(pid, middle.port, log_dir, opts, window=1,
                          messages=opts.latency_messages, tag=f"{config.name}-w1")  # fmt: skip
        return RowCost(config.name, config.label, batched, serial)


def _f(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(rows: Sequence[RowCost], window: int, command: str) -> str:
    """The table: CPU per message at both windows, their ratio, and window 1 against the
    first row (the relay, when it was measured)."""
    head = (
        f"{'configuration':<44} {f'CPU us/msg w{window}':>16} {'calls/msg':>10}"
        f" {'CPU us/msg w1':>14} {'calls/msg':>10} {'w1 / w' + str(window):>9}"
        f" {'p50 us':>8} {'w1 CPU - first':>15}"
    )
    lines = [head, "-" * len(head)]
    first = rows[0].serial.cpu_us if rows else None
    for row in rows:
        b, s = row.batched, row.serial
        ratio = None if b.cpu_us in (None, 0) or s.cpu_us is None else s.cpu_us / b.cpu_us
        calls_b = "-" if b.reads is None or b.writes is None else f"{b.reads + b.writes:.2f}"
        calls_s = "-" if s.reads is None or s.writes is None else f"{s.reads + s.writes:.2f}"
        extra = None if first is None or s.cpu_us is None else s.cpu_us - first
        lines.append(
            f"{row.label[:44]:<44} {_f(b.cpu_us, '.1f'):>16} {calls_b:>10}"
            f" {_f(s.cpu_us, '.1f'):>14} {calls_s:>10} {_f(ratio, '.1f') + 'x':>9}"
            f" {_f(s.p50_us, '.0f'):>8} {_f(extra, '+.1f'):>15}"
        )
    lines += ["", f"command: {command}"]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cost",
        description="The middle's CPU per submit_sm at the throughput window and at window 1.",
    )
    parser.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated rows")
    parser.add_argument("--messages", type=int, default=100_000, help="submit_sm at --window")
    parser.add_argument("--latency-messages", type=int, default=20_000, help="at window 1")
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for name in ("messages", "latency_messages", "window", "warmup"):
        if getattr(args, name) < 1:
            print(f"python -m bench.cost: --{name.replace('_', '-')} must be at least 1",
                  file=sys.stderr)  # fmt: skip
            return 2
    try:
        configs = select_configs(args.configs)
    except BenchError as exc:
        print(f"python -m bench.cost: {exc}", file=sys.stderr)
        return 2
    opts = Options(
        messages=args.messages,
        window=args.window,
        latency_messages=args.latency_messages,
        warmup=args.warmup,
        rounds=1,
        destinations=1000,
        run_timeout_s=300.0,
        bind="transmitter",
        gateway_args=(),
    )
    rows: list[RowCost] = []
    try:
        for config in configs:
            rows.append(measure(config, opts))
    except BenchError as exc:
        print(f"python -m bench.cost: {exc}", file=sys.stderr)
        return 1
    command = "python -m bench.cost " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.json:
        print(json.dumps({"command": command, "rows": [asdict(r) for r in rows]}, indent=2))
    else:
        print(report(rows, args.window, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
