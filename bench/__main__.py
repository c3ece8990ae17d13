"""``python -m bench``: direct, plain-relay and gateway figures measured back to back in one run.

For each configuration: start what sits between the load generator and the sink (nothing, the
plain TCP relay, or ``python -m gateway run`` with a generated config), wait until its port
answers, send a short unmeasured warm-up, then measure throughput at ``--window`` and latency at
window 1, each in a fresh load-generator process. Prints a table and the ratios of every gateway
configuration to the relay and to the direct run. Nothing here asserts a timing: the machine is
shared and noisy, so the ratios between configurations measured minutes apart are the result.

Exit status: 0 when every configuration ran and every request was answered, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import IO, Any, Literal

from bench import JsonDict, loop_name

HOST = "127.0.0.1"  # loopback only
ROOT = Path(__file__).resolve().parent.parent  # the project, so children import bench/gateway
MAX_MESSAGES = 10_000_000
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
MIN_CPU_SPAN_S = 0.5  # shorter throughput runs get no CPU share for the middle and the sink

Route = Literal["direct", "relay", "parsing-relay", "gateway"]


class BenchError(Exception):
    """A configuration could not be measured; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Configuration:
    """One row of the table.

    ``fragment`` is TOML merged over the generated gateway config (tables merge key by key,
    anything else replaces); ``$tmpdir`` and, when ``needs`` has "redis", ``$redis_url`` (or
    "redis-cluster", ``$redis_cluster_url``) are substituted first. ``needs`` names services
    the runner starts for this row ("redis", "redis-cluster").
    """

    name: str
    label: str
    route: Route
    fragment: str = ""
    needs: tuple[str, ...] = ()


# Adding a configuration is one entry here: a name for --configs, a label and a config fragment.
_CAMPAIGN = """
[[campaigns]]
name = "bench"
brand = "BENCH"
numbers = ["15550100"]
scope = "number"
footer = "never"
footer_text = "Reply STOP to opt out"
"""

CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration(name="direct", label="direct (load -> sink)", route="direct"),
    Configuration(name="relay", label="plain TCP relay", route="relay"),
    # What Python costs per message at the least (bench/parsing_relay.py): a second reference.
    Configuration(
        name="parsing-relay", label="minimal parsing relay (Python)", route="parsing-relay"
    ),
    Configuration(
        name="gateway-passthrough",
        label="gateway, consent off",
        route="gateway",
        fragment="[consent]\nenabled = false\n",
    ),
    # The gateway's defaults: consent on, the default campaign, the SQLite store.
    Configuration(name="gateway", label="gateway, consent (SQLite)", route="gateway"),
    # The sender number in a campaign of its own (number scope), as operators configure it.
    Configuration(
        name="gateway-campaign",
        label="gateway, consent + campaign (SQLite)",
        route="gateway",
        fragment=_CAMPAIGN,
    ),
    Configuration(
        name="gateway-redis",
        label="gateway, consent + campaign (Redis)",
        route="gateway",
        fragment=_CAMPAIGN + '[store]\nurl = "$redis_url"\n',
        needs=("redis",),
    ),
    # Three masters on loopback, no replicas: the same host's cores, so this shows the cost
    # of routing and of the per-master subscriptions, not a cluster's added capacity.
    Configuration(
        name="gateway-cluster",
        label="gateway, consent + campaign (Redis Cluster, 3 masters)",
        route="gateway",
        fragment=_CAMPAIGN + '[store]\nurl = "$redis_cluster_url"\n',
        needs=("redis-cluster",),
    ),
    Configuration(
        name="gateway-footer",
        label="gateway, consent + footer always (SQLite)",
        route="gateway",
        fragment=_CAMPAIGN.replace('footer = "never"', 'footer = "always"'),
    ),
    # The footer row plus a frequency cap high enough never to be reached, so every MT is
    # checked and counted (one SQLite transaction per loop turn's capped MTs) and then sent.
    Configuration(
        name="gateway-cap",
        label="gateway, consent + footer + frequency cap (SQLite)",
        route="gateway",
        fragment=_CAMPAIGN.replace('footer = "never"', 'footer = "always"')
        + 'frequency_cap = { count = 1000000, window_h = 24, per = "campaign" }\n',
    ),
    # The Redis row plus the same cap: the count shared by instances, one round trip a turn.
    Configuration(
        name="gateway-cap-redis",
        label="gateway, consent + campaign + frequency cap (Redis)",
        route="gateway",
        fragment=_CAMPAIGN
        + 'frequency_cap = { count = 1000000, window_h = 24, per = "campaign" }\n'
        + '[store]\nurl = "$redis_url"\n',
        needs=("redis",),
    ),
    # The footer row plus quiet hours whose window is open at any hour the bench runs: the
    # state presets (which do not bind the destinations' area code, 202: the geocoder is
    # consulted all the same) and a whole-day custom window in the recipient's zone.
    Configuration(
        name="gateway-quiet",
        label="gateway, consent + footer + quiet hours open (SQLite)",
        route="gateway",
        fragment=_CAMPAIGN.replace('footer = "never"', 'footer = "always"')
        + 'quiet_hours = ["us-fl", "us-ok", "us-md", "us-tx",'
        + ' { start = "00:00", end = "24:00" }]\n',
    ),
    # The same with two worker processes on the listening port (gateway.workers). Use
    # --connections 2 or more for every row: one connection is served by one worker only.
    Configuration(
        name="gateway-footer-w2",
        label="gateway, consent + footer always (SQLite), 2 workers",
        route="gateway",
        fragment=_CAMPAIGN.replace('footer = "never"', 'footer = "always"')
        + "[server]\nworkers = 2\n",
    ),
)
REFERENCES = ("direct", "relay", "parsing-relay")


def base_gateway_config(
    *, listen_port: int, sink_port: int, window: int, tmpdir: Path
) -> dict[str, Any]:
    """The gateway config every gateway row starts from; warnings only, so no per-PDU logs."""
    return {
        "gateway": {"instance": "bench", "shutdown_grace_s": 2},
        "server": {"listen": f"{HOST}:{listen_port}"},
        "upstream": {"address": f"{HOST}:{sink_port}", "connect_timeout_s": 5},
        "session": {"window_size": max(window, 100)},  # never below the default
        "store": {"url": f"sqlite://{tmpdir / 'consent.db'}"},
        "logging": {"level": "warning", "format": "json"},
    }


def gateway_config(
    config: Configuration,
    *,
    listen_port: int,
    sink_port: int,
    window: int,
    tmpdir: Path,
    services: Mapping[str, str],
) -> dict[str, Any]:
    """The parsed gateway config of one row: the base with the row's fragment merged over it."""
    data = base_gateway_config(
        listen_port=listen_port, sink_port=sink_port, window=window, tmpdir=tmpdir
    )
    if not config.fragment:
        return data
    try:
        text = Template(config.fragment).substitute(tmpdir=str(tmpdir), **services)
    except KeyError as exc:
        raise BenchError(f"{config.name}: fragment uses ${exc.args[0]}, which is not set") from None
    return merge(data, tomllib.loads(text))


# --- TOML -------------------------------------------------------------------------------------


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``: tables merge recursively, other values replace."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_str(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters (DEL too) escaped."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_str(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        items = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """Serialise parsed TOML back (enough for config files: tables, arrays of tables, scalars)."""
    scalars: list[str] = []
    nested: list[str] = []
    for key, value in data.items():
        name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
        if isinstance(value, Mapping):
            nested.append(f"[{name}]\n" + to_toml(value, name))
        elif isinstance(value, list) and value and all(isinstance(i, Mapping) for i in value):
            nested.extend(f"[[{name}]]\n" + to_toml(item, name) for item in value)
        else:
            # Scalars first: after a [table] header they would belong to that table.
            scalars.append(f"{_toml_key(key)} = {_toml_value(value)}\n")
    return "".join(scalars) + "".join(nested)


# --- processes --------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port free right now (for the gateway, whose config needs a number)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def descendants(pid: int) -> list[int]:
    """The processes under ``pid`` now (a gateway's workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of ``pid`` and every process under it (None where there is no /proc)."""
    own = cpu_seconds(pid)
    if own is None:
        return None
    return own + sum(cpu_seconds(child) or 0.0 for child in descendants(pid))


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process from /proc (None where there is no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Child:
    """A helper process; its stderr goes to a file, its stdout is read as JSON lines."""

    def __init__(self, name: str, argv: Sequence[str], log_dir: Path, *, control: bool) -> None:
        self.name = name
        self.argv = list(argv)
        self.control = control
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self._buffer = b""
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE if control else subprocess.DEVNULL,
            stdout=subprocess.PIPE if control else self._log,
            stderr=self._log,
            cwd=ROOT,
            env=child_env(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_json(self, timeout_s: float) -> JsonDict:
        """The next JSON line the child prints, within ``timeout_s``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no answer within {timeout_s:g}s{self.log_tail()}")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(f"{self.name} exited ({self.proc.poll()}){self.log_tail()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise BenchError(f"{self.name}: unexpected output {line!r}")
        return obj

    def command(self, name: str, timeout_s: float = 10.0) -> JsonDict:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(name.encode() + b"\n")
            self.proc.stdin.flush()
        except OSError as exc:
            raise BenchError(f"{self.name}: cannot send {name!r}: {exc}") from exc
        return self.read_json(timeout_s)

    def log_tail(self, lines: int = 15) -> str:
        if not self._log.closed:
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        if not text:
            return ""
        tail = text.splitlines()[-lines:]
        return f"\n  {self.name} log ({self.log_path.name}):\n    " + "\n    ".join(tail)

    def stop(self) -> int:
        """Ask the child to end (stdin EOF for helpers, SIGTERM otherwise), bounded, then kill
        it; returns its exit status."""
        proc = self.proc
        try:
            if proc.poll() is None:
                if self.control:
                    assert proc.stdin is not None
                    with contextlib.suppress(OSError):
                        proc.stdin.close()
                else:
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(STOP_TIMEOUT_S)
            return proc.returncode
        finally:
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
            self._log.close()


def wait_port(port: int, child: Child, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll ``port`` until it accepts a connection; fails early if ``child`` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = child.proc.poll()
        if code is not None:
            raise BenchError(f"{child.name} exited with status {code}{child.log_tail()}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(
                    f"{child.name} not listening on {HOST}:{port} after {timeout_s:g}s"
                    f"{child.log_tail()}"
                ) from None
            # Polling interval, not a synchronisation sleep: the port decides when we go on.
            time.sleep(0.05)


# --- services ---------------------------------------------------------------------------------


@contextlib.contextmanager
def redis_service(log_dir: Path) -> Iterator[str]:
    """A throwaway redis-server on a loopback port (no persistence); yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise BenchError("redis-server is not on PATH")
    port = free_port()
    data = log_dir / "redis"
    data.mkdir(exist_ok=True)
    child = Child(
        "redis",
        [
            binary,
            "--bind",
            HOST,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data),
        ],
        log_dir,
        control=False,
    )
    try:
        wait_port(port, child)
        yield f"redis://{HOST}:{port}/0"
    finally:
        child.stop()


@contextlib.contextmanager
def redis_cluster_service(log_dir: Path, masters: int = 3) -> Iterator[str]:
    """Throwaway cluster-enabled redis-servers on loopback ports (no persistence, no
    replicas), joined by ``redis-cli --cluster create``; yields the ``redis+cluster://`` URL
    once every node reports ``cluster_state:ok``."""
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise BenchError("redis-server and redis-cli are needed for a cluster")
    children: list[Child] = []
    ports: list[int] = []
    try:
        for index in range(masters):
            port = free_port()
            data = log_dir / f"redis-cluster-{index}"
            data.mkdir(exist_ok=True)
            argv = [binary, "--bind", HOST, "--port", str(port), "--save", ""]
            argv += ["--appendonly", "no", "--dir", str(data), "--cluster-enabled", "yes"]
            argv += ["--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port())]
            children.append(Child(f"redis-cluster-{index}", argv, log_dir, control=False))
            ports.append(port)
            wait_port(port, children[-1])
        create = [cli, "--cluster", "create", *(f"{HOST}:{p}" for p in ports)]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise BenchError(f"redis-cli --cluster create failed: {done.stdout}{done.stderr}")
        deadline = time.monotonic() + READY_TIMEOUT_S
        for port in ports:
            while True:
                info = subprocess.run(
                    [cli, "-h", HOST, "-p", str(port), "cluster", "info"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                ).stdout
                if "cluster_state:ok" in info:
                    break
                if time.monotonic() > deadline:
                    raise BenchError("the bench cluster did not reach cluster_state:ok")
                time.sleep(0.05)  # polling the cluster's own state
        yield "redis+cluster://" + ",".join(f"{HOST}:{p}" for p in ports)
    finally:
        for child in children:
            child.stop()


# --- measuring --------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Row:
    """What one configuration measured (mutable: filled in as the run goes)."""

    config: Configuration
    throughput: JsonDict | None = None
    latency: JsonDict | None = None
    sink: JsonDict | None = None
    cpu: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    round: int = 1

    @property
    def rate(self) -> float | None:
        return None if self.throughput is None else self.throughput.get("rate")

    def latency_us(self, p: str) -> float | None:
        lat = None if self.latency is None else self.latency.get("latency_us")
        return None if lat is None else float(lat[p])


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    messages: int
    window: int
    latency_messages: int
    warmup: int
    rounds: int
    destinations: int
    run_timeout_s: float
    bind: str
    gateway_args: tuple[str, ...]
    connections: int = 1


def run_load(
    port: int, log_dir: Path, opts: Options, *, messages: int, window: int, latency: bool, tag: str
) -> JsonDict:
    """One load-generator process against ``port``; its JSON result."""
    argv = [
        sys.executable,
        "-m",
        "bench.load",
        "--host",
        HOST,
        "--port",
        str(port),
        "--messages",
        str(messages),
        "--window",
        str(window),
        "--bind",
        opts.bind,
        "--destinations",
        str(opts.destinations),
        "--timeout",
        str(opts.run_timeout_s),
        # Latency is one request at a time: one session.
        "--connections",
        str(1 if latency else min(opts.connections, messages)),
    ]
    if latency:
        argv.append("--latency")
    child = Child(f"load-{tag}", argv, log_dir, control=True)
    try:
        result = child.read_json(opts.run_timeout_s + 30)
        child.proc.wait(STOP_TIMEOUT_S)
    finally:
        child.stop()
    if not result.get("ok"):
        raise BenchError(f"load generator ({tag}): {result.get('error')}{child.log_tail()}")
    return result


class Middle:
    """What sits between the load generator and the sink for one row (maybe nothing)."""

    def __init__(self, child: Child | None, port: int) -> None:
        self.child = child
        self.port = port


def start_middle(
    config: Configuration, sink_port: int, log_dir: Path, opts: Options, services: dict[str, str]
) -> Middle:
    if config.route == "direct":
        return Middle(None, sink_port)
    if config.route in ("relay", "parsing-relay"):
        relay = Child(
            config.name,
            [
                sys.executable,
                "-m",
                "bench.relay" if config.route == "relay" else "bench.parsing_relay",
                "--host",
                HOST,
                "--port",
                "0",
                "--upstream",
                f"{HOST}:{sink_port}",
            ],
            log_dir,
            control=True,
        )
        middle = Middle(relay, int(relay.read_json(READY_TIMEOUT_S)["port"]))
        wait_port(middle.port, relay)
        return middle
    tmpdir = log_dir / config.name
    tmpdir.mkdir(exist_ok=True)
    port = free_port()
    data = gateway_config(
        config,
        listen_port=port,
        sink_port=sink_port,
        window=opts.window,
        tmpdir=tmpdir,
        services=services,
    )
    workers = data.get("server", {}).get("workers", 1)
    admin_port = None
    if workers != 1:
        # The supervisor listens at once; /readyz says when every worker serves.
        admin_port = free_port()
        data = merge(data, {"admin": {"listen": f"{HOST}:{admin_port}"}})
    config_path = tmpdir / "gateway.toml"
    config_path.write_text(to_toml(data))
    gateway = Child(
        config.name,
        [sys.executable, "-m", "gateway", "run", "--config", str(config_path), *opts.gateway_args],
        log_dir,
        control=False,
    )
    middle = Middle(gateway, port)
    try:
        wait_port(port, gateway)
        if admin_port is not None:
            wait_ready(admin_port, gateway)
    except BenchError:
        gateway.stop()
        raise
    return middle


def wait_ready(admin_port: int, child: Child, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll the gateway's /readyz until it answers 200; fails early if ``child`` exits."""
    deadline = time.monotonic() + timeout_s
    request = b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    while True:
        code = child.proc.poll()
        if code is not None:
            raise BenchError(f"{child.name} exited with status {code}{child.log_tail()}")
        with contextlib.suppress(OSError):
            with socket.create_connection((HOST, admin_port), timeout=5) as conn:
                conn.sendall(request)
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
            if answer.startswith(b"HTTP/1.1 200"):
                return
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name} not ready after {timeout_s:g}s{child.log_tail()}")
        # Polling interval, not a synchronisation sleep: /readyz decides when we go on.
        time.sleep(0.1)


def measure(
    config: Configuration,
    sink: Child,
    sink_port: int,
    log_dir: Path,
    opts: Options,
    services: dict[str, str],
) -> Row:
    row = Row(config=config)
    middle = start_middle(config, sink_port, log_dir, opts, services)
    try:
        if opts.warmup:
            run_load(
                middle.port,
                log_dir,
                opts,
                messages=opts.warmup,
                window=opts.window,
                latency=False,
                tag=f"{config.name}-warmup",
            )
        sink.command("reset")
        pids = {"mid": middle.child.pid if middle.child else None, "sink": sink.pid}
        # The middle's whole process tree: a gateway's workers are its children.
        before = {k: tree_cpu_seconds(p) if p else None for k, p in pids.items()}
        row.throughput = run_load(
            middle.port,
            log_dir,
            opts,
            messages=opts.messages,
            window=opts.window,
            latency=False,
            tag=config.name,
        )
        after = {k: tree_cpu_seconds(p) if p else None for k, p in pids.items()}
        row.sink = sink.command("stats")
        elapsed = float(row.throughput["elapsed_s"])
        row.cpu["load"] = float(row.throughput["cpu_s"]) / elapsed
        for key in pids:
            b, a = before[key], after[key]
            # /proc counts in clock ticks (10 ms) and includes connect/bind/unbind around the
            # batch: approximate by design, and meaningless for a batch shorter than this.
            if a is None or b is None or elapsed < MIN_CPU_SPAN_S:
                row.cpu[key] = None
            else:
                row.cpu[key] = (a - b) / elapsed
        row.latency = run_load(
            middle.port,
            log_dir,
            opts,
            messages=opts.latency_messages,
            window=1,
            latency=True,
            tag=f"{config.name}-latency",
        )
        for result in (row.throughput, row.latency):
            accepted = result.get("accepted", 0)
            if accepted != result["messages"]:
                row.notes.append(
                    f"{result['messages'] - accepted} of {result['messages']} submit_sm at "
                    f"window {result['window']} were not answered OK: {result['statuses']}"
                )
        if row.sink["submit_sm"] != opts.messages:
            row.notes.append(
                f"the sink counted {row.sink['submit_sm']} submit_sm for {opts.messages} sent"
            )
    finally:
        if middle.child is not None:
            status = middle.child.stop()
            if status != 0:
                row.notes.append(f"{middle.child.name} exited with status {status}")
            if config.route == "gateway":
                tail = middle.child.log_tail(10)
                if tail:
                    row.notes.append("the gateway logged (warning and above):" + tail)
    return row


# --- report -----------------------------------------------------------------------------------


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    """The reported numbers of one configuration (medians over rounds, each figure on its own)."""

    rate: float | None
    sink_rate: float | None
    sink_count: int | None  # the lowest over rounds: a loss in any round must show
    p50_us: float | None
    p99_us: float | None
    cpu: tuple[float | None, float | None, float | None]  # load, middle, sink

    @classmethod
    def of(cls, row: Row) -> Figures:
        sink = row.sink or {}
        return cls(
            rate=row.rate,
            sink_rate=sink.get("submit_rate"),
            sink_count=sink.get("submit_sm"),
            p50_us=row.latency_us("p50"),
            p99_us=row.latency_us("p99"),
            cpu=(row.cpu.get("load"), row.cpu.get("mid"), row.cpu.get("sink")),
        )

    @classmethod
    def median(cls, rows: Sequence[Row]) -> Figures:
        each = [cls.of(r) for r in rows]
        counts = [f.sink_count for f in each if f.sink_count is not None]
        return cls(
            rate=_median([f.rate for f in each]),
            sink_rate=_median([f.sink_rate for f in each]),
            sink_count=min(counts) if counts else None,
            p50_us=_median([f.p50_us for f in each]),
            p99_us=_median([f.p99_us for f in each]),
            cpu=(
                _median([f.cpu[0] for f in each]),
                _median([f.cpu[1] for f in each]),
                _median([f.cpu[2] for f in each]),
            ),
        )


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "-" if value is None else format(value, fmt)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}x"


def report(
    configs: Sequence[Configuration], rows: Sequence[Row], opts: Options, command: str
) -> str:
    """The table, the ratios and the notes, for rows of one or more rounds."""
    rounds = f"; median of {opts.rounds} rounds" if opts.rounds > 1 else ""
    sessions = f" over {opts.connections} sessions" if opts.connections > 1 else ""
    lines = [
        f"SMPP benchmark: {opts.messages:,} submit_sm at window {opts.window}{sessions} "
        f"(throughput), {opts.latency_messages:,} at window 1 (latency); warm-up "
        f"{opts.warmup:,}{rounds}",
        f"python {platform.python_version()}, {loop_name()}, {os.cpu_count()} CPUs, "
        f"{platform.system()} {platform.release()}",
        "",
    ]
    w = max([len("configuration"), *(len(c.label) for c in configs)])
    head = (
        f"{'configuration':<{w}} {'submit_sm/s':>11} {'sink rcv/s':>11} {'sink count':>17} "
        f"{'p50 us':>8} {'p99 us':>8}  {'cpu load/mid/sink':>17}"
    )
    lines += [head, "-" * len(head)]
    figures: dict[str, Figures] = {}
    for config in configs:
        ok = [r for r in rows if r.config is config and r.error is None]
        if not ok:
            lines.append(f"{config.label:<{w}} FAILED (see notes)")
            continue
        fig = figures[config.name] = Figures.median(ok)
        counted = "-" if fig.sink_count is None else f"{fig.sink_count:,}/{opts.messages:,}"
        cpu = "/".join("-" if c is None else f"{100 * c:.0f}%" for c in fig.cpu)
        lines.append(
            f"{config.label:<{w}} {_num(fig.rate):>11} {_num(fig.sink_rate):>11} {counted:>17} "
            f"{_num(fig.p50_us, '.1f'):>8} {_num(fig.p99_us, '.1f'):>8}  {cpu:>17}"
        )
    refs = [(name, figures[name]) for name in REFERENCES if name in figures]
    measured = [c for c in configs if c.route == "gateway" and c.name in figures]
    if measured and refs:
        lines += ["", "ratios, gateway / reference (measured in this run):"]
        for config in measured:
            fig = figures[config.name]
            for title, attr in (
                ("throughput", "rate"),
                ("p50 latency", "p50_us"),
                ("p99 latency", "p99_us"),
            ):
                mine = getattr(fig, attr)
                ratios = "  ".join(
                    f"{_ratio(mine, getattr(ref, attr)):>7} {name}" for name, ref in refs
                )
                label = config.label if title == "throughput" else ""
                lines.append(f"{label:<{w}} {title:<12} {ratios}")
        lines.append(
            "(PRODUCT.md section 6, with consent checks on: throughput >= 0.25x relay at "
            "window 100; window-1 latency <= 1.5x relay)"
        )
    for row in rows:
        for note in ([row.error] if row.error else []) + row.notes:
            lines.append(f"\nnote, {row.config.label}: {note}")
    lines += ["", f"command: {command}"]
    return "\n".join(lines)


def raw_results(rows: Sequence[Row], command: str) -> JsonDict:
    return {
        "command": command,
        "rows": [
            {
                "name": r.config.name,
                "label": r.config.label,
                "round": r.round,
                "throughput": r.throughput,
                "latency": r.latency,
                "sink": r.sink,
                "cpu": r.cpu,
                "error": r.error,
                "notes": r.notes,
            }
            for r in rows
        ],
    }


# --- main -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    names = ", ".join(c.name for c in CONFIGURATIONS)
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Throughput and latency of the gateway against a direct run and a plain TCP "
        "relay, measured back to back in one run.",
    )
    p.add_argument("--messages", type=int, default=200_000, help="submit_sm per throughput run")
    p.add_argument("--window", type=int, default=100, help="outstanding requests (throughput)")
    p.add_argument(
        "--latency-messages", type=int, default=10_000, help="submit_sm per latency run (window 1)"
    )
    p.add_argument(
        "--warmup", type=int, default=None, help="unmeasured submit_sm per row (default 5000)"
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure every configuration this often, in turn; the table shows medians",
    )
    p.add_argument("--destinations", type=int, default=1000, help="distinct destination numbers")
    p.add_argument("--bind", choices=("transmitter", "transceiver"), default="transmitter")
    p.add_argument(
        "--connections",
        type=int,
        default=1,
        help="sessions of each throughput run, sharing its messages and window (every row; "
        "2 or more spread the load over a gateway's workers)",
    )
    p.add_argument("--configs", default=None, help=f"comma-separated subset of: {names}")
    p.add_argument(
        "--gateway-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument after `python -m gateway run --config FILE` (repeatable)",
    )
    p.add_argument("--run-timeout", type=float, default=120.0, help="bound per load run, s")
    p.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    p.add_argument("--list-configs", action="store_true", help="list configurations and exit")
    return p


def select_configs(spec: str | None) -> list[Configuration]:
    if spec is None:
        return list(CONFIGURATIONS)
    by_name = {c.name: c for c in CONFIGURATIONS}
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [w for w in wanted if w not in by_name]
    if unknown or not wanted:
        raise SystemExit(f"unknown configuration(s): {spec!r}; have {', '.join(by_name)}")
    return [by_name[w] for w in wanted]


def options(args: argparse.Namespace) -> Options:
    for name in ("messages", "latency_messages"):
        if not 1 <= getattr(args, name) <= MAX_MESSAGES:
            raise SystemExit(f"--{name.replace('_', '-')} must be 1..{MAX_MESSAGES:,}")
    if not 1 <= args.window <= 10_000:
        raise SystemExit("--window must be 1..10000")
    if not 1 <= args.rounds <= 20:
        raise SystemExit("--rounds must be 1..20")
    if not 1 <= args.connections <= 64:
        raise SystemExit("--connections must be 1..64")
    warmup = min(args.messages, 5_000) if args.warmup is None else args.warmup
    if not 0 <= warmup <= MAX_MESSAGES:
        raise SystemExit(f"--warmup must be 0..{MAX_MESSAGES:,}")
    return Options(
        messages=args.messages,
        window=args.window,
        latency_messages=args.latency_messages,
        warmup=warmup,
        rounds=args.rounds,
        destinations=args.destinations,
        run_timeout_s=args.run_timeout,
        bind=args.bind,
        gateway_args=tuple(args.gateway_arg),
        connections=args.connections,
    )


def run_all(configs: Sequence[Configuration], opts: Options) -> list[Row]:
    """Every configuration, round after round, against one sink; everything stopped at the end."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="smpp-bench-") as tmp, contextlib.ExitStack() as stack:
        log_dir = Path(tmp)
        sink = Child(
            "sink",
            [sys.executable, "-m", "bench.sink", "--host", HOST, "--port", "0"],
            log_dir,
            control=True,
        )
        stack.callback(sink.stop)
        sink_port = int(sink.read_json(READY_TIMEOUT_S)["port"])
        wait_port(sink_port, sink)
        services: dict[str, str] = {}
        for round_ in range(1, opts.rounds + 1):
            for config in configs:
                print(f"round {round_}: {config.label}", file=sys.stderr, flush=True)
                try:
                    if "redis" in config.needs and "redis_url" not in services:
                        services["redis_url"] = stack.enter_context(redis_service(log_dir))
                    if "redis-cluster" in config.needs and "redis_cluster_url" not in services:
                        services["redis_cluster_url"] = stack.enter_context(
                            redis_cluster_service(log_dir)
                        )
                    row = measure(config, sink, sink_port, log_dir, opts, services)
                except BenchError as exc:
                    row = Row(config=config, error=str(exc))
                row.round = round_
                rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list_configs:
        for c in CONFIGURATIONS:
            needs = f"  (needs {', '.join(c.needs)})" if c.needs else ""
            print(f"{c.name:<16} {c.label}{needs}")
        return 0
    configs = select_configs(args.configs)
    opts = options(args)
    shown = sys.orig_argv if argv is None else [sys.executable, "-m", "bench", *argv]
    command = shlex.join(shown)
    rows = run_all(configs, opts)
    print(report(configs, rows, opts, command))
    if args.json is not None:
        args.json.write_text(json.dumps(raw_results(rows, command), indent=2) + "\n")
    return 1 if any(r.error is not None for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
