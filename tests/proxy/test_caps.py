"""CapBatcher: the reservations of one loop turn in one store call, a subscriber in at most
one call at a time, every batch settled in order; a failed call refuses its whole batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from gateway.consent.caps import CapReservation, CapVerdict
from gateway.proxy.caps import CapBatcher
from gateway.store.base import StoreUnavailableError
from gateway.store.memory import MemoryStore

DAY = 86_400.0
T0 = 1_700_000_000.0
A = "15550000001"
B = "15550000002"


class Gated:
    """A real MemoryStore whose ``reserve_sends`` calls wait until the test opens them."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.calls: list[list[str]] = []  # the tokens of each call, in the order made
        self.gates: list[asyncio.Event] = []
        self.fail: Exception | None = None
        self.changed = asyncio.Event()

    async def reserve_sends(self, batch: Sequence[CapReservation]) -> list[CapVerdict]:
        self.calls.append([r.token for r in batch])
        self.changed.set()
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail is not None:
            raise self.fail
        return await self.store.reserve_sends(batch)


class Settled:
    """What the batcher settled: (item, verdict or the exception's type name), in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self.batches = 0
        self.changed = asyncio.Event()

    def __call__(self, items: list[str], outcome: list[CapVerdict] | Exception) -> None:
        self.batches += 1
        for n, item in enumerate(items):
            if isinstance(outcome, Exception):
                self.items.append((item, type(outcome).__name__))
            else:
                self.items.append((item, (outcome[n].allowed, outcome[n].counted)))
        self.changed.set()


async def turns(count: int = 3) -> None:
    """Let the loop run a few turns (the batcher flushes with call_soon)."""
    for _ in range(count):
        await asyncio.sleep(0)


async def wait_for(changed: asyncio.Event, done: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not done():
            changed.clear()
            await changed.wait()


async def wait_calls(gated: Gated, count: int) -> None:
    await wait_for(gated.changed, lambda: len(gated.calls) >= count)


async def wait_settled(settled: Settled, count: int) -> None:
    await wait_for(settled.changed, lambda: len(settled.items) >= count)


def batcher(gated: Gated, settled: Settled) -> CapBatcher[str]:
    return CapBatcher(gated.reserve_sends, settled, lambda: T0)


class TestCapBatcher:
    async def test_one_turn_is_one_call_in_order(self) -> None:
        """Reservations queued in one loop turn go in one call, in the order they were
        queued, and are settled with their verdicts in that order."""
        gated, settled = Gated(), Settled()
        caps = batcher(gated, settled)
        for n in range(4):
            caps.add(f"mt{n}", A, "c:acme", f"t{n}", 3, DAY)
        await wait_calls(gated, 1)
        assert gated.calls == [["t0", "t1", "t2", "t3"]]
        gated.gates[0].set()
        await wait_settled(settled, 4)
        assert settled.items == [
            ("mt0", (True, 1)),
            ("mt1", (True, 2)),
            ("mt2", (True, 3)),
            ("mt3", (False, 3)),
        ]

    async def test_a_subscriber_in_the_store_waits_for_its_batch(self) -> None:
        """While A's batch is in the store, A's next reservation waits for it (and is counted
        after it) while B's goes at once in a call of its own."""
        gated, settled = Gated(), Settled()
        caps = batcher(gated, settled)
        caps.add("a1", A, "c:acme", "a1", 1, DAY)
        await wait_calls(gated, 1)
        caps.add("a2", A, "c:acme", "a2", 1, DAY)
        caps.add("b1", B, "c:acme", "b1", 1, DAY)
        await wait_calls(gated, 2)
        await turns()
        assert gated.calls == [["a1"], ["b1"]]
        gated.gates[1].set()  # B's call ends first
        await wait_settled(settled, 1)
        assert settled.items == [("b1", (True, 1))]
        gated.gates[0].set()
        await wait_calls(gated, 3)
        assert gated.calls[2] == ["a2"]
        gated.gates[2].set()
        await wait_settled(settled, 3)
        assert settled.items[1:] == [("a1", (True, 1)), ("a2", (False, 1))]

    async def test_a_failed_call_refuses_its_whole_batch(self) -> None:
        """The store fails the call: every item of that batch is settled with the error, and
        the next batch is reserved as usual."""
        gated, settled = Gated(), Settled()
        caps = batcher(gated, settled)
        gated.fail = StoreUnavailableError("injected")
        for n in range(3):
            caps.add(f"mt{n}", A, "c:acme", f"t{n}", 3, DAY)
        await wait_calls(gated, 1)
        gated.gates[0].set()
        await wait_settled(settled, 3)
        assert settled.items == [(f"mt{n}", "StoreUnavailableError") for n in range(3)]
        assert settled.batches == 1
        gated.fail = None
        caps.add("after", A, "c:acme", "t9", 3, DAY)
        await wait_calls(gated, 2)
        gated.gates[1].set()
        await wait_settled(settled, 4)
        assert settled.items[3] == ("after", (True, 1))

    async def test_a_wrong_number_of_verdicts_refuses_the_batch(self) -> None:
        """A store answering fewer verdicts than asked breaks its contract: none is used."""
        settled = Settled()

        async def short(batch: Sequence[CapReservation]) -> list[CapVerdict]:
            return [CapVerdict(True, 1)] * (len(batch) - 1)

        caps: CapBatcher[str] = CapBatcher(short, settled, lambda: T0)
        caps.add("x", A, "c:acme", "t1", 3, DAY)
        caps.add("y", B, "c:acme", "t2", 3, DAY)
        await wait_settled(settled, 2)
        assert settled.items == [("x", "LookupError"), ("y", "LookupError")]

    @pytest.mark.parametrize("max_batch", [1, 2])
    async def test_more_than_a_batch_goes_in_order(self, max_batch: int) -> None:
        """Beyond ``max_batch`` the rest wait for a later call; one subscriber's reservations
        are still counted and settled in the order they were queued."""
        settled = Settled()
        store = MemoryStore()
        caps: CapBatcher[str] = CapBatcher(
            store.reserve_sends, settled, lambda: T0, max_batch=max_batch
        )
        for n in range(5):
            caps.add(f"mt{n}", A, "c:acme", f"t{n}", 3, DAY)
        await wait_settled(settled, 5)
        assert [item for item, _ in settled.items] == [f"mt{n}" for n in range(5)]
        assert [v for _, v in settled.items] == [(True, 1), (True, 2), (True, 3)] + [(False, 3)] * 2
        assert settled.batches == -(-5 // max_batch)

    async def test_close_cancels_the_call_in_the_store(self) -> None:
        """Shutdown: the call under way is cancelled and nothing more is settled."""
        gated, settled = Gated(), Settled()
        caps = batcher(gated, settled)
        caps.add("mt", A, "c:acme", "t", 3, DAY)
        await wait_calls(gated, 1)
        await caps.close()
        await turns()
        assert settled.items == []
