"""contrib/grafana/smpp-gateway.json queries only metrics a running gateway exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.support.consent import acme_campaigns, consent_gateway, simulator
from tests.support.metrics import scrape

DASHBOARD = Path(__file__).resolve().parents[1] / "contrib" / "grafana" / "smpp-gateway.json"
METRIC = re.compile(r"\bsmppgw_[a-z0-9_]+")
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def used_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return {name for expr in queries(dashboard) for name in METRIC.findall(expr)}


class TestDashboard:
    def test_panels_have_unique_ids_and_queries(self) -> None:
        """Every panel has its own id and at least one query naming a gateway metric."""
        dashboard = json.loads(DASHBOARD.read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids))
        for panel in dashboard["panels"]:
            assert any(METRIC.search(t["expr"]) for t in panel["targets"]), panel["title"]

    def test_shows_what_an_operator_watches(self) -> None:
        """MT allowed and refused, opt-outs, store up, relay and store latency, sessions per
        account and audit write failures are all on it."""
        assert {
            "smppgw_mt_allowed_total",
            "smppgw_mt_rejected_total",
            "smppgw_opt_outs_total",
            "smppgw_consent_store_up",
            "smppgw_relay_latency_seconds_bucket",
            "smppgw_store_write_seconds_bucket",
            "smppgw_account_sessions",
            "smppgw_audit_write_failures_total",
        } <= used_metrics()

    async def test_every_metric_it_queries_is_exported(self, tmp_path: Path) -> None:
        """Scraping a running consent gateway (SQLite store, audit trail, admin API) finds
        every metric name the dashboard's queries use (a histogram's series by its family)."""
        async with (
            simulator() as sim,
            consent_gateway(
                sim.port,
                f"sqlite:{tmp_path}/consent.db",
                campaigns=acme_campaigns(),
                admin={"listen": "127.0.0.1:0"},
            ) as gw,
        ):
            assert gw.admin is not None
            exported = (await scrape(gw.admin.port)).types
        missing = []
        for name in sorted(used_metrics()):
            base = next((name[: -len(s)] for s in HISTOGRAM_SERIES if name.endswith(s)), None)
            if name in exported or (base is not None and exported.get(base) == "histogram"):
                continue
            missing.append(name)
        assert missing == []
