"""Prometheus metrics, owned here so proxy and store never import admin.

Each gateway instance builds one ``Metrics`` with its own registry (tests run several gateways in
one process). Counters on the hot path are incremented per batch where that is possible; what
is counted per PDU (``Tally``, ``LatencyTally``) is a plain dict or list update, turned into
Prometheus samples only when scraped. Labels come from bounded sets only: enums, command names,
campaign names from the config, accounts the SMSC accepted; never a subscriber or free text.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

STORE_UP = "smppgw_consent_store_up"

# Relay latency: a cache-hit MT takes some 100 us through the gateway, a STOP waits for a
# durable write, a slow SMSC for seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip


Key = Hashable
LabelsOf = Callable[[Key], Sequence[str]]


def _as_labels(key: Key) -> Sequence[str]:
    return key if isinstance(key, tuple) else (str(key),)


class Tally(Collector):
    """A counter whose hot-path increment is a dict update, turned into samples at each scrape.

    Writers update ``counts`` directly (``counts[key] = counts.get(key, 0) + n``); a key is
    the label values (a tuple, or one string), or anything ``labels_of`` turns into them (the
    bridge counts PDUs under ints, so that counting builds no tuple). The event loop is the
    only writer and the scrape runs on it too, so no lock is needed."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: tuple[str, ...],
        registry: CollectorRegistry,
        labels_of: LabelsOf = _as_labels,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = labels
        self.labels_of = labels_of
        self.counts: dict[Key, float] = {}
        registry.register(self)

    def add(self, key: Key, amount: float = 1) -> None:
        counts = self.counts
        counts[key] = counts.get(key, 0) + amount

    def describe(self) -> Iterable[Metric]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labels)]

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        # Distinct keys may name the same labels (e.g. two ints for one command name).
        merged: dict[tuple[str, ...], float] = {}
        for key, value in self.counts.items():
            labels = tuple(self.labels_of(key))
            merged[labels] = merged.get(labels, 0) + value
        for labels, value in sorted(merged.items()):
            family.add_metric(labels, value)
        yield family


class LatencyTally(Collector):
    """A histogram by one label whose observation is a bisect and two list updates.

    ``series(key)`` is the key's list: a count per bucket (``bounds``, then +Inf) and, last,
    the sum of the observations; writers update it directly. ``labels_of`` as for Tally."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        registry: CollectorRegistry,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        labels_of: LabelsOf = _as_labels,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = buckets
        self.labels_of = labels_of
        self.all: dict[Key, list[float]] = {}
        registry.register(self)

    def series(self, key: Key) -> list[float]:
        found = self.all.get(key)
        if found is None:
            found = self.all[key] = [0.0] * (len(self.bounds) + 2)
        return found

    def observe(self, key: Key, seconds: float) -> None:
        series = self.series(key)
        series[bisect_left(self.bounds, seconds)] += 1
        series[-1] += seconds

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation, labels=[self.label])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        merged: dict[str, list[float]] = {}
        for key, series in self.all.items():
            (value,) = self.labels_of(key)
            into = merged.setdefault(value, [0.0] * len(series))
            for i, n in enumerate(series):
                into[i] += n
        for value, series in sorted(merged.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, n in zip((*self.bounds, float("inf")), series, strict=False):
                cumulative += n
                buckets.append((_bound_text(bound), cumulative))
            family.add_metric([value], buckets, series[-1])
        yield family


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Gauge(
            "smppgw_sessions", "Open client sessions by bind type", ["bind_type"], registry=r
        )
        self.account_sessions = Gauge(
            "smppgw_account_sessions",
            "Bound client sessions by account (the system_id the SMSC accepted)",
            ["account"],
            registry=r,
        )
        self.connections_total = Counter(
            "smppgw_connections_total",
            "Client connections accepted or refused",
            ["outcome"],
            registry=r,
        )
        self.proxy_headers_total = Counter(
            "smppgw_proxy_headers_total",
            "PROXY protocol headers read, or connections closed for want of one",
            ["outcome"],
            registry=r,
        )
        self.binds_total = Counter(
            "smppgw_binds_total",
            "Client bind attempts by result",
            ["bind_type", "result"],
            registry=r,
        )
        # Counted by the bridge under int keys; the listener sets labels_of (gateway.proxy.bridge).
        self.pdus_total = Tally(
            "smppgw_pdus_total",
            "PDUs the relay received (in) from and sent (out) to each leg's peer, by command",
            ("leg", "direction", "command"),
            r,
        )
        self.pdus_rejected_total = Counter(
            "smppgw_pdus_rejected_total",
            "Requests the gateway answered with an error itself",
            ["leg", "status"],
            registry=r,
        )
        self.requests_expired_total = Counter(
            "smppgw_requests_expired_total",
            "Requests that got no response in time",
            ["leg"],
            registry=r,
        )
        self.binds_throttled_total = Counter(
            "smppgw_binds_throttled_total",
            "Client binds slowed down or refused after failed binds (or for the SMSC's bind rate)",
            ["outcome"],
            registry=r,
        )
        self.mt_rejected_total = Counter(
            "smppgw_mt_rejected_total",
            "MT (each part, each submit_multi destination) refused, by reason and campaign",
            ["reason", "campaign"],
            registry=r,
        )
        self.mt_quiet_hours_total = Counter(
            "smppgw_mt_quiet_hours_total",
            "MT held back by quiet hours, by reason (quiet_hours refused,"
            " quiet_hours_deferred) and the rule whose window was closed",
            ["reason", "rule"],
            registry=r,
        )
        self.mt_revoke_all_total = Counter(
            "smppgw_mt_revoke_all_total",
            "MT refused by a business-wide (FCC revoke-all) opt-out, by business",
            ["business"],
            registry=r,
        )
        self.mt_opt_out_answers_total = Counter(
            "smppgw_opt_out_answers_total",
            "Answers to a revoke-all confirmation that asked which messages to stop, by"
            " business and answer (all, narrowed)",
            ["business", "answer"],
            registry=r,
        )
        self.mt_allowed_total = Tally(
            "smppgw_mt_allowed_total",
            "MT (each part, each submit_multi destination) the consent decision let through",
            ("campaign",),
            r,
        )
        self.mt_parts_answered_early_total = Counter(
            "smppgw_mt_parts_answered_early_total",
            "Parts of long MTs answered with the gateway's own message id before the SMSC saw them",
            registry=r,
        )
        self.mt_parts_failed_total = Counter(
            "smppgw_mt_parts_failed_total",
            "Parts the client was answered for, or the gateway added, that the SMSC did not take",
            ["reason"],
            registry=r,
        )
        self.receipts_translated_total = Counter(
            "smppgw_receipts_translated_total",
            "Delivery receipts for parts the gateway answered or added: shown under the client's "
            "ids, or dropped (a part the client never sent)",
            ["outcome"],
            registry=r,
        )
        self.mo_senders_ignored_total = Counter(
            "smppgw_mo_senders_ignored_total",
            "MO whose source is no subscriber (a name, unreadable): consent unchanged",
            ["kind"],
            registry=r,
        )
        self.mo_keywords_total = Counter(
            "smppgw_mo_keywords_total",
            "MO recognised as keywords",
            ["family", "match"],
            registry=r,
        )
        self.opt_outs_total = Counter(
            "smppgw_opt_outs_total",
            "Opt-outs stored from subscribers' MO, by campaign and keyword family",
            ["campaign", "family"],
            registry=r,
        )
        self.opt_ins_total = Counter(
            "smppgw_opt_ins_total",
            "Opt-ins stored from subscribers' MO, by campaign and keyword family (any_message: "
            "a re-opt-in by any message)",
            ["campaign", "family"],
            registry=r,
        )
        self.consent_changes_total = Counter(
            "smppgw_consent_changes_total",
            "Consent events stored",
            ["state", "actor"],
            registry=r,
        )
        self.auto_replies_total = Counter(
            "smppgw_auto_replies_total",
            "Auto-replies sent or suppressed",
            ["kind", "outcome"],
            registry=r,
        )
        self.auto_reply_records_total = Counter(
            "smppgw_auto_reply_records_total",
            "Auto-reply records (confirmation evidence) stored, failed or dropped",
            ["outcome"],
            registry=r,
        )
        self.optout_link_total = Counter(
            "smppgw_optout_link_total",
            "Web opt-out link requests: shown, confirmed, unchanged (already opted out), "
            "refused (with the reason) or failed (the store)",
            ["outcome", "reason"],
            registry=r,
        )
        self.audit_records_total = Counter(
            "smppgw_audit_records_total", "Records written to the audit trail", registry=r
        )
        self.audit_write_failures_total = Counter(
            "smppgw_audit_write_failures_total",
            "Failed writes of the audit trail (the records are kept and retried)",
            registry=r,
        )
        self.audit_records_lost_total = Counter(
            "smppgw_audit_records_lost_total",
            "Refusal records not kept while the audit trail could not be written (counted in "
            "the chain as records_lost)",
            registry=r,
        )
        self.store_errors_total = Counter(
            "smppgw_store_errors_total", "Consent store failures", ["operation"], registry=r
        )
        self.store_latency = Histogram(
            "smppgw_store_write_seconds",
            "Durable consent write latency",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        # Observed by the bridge under command ids; the listener sets labels_of.
        self.relay_latency = LatencyTally(
            "smppgw_relay_latency_seconds",
            "From a client's request to the gateway's answer to it, by command",
            "command",
            r,
        )
        # Set to a function by the listener: read at each scrape.
        self.upstream_window = Gauge(
            "smppgw_upstream_outstanding",
            "Requests of the relay's upstream legs awaiting the SMSC's answer",
            registry=r,
        )
        # Set to a function by the daemon (count_tasks): read at each scrape.
        self.event_loop_tasks = Gauge(
            "smppgw_event_loop_tasks",
            "asyncio tasks not yet done in the gateway's event loop (growing while idle: a leak)",
            registry=r,
        )
        self._store_up: Gauge | None = None

    def count_tasks(self, count: Callable[[], int]) -> None:
        """``smppgw_event_loop_tasks`` reads ``count()`` (the loop's live tasks) when scraped."""
        self.event_loop_tasks.set_function(count)

    def store_up(self) -> Gauge:
        """``smppgw_consent_store_up``: 1 while the consent store answers, 0 while it fails
        closed. Registered by the first call (the store's), so a gateway without a store
        (consent disabled) exports no misleading 0."""
        if self._store_up is None:
            self._store_up = Gauge(
                STORE_UP,
                "1 while the consent store answers, 0 while it is failed closed",
                registry=self.registry,
            )
        return self._store_up

    def supervisor(self, ready: Callable[[], float]) -> Counter:
        """A supervisor's own metrics (gateway.workers): ``smppgw_workers_ready`` reads
        ``ready()`` when scraped; the counter returned is ``smppgw_worker_restarts_total``."""
        ready_gauge = Gauge(
            "smppgw_workers_ready",
            "Worker processes running and ready (server.workers above 1)",
            registry=self.registry,
        )
        ready_gauge.set_function(ready)
        return Counter(
            "smppgw_worker_restarts_total",
            "Worker processes started again after they exited, by reason (start: before it "
            "was ready; died: after)",
            ["reason"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The text exposition format for /metrics."""
        return generate_latest(self.registry)
