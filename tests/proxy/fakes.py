"""Stand-ins for the relay around the consent adapters: legs that implement ``LegPair`` and
keep what the adapters did with them, and a clock the test sets. No sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.proxy.hooks import ClientInfo, MoRequest, MtRequest, ResponseCallback
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode


@dataclass
class Answer:
    """How a request of the SMSC's was settled: forwarded to the client, or answered."""

    sequence_number: int
    how: str  # "forwarded" | "responded" | "rejected"
    status: int = 0


@dataclass(eq=False)
class FakeLeg:
    """One client session and its upstream leg, as the consent adapters see it."""

    conn_id: str
    client_info: ClientInfo
    takes: bool = True  # whether originate_upstream accepts a request (False: window full)
    client_gone: bool = False
    originated: list[p.Pdu] = field(default_factory=list)
    callbacks: list[ResponseCallback] = field(default_factory=list)
    to_client: list[p.Pdu] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def bound(
        cls, conn_id: str, system_id: str = "acme", bind_type: str = "transceiver"
    ) -> FakeLeg:
        info = ClientInfo(
            conn_id=conn_id,
            system_id=system_id,
            system_type="",
            bind_type=bind_type,
            peer="127.0.0.1:1",
        )
        return cls(conn_id=conn_id, client_info=info)

    def forward_mt(
        self, request: MtRequest, frame: bytes, transform: Callable[[bytes], bytes] | None
    ) -> None:
        raise AssertionError("no MT is relayed in these tests")

    def forward_mo(self, request: MoRequest, frame: bytes) -> None:
        self.answers.append(Answer(request.sequence_number, "forwarded"))

    def respond_client(self, response: p.Pdu | bytes, sequence_number: int) -> None:
        raise AssertionError("no MT is answered in these tests")

    def reject_client(self, command_id: int, sequence_number: int, status: int) -> None:
        raise AssertionError("no MT is answered in these tests")

    def respond_upstream(self, response: p.Pdu | bytes, sequence_number: int) -> None:
        self.answers.append(Answer(sequence_number, "responded"))

    def reject_upstream(self, command_id: int, sequence_number: int, status: int) -> None:
        self.answers.append(Answer(sequence_number, "rejected", status))

    def originate_upstream(self, pdu: p.Pdu | bytes, on_response: ResponseCallback) -> bool:
        if not self.takes:
            return False
        self.originated.append(decode(pdu) if isinstance(pdu, bytes) else pdu)
        self.callbacks.append(on_response)
        return True

    def originate_to_client(self, pdu: p.Pdu | bytes, on_response: ResponseCallback) -> bool:
        self.to_client.append(decode(pdu) if isinstance(pdu, bytes) else pdu)
        return True

    def spawn(self, coro: object, on_failure: Callable[[], None] | None = None) -> None:
        assert asyncio.iscoroutine(coro)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(_owned(coro, on_failure))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def answered(self, sequence_number: int) -> Answer | None:
        return next((a for a in self.answers if a.sequence_number == sequence_number), None)


async def _owned(coro: Coroutine[Any, Any, None], on_failure: Callable[[], None] | None) -> None:
    try:
        await coro
    except Exception:
        if on_failure is not None:
            on_failure()
        raise


class SetClock:
    """Wall-clock and monotonic seconds that move only when the test moves them."""

    def __init__(self, wall: float = 1_800_000_000.0, monotonic: float = 1_000.0) -> None:
        self.now = wall
        self.mono = monotonic

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds


class FakeServiceLink:
    """The service bind: takes every request and keeps it."""

    def __init__(self) -> None:
        self.sent: list[p.Pdu] = []

    def send(self, pdu: p.Pdu, on_response: ResponseCallback) -> bool:
        self.sent.append(pdu)
        return True
