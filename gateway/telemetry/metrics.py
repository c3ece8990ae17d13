"""Prometheus metrics, owned here so proxy and store never import admin.

Each gateway instance builds one ``Metrics`` with its own registry (tests run several gateways in
one process). Counters on the hot path are incremented per batch where that is possible.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STORE_UP = "smppgw_consent_store_up"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sessions = Gauge(
            "smppgw_sessions", "Open client sessions by bind type", ["bind_type"], registry=r
        )
        self.connections_total = Counter(
            "smppgw_connections_total",
            "Client connections accepted or refused",
            ["outcome"],
            registry=r,
        )
        self.binds_total = Counter(
            "smppgw_binds_total",
            "Client bind attempts by result",
            ["bind_type", "result"],
            registry=r,
        )
        self.pdus_total = Counter(
            "smppgw_pdus_total",
            "PDUs relayed by leg, direction and command",
            ["leg", "direction", "command"],
            registry=r,
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
            "smppgw_mt_rejected_total", "MT refused by consent policy", ["reason"], registry=r
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
        self.upstream_window = Gauge(
            "smppgw_upstream_outstanding", "Requests outstanding towards the SMSC", registry=r
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

    def render(self) -> bytes:
        """The text exposition format for /metrics."""
        return generate_latest(self.registry)
