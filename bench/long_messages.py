"""``python -m bench.long_messages``: how long each part of a long message waits for its answer.

A gateway with a footer campaign (``footer = "always"``, SQLite store in a temporary directory,
hold timeout 10 s) in front of the bundled SMSC simulator, both in this process; an smpplib
client in a thread sends 3-part messages in the two patterns clients use:

- one at a time: each part only after the previous part's answer (jsmpp, Cloudhopper's
  synchronous submit, many application loops);
- all at once: every part outstanding, then the answers read (Kannel, smpplib's own loop).

with a footer that fits the last part and one that needs a fourth part. For each it prints the
median and the worst time from sending a part to reading its answer, and, measured in the same
run, the same for one-part messages through the same gateway (the gateway's normal latency):
the ratio is the figure. Nothing is asserted: the machine may be shared and noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import smpplib.client

from gateway.app import Gateway
from gateway.config import parse
from gateway.simulator import Simulator
from gateway.smpp.session import SessionConfig
from gateway.telemetry import logs
from gateway.text.dcs import Alphabet
from gateway.text.segment import CONCAT_8BIT, frame_parts, split

SENDER = "15550001111"
DEST = "15551234567"


def _parts(text: str) -> list[bytes]:
    return [
        p.short_message
        for p in frame_parts(split(text, Alphabet.GSM7, CONCAT_8BIT), CONCAT_8BIT, reference=1)
    ]


def _texts() -> dict[str, list[list[bytes]]]:
    per_part = 153
    fits = ("word " * 200)[: per_part * 2 + 40]
    grows = ("word " * 200)[: per_part * 3]
    return {
        "footer fits the last part": [_parts(fits)],
        "footer adds a part": [_parts(grows)],
        "one-part messages (baseline)": [[b"a short message"]],
    }


def _client_run(
    port: int, messages: Sequence[list[bytes]], rounds: int, one_at_a_time: bool
) -> list[float]:
    """Per-part answer times (seconds) over ``rounds`` sends of each message."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=30, allow_unknown_opt_params=True)
    answers: list[Any] = []
    client.set_message_sent_handler(lambda pdu: answers.append(pdu))
    client.set_message_received_handler(lambda pdu: None)
    client.connect()
    waits: list[float] = []
    try:
        client.bind_transceiver(system_id="bench", password="pw")
        for _ in range(rounds):
            for parts in messages:
                started: list[float] = []
                base = len(answers)
                for body in parts:
                    started.append(time.perf_counter())
                    client.send_message(
                        source_addr_ton=1,
                        source_addr_npi=1,
                        source_addr=SENDER,
                        dest_addr_ton=1,
                        dest_addr_npi=1,
                        destination_addr=DEST,
                        esm_class=0x40 if len(parts) > 1 else 0,
                        short_message=body,
                        registered_delivery=0,
                    )
                    if one_at_a_time:
                        while len(answers) < base + len(started):
                            client.read_once()
                        waits.append(time.perf_counter() - started[-1])
                if not one_at_a_time:
                    done: list[float] = []
                    while len(answers) < base + len(parts):
                        client.read_once()
                        done.append(time.perf_counter())
                    waits += [d - s for d, s in zip(done, started, strict=True)]
        client.unbind()
    finally:
        client.disconnect()
    return waits


async def _measure(rounds: int) -> dict[str, dict[str, float]]:
    logs.configure(level="error", stream=sys.stderr)
    sim = Simulator(host="127.0.0.1", port=0, control_port=None, session_config=SessionConfig())
    await sim.start()
    with tempfile.TemporaryDirectory() as tmp:
        config = parse(
            {
                "gateway": {"instance": "bench"},
                "server": {"listen": "127.0.0.1:0"},
                "upstream": {"address": f"127.0.0.1:{sim.port}"},
                "logging": {"level": "error"},
                "store": {"url": f"sqlite:{tmp}/consent.db"},
                "text": {"hold_timeout_s": 10},
                "campaigns": [
                    {"name": "acme", "brand": "ACME", "numbers": [f"+{SENDER}"], "footer": "always"}
                ],
            }
        )
        gw = Gateway(config)
        await gw.start()
        try:
            results: dict[str, dict[str, float]] = {}
            for name, messages in _texts().items():
                for one in (True, False):
                    waits = await asyncio.to_thread(_client_run, gw.port, messages, rounds, one)
                    label = f"{name}, {'one at a time' if one else 'all at once'}"
                    results[label] = {
                        "p50_ms": statistics.median(waits) * 1000,
                        "max_ms": max(waits) * 1000,
                        "parts": float(len(waits)),
                    }
            return results
        finally:
            await gw.stop()
            await sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="messages of each kind")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    results = asyncio.run(_measure(args.rounds))
    if args.json:
        print(json.dumps(results))
        return 0
    base = {
        one: results[f"one-part messages (baseline), {one}"]["p50_ms"]
        for one in ("one at a time", "all at once")
    }
    print(f"{'pattern':<52} {'p50 ms':>8} {'max ms':>8} {'p50 vs one-part':>16}")
    for label, row in results.items():
        pattern = label.rsplit(", ", 1)[1]
        ratio = row["p50_ms"] / base[pattern]
        print(f"{label:<52} {row['p50_ms']:>8.2f} {row['max_ms']:>8.2f} {ratio:>15.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
