"""``python -m bench.quiet``: what the quiet-hours check costs an MT.

``decide_mt`` for an opted-in subscriber, timed without quiet hours and with the presets of a
US marketing campaign (``us-federal``, ``us-fl``, ``us-ok``, ``us-md``, ``us-tx``), in one run:
the difference is the check's cost per MT. Its verdict is memoised per subscriber and minute,
so a busy MT path pays a memo hit; the first MT to a subscriber in a minute pays the window
check in each of its zones, and the first MT to a number the process has not seen pays the
``phonenumbers`` zone and geocoder look-ups once (``numbers.place``). Each is printed per call.
The wall time passed in is noon in Washington (the destinations' zone), so the windows are
open; the "new minute" row steps a minute per call, through nights too (refusals cost alike).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.consent import numbers
from gateway.consent.campaign import Campaign
from gateway.consent.hours import PRESETS, QuietHours
from gateway.consent.model import AddressKind, ConsentRecord, ConsentState, Scope, ScopeKind
from gateway.consent.model import SmsAddress as Addr
from gateway.consent.policy import decide_mt

DISTINCT = 1000
SENDER = Addr(kind=AddressKind.E164, value="15550100")
NOON = datetime(2026, 12, 7, 12, 0, tzinfo=ZoneInfo("America/New_York")).timestamp()


def _campaign(quiet: bool) -> Campaign:
    rules = tuple(PRESETS[n] for n in ("us-federal", "us-fl", "us-ok", "us-md", "us-tx"))
    return Campaign(
        name="bench",
        numbers=(SENDER.value,),
        scope=ScopeKind.NUMBER,
        quiet_hours=QuietHours(rules=rules) if quiet else None,
    )


def _per_call_ns(fn: Callable[[int], object], calls: int) -> float:
    started = time.perf_counter_ns()
    for i in range(calls):
        fn(i)
    return (time.perf_counter_ns() - started) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per row")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    calls = args.calls
    subscribers = [Addr(kind=AddressKind.E164, value=f"1202555{i:04d}") for i in range(DISTINCT)]
    key = Scope(ScopeKind.NUMBER, SENDER.value).key
    records = {
        key: ConsentRecord(
            subscriber="", scope=key, state=ConsentState.OPTED_IN, updated_at=1.0, last_event_id="e"
        )
    }
    numbers.load_geocoder()  # as the daemon does at start when a state preset is configured

    def decider(campaign: Campaign, minute_step: bool = False) -> Callable[[int], object]:
        def call(i: int) -> object:
            # minute_step: a new minute every call, so every call misses the memo.
            now = NOON + 60.0 * i if minute_step else NOON
            return decide_mt(
                campaign=campaign,
                subscriber=subscribers[i % DISTINCT],
                sender=SENDER,
                system_id="bench",
                service_type="",
                records=records,
                now=now,
                new_event_id=str,
                addresses_checked=True,
            )

        return call

    rows: dict[str, float] = {}
    plain = _campaign(quiet=False)
    rows["no quiet hours"] = _per_call_ns(decider(plain), calls)
    numbers.place_cache_clear()
    quiet = _campaign(quiet=True)
    rows["quiet hours: new number"] = _per_call_ns(decider(quiet), DISTINCT)
    rows["quiet hours: memo hit"] = _per_call_ns(decider(quiet), calls)
    # Minutes later than any above, so each call is a new (subscriber, minute): the window
    # check itself, on places already known. Bounded: the memo holds 65,536 entries.
    rows["quiet hours: new minute"] = _per_call_ns(
        decider(_campaign(True), True), min(calls, 60_000)
    )
    base = rows["no quiet hours"]
    if args.json:
        print(json.dumps({"ns_per_call": rows, "calls": calls}))
        return 0
    print(f"{'row':<26} {'ns/call':>9} {'added':>9}")
    for name, ns in rows.items():
        print(f"{name:<26} {ns:>9.0f} {ns - base:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
