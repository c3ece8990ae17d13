"""The supervisor's pure parts (gateway.workers): the restart decision, ``auto``, the config
checks for several workers, and the sum of metrics over processes."""

from __future__ import annotations

import dataclasses
import os
import socket

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gateway import startup
from gateway.config import Address, ConfigError, GatewayConfig, parse
from gateway.telemetry.metrics import STORE_UP, Metrics
from gateway.workers import (
    GiveUp,
    Restart,
    RestartPolicy,
    SlotHistory,
    WorkerExit,
    after_exit,
    check,
    merge,
    parse_workers,
    render,
    tallied,
    usable_cpus,
    worker_count,
)

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


class TestBind:
    def test_the_supervisors_socket_names_the_key_when_the_port_is_taken(self) -> None:
        """startup.bind (the socket every worker inherits) listens at once; on a port in use
        it raises one StartupError naming server.listen."""
        config = parse(
            {"upstream": {"address": "127.0.0.1:2776"}, "server": {"listen": "127.0.0.1:0"}}
        )
        item = startup.listeners(config)[0]
        sock = startup.bind(item)
        try:
            port = sock.getsockname()[1]
            assert port != 0
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass  # the backlog takes it before any worker accepts
            taken = dataclasses.replace(item, address=Address("127.0.0.1", port))
            with pytest.raises(
                startup.StartupError, match=r"^server\.listen: .* already in use"
            ) as info:
                startup.bind(taken)
            assert info.value.in_use
        finally:
            sock.close()
