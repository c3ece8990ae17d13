"""``python -m bench.smpp_path``: CPU per submit_sm of the sans-I/O SMPP layer alone, in-process.

Two bound ``Session`` legs do what the proxy's relay path asks of them, without sockets, loop,
consent or metrics: the client leg receives a batch of submit_sm (framing, decode, events),
each is sent upstream under a sequence number of that leg (``send_request``), the upstream leg
receives their submit_sm_resp (framing, window, events) and each is answered on the client leg
(``send_response``), and both legs hand out their bytes (``data_to_send``, ``get_timer``).

The bytes are built before the clock starts; every phase is timed in CPU time of the thread
over all batches, the whole run repeated and the fastest repeat kept (the least disturbed
by other processes sharing the caches). The figures are microseconds per message on this
machine: compare them within one run, or between runs on a quiet machine.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from collections.abc import Sequence
from typing import Final

from bench.load import submit_templates
from gateway.smpp.codec import encode
from gateway.smpp.events import RequestReceived, ResponseReceived
from gateway.smpp.pdu import BindTransmitter, BindTransmitterResp, SubmitSmResp
from gateway.smpp.session import Role, Session, SessionConfig
from gateway.smpp.state import BindState

PHASES: Final = (
    "client receive_data (frames, decode, events)",
    "upstream send_request",
    "upstream receive_data (responses)",
    "client send_response",
    "data_to_send and get_timer, both legs",
)
_U32: Final = struct.Struct(">I")
MESSAGE_ID: Final = "bench-0000000001"


def _bound_pair() -> tuple[Session, Session]:
    """A client leg (we are the SMSC) and an upstream leg (we are the ESME), both bound."""
    config = SessionConfig()
    client = Session(Role.SMSC, config, 0.0)
    upstream = Session(Role.ESME, config, 0.0)
    client.receive_data(
        encode(BindTransmitter(system_id="a", password="b", sequence_number=1)), 0.0
    )
    client.send_response(encode(BindTransmitterResp(system_id="gw", sequence_number=1)), 0.0)
    upstream.send_request(encode(BindTransmitter(system_id="a", password="b")), 0.0)
    upstream.receive_data(encode(BindTransmitterResp(system_id="smsc", sequence_number=1)), 0.0)
    client.data_to_send()
    upstream.data_to_send()
    if client.state is not BindState.BOUND_TX or upstream.state is not BindState.BOUND_TX:
        raise RuntimeError(f"not bound: {client.state.name}, {upstream.state.name}")
    return client, upstream


def _batches(batches: int, window: int) -> tuple[list[bytes], list[bytes]]:
    """The client's submit_sm batches and the SMSC's answers, numbered as the legs will number."""
    templates = submit_templates(1000)
    response = encode(SubmitSmResp(message_id=MESSAGE_ID))
    head, tail = response[:12], response[16:]
    submits: list[bytes] = []
    answers: list[bytes] = []
    number = 0
    for _ in range(batches):
        batch = []
        answer = []
        for _ in range(window):
            number += 1
            before, after = templates[number % len(templates)]
            batch.append(before + _U32.pack(number) + after)
            # The upstream leg's first request was its bind (1): its submits are 2, 3, ...
            answer.append(head + _U32.pack(number + 1) + tail)
        submits.append(b"".join(batch))
        answers.append(b"".join(answer))
    return submits, answers


def run_once(batches: int, window: int) -> list[float]:
    """Seconds per phase (PHASES order) for ``batches`` batches of ``window`` submit_sm."""
    client, upstream = _bound_pair()
    submits, answers = _batches(batches, window)
    # CPU time of this thread: a shared machine's other processes pre-empt, they do not add.
    clock = time.thread_time
    spent = [0.0] * len(PHASES)
    now = 1.0
    for submit_batch, answer_batch in zip(submits, answers, strict=True):
        t0 = clock()
        events = client.receive_data(submit_batch, now)
        t1 = clock()
        for event in events:
            assert type(event) is RequestReceived
            upstream.send_request(event.frame, now, event.pdu.sequence_number)
        t2 = clock()
        upstream.data_to_send()
        upstream.get_timer()
        t3 = clock()
        answered = upstream.receive_data(answer_batch, now)
        t4 = clock()
        for event in answered:
            assert type(event) is ResponseReceived
            assert type(event.context) is int
            client.send_response(event.frame, now, event.context)
        t5 = clock()
        client.data_to_send()
        client.get_timer()
        t6 = clock()
        if len(events) != window or len(answered) != window:
            raise RuntimeError(f"{len(events)} requests, {len(answered)} responses of {window}")
        spent[0] += t1 - t0
        spent[1] += t2 - t1
        spent[2] += t4 - t3
        spent[3] += t5 - t4
        spent[4] += (t3 - t2) + (t6 - t5)
    return spent


def measure(batches: int, window: int, repeats: int) -> list[float]:
    """Microseconds per message per phase: the fastest of ``repeats`` runs, phase by phase."""
    runs = [run_once(batches, window) for _ in range(repeats)]
    messages = batches * window
    return [min(run[i] for run in runs) / messages * 1e6 for i in range(len(PHASES))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.smpp_path", description=__doc__)
    parser.add_argument("--batches", type=int, default=200, help="reads of --window submit_sm")
    parser.add_argument("--window", type=int, default=100, help="submit_sm per read")
    parser.add_argument("--repeats", type=int, default=5, help="runs; the fastest is kept")
    args = parser.parse_args(argv)
    if args.batches < 1 or args.window < 1 or args.repeats < 1:
        parser.error("--batches, --window and --repeats must be at least 1")
    figures = measure(args.batches, args.window, args.repeats)
    print(f"{args.batches * args.window:,} submit_sm in reads of {args.window}, best of "
          f"{args.repeats}")  # fmt: skip
    for phase, us in zip(PHASES, figures, strict=True):
        print(f"  {phase:46s} {us:6.2f} us/msg")
    print(f"  {'SMPP layer per message':46s} {sum(figures):6.2f} us/msg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
