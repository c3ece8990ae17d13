"""The enforcer's memory of long MTs: one answer per message, never a stale "allowed"."""

from __future__ import annotations

import pytest

from gateway.consent.policy import RejectReason
from gateway.messages.parts import PartTracker, Route

KEY = ("c1", "15550100", "15551234567", 7, 3)


class TestPartTracker:
    def test_unknown_message_is_none(self) -> None:
        """Nothing is remembered before a part was recorded."""
        assert PartTracker(10.0).get(KEY, 0.0) is None

    def test_refusal_is_remembered_for_the_rest_of_the_message(self) -> None:
        """A refused part makes its message refused until the message is complete."""
        parts = PartTracker(10.0)
        parts.record(KEY, 1, 3, 0.0, route=Route.PLAIN, refusal=None)
        parts.record(KEY, 2, 3, 1.0, route=Route.PLAIN, refusal=RejectReason.OPTED_OUT)
        message = parts.get(KEY, 2.0)
        assert message is not None
        assert message.refusal is RejectReason.OPTED_OUT

    def test_first_refusal_wins(self) -> None:
        """Later refusals do not change the reason the message was first refused for."""
        parts = PartTracker(10.0)
        parts.record(KEY, 1, 3, 0.0, route=Route.PLAIN, refusal=RejectReason.BLOCKED)
        parts.record(KEY, 2, 3, 0.0, route=Route.PLAIN, refusal=RejectReason.OPTED_OUT)
        message = parts.get(KEY, 0.0)
        assert message is not None
        assert message.refusal is RejectReason.BLOCKED

    def test_temporary_refusal_is_not_remembered(self) -> None:
        """ "Store unavailable" is not the message's answer: its parts are decided again."""
        parts = PartTracker(10.0)
        parts.record(KEY, 1, 3, 0.0, route=Route.PLAIN, refusal=RejectReason.STORE_UNAVAILABLE)
        message = parts.get(KEY, 0.0)
        assert message is not None
        assert message.refusal is None

    def test_complete_message_is_forgotten(self) -> None:
        """Once every part was seen, a reused reference is a new message."""
        parts = PartTracker(10.0)
        parts.record(KEY, 1, 3, 0.0, route=Route.PLAIN, refusal=RejectReason.OPTED_OUT)
        parts.record(KEY, 3, 3, 0.0, route=Route.PLAIN, refusal=None)
        parts.record(KEY, 3, 3, 0.0, route=Route.PLAIN, refusal=None)  # a resend
        assert parts.get(KEY, 0.0) is not None
        parts.record(KEY, 2, 3, 0.0, route=Route.PLAIN, refusal=None)
        assert parts.get(KEY, 0.0) is None
        assert len(parts) == 0

    def test_message_lives_no_longer_than_the_ttl(self) -> None:
        """A message older than the hold timeout is forgotten: its next part is decided afresh."""
        parts = PartTracker(10.0)
        parts.record(KEY, 1, 3, 100.0, route=Route.FOOTER, refusal=None)
        assert parts.get(KEY, 109.9) is not None
        assert parts.get(KEY, 110.0) is None

    def test_bounded_in_count(self) -> None:
        """Past the bound the oldest message is forgotten first."""
        parts = PartTracker(10.0, max_messages=2)
        for ref in range(3):
            parts.record(("c", ref), 1, 2, float(ref), route=Route.PLAIN, refusal=None)
        assert len(parts) == 2
        assert parts.get(("c", 0), 3.0) is None
        assert parts.get(("c", 2), 3.0) is not None

    def test_route_is_the_first_parts(self) -> None:
        """The route stays what the first part was given."""
        parts = PartTracker(10.0)
        parts.record(KEY, 1, 3, 0.0, route=Route.FOOTER, refusal=None)
        parts.record(KEY, 2, 3, 0.0, route=Route.PLAIN, refusal=None)
        message = parts.get(KEY, 0.0)
        assert message is not None
        assert message.route is Route.FOOTER

    @pytest.mark.parametrize(("ttl", "size"), [(0.0, 1), (1.0, 0)], ids=["ttl", "size"])
    def test_bad_bounds_are_refused(self, ttl: float, size: int) -> None:
        """A zero time-to-live or size is a programming error."""
        with pytest.raises(ValueError, match="positive"):
            PartTracker(ttl, max_messages=size)
