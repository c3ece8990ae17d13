"""The supervisor (gateway.workers): its pure parts (the restart decision, ``auto``, the config
checks for several workers, the sum of metrics over processes), its listening sockets, and how
real connections spread over two real workers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway import startup
from gateway.config import ConfigError, GatewayConfig, parse
from gateway.telemetry.metrics import STORE_UP, Metrics
from gateway.workers import (
    GiveUp,
    Restart,
    RestartPolicy,
    SlotHistory,
    WorkerExit,
    after_exit,
    check,
    http_get,
    merge,
    parse_workers,
    render,
    tallied,
    usable_cpus,
    worker_count,
)
from tests.integration.test_workers import supervised
from tests.support.consent import SmpplibEsme

POLICY = RestartPolicy(first_delay_s=0.5, max_delay_s=4.0, stable_after_s=10.0)


def died(*, ready: bool = True, ran_s: float = 1.0, status: int = -9) -> WorkerExit:
    return WorkerExit(status=status, ready=ready, ran_s=ran_s)


class TestWorkerCount:
    def test_auto_is_the_usable_cpus(self) -> None:
        """``auto`` is the number of CPUs given; a number is itself."""
        assert worker_count("auto", 6) == 6
        assert worker_count("auto", 0) == 1
        assert worker_count(3, 6) == 3

    def test_usable_cpus_follow_the_affinity_mask(self) -> None:
        """The CPUs counted are those this process may run on, not the machine's."""
        assert usable_cpus() == len(os.sched_getaffinity(0))

    def test_the_command_line_value(self) -> None:
        """--workers takes a positive integer or auto, nothing else."""
        assert parse_workers("auto") == "auto"
        assert parse_workers("4") == 4
        for bad in ("0", "-1", "two", ""):
            with pytest.raises(ValueError, match="positive integer or auto"):
                parse_workers(bad)


class TestRestartDecision:
    def test_a_worker_that_ran_a_while_is_started_again_soon(self) -> None:
        """A death after a stable run restarts after the first delay, the backoff reset."""
        decision, history = after_exit(
            POLICY, SlotHistory(failures=4, start_failures=2), died(ran_s=60)
        )
        assert decision == Restart(delay_s=0.5)
        assert history == SlotHistory(failures=1)

    def test_quick_deaths_double_the_delay_up_to_the_cap(self) -> None:
        """Each death soon after the start doubles the delay, never beyond max_delay_s, and
        never gives up while the worker got ready each time."""
        history = SlotHistory()
        delays = []
        for _ in range(7):
            decision, history = after_exit(POLICY, history, died(ran_s=1))
            assert isinstance(decision, Restart)
            delays.append(decision.delay_s)
        assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]

    def test_dying_before_ready_gives_up_after_max_start_failures(self) -> None:
        """Deaths before the worker was ready are counted; the fifth in a row gives up."""
        history = SlotHistory()
        for _ in range(4):
            decision, history = after_exit(POLICY, history, died(ready=False, status=1))
            assert isinstance(decision, Restart)
        decision, history = after_exit(POLICY, history, died(ready=False, status=1))
        assert isinstance(decision, GiveUp)
        assert "5 times in a row" in decision.reason

    def test_a_ready_start_resets_the_start_failures(self) -> None:
        """A worker that got ready once starts its count of failed starts over."""
        history = SlotHistory()
        for _ in range(4):
            _, history = after_exit(POLICY, history, died(ready=False, status=1))
        _, history = after_exit(POLICY, history, died(ready=True, ran_s=1))
        assert history.start_failures == 0
        decision, _ = after_exit(POLICY, history, died(ready=False, status=1))
        assert isinstance(decision, Restart)

    def test_exit_status_2_at_start_gives_up_at_once(self) -> None:
        """A config error at start (status 2 before ready) is not retried; after ready the
        same status is an ordinary death."""
        decision, _ = after_exit(POLICY, SlotHistory(), died(ready=False, status=2))
        assert isinstance(decision, GiveUp)
        assert "status 2" in decision.reason
        decision, _ = after_exit(POLICY, SlotHistory(), died(ready=True, status=2))
        assert isinstance(decision, Restart)


def config(url: str, *, consent: bool = True) -> GatewayConfig:
    return parse(
        {
            "upstream": {"address": "127.0.0.1:2776"},
            "store": {"url": url},
            "consent": {"enabled": consent},
        }
    )


class TestCheck:
    @pytest.mark.parametrize(
        "url",
        [
            "sqlite:/var/lib/gw/consent.db",
            "sqlite:/var/lib/gw/consent.db?change_check_interval_s=0",
            "redis://127.0.0.1:6379/0",
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        ],
    )
    def test_shared_stores_serve_several_workers(self, url: str) -> None:
        """SQLite checked every loop turn, Redis and Redis Cluster are shared: accepted."""
        check(config(url), 4)

    def test_memory_store_is_refused(self) -> None:
        """memory:// is one process's: refused for several workers, naming store.url."""
        with pytest.raises(ConfigError, match=r"^store\.url: memory://"):
            check(config("memory://"), 2)
        check(config("memory://"), 1)
        check(config("memory://", consent=False), 2)

    def test_a_sqlite_cache_that_may_be_stale_is_refused(self) -> None:
        """A change_check_interval_s above 0 would let a worker answer from a stale cache
        after another worker stored an opt-out: refused for several workers."""
        url = "sqlite:/var/lib/gw/consent.db?change_check_interval_s=0.5"
        with pytest.raises(ConfigError, match=r"^store\.url: change_check_interval_s=0\.5"):
            check(config(url), 2)
        check(config(url), 1)


def families(text: str) -> list[Metric]:
    return list(text_string_to_metric_families(text))


def samples(data: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(data.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def worker_metrics(submits: int, *, store_up: float = 1.0, sessions: int = 1) -> Metrics:
    """One worker's registry with some counts, a histogram and the store gauge."""
    metrics = Metrics()
    metrics.pdus_total.add(("client", "in", "submit_sm"), submits)
    metrics.binds_total.labels(bind_type="transmitter", result="ok").inc()
    metrics.sessions.labels(bind_type="transmitter").set(sessions)
    metrics.store_latency.observe(0.002)
    metrics.store_up().set(store_up)
    return metrics


class TestMerge:
    def test_counters_gauges_and_histograms_are_summed(self) -> None:
        """Two workers' series add up in one exposition: counters, gauges, histogram
        buckets, sums and counts."""
        a, b = worker_metrics(3, sessions=2), worker_metrics(4, sessions=5)
        merged = samples(render(merge([a.registry.collect(), b.registry.collect()])))
        pdus = (
            "smppgw_pdus_total",
            (("command", "submit_sm"), ("direction", "in"), ("leg", "client")),
        )
        assert merged[pdus] == 7
        binds = ("smppgw_binds_total", (("bind_type", "transmitter"), ("result", "ok")))
        assert merged[binds] == 2
        assert merged[("smppgw_sessions", (("bind_type", "transmitter"),))] == 7
        assert merged[("smppgw_store_write_seconds_count", ())] == 2
        assert merged[("smppgw_store_write_seconds_bucket", (("le", "0.0025"),))] == 2

    def test_store_up_is_the_minimum(self) -> None:
        """One worker failing closed shows as 0, not as a sum of 1."""
        a, b = worker_metrics(1, store_up=1.0), worker_metrics(1, store_up=0.0)
        merged = samples(render(merge([a.registry.collect(), b.registry.collect()])))
        assert merged[(STORE_UP, ())] == 0

    def test_created_samples_are_left_out(self) -> None:
        """The creation time of a sum means nothing: no ``_created`` sample, also when the
        source is a parsed exposition that carries them."""
        a = worker_metrics(1)
        parsed = families(a.render().decode())
        assert any(s.name.endswith("_created") for f in parsed for s in f.samples)
        text = render(merge([parsed, a.registry.collect()])).decode()
        assert "_created" not in text
        assert 'smppgw_pdus_total{command="submit_sm",direction="in",leg="client"} 2.0' in text

    def test_a_dead_workers_counters_stay_and_its_gauges_go(self) -> None:
        """What ``tallied`` keeps of a worker (what stays in the sum when it dies) is its
        counters and histograms, not its gauges."""
        kept = tallied(families(worker_metrics(5).render().decode()))
        names = {f.name for f in kept}
        assert {"smppgw_pdus", "smppgw_binds", "smppgw_store_write_seconds"} <= names
        assert "smppgw_sessions" not in names
        assert STORE_UP not in names


def server_item(listen: str, *, reuse_port: bool = False) -> startup.Listening:
    config = parse(
        {
            "upstream": {"address": "127.0.0.1:2776"},
            "server": {"listen": listen, "reuse_port": reuse_port},
        }
    )
    return startup.listeners(config)[0]


def reuse_port_socket(family: int, address: tuple[str, int]) -> socket.socket:
    """A listening socket of another process's kind, sharing its port on purpose."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(address)
    sock.listen(8)
    return sock


class TestBind:
    def test_every_workers_socket_listens_on_the_port_the_first_got(self) -> None:
        """Port 0: startup.bind gives one listening socket per worker, all on the port the
        first was given, each taking connections before any worker accepts."""
        sockets = startup.bind(server_item("127.0.0.1:0"), 3)
        try:
            (port,) = {sock.getsockname()[1] for sock in sockets}
            assert len(sockets) == 3
            assert port != 0
            clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
            accepted = 0
            for sock in sockets:  # the kernel queued each connection on one of them
                with contextlib.suppress(BlockingIOError):
                    while True:
                        sock.accept()[0].close()
                        accepted += 1
            for client in clients:
                client.close()
            assert accepted == 6
        finally:
            for sock in sockets:
                sock.close()

    def test_a_taken_port_names_the_key(self) -> None:
        """A port held by another process is one StartupError naming server.listen, also
        when that process shares it with SO_REUSEPORT (the probe bind does not set it)."""
        plain = startup.bind(server_item("127.0.0.1:0"), 1)[0]
        shared = reuse_port_socket(socket.AF_INET, ("127.0.0.1", 0))
        try:
            for holder in (plain, shared):
                port = holder.getsockname()[1]
                with pytest.raises(
                    startup.StartupError, match=r"^server\.listen: .* already in use"
                ) as info:
                    startup.bind(server_item(f"127.0.0.1:{port}"), 2)
                assert info.value.in_use
        finally:
            plain.close()
            shared.close()

    def test_reuse_port_on_shares_the_port_on_purpose(self) -> None:
        """With server.reuse_port = true the workers' sockets join another SO_REUSEPORT
        holder of the port, as a single process does."""
        other = reuse_port_socket(socket.AF_INET, ("127.0.0.1", 0))
        try:
            port = other.getsockname()[1]
            sockets = startup.bind(server_item(f"127.0.0.1:{port}", reuse_port=True), 2)
            assert {sock.getsockname()[1] for sock in sockets} == {port}
            for sock in sockets:
                sock.close()
        finally:
            other.close()

    def test_ipv6_and_a_fresh_socket_for_a_restarted_worker(self) -> None:
        """An IPv6 address binds IPv6-only sockets; bind_again adds one on the same port
        after one of them was closed (a worker that died), and it takes connections."""
        if not socket.has_ipv6:
            pytest.skip("no IPv6")
        try:
            sockets = startup.bind(server_item("[::1]:0"), 2)
        except startup.StartupError as exc:
            pytest.skip(f"no ::1 here: {exc}")
        try:
            assert all(sock.family == socket.AF_INET6 for sock in sockets)
            assert sockets[0].getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            address = sockets[0].getsockname()
            sockets[1].close()
            sockets[1] = startup.bind_again(server_item("[::1]:0"), socket.AF_INET6, address)
            assert sockets[1].getsockname()[1] == address[1]
            with socket.create_connection(("::1", address[1]), timeout=5):
                pass
        finally:
            for sock in sockets:
                sock.close()


async def sessions_per_worker(run_root: str) -> list[float]:
    """Each worker's own smppgw_sessions (transmitter), read from its status socket."""
    (run_dir,) = await asyncio.to_thread(lambda: list(Path(run_root).iterdir()))
    out = []
    for index in (1, 2):
        status, body = await http_get(str(run_dir / f"worker-{index}.sock"), "/metrics", 5.0)
        assert status == 200
        out.append(samples(body).get(("smppgw_sessions", (("bind_type", "transmitter"),)), 0))
    return out


@pytest.fixture
def run_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The supervisor's run directory's parent, short: a Unix socket path has 108 bytes."""
    root = tempfile.mkdtemp(prefix="gw")
    monkeypatch.setenv("RUNTIME_DIRECTORY", root)
    yield root
    shutil.rmtree(root, ignore_errors=True)


class TestSpread:
    async def test_sixteen_connections_reach_both_workers(
        self, tmp_path: Path, run_root: str
    ) -> None:
        """Sixteen smpplib binds, one after the other, to a 2-worker gateway: each worker's
        status socket counts sessions, and the supervisor's /metrics sums them to 16. Each
        worker has its own SO_REUSEPORT socket and the kernel hashes each connection to one,
        so all 16 land on one worker with probability 2 * 2**-16."""
        async with supervised(tmp_path) as (_sim, daemon), contextlib.AsyncExitStack() as stack:
            for _ in range(16):
                await stack.enter_async_context(
                    SmpplibEsme(daemon.port, "acme", bind="transmitter")
                )
            per_worker = await sessions_per_worker(run_root)
            assert all(count > 0 for count in per_worker), per_worker
            assert sum(per_worker) == 16
            assert await daemon.metric("smppgw_sessions", bind_type="transmitter") == 16

    async def test_connections_are_hashed_even_to_a_worker_that_is_not_accepting(
        self, tmp_path: Path, run_root: str
    ) -> None:
        """Sixteen binds opened while worker 2 is stopped (SIGSTOP): some wait in worker 2's
        own socket and are served once it runs again, where one shared socket gives every
        one to the worker that is awake (all 16 on worker 1 with hashing: 2**-16)."""
        async with supervised(tmp_path) as (_sim, daemon), contextlib.AsyncExitStack() as stack:
            stopped = daemon.worker_pids()[2]
            os.kill(stopped, signal.SIGSTOP)
            try:
                clients = [SmpplibEsme(daemon.port, "acme", bind="transmitter") for _ in range(16)]
                binds = asyncio.gather(*(stack.enter_async_context(c) for c in clients))
                await asyncio.sleep(1.0)  # the connections reach the kernel's queues
            finally:
                os.kill(stopped, signal.SIGCONT)
            await binds
            per_worker = await sessions_per_worker(run_root)
            assert all(count > 0 for count in per_worker), per_worker
            assert sum(per_worker) == 16

    async def test_a_dead_workers_queued_connections_are_reset_not_stranded(
        self, tmp_path: Path, run_root: str
    ) -> None:
        """Binds queued on a stopped worker's socket are reset when that worker is killed (the
        supervisor closes its socket rather than keep them for the restart); the others are
        served by worker 1, and the restarted worker takes new connections again."""
        async with supervised(tmp_path) as (_sim, daemon), contextlib.AsyncExitStack() as stack:
            doomed = daemon.worker_pids()[2]
            os.kill(doomed, signal.SIGSTOP)
            try:
                clients = [SmpplibEsme(daemon.port, "acme", bind="transmitter") for _ in range(16)]
                binds = asyncio.gather(
                    *(stack.enter_async_context(c) for c in clients), return_exceptions=True
                )
                await asyncio.sleep(1.0)  # the connections reach the kernel's queues
                os.kill(doomed, signal.SIGKILL)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(doomed, signal.SIGCONT)
            results = await binds
            failed = [r for r in results if isinstance(r, BaseException)]
            for client, result in zip(clients, results, strict=True):
                if isinstance(result, BaseException) and client.client._socket is not None:
                    client.client._socket.close()  # reset: nothing to unbind
            assert failed, "no connection was queued on the killed worker's socket"
            await daemon.wait_for("gateway_started", 2, worker=2, timeout=30)
            assert (await sessions_per_worker(run_root))[0] == 16 - len(failed)
            for _ in range(16):
                await stack.enter_async_context(
                    SmpplibEsme(daemon.port, "acme", bind="transmitter")
                )
            per_worker = await sessions_per_worker(run_root)
            assert per_worker[1] > 0, per_worker
            assert sum(per_worker) == 32 - len(failed)
