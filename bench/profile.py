"""``python -m bench.profile``: where the gateway's CPU goes per submit_sm.

Runs one configuration of ``python -m bench`` (sink, gateway, warm-up, one throughput run) with
``py-spy record`` attached to the gateway for the throughput run only, then divides the samples
by the messages sent: microseconds of gateway CPU per message, by function (own time: the
function's own lines, not what it calls) and by area of the code (the package a frame is in).

py-spy samples from outside the process (no instrumentation in the measured code) and counts
only samples where a thread is running Python or native code, not waiting on the loop's
selector. It needs ``pip install py-spy`` and the right to ptrace the gateway (root, or
``kernel.yama.ptrace_scope = 0``); it is a tool for measuring, not a dependency of the project.

A thread that is runnable but waiting for a core also counts as running, so on a busy machine
the samples add up to more than the CPU the gateway used. The gateway's own CPU time over the
run (``/proc/PID/stat``, user + system) is therefore read as well: the per-message total is
that, and each area's or function's figure is its share of the samples times that total.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench import JsonDict
from bench.__main__ import (
    HOST,
    READY_TIMEOUT_S,
    BenchError,
    Child,
    Configuration,
    Middle,
    Options,
    cpu_seconds,
    redis_service,
    run_load,
    select_configs,
    start_middle,
    wait_port,
)

RATE_HZ: Final = 997  # prime, so the sampling does not beat with a periodic timer
# A frame as py-spy's raw format writes it: "function (path/to/file.py:line)".
_FRAME: Final = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")
# Areas, first match wins: the package a frame's file is in.
AREAS: Final[tuple[tuple[str, str], ...]] = (
    ("gateway/smpp/", "smpp codec and session"),
    ("gateway/text/", "text: encodings, segments"),
    ("gateway/consent/", "consent policy and numbers"),
    ("gateway/proxy/", "proxy: bridge, enforcer, footer"),
    ("gateway/store/", "store"),
    ("gateway/telemetry/", "metrics and logs"),
    ("gateway/", "gateway, other"),
    ("phonenumbers/", "phonenumbers"),
    ("prometheus_client/", "prometheus_client"),
    ("structlog/", "structlog"),
    ("uvloop/", "uvloop"),
    ("asyncio/", "asyncio"),
)


@dataclass(frozen=True, slots=True)
class Profile:
    """Samples per leaf frame and per frame anywhere on the stack."""

    own: Counter[str]
    inclusive: Counter[str]
    total: int
    files: dict[str, str]  # function name -> the file it is in


def _frame_name(frame: str) -> tuple[str, str]:
    """(``module.py:function``, file) of a raw frame; native frames keep their text."""
    found = _FRAME.match(frame.strip())
    if found is None:
        return frame.strip(), ""
    path = found["file"]
    return f"{Path(path).name}:{found['function']}", path


def parse_raw(lines: Iterable[str]) -> Profile:
    """Collapsed stacks (``frame;frame;...;leaf COUNT`` per line, root first) into counts."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    files: dict[str, str] = {}
    total = 0
    for line in lines:
        stack, _, count_text = line.rstrip("\n").rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        # By function, not by line: a function on the stack at two lines counts once.
        own[_frame_name(frames[-1])[0]] += count
        for name in {_frame_name(f)[0] for f in frames}:
            inclusive[name] += count
        for frame in frames:
            name, path = _frame_name(frame)
            files.setdefault(name, path)
    return Profile(own=own, inclusive=inclusive, total=total, files=files)


def area_of(path: str) -> str:
    for marker, area in AREAS:
        if marker in path:
            return area
    return "other (interpreter, stdlib, native)"


def by_area(profile: Profile) -> Counter[str]:
    """Own samples summed per area."""
    areas: Counter[str] = Counter()
    for name, count in profile.own.items():
        areas[area_of(profile.files.get(name, ""))] += count
    return areas


def io_calls(pid: int) -> tuple[int, int] | None:
    """The read-like and write-like system calls a process has made (``syscr``, ``syscw`` in
    ``/proc/PID/io``), None where that cannot be read."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    try:
        return int(fields["syscr"]), int(fields["syscw"])
    except (KeyError, ValueError):
        return None


def report(
    profile: Profile,
    messages: int,
    top: int,
    label: str,
    command: str,
    cpu_s: float | None = None,
    calls: tuple[int, int] | None = None,
) -> str:
    """The table; with ``cpu_s`` (the gateway's CPU time over the run) the figures are shares
    of that, else of the samples' own total."""
    sampled_s = profile.total / RATE_HZ
    scale = 1.0 if cpu_s is None or profile.total == 0 else cpu_s / sampled_s

    def us(samples: int) -> str:
        return f"{samples / RATE_HZ * scale / messages * 1e6:7.2f}"

    per_message = f"gateway CPU per message: {us(profile.total).strip()} us"
    if cpu_s is not None:
        per_message += (
            f" (process CPU time; the samples alone say {sampled_s / messages * 1e6:.2f} us)"
        )
    lines = [
        f"{label}: {messages:,} submit_sm, {profile.total:,} samples at {RATE_HZ} Hz",
        per_message,
    ]
    if calls is not None:
        reads, writes = calls
        lines.append(
            f"system calls: {reads:,} reads, {writes:,} writes"
            f" ({messages / max(reads, 1):.1f} and {messages / max(writes, 1):.1f} submit_sm each;"
            " both legs, requests and responses)"
        )
    lines += ["", "by area (own time)      us/msg  share"]
    for area, count in by_area(profile).most_common():
        lines.append(f"  {area:<34} {us(count)}  {count / profile.total:5.1%}")
    lines += ["", f"top {top} functions, own time              us/msg  share"]
    for name, count in profile.own.most_common(top):
        lines.append(f"  {name[:40]:<40} {us(count)}  {count / profile.total:5.1%}")
    lines += ["", f"top {top} functions, with what they call   us/msg  share"]
    # The frames every sample has (runpy, cli, the loop's run) say nothing: left out.
    below = [(n, c) for n, c in profile.inclusive.most_common() if c < 0.95 * profile.total]
    for name, count in below[:top]:
        lines.append(f"  {name[:40]:<40} {us(count)}  {count / profile.total:5.1%}")
    lines += ["", f"command: {command}"]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--config", default="gateway-footer", help="one row of python -m bench")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


@dataclass(frozen=True)
class Recording:
    profile: Profile
    result: JsonDict
    cpu_s: float | None  # the gateway's CPU time over the run
    calls: tuple[int, int] | None  # its read and write system calls over the run


@contextlib.contextmanager
def warm_middle(config: Configuration, opts: Options, prefix: str) -> Iterator[tuple[Middle, Path]]:
    """The sink, the row's services (a throwaway Redis) and its middle process up, and the
    warm-up sent; yields the middle and the log directory, and stops them all on the way out.
    BenchError when a part fails, or for a row that needs what this does not start."""
    if config.route == "direct":
        raise BenchError(f"{config.name} has no middle process")
    if "redis-cluster" in config.needs:
        raise BenchError(f"{config.name}: this tool starts no Redis Cluster")
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
        contextlib.ExitStack() as stack,
    ):
        log_dir = Path(tmp)
        sink = Child(
            "sink", [sys.executable, "-m", "bench.sink", "--host", HOST, "--port", "0"], log_dir,
            control=True,
        )  # fmt: skip
        stack.callback(sink.stop)
        sink_port = int(sink.read_json(READY_TIMEOUT_S)["port"])
        wait_port(sink_port, sink)
        services: dict[str, str] = {}
        if "redis" in config.needs:
            services["redis_url"] = stack.enter_context(redis_service(log_dir))
        middle = start_middle(config, sink_port, log_dir, opts, services)
        assert middle.child is not None
        stack.callback(middle.child.stop)
        run_load(middle.port, log_dir, opts, messages=opts.warmup, window=opts.window,
                 latency=False, tag="warmup")  # fmt: skip
        yield middle, log_dir


def record(spy: str, config: Configuration, opts: Options, keep: Path | None) -> Recording:
    """Sink and gateway up, the warm-up, then the throughput run under py-spy: its samples, the
    load generator's result, the gateway's CPU seconds and system calls over the run (None where
    unknown). BenchError when a part fails."""
    with warm_middle(config, opts, "smpp-profile-") as (middle, log_dir):
        assert middle.child is not None
        raw = keep or log_dir / "profile.txt"
        recorder = subprocess.Popen(
            [spy, "record", "--pid", str(middle.child.pid), "--rate", str(RATE_HZ),
             "--format", "raw", "--output", str(raw), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        # py-spy attaches within a few ms; the load's own start-up (a new process, its bind)
        # takes longer, so the recorder is running when the first submit goes.
        cpu_before = cpu_seconds(middle.child.pid)
        calls_before = io_calls(middle.child.pid)
        result = run_load(middle.port, log_dir, opts, messages=opts.messages,
                          window=opts.window, latency=False, tag=config.name)  # fmt: skip
        cpu_after = cpu_seconds(middle.child.pid)
        calls_after = io_calls(middle.child.pid)
        cpu_s = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        calls = (
            None
            if calls_before is None or calls_after is None
            else (calls_after[0] - calls_before[0], calls_after[1] - calls_before[1])
        )
        recorder.send_signal(signal.SIGINT)
        _, err = recorder.communicate(timeout=60)
        if not raw.exists():
            raise BenchError(f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}")
        return Recording(parse_raw(raw.read_text().splitlines()), result, cpu_s, calls)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("python -m bench.profile: py-spy not found (pip install py-spy)", file=sys.stderr)
        return 2
    (config,) = select_configs(args.config)
    if config.route != "gateway":
        print(f"python -m bench.profile: {config.name} runs no gateway", file=sys.stderr)
        return 2
    opts = Options(
        messages=args.messages,
        window=args.window,
        latency_messages=0,
        warmup=args.warmup,
        rounds=1,
        destinations=1000,
        run_timeout_s=300.0,
        bind="transmitter",
        gateway_args=(),
    )
    try:
        rec = record(spy, config, opts, args.raw)
    except BenchError as exc:
        print(f"python -m bench.profile: {exc}", file=sys.stderr)
        return 1
    command = "python -m bench.profile " + " ".join(sys.argv[1:] if argv is None else argv)
    profile = rec.profile
    if args.json:
        print(json.dumps({
            "config": config.name, "messages": args.messages, "samples": profile.total,
            "rate_hz": RATE_HZ, "submit_per_s": rec.result.get("rate"), "cpu_s": rec.cpu_s,
            "calls": rec.calls, "areas": dict(by_area(profile)),
            "own": dict(profile.own.most_common(args.top)),
        }, indent=2))  # fmt: skip
    else:
        print(report(profile, args.messages, args.top, config.label, command, rec.cpu_s,
                     rec.calls))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
