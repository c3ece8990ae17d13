"""Bind abuse: failed binds slow down their address and account, then shut them out a while,
and the SMSC sees binds from the gateway at a bounded rate. Pure: the clock comes in as ``now``.

Every bind the SMSC refuses counts one failure for the client's source address and one for its
account (system_id, compared as the relay compares them). Within ``window_s``:

- from ``delay_after`` failures on, each further bind of that address or account waits
  ``delay_s``, doubling per failure, at most ``max_delay_s``, before it goes to the SMSC;
- from ``block_after`` failures on, its binds are refused at once (ESME_RBINDFAIL) for
  ``block_s``, without the SMSC seeing them.

A bind the SMSC accepts clears its address's failures, and makes that address one the account
is known from: the account's failures never block (only slow) a bind from such an address, so
a stranger guessing passwords for an account cannot shut its real clients out.

Towards the SMSC, binds are spaced by a token bucket of ``rate_per_s`` (bursts of ``burst``):
a flood of binds waits its turn instead of becoming a flood of SMSC connections.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from gateway.config import BindLimits


@dataclass(slots=True)
class _Record:
    failures: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    trusted: OrderedDict[str, float] = field(default_factory=OrderedDict)  # accounts: addresses


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a bind gets: refused (``refuse`` is the reason), or sent after ``wait_s``."""

    wait_s: float = 0.0
    refuse: str | None = None


class BindGuard:
    """Failures per address and account, and the upstream bind rate."""

    def __init__(self, limits: BindLimits | None = None) -> None:
        self.limits = limits or BindLimits()
        self._addresses: OrderedDict[str, _Record] = OrderedDict()
        self._accounts: OrderedDict[str, _Record] = OrderedDict()
        self._tat = 0.0  # the rate schedule's theoretical arrival time

    def verdict(self, address: str, account: str, now: float) -> Verdict:
        """Before a bind goes to the SMSC: refuse it, or how long it must wait first."""
        by_address = self._current(self._addresses, address, now)
        by_account = self._current(self._accounts, account, now)
        if by_address is not None and by_address.blocked_until > now:
            return Verdict(refuse="too many failed binds from this address")
        trusted = by_account is not None and address in by_account.trusted
        if by_account is not None and by_account.blocked_until > now and not trusted:
            return Verdict(refuse="too many failed binds for this account")
        failures = max(
            len(by_address.failures) if by_address is not None else 0,
            len(by_account.failures) if by_account is not None else 0,
        )
        wait = 0.0
        limits = self.limits
        if failures >= limits.delay_after:
            wait = min(limits.delay_s * 2 ** (failures - limits.delay_after), limits.max_delay_s)
        # The rate slot is taken at arrival (a delay is on top of it, not a later slot that
        # would hold up binds arriving meanwhile).
        return Verdict(wait_s=max(wait, self._take_token(now) - now))

    def failed(self, address: str, account: str, now: float) -> None:
        """The SMSC refused a bind."""
        for records, key in ((self._addresses, address), (self._accounts, account)):
            record = self._record(records, key, now)
            record.failures.append(now)
            if len(record.failures) >= self.limits.block_after:
                record.blocked_until = now + self.limits.block_s

    def succeeded(self, address: str, account: str, now: float) -> None:
        """The SMSC accepted a bind: the address is clean, and known for the account."""
        self._addresses.pop(address, None)
        record = self._record(self._accounts, account, now)
        record.trusted[address] = now
        record.trusted.move_to_end(address)
        while len(record.trusted) > 64:
            record.trusted.popitem(last=False)

    def _take_token(self, at: float) -> float:
        """When a bind ready at ``at`` may go: a generic cell-rate schedule (``rate_per_s``,
        bursts of ``burst``); the slot is taken."""
        interval = 1.0 / self.limits.rate_per_s
        tolerance = (self.limits.burst - 1) * interval
        tat = max(self._tat, at)
        send_at = max(at, tat - tolerance)
        self._tat = tat + interval
        return send_at

    def _current(self, records: OrderedDict[str, _Record], key: str, now: float) -> _Record | None:
        record = records.get(key)
        if record is None:
            return None
        horizon = now - self.limits.window_s
        record.failures = [t for t in record.failures if t > horizon]
        if not record.failures and record.blocked_until <= now and not record.trusted:
            del records[key]
            return None
        return record

    def _record(self, records: OrderedDict[str, _Record], key: str, now: float) -> _Record:
        record = self._current(records, key, now)
        if record is None:
            record = records[key] = _Record()
            while len(records) > self.limits.max_tracked:
                records.popitem(last=False)
        records.move_to_end(key)
        return record
