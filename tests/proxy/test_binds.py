"""Failed-bind throttling and the SMSC's bind rate, on a clock passed in."""

from __future__ import annotations

from gateway.config import BindLimits
from gateway.proxy.binds import BindGuard

LIMITS = BindLimits(
    delay_after=3, delay_s=0.5, max_delay_s=4.0, block_after=6, block_s=60.0, window_s=100.0,
    rate_per_s=1000.0, burst=1000,
)  # fmt: skip


class TestFailedBinds:
    def test_first_failures_cost_nothing(self) -> None:
        """Below delay_after failures a bind waits for nothing."""
        guard = BindGuard(LIMITS)
        for i in range(2):
            guard.failed("10.0.0.1", "acme", float(i))
        assert guard.verdict("10.0.0.1", "acme", 2.0).wait_s == 0.0

    def test_delay_doubles_up_to_its_maximum(self) -> None:
        """From delay_after failures on, each bind waits delay_s doubling, at most max_delay_s."""
        guard = BindGuard(LIMITS)
        waits = []
        for i in range(5):
            guard.failed("10.0.0.1", "acme", float(i))
            waits.append(guard.verdict("10.0.0.1", "acme", float(i)).wait_s)
        assert waits == [0.0, 0.0, 0.5, 1.0, 2.0]
        guard.failed("10.0.0.1", "other", 5.0)
        guard.failed("10.0.0.9", "acme", 5.0)
        assert guard.verdict("10.0.0.9", "nobody", 5.0).wait_s == 0.0  # another address, account

    def test_block_after_many_failures_then_lifted(self) -> None:
        """block_after failures refuse the address's binds for block_s, then they go again."""
        guard = BindGuard(LIMITS)
        for i in range(6):
            guard.failed("10.0.0.1", f"acct{i}", float(i))
        refused = guard.verdict("10.0.0.1", "acct9", 10.0)
        assert refused.refuse == "too many failed binds from this address"
        assert guard.verdict("10.0.0.1", "acct9", 200.0).refuse is None  # block and window over

    def test_account_block_spares_addresses_the_account_is_known_from(self) -> None:
        """Failures for an account from a stranger's address block the account, except from
        an address it bound from before (a stranger cannot shut its clients out)."""
        guard = BindGuard(LIMITS)
        guard.succeeded("10.0.0.1", "acme", 0.0)
        for i in range(6):
            guard.failed(f"192.0.2.{i}", "acme", 1.0)
        assert guard.verdict("10.0.0.7", "acme", 2.0).refuse == (
            "too many failed binds for this account"
        )
        known = guard.verdict("10.0.0.1", "acme", 2.0)
        assert known.refuse is None
        assert known.wait_s == LIMITS.max_delay_s  # slowed, never shut out

    def test_success_clears_the_address(self) -> None:
        """A bind the SMSC accepts forgets its address's failures."""
        guard = BindGuard(LIMITS)
        for i in range(5):
            guard.failed("10.0.0.1", "x", float(i))
        guard.succeeded("10.0.0.1", "y", 5.0)
        assert guard.verdict("10.0.0.1", "y", 5.0).wait_s == 0.0

    def test_bounded_in_what_it_remembers(self) -> None:
        """Addresses and accounts tracked are bounded (the oldest forgotten)."""
        guard = BindGuard(BindLimits(max_tracked=10, rate_per_s=1000.0, burst=1000))
        for i in range(100):
            guard.failed(f"10.0.{i}.1", f"a{i}", 0.0)
        assert len(guard._addresses) == 10
        assert len(guard._accounts) == 10


class TestUpstreamRate:
    def test_binds_are_spaced_beyond_the_burst(self) -> None:
        """A burst goes at once; the binds after it are spaced at 1 / rate_per_s."""
        guard = BindGuard(BindLimits(rate_per_s=10.0, burst=3))
        waits = [guard.verdict(f"10.0.0.{i}", f"a{i}", 0.0).wait_s for i in range(6)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert [round(w, 3) for w in waits[3:]] == [0.1, 0.2, 0.3]
        assert guard.verdict("10.0.0.9", "a9", 10.0).wait_s == 0.0  # the bucket refilled
