"""Several worker processes on one listening port: ``smpp-gateway run --workers N``.

The shape is gunicorn's and uvicorn's, with nginx's ``reuseport`` listening sockets: a
supervisor parent binds the SMPP address (a taken port is one error naming ``server.listen``,
before any worker exists) and starts N workers, fresh interpreters (``python -m gateway
worker``) that each run the whole gateway on an event loop of their own. Worker i inherits
socket i of N, all bound with SO_REUSEPORT to the one address, and the kernel hashes each new
connection to one of them; a connection then stays with its worker for its life (its upstream
bind, its held parts, its receipts).

Why not one shared socket that every worker accepts on (what this module did first): the
kernel woke the same waiting worker first every time, and with ``bench --connections 4
--configs gateway-footer-w2`` all four client sessions went to one worker in 5 of 6 rounds
(the gateway's CPU share was 1.0 core, not 1.6): two workers gave no more than one process.
Hashing spreads connections whatever the workers are doing. Its price is a dead worker's
queue: the supervisor closes a worker's socket as soon as the worker exits, so the
connections queued on it are reset (their clients reconnect) and, while it is closed, the
kernel hashes new connections to the other workers' sockets; a fresh socket is bound when the
worker starts again. Keeping the socket for the restart instead would leave new connections
hashed to it waiting for the restart's backoff (up to 30 s) and start-up.

The probe comes first: a socket bound without SO_REUSEPORT and closed at once, so a port held
by another process, even another gateway with ``server.reuse_port = true``, is an error
rather than a silent share (unless ``server.reuse_port`` asks for that sharing here too).

Consent is shared through the store, never between processes directly. Each worker opens its
own store object; a change made through one is seen by the others before their next decision:
SQLite checks ``PRAGMA data_version`` once per turn of each worker's event loop (the store's
``change_check_interval_s`` must stay 0, which ``check`` enforces, so no worker's cache answers
"allowed" after another committed an opt-out); Redis invalidates every worker's cache through
its channel (a worker whose subscription is not confirmed asks Redis itself). The in-memory
store cannot be shared and is refused.

The supervisor runs the public ``[admin]`` and ``[optout_link]`` listeners itself, with a store
object of its own (opened, created and migrated before any worker starts, so N workers never
race to create the file), and the audit trail (``AuditFile`` appends under ``flock`` from every
process, one chain). Its ``/metrics`` is its own registry plus every worker's, summed per series
(``smppgw_consent_store_up`` is the minimum: 0 if any worker fails closed), fetched from each
worker's private status socket in the run directory; a worker that dies leaves the counters it
last reported (fetched at every scrape and every ``SCRAPE_INTERVAL_S``) in the sum, so a summed
counter never goes backwards. ``/readyz`` is unready while any worker is not running and ready,
with each worker's own readiness (its store) folded in.

Hung workers: each worker pings the supervisor (``WATCHDOG=1``, every half
``server.worker_timeout_s``); one that stays silent for the whole timeout, its event loop stuck,
is killed (``worker_hung``) and started again like any other that died.

Restart: a worker that exits while the supervisor is not stopping is started again after a
capped exponential backoff (``RestartPolicy``, logged as ``worker_exited`` and counted in
``smppgw_worker_restarts_total``). A worker that exits with status 2 before it was ready (a
config or start-up error: retrying cannot help), or that dies before ready
``max_start_failures`` times in a row, stops the supervisor with exit status 1.

Signals: SIGTERM / SIGINT drain every worker (each as a single process does, within
``gateway.shutdown_grace_s``; killed ``KILL_MARGIN_S`` after that) and exit 0 when every worker
exited 0. SIGHUP reloads the supervisor's own listeners' settings and every worker (each reads
the file). A worker started later (a restart) starts from the config the supervisor started
with and then applies the file as a reload, so keys that need a restart keep one value in
every process. A worker whose supervisor is gone (killed with SIGKILL) sees its pipe close and
drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from gateway import startup
from gateway.app import Gateway, sd_notify, watchdog_pings
from gateway.config import ConfigError, GatewayConfig, load
from gateway.eventloop import run_loop
from gateway.store.factory import sqlite_path
from gateway.telemetry import logs
from gateway.telemetry.metrics import STORE_UP

log = logs.get_logger(component="supervisor")

EXIT_CONFIG: Final = 2  # as gateway.cli: the worker could not start with this config
KILL_MARGIN_S: Final = 10.0  # after shutdown_grace_s, a worker still running is killed
SCRAPE_INTERVAL_S: Final = 5.0  # how stale a dead worker's last counters may be
STATUS_TIMEOUT_S: Final = 2.0  # a worker's status endpoint that does not answer in this is unready


# --- pure parts ---------------------------------------------------------------------------------


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which taskset and cgroups narrow)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def worker_count(setting: int | Literal["auto"], cpus: int) -> int:
    """How many workers ``server.workers`` (or ``--workers``) means on ``cpus`` usable CPUs."""
    if setting == "auto":
        return max(1, cpus)
    return setting


def parse_workers(text: str) -> int | Literal["auto"]:
    """``--workers``: a positive integer or ``auto``; ValueError otherwise."""
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"expected a positive integer or auto, got {text!r}")
    return int(text)


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartPolicy:
    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    # A worker that ran this long after it was ready died of something else than its start:
    # the backoff starts over.
    stable_after_s: float = 10.0
    max_start_failures: int = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerExit:
    """What the supervisor knows of a worker that ended."""

    status: int  # the exit status; -N for signal N
    ready: bool  # it had told the supervisor it was serving
    ran_s: float  # since it was started


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotHistory:
    failures: int = 0  # exits in a row without a stable run (the backoff's exponent)
    start_failures: int = 0  # exits in a row before ready


@dataclass(frozen=True, slots=True, kw_only=True)
class Restart:
    delay_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class GiveUp:
    reason: str


def after_exit(
    policy: RestartPolicy, history: SlotHistory, end: WorkerExit
) -> tuple[Restart | GiveUp, SlotHistory]:
    """Whether (and when) to start a worker again after ``end``, and the slot's new history."""
    if not end.ready:
        if end.status == EXIT_CONFIG:
            return GiveUp(reason="a worker exited with status 2 at start (config error)"), history
        history = SlotHistory(
            failures=history.failures + 1, start_failures=history.start_failures + 1
        )
        if history.start_failures >= policy.max_start_failures:
            return GiveUp(
                reason=f"a worker died before it was ready {history.start_failures} times in a row"
            ), history
    elif end.ran_s >= policy.stable_after_s:
        history = SlotHistory(failures=1)
    else:
        history = SlotHistory(failures=history.failures + 1)
    delay = policy.first_delay_s * 2 ** min(history.failures - 1, 30)
    return Restart(delay_s=min(policy.max_delay_s, delay)), history


def check(config: GatewayConfig, count: int) -> None:
    """ConfigError naming the key when ``config`` cannot be served by ``count`` workers."""
    if count <= 1 or not config.consent.enabled:
        return
    url = config.store.url
    if url.startswith("memory:"):
        raise ConfigError(
            "store.url: memory:// is one process's; with server.workers above 1 every worker "
            "would keep consent of its own (use sqlite or redis)"
        )
    if url.startswith("sqlite:"):
        _path, params = sqlite_path(url)
        interval = params.get("change_check_interval_s", "0")
        try:
            stale = float(interval) > 0
        except ValueError:
            return  # the store itself names the bad value when it opens
        if stale:
            raise ConfigError(
                f"store.url: change_check_interval_s={interval} lets a worker answer from its "
                "cache for that long after another worker stored an opt-out; with "
                "server.workers above 1 leave it at 0 (checked once per event loop turn)"
            )


# --- metrics across processes ---------------------------------------------------------------


_TALLIED: Final = frozenset({"counter", "histogram", "summary"})  # only ever grow
_MINIMUM: Final = frozenset({STORE_UP})  # a summed "up" would say 2; any 0 must show


def merge(sources: Iterable[Iterable[Metric]]) -> list[Metric]:
    """The families of every source, samples with the same name and labels summed (the
    minimum for ``_MINIMUM`` gauges). ``_created`` samples are left out: the creation time
    of a sum over processes means nothing."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for source in sources:
        for family in source:
            if family.name.endswith("_created"):
                continue  # as parsed from the text format: a gauge family of its own
            into = families.get(family.name)
            if into is None:
                into = families[family.name] = Metric(
                    family.name, family.documentation, family.type
                )
                values[family.name] = {}
            series = values[family.name]
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = series.get(key)
                if old is None:
                    series[key] = sample.value
                elif family.name in _MINIMUM:
                    series[key] = min(old, sample.value)
                else:
                    series[key] = old + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in values[name].items():
            family.add_sample(sample_name, dict(labels), value)
    return list(families.values())


def tallied(families: Iterable[Metric]) -> list[Metric]:
    """The families that only grow (counters, histograms): what a dead worker leaves."""
    return [f for f in families if f.type in _TALLIED]


class _Families(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def render(families: Sequence[Metric]) -> bytes:
    """The text exposition format of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(families))
    return generate_latest(registry)


async def http_get(path: str, target: str, timeout_s: float) -> tuple[int, bytes]:
    """GET ``target`` from the HTTP server on the Unix socket ``path``: (status, body)."""
    async with asyncio.timeout(timeout_s):
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(
                f"GET {target} HTTP/1.1\r\nHost: worker\r\nConnection: close\r\n\r\n".encode()
            )
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise OSError(f"not an HTTP answer from {path}")
    return int(parts[1]), body


# --- the supervisor ---------------------------------------------------------------------------


class _Slot:
    """One worker's place: its sockets in the run directory, its process while it runs."""

    def __init__(self, index: int, run_dir: Path) -> None:
        self.index = index
        self.status_path = str(run_dir / f"worker-{index}.sock")
        self.notify_path = str(run_dir / f"worker-{index}.notify")
        # Bound by the supervisor and inherited: a restarted worker serves the same path.
        self.status = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.status.bind(self.status_path)
        self.status.listen(16)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.setblocking(False)
        # This worker's SO_REUSEPORT socket; None while the worker is down (closed, so that
        # the kernel hashes new connections to the other workers' sockets).
        self.listen: socket.socket | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.ready = False
        self.last_ping = 0.0  # READY=1 or WATCHDOG=1, monotonic
        self.history = SlotHistory()
        self.last_tallies: list[Metric] = []  # counters it last reported

    def close(self) -> None:
        self.status.close()
        self.notify.close()
        self.close_listen()

    def close_listen(self) -> None:
        if self.listen is not None:
            self.listen.close()
            self.listen = None


class Supervisor:
    """The parent of ``count`` workers (see the module docstring)."""

    def __init__(
        self, config: GatewayConfig, count: int, *, policy: RestartPolicy | None = None
    ) -> None:
        self.config = config
        self.count = count
        self.policy = policy or RestartPolicy()
        self.gateway: Gateway | None = None
        self._slots: list[_Slot] = []
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()  # a worker became ready or ended
        self._failure: str | None = None
        self._stopping = False
        self._retired: list[Metric] = []  # counters of workers that ended
        self._listening: startup.Listening | None = None
        self._listen_family = socket.AF_INET
        self._listen_address: Any = None  # what every worker's socket is bound to
        self._alive_read = -1
        self._alive_write = -1
        self._snapshot = ""
        self._tasks: set[asyncio.Task[None]] = set()

    # --- Supervision (the admin API's view) --------------------------------------------------

    async def metrics_text(self) -> bytes:
        assert self.gateway is not None
        live = await asyncio.gather(*(self._scrape(slot) for slot in self._slots))
        return render(merge([self.gateway.metrics.registry.collect(), self._retired, *live]))

    async def problem(self) -> str | None:
        problems = []
        for slot in self._slots:
            if slot.process is None or slot.process.returncode is not None or not slot.ready:
                problems.append(f"worker {slot.index} is not running")
                continue
            try:
                status, body = await http_get(slot.status_path, "/readyz", STATUS_TIMEOUT_S)
            except (OSError, TimeoutError) as exc:
                problems.append(f"worker {slot.index} does not answer ({exc or 'timeout'})")
                continue
            if status != 200:
                problems.append(f"worker {slot.index}: {body.decode(errors='replace').strip()}")
        return "; ".join(problems) or None

    async def _scrape(self, slot: _Slot) -> list[Metric]:
        """A running worker's metrics (remembering its counters), or nothing."""
        if slot.process is None or slot.process.returncode is not None or not slot.ready:
            return []
        try:
            status, body = await http_get(slot.status_path, "/metrics", STATUS_TIMEOUT_S)
            if status != 200:
                return []
            families = list(text_string_to_metric_families(body.decode()))
        except (OSError, TimeoutError, ValueError):
            return []
        if slot.process.returncode is None:
            slot.last_tallies = tallied(families)
        return families

    # --- running ----------------------------------------------------------------------------

    async def serve(self) -> int:
        """Run until SIGTERM / SIGINT (exit status 0 when every worker drained cleanly) or
        until workers keep dying at start (1)."""
        loop = asyncio.get_running_loop()
        self._listening = startup.listeners(self.config)[0]
        # StartupError naming server.listen, before any worker exists.
        sockets = startup.bind(self._listening, self.count)
        self._listen_family = sockets[0].family
        self._listen_address = sockets[0].getsockname()
        run_dir = Path(
            tempfile.mkdtemp(prefix="smpp-gateway-", dir=os.environ.get("RUNTIME_DIRECTORY"))
        )
        try:
            return await self._serve(loop, run_dir, sockets)
        finally:
            for slot in self._slots:
                slot.close()
            for sock in sockets:
                sock.close()
            for fd in (self._alive_read, self._alive_write):
                if fd >= 0:
                    os.close(fd)
            shutil.rmtree(run_dir, ignore_errors=True)

    async def _serve(
        self, loop: asyncio.AbstractEventLoop, run_dir: Path, sockets: list[socket.socket]
    ) -> int:
        source = self.config.source
        assert source is not None, "a supervisor's config comes from a file"
        self._snapshot = _snapshot(source, run_dir)
        self._alive_read, self._alive_write = os.pipe()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        self.gateway = Gateway(self.config, supervision=self)
        self._restarts = self.gateway.metrics.supervisor(
            lambda: sum(1 for slot in self._slots if slot.ready)
        )
        try:
            try:
                await self.gateway.start()
            except startup.StartupError:
                await self.gateway.stop()
                raise
            self._slots = [_Slot(i, run_dir) for i in range(1, self.count + 1)]
            for slot, sock in zip(self._slots, sockets, strict=True):
                slot.listen = sock
            for slot in self._slots:
                loop.add_reader(slot.notify.fileno(), self._notified, slot)
                self._spawn(self._run_slot(slot))
            if self.config.admin.listen is not None:
                self._spawn(self._refresh())
            if self.config.server.worker_timeout_s is not None:
                self._spawn(self._watch_workers(self.config.server.worker_timeout_s))
            if await self._all_ready():
                log.info(
                    logs.WORKERS_READY,
                    workers=self.count,
                    worker_pids=[s.process.pid for s in self._slots if s.process is not None],
                )
                sd_notify(
                    f"READY=1\nSTATUS=listening on {self.config.server.listen} with "
                    f"{self.count} workers\nMAINPID={os.getpid()}"
                )
                self._spawn(watchdog_pings())
                await self._stop.wait()
            sd_notify("STOPPING=1")
            clean = await self._stop_workers()
            await self.gateway.stop()
        finally:
            for slot in self._slots:
                loop.remove_reader(slot.notify.fileno())
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._failure is not None:
            log.error(logs.WORKERS_FAILED, reason=self._failure)
            return 1
        return 0 if clean else 1

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def request_stop(self) -> None:
        self._stop.set()
        self._changed.set()

    def reload(self) -> None:
        """SIGHUP: the supervisor's own listeners' settings, and every worker."""
        if self.gateway is not None:
            self.gateway.reload()
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(signal.SIGHUP)

    async def _all_ready(self) -> bool:
        """Wait until every worker is ready; False if stopped or given up first."""
        while True:
            if self._stop.is_set():
                return False
            if all(slot.ready for slot in self._slots):
                return True
            self._changed.clear()
            await self._changed.wait()

    def _notified(self, slot: _Slot) -> None:
        """A worker's sd_notify datagram: READY=1 once it serves."""
        while True:
            try:
                data = slot.notify.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            fields = data.split(b"\n")
            if b"READY=1" in fields or b"WATCHDOG=1" in fields:
                slot.last_ping = time.monotonic()
            if b"READY=1" in fields and not slot.ready:
                slot.ready = True
                self._changed.set()

    async def _start_worker(self, slot: _Slot) -> asyncio.subprocess.Process:
        assert self.config.source is not None
        if slot.listen is None:
            # A restart: a fresh socket on the same address (StartupError if that fails).
            assert self._listening is not None
            slot.listen = startup.bind_again(
                self._listening, self._listen_family, self._listen_address
            )
        env = dict(os.environ, NOTIFY_SOCKET=slot.notify_path)
        for name in ("WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
            env.pop(name, None)  # systemd's, for this process
        timeout_s = self.config.server.worker_timeout_s
        if timeout_s is not None:
            # The worker's own watchdog loop pings at half this (gateway.app.watchdog_pings).
            env["WATCHDOG_USEC"] = str(int(timeout_s * 1_000_000))
        fds = (slot.listen.fileno(), slot.status.fileno(), self._alive_read)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "worker",
            "--config",
            self._snapshot,
            "--source",
            self.config.source,
            "--index",
            str(slot.index),
            "--fds",
            ",".join(str(fd) for fd in fds),
            pass_fds=fds,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
        )
        slot.process = process
        slot.started = time.monotonic()
        slot.ready = False
        log.info(logs.WORKER_STARTED, worker=slot.index, worker_pid=process.pid)
        if self._stopping:
            # Started while the others were told to stop: it is not in their list.
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        return process

    async def _run_slot(self, slot: _Slot) -> None:
        while True:
            try:
                process = await self._start_worker(slot)
            except startup.StartupError as exc:
                # Cannot happen while the other workers hold the port; if it does, this
                # worker cannot serve, and the supervisor stops (workers_failed) rather than
                # run short.
                self._failure = f"worker {slot.index}: {exc}"
                self.request_stop()
                return
            status = await process.wait()
            # Its queued connections are reset now (their clients reconnect, hashed to the
            # other sockets) rather than waiting for the restart's backoff and start-up.
            slot.close_listen()
            self._notified(slot)  # a READY sent just before it died
            end = WorkerExit(status=status, ready=slot.ready, ran_s=time.monotonic() - slot.started)
            slot.ready = False
            self._retired = merge([self._retired, slot.last_tallies])
            slot.last_tallies = []
            self._changed.set()
            if self._stopping or self._stop.is_set():
                # Stopping (a Ctrl-C reaches the workers too, maybe before the supervisor).
                log.info(
                    logs.WORKER_EXITED, worker=slot.index, worker_pid=process.pid, status=status
                )
                return
            decision, slot.history = after_exit(self.policy, slot.history, end)
            if isinstance(decision, GiveUp):
                log.error(
                    logs.WORKER_EXITED,
                    worker=slot.index,
                    worker_pid=process.pid,
                    status=status,
                    ran_s=round(end.ran_s, 3),
                    restart="no",
                )
                self._failure = decision.reason
                self.request_stop()
                return
            reason = "start" if not end.ready else "died"
            self._restarts.labels(reason=reason).inc()
            log.warning(
                logs.WORKER_EXITED,
                worker=slot.index,
                worker_pid=process.pid,
                status=status,
                ran_s=round(end.ran_s, 3),
                restart_in_s=decision.delay_s,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(decision.delay_s):
                    await self._stop.wait()
            if self._stop.is_set():
                return

    async def _stop_workers(self) -> bool:
        """SIGTERM every worker, wait for them to drain (killing the late); True if every
        one exited 0."""
        self._stopping = True
        assert self.gateway is not None
        self.gateway.mark_draining()  # readiness fails first, as in one process
        live = [s.process for s in self._slots if s.process and s.process.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        waits = [asyncio.ensure_future(p.wait()) for p in live]
        if waits:
            _done, late = await asyncio.wait(
                waits, timeout=self.config.shutdown_grace_s + KILL_MARGIN_S
            )
            for process in live:
                if process.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*waits)
            if late:
                return False
        # -SIGTERM: a worker still starting, before its handler was set (nothing accepted yet).
        return all(p.returncode in (0, -signal.SIGTERM) for p in live)

    async def _refresh(self) -> None:
        """Keep each worker's last counters recent (what stays in the sum if it dies)."""
        while True:
            await asyncio.sleep(SCRAPE_INTERVAL_S)
            await asyncio.gather(*(self._scrape(slot) for slot in self._slots))

    async def _watch_workers(self, timeout_s: float) -> None:
        """Kill a ready worker that sent no watchdog ping for ``timeout_s`` (its event loop is
        stuck: it answers nobody); the restart follows as for any death."""
        while True:
            await asyncio.sleep(min(1.0, timeout_s / 4))
            now = time.monotonic()
            for slot in self._slots:
                process = slot.process
                if process is None or process.returncode is not None or not slot.ready:
                    continue
                if now - slot.last_ping > timeout_s and not self._stopping:
                    log.error(
                        logs.WORKER_HUNG,
                        worker=slot.index,
                        worker_pid=process.pid,
                        silent_s=round(now - slot.last_ping, 1),
                    )
                    slot.last_ping = now  # one kill, then the exit is handled
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()


def _snapshot(source: str, run_dir: Path) -> str:
    """A copy of the config file: what every worker starts from, also one restarted after
    the file changed (before the supervisor's loop serves anything)."""
    snapshot = run_dir / "config.toml"
    snapshot.touch(mode=0o600)
    snapshot.write_bytes(Path(source).read_bytes())
    return str(snapshot)


def supervise(config: GatewayConfig, count: int) -> int:
    """``run`` with ``count`` workers: the supervisor's process (exit status)."""
    logs.configure(
        level=config.logging.level,
        log_bodies=config.logging.log_bodies,
        json=config.logging.format == "json",
        stream=sys.stderr,
    )
    try:
        # The standard loop: the supervisor relays no traffic, and its child processes and
        # inherited descriptors are the standard loop's well-trodden path.
        return asyncio.run(Supervisor(config, count).serve())
    except startup.StartupError as exc:
        print(f"smpp-gateway: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


# --- a worker -------------------------------------------------------------------------------


async def _worker_main(gateway: Gateway, alive: int) -> None:
    loop = asyncio.get_running_loop()

    def parent_gone() -> None:
        # Readable means EOF: the supervisor holds the write end until it exits.
        loop.remove_reader(alive)
        log.warning(logs.SUPERVISOR_GONE)
        gateway.request_stop()

    loop.add_reader(alive, parent_gone)
    try:
        await gateway.serve()
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(alive)


def run_worker(*, snapshot: str, source: str, index: int, fds: Sequence[int]) -> int:
    """One worker process (``python -m gateway worker``, started by the supervisor)."""
    listen_fd, status_fd, alive = fds
    try:
        with open(snapshot, "rb") as f:
            started_with = f.read()
        config = dataclasses.replace(load(snapshot), source=source)
    except ConfigError as exc:
        print(f"smpp-gateway: worker {index}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(
        level=config.logging.level,
        log_bodies=config.logging.log_bodies,
        json=config.logging.format == "json",
        stream=sys.stderr,
    )
    # Every line this process logs says which worker it is (the loop's tasks copy this).
    structlog.contextvars.bind_contextvars(worker=index)
    try:
        gateway = Gateway(
            config,
            listen_socket=socket.socket(fileno=listen_fd),
            status_socket=socket.socket(fileno=status_fd),
        )
    except (ssl.SSLError, OSError) as exc:  # a certificate or key gone since the check
        print(
            f"smpp-gateway: worker {index}: config error: cannot load a TLS certificate, key "
            f"or CA: {exc}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    with contextlib.suppress(OSError):
        if Path(source).read_bytes() != started_with:
            gateway.reload()  # the file changed since the supervisor started (a SIGHUP)
    try:
        run_loop(_worker_main(gateway, alive))
    except startup.StartupError as exc:
        print(f"smpp-gateway: worker {index}: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0
