"""The cheap collectors behind the hot-path metrics render as Prometheus counters and
histograms with the usual semantics."""

from __future__ import annotations

from gateway.telemetry.metrics import Metrics
from tests.support.metrics import Scrape


class TestTally:
    def test_adds_up_per_label_set(self) -> None:
        """Each label tuple is its own counter sample; amounts add up."""
        metrics = Metrics()
        metrics.pdus_total.add(("client", "in", "submit_sm"), 3)
        metrics.pdus_total.add(("client", "in", "submit_sm"))
        metrics.pdus_total.add(("upstream", "out", "submit_sm"))
        m = Scrape(metrics.render().decode())
        assert m.types["smppgw_pdus_total"] == "counter"
        assert m.value("smppgw_pdus_total", leg="client", direction="in", command="submit_sm") == 4
        assert m.total("smppgw_pdus_total") == 5

    def test_an_unused_tally_is_still_declared(self) -> None:
        """Before the first MT the family is exported (HELP and TYPE), with no sample."""
        m = Scrape(Metrics().render().decode())
        assert m.types["smppgw_mt_allowed_total"] == "counter"
        assert m.total("smppgw_mt_allowed_total") == 0


class TestLatencyTally:
    def test_buckets_are_cumulative_and_inclusive(self) -> None:
        """A value equal to a bucket's bound is in that bucket (le); buckets accumulate; the
        count and sum cover every observation, also those above the last bound."""
        metrics = Metrics()
        latency = metrics.relay_latency
        latency.observe("submit_sm", 0.001)
        latency.observe("submit_sm", 0.0011)
        latency.observe("submit_sm", 60.0)
        latency.observe("query_sm", 0.00005)
        m = Scrape(metrics.render().decode())
        name = "smppgw_relay_latency_seconds"
        assert m.types[name] == "histogram"
        assert m.value(f"{name}_bucket", command="submit_sm", le="0.0005") == 0
        assert m.value(f"{name}_bucket", command="submit_sm", le="0.001") == 1
        assert m.value(f"{name}_bucket", command="submit_sm", le="0.0025") == 2
        assert m.value(f"{name}_bucket", command="submit_sm", le="10.0") == 2
        assert m.value(f"{name}_bucket", command="submit_sm", le="+Inf") == 3
        assert m.value(f"{name}_count", command="submit_sm") == 3
        assert abs(m.value(f"{name}_sum", command="submit_sm") - 60.0021) < 1e-9
        assert m.value(f"{name}_bucket", command="query_sm", le="0.0001") == 1
