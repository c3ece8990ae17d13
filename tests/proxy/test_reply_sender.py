"""The auto-reply sender on its own: which session carries a reply, the per-subscriber rate
limit, the concatenation reference and the evidence handed to the recorder (fake legs)."""

from __future__ import annotations

import dataclasses

from gateway.config import ConsentConfig
from gateway.consent.model import AddressKind, SmsAddress
from gateway.consent.policy import AutoReply
from gateway.proxy.hooks import LegPair, MoRequest
from gateway.proxy.replies import ReplySender
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from gateway.store.base import ReplyOutcome, ReplyRecord
from gateway.telemetry.metrics import Metrics
from gateway.text.dcs import Alphabet
from tests.proxy.fakes import FakeLeg, FakeServiceLink, SetClock

SUBSCRIBER = "15551234567"
NUMBER = "15550100001"
HOUR_S = 3600.0


class Collect:
    """A recorder stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[ReplyRecord] = []

    def record(self, reply: ReplyRecord) -> None:
        self.records.append(reply)


@dataclasses.dataclass
class Rig:
    sender: ReplySender
    bridges: dict[str, set[LegPair]]
    recorder: Collect
    metrics: Metrics
    clock: SetClock

    def bind(self, *legs: FakeLeg) -> None:
        for leg in legs:
            self.bridges.setdefault(leg.client_info.system_id, set()).add(leg)

    def counted(self, kind: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "smppgw_auto_replies_total", {"kind": kind, "outcome": outcome}
        )
        return value or 0.0


def rig(
    *, limit: int = 5, service: FakeServiceLink | None = None, alphabet: Alphabet = Alphabet.GSM7
) -> Rig:
    bridges: dict[str, set[LegPair]] = {}
    recorder = Collect()
    metrics = Metrics()
    clock = SetClock()
    sender = ReplySender(
        config=ConsentConfig(reply_limit_per_hour=limit),
        bridges=bridges,
        recorder=recorder,  # type: ignore[arg-type]
        metrics=metrics,
        clock=clock,
        instance="test-gw",
        default_alphabet=alphabet,
        service=service,  # type: ignore[arg-type]
    )
    return Rig(sender, bridges, recorder, metrics, clock)


def reply(text: str = "ACME: You are unsubscribed.") -> AutoReply:
    return AutoReply(
        text=text,
        source=SmsAddress(kind=AddressKind.E164, value=NUMBER),
        destination=SmsAddress(kind=AddressKind.E164, value=SUBSCRIBER),
        campaign="acme",
    )


def mo_on(leg: FakeLeg) -> MoRequest:
    """A STOP from the subscriber that arrived on ``leg``."""
    pdu = p.DeliverSm(
        sequence_number=7,
        source_addr_ton=1,
        source_addr_npi=1,
        source_addr=SUBSCRIBER,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=NUMBER,
        short_message=b"STOP",
    )
    return MoRequest(leg, pdu, encode(pdu))


def udh_reference(part: p.SubmitSm) -> int:
    """The reference of a part's 8-bit concatenation UDH (05 00 03 ref total seq)."""
    assert part.short_message[:3] == b"\x05\x00\x03"
    return part.short_message[3]


class TestCarrier:
    def test_the_session_the_mo_came_in_on_carries_the_reply(self) -> None:
        """Of several transmit-capable sessions of the account, the MO's own carries it."""
        r = rig()
        legs = [FakeLeg.bound(f"c{n}") for n in range(3)]
        r.bind(*legs)
        for leg in legs:
            r.sender.send("acme", reply(), "opted_out", mo_on(leg), always=True)
        assert [len(leg.originated) for leg in legs] == [1, 1, 1]
        sent = legs[0].originated[0]
        assert isinstance(sent, p.SubmitSm)
        # Answered from the number the subscriber wrote to.
        assert (sent.source_addr, sent.destination_addr) == (NUMBER, SUBSCRIBER)
        assert r.counted("opted_out", "sent") == 3

    def test_receiver_sessions_never_carry_a_reply(self) -> None:
        """A receiver-only session cannot send to the SMSC: the account's transmitter does,
        even when the MO came in on the receiver."""
        r = rig()
        receiver = FakeLeg.bound("rx", bind_type="receiver")
        transmitter = FakeLeg.bound("tx", bind_type="transmitter")
        r.bind(receiver, transmitter)
        r.sender.send("acme", reply(), "help", mo_on(receiver))
        assert (len(receiver.originated), len(transmitter.originated)) == (0, 1)
        assert r.sender.transmitting("acme") == [transmitter]
        assert r.sender.receiving("acme", receiver) == [receiver]

    def test_receiving_puts_the_preferred_session_first(self) -> None:
        """The gateway's own receipts go over the preferred receiving session first; a
        transmitter is never among the receiving ones."""
        r = rig()
        a = FakeLeg.bound("a")
        b = FakeLeg.bound("b")
        tx = FakeLeg.bound("tx", bind_type="transmitter")
        r.bind(a, b, tx)
        assert r.sender.receiving("acme", b)[0] is b
        assert r.sender.receiving("acme", a)[0] is a
        assert set(r.sender.receiving("acme")) == {a, b}

    def test_a_session_that_cannot_take_it_passes_to_the_next(self) -> None:
        """When the MO's session refuses the request (window full, closing), another session
        of the account carries it, and the evidence names that one."""
        r = rig()
        busy, free = FakeLeg.bound("busy"), FakeLeg.bound("free")
        busy.takes = False
        r.bind(busy, free)
        r.sender.send("acme", reply(), "opted_out", mo_on(busy), always=True, event_id="e1")
        assert len(free.originated) == 1
        free.callbacks[0](p.SubmitSmResp(message_id="m-1"), None)
        (record,) = r.recorder.records
        assert (record.carrier, record.outcome, record.event_id) == (
            "free",
            ReplyOutcome.ACCEPTED,
            "e1",
        )
        assert record.message_ids == ("m-1",)

    def test_the_service_bind_carries_when_no_session_can(self) -> None:
        """With no transmit-capable session of the account, the service bind carries it."""
        service = FakeServiceLink()
        r = rig(service=service)
        r.bind(FakeLeg.bound("rx", bind_type="receiver"), FakeLeg.bound("other", "globex"))
        r.sender.send("acme", reply(), "opt_in_request", None, event_id="e2")
        (sent,) = service.sent
        assert isinstance(sent, p.SubmitSm)
        # No MO to answer: from the campaign's number, as an international number.
        assert (sent.source_addr_ton, sent.source_addr) == (1, NUMBER)
        assert r.counted("opt_in_request", "sent") == 1

    def test_no_carrier_at_all_is_recorded_as_not_sent(self) -> None:
        """No session and no service bind: counted no_session and recorded NOT_SENT."""
        r = rig()
        r.sender.send("acme", reply(), "opted_out", None, always=True, event_id="e3")
        (record,) = r.recorder.records
        assert record.outcome is ReplyOutcome.NOT_SENT
        assert record.error == "no transmit-capable session"
        assert record.event_id == "e3"
        assert r.counted("opted_out", "no_session") == 1

    def test_an_smsc_refusal_is_counted_failed_and_recorded(self) -> None:
        """The SMSC's error status on the reply: counted failed, recorded refused."""
        r = rig()
        leg = FakeLeg.bound("c1")
        r.bind(leg)
        r.sender.send("acme", reply(), "help", mo_on(leg), words="HELP")
        leg.callbacks[0](p.SubmitSmResp(command_status=0x58, message_id=None), None)
        (record,) = r.recorder.records
        assert (record.outcome, record.command_status, record.words) == (
            ReplyOutcome.REFUSED,
            0x58,
            "HELP",
        )
        assert r.counted("help", "failed") == 1


class TestRateLimit:
    def test_beyond_the_hourly_limit_replies_are_suppressed_and_recorded(self) -> None:
        """With reply_limit_per_hour = 2 the third reply within the hour is not sent but
        recorded NOT_SENT; an hour later replies go again."""
        r = rig(limit=2)
        leg = FakeLeg.bound("c1")
        r.bind(leg)
        for _ in range(3):
            r.sender.send("acme", reply(), "help", mo_on(leg))
        assert len(leg.originated) == 2
        (record,) = r.recorder.records
        assert record.outcome is ReplyOutcome.NOT_SENT
        assert record.error == "rate limit (consent.reply_limit_per_hour)"
        assert r.counted("help", "rate_limited") == 1
        r.clock.advance(HOUR_S + 1)
        r.sender.send("acme", reply(), "help", mo_on(leg))
        assert len(leg.originated) == 3

    def test_an_opt_out_confirmation_always_goes_and_counts(self) -> None:
        """An opt-out confirmation goes over the limit, and counts toward it: a HELP answer
        right after one is suppressed."""
        r = rig(limit=1)
        leg = FakeLeg.bound("c1")
        r.bind(leg)
        r.sender.send("acme", reply(), "help", mo_on(leg))
        r.sender.send("acme", reply(), "opted_out", mo_on(leg), always=True)
        assert len(leg.originated) == 2
        r.clock.advance(HOUR_S + 1)  # both have left the window
        r.sender.send("acme", reply(), "opted_out", mo_on(leg), always=True)
        r.sender.send("acme", reply(), "help", mo_on(leg))
        assert len(leg.originated) == 3
        assert r.counted("help", "rate_limited") == 1

    def test_reconfigure_changes_the_limit(self) -> None:
        """SIGHUP's new reply_limit_per_hour applies from the next reply on."""
        r = rig(limit=1)
        leg = FakeLeg.bound("c1")
        r.bind(leg)
        r.sender.send("acme", reply(), "help", mo_on(leg))
        r.sender.reconfigure(ConsentConfig(reply_limit_per_hour=2), Alphabet.GSM7)
        r.sender.send("acme", reply(), "help", mo_on(leg))
        assert len(leg.originated) == 2
        assert r.counted("help", "rate_limited") == 0


class TestReference:
    def test_each_long_reply_gets_its_own_reference(self) -> None:
        """The parts of one long reply share a reference; the next long reply has another;
        every part follows the first part's session."""
        r = rig()
        leg = FakeLeg.bound("c1")
        r.bind(leg)
        long_text = "ACME: " + "x" * 200
        r.sender.send("acme", reply(long_text), "help", mo_on(leg))
        r.sender.send("acme", reply(long_text), "help", mo_on(leg))
        parts = [pdu for pdu in leg.originated if isinstance(pdu, p.SubmitSm)]
        assert len(parts) == 4
        refs = [udh_reference(part) for part in parts]
        assert refs[0] == refs[1]
        assert refs[2] == refs[3]
        assert refs[0] != refs[2]

    def test_the_reference_wraps_at_256(self) -> None:
        """The reference is one octet: after 255 comes 0."""
        r = rig()
        leg = FakeLeg.bound("c1")
        r.bind(leg)
        long_text = "ACME: " + "x" * 200
        for _ in range(257):
            r.sender.send("acme", reply(long_text), "opted_out", mo_on(leg), always=True)
        refs = [udh_reference(pdu) for pdu in leg.originated[::2] if isinstance(pdu, p.SubmitSm)]
        assert refs[:2] == [1, 2]
        assert refs[254:257] == [255, 0, 1]
