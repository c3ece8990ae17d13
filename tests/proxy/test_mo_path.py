"""The MO path on its own (fake legs, the in-memory store): MOs of one subscriber acted on in
arrival order, the temporary refusal when the store fails, and a long MO's parts held again
for the SMSC's resend."""

from __future__ import annotations

import asyncio
from typing import Any

from structlog.testing import capture_logs

from gateway.consent.model import ConsentEvent, ConsentState
from gateway.proxy.hooks import LegPair, MoRequest
from gateway.proxy.mo import MoPath
from gateway.proxy.replies import ReplyRecorder, ReplySender
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from gateway.smpp.constants import CommandStatus, EsmClass
from gateway.store.base import StoreUnavailableError
from gateway.store.memory import MemoryStore
from gateway.telemetry.metrics import Metrics
from gateway.text.dcs import Alphabet
from tests.proxy.fakes import FakeLeg, SetClock
from tests.support.consent import NUMBER_1, OTHER_SUBSCRIBER, SUBSCRIBER, campaign
from tests.support.gateway import gateway_config

RETRY = CommandStatus.ESME_RX_T_APPN
# Ready tasks get this many turns of the loop to run as far as they can without waiting.
LOOP_TURNS = 20


class HeldStore:
    """The in-memory store, except that appends wait while ``held`` and fail while
    ``failing``; it counts the appends it was asked for."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.released = asyncio.Event()
        self.released.set()
        self.failing = False
        self.appends = 0

    def hold(self) -> None:
        self.released.clear()

    async def append(self, event: ConsentEvent) -> bool:
        self.appends += 1
        await self.released.wait()
        if self.failing:
            raise StoreUnavailableError("store down")
        return await self.inner.append(event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class Rig:
    def __init__(self) -> None:
        config = gateway_config(1, campaigns=[campaign("acme", ["+" + NUMBER_1])]).consent
        self.store = HeldStore()
        self.metrics = Metrics()
        self.clock = SetClock()
        self.leg = FakeLeg.bound("c1")
        self.bridges: dict[str, set[LegPair]] = {"acme": {self.leg}}
        self.store_errors: list[str] = []
        replies = ReplySender(
            config=config,
            bridges=self.bridges,
            recorder=ReplyRecorder(self.store, self.metrics),  # type: ignore[arg-type]
            metrics=self.metrics,
            clock=self.clock,
            instance="test-gw",
            default_alphabet=Alphabet.GSM7,
        )
        self.mo = MoPath(
            config=config,
            store=self.store,  # type: ignore[arg-type]
            metrics=self.metrics,
            clock=self.clock,
            instance="test-gw",
            default_alphabet=Alphabet.GSM7,
            account=lambda system_id: system_id,
            replies=replies,
            store_down=lambda operation, _exc: self.store_errors.append(operation),
        )
        self._seq = 0

    def deliver(self, text: bytes, source: str = SUBSCRIBER, *, udh: bytes = b"") -> int:
        """The SMSC delivers ``text`` from ``source`` to the campaign's number; its sequence."""
        self._seq += 1
        pdu = p.DeliverSm(
            sequence_number=self._seq,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=source,
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=NUMBER_1,
            esm_class=EsmClass.UDHI if udh else 0,
            short_message=udh + text,
        )
        self.mo.on_mo(MoRequest(self.leg, pdu, encode(pdu)))
        return self._seq

    async def turns(self) -> None:
        for _ in range(LOOP_TURNS):
            await asyncio.sleep(0)

    async def settle(self) -> None:
        while self.leg.tasks:
            await asyncio.gather(*self.leg.tasks)

    def replies_to(self, subscriber: str) -> list[str]:
        return [
            pdu.short_message.decode()
            for pdu in self.leg.originated
            if isinstance(pdu, p.SubmitSm) and pdu.destination_addr == subscriber
        ]

    async def states(self, subscriber: str) -> list[ConsentState]:
        return [e.state for e in await self.store.inner.history(subscriber)]


def concat(reference: int, total: int, seq: int) -> bytes:
    return bytes((5, 0, 3, reference, total, seq))


class TestArrivalOrder:
    async def test_a_start_waits_for_the_stop_before_it(self) -> None:
        """A START that comes while the subscriber's STOP is being stored is not acted on
        until the STOP is: it then re-opts in, and the events land STOP first."""
        rig = Rig()
        rig.store.hold()
        stop = rig.deliver(b"STOP")
        start = rig.deliver(b"START")
        await rig.turns()
        assert rig.store.appends == 1  # the START has not been decided yet
        assert rig.leg.answered(stop) is None
        assert rig.leg.answered(start) is None
        rig.store.released.set()
        await rig.settle()
        assert await rig.states(SUBSCRIBER) == [ConsentState.OPTED_OUT, ConsentState.OPTED_IN]
        records = rig.store.inner.cached_current(SUBSCRIBER)
        assert records is not None
        assert [r.state for r in records.values()] == [ConsentState.OPTED_IN]
        assert [a.sequence_number for a in rig.leg.answers] == [stop, start]
        assert len(rig.replies_to(SUBSCRIBER)) == 2

    async def test_a_second_stop_in_flight_is_a_repeat(self) -> None:
        """Two STOPs (not a resend: other words) in flight: the second sees the first
        stored, so it is a repeat: one confirmation only."""
        rig = Rig()
        rig.store.hold()
        with capture_logs() as logs:
            rig.deliver(b"STOP")
            rig.deliver(b"Stop")
            await rig.turns()
            rig.store.released.set()
            await rig.settle()
        decisions = [e["decision"] for e in logs if e["event"] == "mo_keyword_matched"]
        assert decisions == ["opted_out", "repeat_opt_out"]
        assert len(rig.replies_to(SUBSCRIBER)) == 1

    async def test_another_subscriber_does_not_wait(self) -> None:
        """While one subscriber's STOP waits on the store, another's MO is decided at once."""
        rig = Rig()
        rig.store.hold()
        rig.deliver(b"STOP")
        rig.deliver(b"STOP", source=OTHER_SUBSCRIBER)
        await rig.turns()
        assert rig.store.appends == 2
        rig.store.released.set()
        await rig.settle()
        assert await rig.states(OTHER_SUBSCRIBER) == [ConsentState.OPTED_OUT]
        assert rig.mo._mo_turns == {}  # every turn handed back once done


class TestStoreDown:
    async def test_a_stop_the_store_cannot_take_is_refused_for_a_retry(self) -> None:
        """A STOP whose append fails gets ESME_RX_T_APPN and no confirmation; the SMSC's
        resend, once the store is back, is stored and confirmed once."""
        rig = Rig()
        rig.store.failing = True
        first = rig.deliver(b"STOP")
        await rig.settle()
        answer = rig.leg.answered(first)
        assert answer is not None
        assert (answer.how, answer.status) == ("rejected", RETRY)
        assert rig.store_errors == ["append"]
        assert rig.replies_to(SUBSCRIBER) == []
        rig.store.failing = False
        resend = rig.deliver(b"STOP")
        await rig.settle()
        answer = rig.leg.answered(resend)
        assert answer is not None
        assert answer.how == "forwarded"
        assert await rig.states(SUBSCRIBER) == [ConsentState.OPTED_OUT]
        assert len(rig.replies_to(SUBSCRIBER)) == 1

    async def test_the_resent_last_part_of_a_long_stop_completes_it_again(self) -> None:
        """A STOP in two parts whose store write fails: the SMSC resends only the last part,
        and the first, already acknowledged, was held again, so the resend is a STOP."""
        rig = Rig()
        rig.deliver(b"ST", udh=concat(9, 2, 1))
        rig.store.failing = True
        last = rig.deliver(b"OP", udh=concat(9, 2, 2))
        await rig.settle()
        answer = rig.leg.answered(last)
        assert answer is not None
        assert answer.status == RETRY
        rig.store.failing = False
        rig.deliver(b"OP", udh=concat(9, 2, 2))
        await rig.settle()
        assert await rig.states(SUBSCRIBER) == [ConsentState.OPTED_OUT]
        assert len(rig.replies_to(SUBSCRIBER)) == 1
