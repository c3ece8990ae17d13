"""``python -m bench.numbers``: what address normalisation costs the hot path.

Every MT destination and MO source goes through ``gateway.consent.numbers.normalise``. Its
results are memoised, so what an MT pays is a cache hit; a number the process has not seen yet
pays the ``phonenumbers`` parse once. This prints both, per call, next to a plain dict look-up
measured in the same run (the floor of any memoised function), for clean ASCII numbers and for
forms that need cleaning (separators, invisible characters, other scripts' digits).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from gateway.consent import numbers

DISTINCT = 10_000


def _per_call_ns(fn: Callable[[str], object], inputs: list[str], calls: int) -> float:
    """Mean cost of ``fn`` over ``calls`` calls cycling through ``inputs`` (built beforehand,
    so only ``fn`` is timed)."""
    n = len(inputs)
    started = time.perf_counter_ns()
    for i in range(calls):
        fn(inputs[i % n])
    return (time.perf_counter_ns() - started) / calls


def _clean(i: int) -> str:
    return f"1202555{i % 10_000:04d}"


def _messy(i: int) -> str:
    digits = f"{i % 10_000:04d}"
    return "+1 (202) 555\u00a0" + "".join(chr(0xFF10 + int(d)) for d in digits) + "\u200b"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000, help="calls per row")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    calls = args.calls
    clean = [_clean(i) for i in range(DISTINCT)]
    table = dict.fromkeys(clean)
    rows: dict[str, float] = {}

    rows["dict look-up (floor)"] = _per_call_ns(table.get, clean, calls)
    for name, form in (("clean", _clean), ("messy", _messy)):
        inputs = [form(i) for i in range(DISTINCT)]

        def call(addr: str) -> object:
            return numbers.normalise(addr, 1, 1, "US")

        numbers.cache_clear()
        # Distinct numbers, each seen once: the parse every new number pays.
        rows[f"{name}: first sight"] = _per_call_ns(call, inputs, DISTINCT)
        rows[f"{name}: memoised"] = _per_call_ns(call, inputs, calls)
    floor = rows["dict look-up (floor)"]
    if args.json:
        print(json.dumps({"ns_per_call": rows, "calls": calls}))
        return 0
    print(f"{'row':<24} {'ns/call':>9} {'vs floor':>9}")
    for name, ns in rows.items():
        print(f"{name:<24} {ns:>9.0f} {ns / floor:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
