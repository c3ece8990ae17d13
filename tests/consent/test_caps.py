"""Frequency caps with the time passed in: presets, counter keys, the rolling reservation."""

from __future__ import annotations

import pytest

from gateway.consent.campaign import Campaign
from gateway.consent.caps import DAY_S, PRESETS, CapPer, FrequencyCap, counter_key, preset, reserve
from gateway.consent.hours import Category


class TestPresets:
    @pytest.mark.parametrize("name", ["us-fl", "us-ok", "us-md"])
    def test_state_presets_are_three_per_day(self, name: str) -> None:
        """Florida, Oklahoma and Maryland allow three messages per 24 hours."""
        cap = preset(name)
        assert (cap.count, cap.window_s, cap.rule, cap.per) == (3, DAY_S, name, CapPer.CAMPAIGN)

    def test_unknown_preset(self) -> None:
        """An unknown preset name is an error, not an uncapped campaign."""
        assert "us-xx" not in PRESETS
        with pytest.raises(KeyError):
            preset("us-xx")

    @pytest.mark.parametrize(("count", "window_s"), [(0, DAY_S), (3, 0.0), (3, -1.0)])
    def test_bad_caps(self, count: int, window_s: float) -> None:
        """A cap of no messages or no window is refused."""
        with pytest.raises(ValueError, match="frequency cap"):
            FrequencyCap(count=count, window_s=window_s)


class TestCounterKey:
    @pytest.mark.parametrize(
        ("per", "business", "key"),
        [
            (CapPer.CAMPAIGN, "acme", "c:promo"),
            (CapPer.BUSINESS, "acme", "b:acme"),
            (CapPer.BUSINESS, "", "c:promo"),
            (CapPer.SUBSCRIBER, "acme", "s"),
        ],
    )
    def test_keys(self, per: CapPer, business: str, key: str) -> None:
        """What one count covers: the campaign, its business, or the subscriber."""
        cap = FrequencyCap(count=3, window_s=DAY_S, per=per)
        assert counter_key(cap, "promo", business) == key

    def test_campaign_binds_marketing_only_by_default(self) -> None:
        """A transactional campaign is not capped unless its cap names the category."""
        cap = preset("us-fl")
        assert Campaign(name="m", frequency_cap=cap).cap is cap
        assert Campaign(name="m", frequency_cap=cap).cap_key == "c:m"
        assert Campaign(name="t", category=Category.TRANSACTIONAL, frequency_cap=cap).cap is None
        assert Campaign(name="n").cap is None


class TestReserve:
    def test_fourth_in_a_day_refused_then_allowed_when_the_window_rolls(self) -> None:
        """Three go, the fourth is refused uncounted, and one window later a new one goes."""
        sends: dict[str, float] = {}
        t0 = 1_000_000.0
        verdicts = [reserve(sends, f"m{i}", limit=3, window_s=DAY_S, now=t0 + i) for i in range(4)]
        assert [(v.allowed, v.counted) for v in verdicts] == [
            (True, 1),
            (True, 2),
            (True, 3),
            (False, 3),
        ]
        assert reserve(sends, "late", limit=3, window_s=DAY_S, now=t0 + DAY_S - 1).allowed is False
        later = reserve(sends, "later", limit=3, window_s=DAY_S, now=t0 + DAY_S)
        assert (later.allowed, later.counted) == (True, 3)
        assert len(sends) == 3  # bounded by the cap

    def test_same_token_counts_once(self) -> None:
        """A token already counted is the same message: allowed, not counted again."""
        sends: dict[str, float] = {}
        assert reserve(sends, "x", limit=1, window_s=60.0, now=0.0).counted == 1
        again = reserve(sends, "x", limit=1, window_s=60.0, now=1.0)
        assert (again.allowed, again.counted) == (True, 1)
        assert reserve(sends, "y", limit=1, window_s=60.0, now=2.0).allowed is False
