"""Faults end to end: real client libraries (smpplib, aiosmpplib) bound through a real consent
gateway to the SMSC simulator over loopback sockets, while the SMSC resets the connection, goes
silent, answers slowly or restarts, and while Redis is down at start, dies under traffic, comes
back, or fails over under Sentinel.

What every test holds the gateway to:

- every request gets exactly one answer, within its timeout;
- an MT answered OK was received by the SMSC: its message id is one the SMSC issued for it
  (a gateway that answered before forwarding, or for what it never sent, fails here);
- every other answer is a status clients retry: ESME_RSYSERR (0x08) where the SMSC's outcome is
  unknown, consent.statuses.store_unavailable (0x14) while the store is down (and such an MT
  never reaches the SMSC), ESME_RX_T_APPN (0x64) to the SMSC for an MO it must deliver again;
- no MT to a number that opted out is ever sent, whatever fails;
- the sessions work again once the peer is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import smpplib.exceptions
from aiosmpplib import ESME, AbstractHook, BindMode, PhoneNumber, SmppMessage, SubmitSm
from aiosmpplib import SubmitSmResp as AioSubmitSmResp
from aiosmpplib.retrytimer import SimpleExponentialBackoff
from redis.asyncio import Redis

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.smpp.constants import CommandId
from gateway.store.guard import FailClosedStore
from tests.admin.test_api import request
from tests.integration.conftest import GatewayTap
from tests.support.consent import (
    BYSTANDER,
    FAST_SESSION,
    NUMBER_1,
    OPT_OUT_REPLY,
    OTHER_SUBSCRIBER,
    SIM_SESSION,
    SUBSCRIBER,
    WAIT_S,
    SmpplibEsme,
    acme_campaigns,
    consent_gateway,
    free_port,
    sent_to,
    simulator,
    submit_fields,
    texts_to,
    wait_texts,
)
from tests.support.redis_server import (
    RedisServer,
    redis_sentinel_binary,
    redis_server_binary,
)
from tests.support.sim import running_simulator

OK = 0x00
RSYSERR = 0x08  # the SMSC's outcome is unknown: clients re-queue it
STORE_UNAVAILABLE = 0x14  # consent.statuses.store_unavailable (default): clients retry it
OPTED_OUT = 0x45
ESME_RX_T_APPN = 0x64  # to the SMSC: deliver this MO again later

# Short timers, so that each fault plays out in well under a second.
SESSION = FAST_SESSION | {"response_timeout_s": 1, "unbind_timeout_s": 0.5}
# A store that notices an outage within half a second and probes every 100 ms.
REDIS_QUERY = "timeout_s=0.5&heartbeat_s=0.2&recovery_interval_s=0.1"

needs_redis = pytest.mark.skipif(redis_server_binary() is None, reason="redis-server missing")


# --- what the client got, against what the SMSC received -------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """One MT the client sent and the one answer it got."""

    destination: str
    text: str
    status: int
    message_id: str | None


def outcomes_of(requests: Sequence[tuple[str, str]], responses: Sequence[Any]) -> list[Outcome]:
    """Pair pipelined (destination, text) requests with their smpplib responses, in order."""
    assert len(responses) == len(requests)
    result = []
    for (destination, text), resp in zip(requests, responses, strict=True):
        assert resp.command == "submit_sm_resp", resp.command
        raw = resp.message_id
        message_id = raw.decode() if isinstance(raw, bytes) and raw else None
        result.append(Outcome(destination, text, int(resp.status), message_id))
    return result


def assert_every_ok_was_sent(outcomes: Iterable[Outcome], *sims: Simulator) -> None:
    """No MT answered OK that the SMSC did not take: each OK carries an id the SMSC issued for
    that very text, and no id twice."""
    by_id = {m.message_id: m.text for sim in sims for m in sim.messages if m.message_id}
    ok = [o for o in outcomes if o.status == OK]
    for outcome in ok:
        assert outcome.message_id in by_id, outcome
        assert by_id[outcome.message_id] == outcome.text, outcome
    assert len({o.message_id for o in ok}) == len(ok)


def assert_answered_once(esme: SmpplibEsme, sent: int) -> None:
    """The client read exactly one submit_sm_resp per submit it sent, never one twice."""
    answers = Counter(pdu.sequence for pdu in esme.pdus if pdu.command == "submit_sm_resp")
    assert sum(answers.values()) == sent
    assert set(answers.values()) == {1}


async def pipeline(
    esme: SmpplibEsme, requests: Sequence[tuple[str, str]], source: str = NUMBER_1
) -> list[Outcome]:
    """Send every (destination, text) back to back, then await each answer."""
    responses = await esme.pipeline(
        [("submit_sm", submit_fields(dest, text, source)) for dest, text in requests]
    )
    return outcomes_of(requests, responses)


@contextlib.asynccontextmanager
async def rebound(
    port: int, system_id: str = "acme"
) -> AsyncIterator[tuple[SmpplibEsme, list[int]]]:
    """A client binding again after it lost its session, as applications do: a refused bind
    (the gateway's temporary status while the SMSC cannot be reached) is retried until one
    succeeds. Yields the bound client and the statuses of the refused attempts."""
    refused: list[int] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            esme = SmpplibEsme(port, system_id)
            try:
                await esme.__aenter__()
                break
            except smpplib.exceptions.PDUError as exc:
                refused.append(int(exc.args[1]))
                await asyncio.to_thread(esme.client.disconnect)
            # The pace of a client's retries, not a synchronisation.
            await asyncio.sleep(0.05)
    try:
        yield esme, refused
    finally:
        await esme.__aexit__(None, None, None)


async def lost(esme: SmpplibEsme) -> None:
    """Wait until the gateway has ended the client's session (unbind, then close)."""
    await esme.wait_until(lambda: not esme.connected)
    assert [pdu.command for pdu in esme.pdus if pdu.command == "unbind"] == ["unbind"]


async def stop_from(sim: Simulator, subscriber: str) -> int:
    return await sim.send_mo(source=subscriber, destination=NUMBER_1, text="STOP", system_id="acme")


async def stop_until_acknowledged(sim: Simulator, subscriber: str) -> list[int]:
    """The SMSC delivers a STOP again until it is acknowledged, as real SMSCs do after 0x64;
    the statuses it got, the last one OK."""
    statuses: list[int] = []
    async with asyncio.timeout(WAIT_S):
        while not statuses or statuses[-1] == ESME_RX_T_APPN:
            statuses.append(await stop_from(sim, subscriber))
            if statuses[-1] == ESME_RX_T_APPN:
                await asyncio.sleep(0.1)  # the SMSC's retry interval, not a synchronisation
    assert statuses[-1] == OK, statuses
    return statuses


async def readyz(gw: Gateway) -> tuple[int, Any]:
    assert gw.admin is not None
    return await request(gw.admin.port, "GET", "/readyz", token=None)


def _sqlite(tmp_path: Path) -> str:
    return f"sqlite:{tmp_path}/consent.db"


def guard_of(gw: Gateway) -> FailClosedStore:
    assert isinstance(gw.store, FailClosedStore)
    return gw.store


class Traffic:
    """An application sending without pause: batches of pipelined MTs, one after another, each
    to an opted-out subscriber and to bystanders, until stopped. Every outcome is kept."""

    def __init__(self, esme: SmpplibEsme, opted_out: str = SUBSCRIBER, size: int = 10) -> None:
        self.esme = esme
        self.opted_out = opted_out
        self.size = size
        self.outcomes: list[Outcome] = []
        self.sent = 0
        self._stop = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop = True
        assert self._task is not None
        await asyncio.wait_for(self._task, WAIT_S)

    async def _run(self) -> None:
        batch = 0
        while not self._stop:
            requests = [
                (self.opted_out if i == 0 else BYSTANDER, f"b{batch}m{i}") for i in range(self.size)
            ]
            self.sent += len(requests)
            self.outcomes += await pipeline(self.esme, requests)
            batch += 1
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait_until(self, condition: Callable[[list[Outcome]], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition(self.outcomes):
                assert self._task is not None
                assert not self._task.done(), "traffic stopped"
                await self._changed.wait()

    async def next_batches(self, count: int = 1) -> list[Outcome]:
        """The outcomes of ``count`` batches sent from now on (the one in flight not counted)."""
        start = len(self.outcomes) + self.size  # the batch in flight now finishes first
        await self.wait_until(lambda o: len(o) >= start + count * self.size)
        return self.outcomes[start : start + count * self.size]


class Recorder(AbstractHook):  # type: ignore[misc]
    """aiosmpplib hook keeping every submit_sm_resp and the status of every bind_resp (a
    refused one included: aiosmpplib hands the hook no message for a bind_resp without body)."""

    def __init__(self) -> None:
        self.responses: list[AioSubmitSmResp] = []
        self.bind_statuses: list[int] = []
        self._changed = asyncio.Event()

    @property
    def refused_binds(self) -> list[int]:
        return [status for status in self.bind_statuses if status != OK]

    async def sending(self, smpp_message: SmppMessage, pdu: bytes, client_id: str) -> None:
        return None

    async def received(self, smpp_message: SmppMessage | None, pdu: bytes, client_id: str) -> None:
        command_id, status = struct.unpack_from(">II", pdu, 4)
        if command_id == CommandId.BIND_TRANSCEIVER_RESP:
            self.bind_statuses.append(status)
        elif isinstance(smpp_message, AioSubmitSmResp):
            self.responses.append(smpp_message)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def send_error(self, smpp_message: SmppMessage, error: Exception, client_id: str) -> None:
        return None

    async def wait_until(self, condition: Callable[[], object]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                await self._changed.wait()


def statuses(outcomes: Iterable[Outcome], destination: str | None = None) -> Counter[int]:
    return Counter(o.status for o in outcomes if destination in (None, o.destination))


def assert_refused_were_not_sent(outcomes: Iterable[Outcome], sim: Simulator) -> None:
    """An MT the gateway refused for the store (0x14) or for consent (0x45) never went up."""
    sent = {m.text for m in sim.messages}
    assert not [
        o for o in outcomes if o.status in (STORE_UNAVAILABLE, OPTED_OUT) and o.text in sent
    ]


# --- the SMSC misbehaves ----------------------------------------------------------------------


class TestSmscFaults:
    async def test_reset_mid_traffic_answers_each_submit_once_and_the_client_rebinds(
        self, tmp_path: Path
    ) -> None:
        """The SMSC resets the TCP connection (RST) after 37 of 100 pipelined submits, 40 of
        them to numbers the gateway has not seen (each decided after a store lookup, while the
        reset plays out): each submit gets one answer, the OK ones are exactly MTs the SMSC
        received, the rest 0x08; the gateway unbinds the client; rebound, it sends again at
        once. The opted-out subscriber among them is refused 0x45 throughout and never
        reaches the SMSC."""
        async with (
            simulator() as sim,
            consent_gateway(
                sim.port, _sqlite(tmp_path), campaigns=acme_campaigns(), session=SESSION
            ) as gw,
        ):
            async with SmpplibEsme(gw.port) as esme:
                assert await stop_from(sim, SUBSCRIBER) == OK
                await wait_texts(sim, SUBSCRIBER, 1)
                sim.set_faults(drop_after=37, drop_reset=True)
                requests = [
                    (
                        SUBSCRIBER if i % 10 == 5 else f"155599{i:05d}" if i % 2 else BYSTANDER,
                        f"m{i}",
                    )
                    for i in range(100)
                ]
                outcomes = await pipeline(esme, requests)
                reset_at = time.monotonic()
                await lost(esme)
                assert_answered_once(esme, len(requests))

            async with rebound(gw.port) as (again, refused):
                after = await pipeline(again, [(BYSTANDER, "after")])
                recovered_s = time.monotonic() - reset_at

        assert refused == []  # the SMSC listens on: the first bind goes through
        assert [o.status for o in after] == [OK]
        assert_every_ok_was_sent([*outcomes, *after], sim)
        others = [o for o in outcomes if o.destination != SUBSCRIBER]
        # The SMSC answered the first 37 submits it got, then reset: those are the OKs (a
        # reset may also discard answers in flight; those are 0x08, never OK).
        assert 0 < statuses(others)[OK] <= 37
        assert set(statuses(others)) == {OK, RSYSERR}
        assert set(statuses(outcomes, SUBSCRIBER)) == {OPTED_OUT}
        assert texts_to(sim, SUBSCRIBER) == [OPT_OUT_REPLY]
        assert_refused_were_not_sent(outcomes, sim)
        assert recovered_s < WAIT_S

    async def test_silent_smsc_times_submits_out_then_the_session_recovers(
        self, tmp_path: Path
    ) -> None:
        """The SMSC stops reading (hung): every pipelined submit gets 0x08 once
        response_timeout_s has passed, none OK; the unanswered enquire_link ends the upstream
        session and the client is unbound; a bind meanwhile gets 0x08; once the SMSC reads
        again the client binds and sends."""
        timeout_s = 0.5
        session = SESSION | {
            "response_timeout_s": timeout_s,
            "enquire_link_interval_s": 0.5,
            "bind_timeout_s": 1,
        }
        async with (
            simulator() as sim,
            consent_gateway(
                sim.port, _sqlite(tmp_path), campaigns=acme_campaigns(), session=session
            ) as gw,
        ):
            async with SmpplibEsme(gw.port) as esme:
                before = await pipeline(esme, [(BYSTANDER, "before")])
                sim.set_faults(silent=True)
                started = time.monotonic()
                outcomes = await pipeline(esme, [(BYSTANDER, f"m{i}") for i in range(10)])
                answered_s = time.monotonic() - started
                await lost(esme)
                assert_answered_once(esme, 11)

            bind_failed = SmpplibEsme(gw.port)
            with pytest.raises(smpplib.exceptions.PDUError) as refusal:
                await bind_failed.__aenter__()
            await asyncio.to_thread(bind_failed.client.disconnect)

            sim.set_faults(silent=False)
            async with rebound(gw.port) as (again, _refused):
                after = await pipeline(again, [(BYSTANDER, "after")])

        assert [o.status for o in before] == [OK]
        assert set(statuses(outcomes)) == {RSYSERR}
        assert timeout_s <= answered_s < timeout_s + 3.0
        assert int(refusal.value.args[1]) == RSYSERR
        assert [o.status for o in after] == [OK]
        assert_every_ok_was_sent([*before, *outcomes, *after], sim)

    async def test_slow_smsc_with_a_full_window_pushes_back_without_errors(
        self, tmp_path: Path, tap: GatewayTap
    ) -> None:
        """The SMSC takes 0.15 s per answer, the window is 4, the client pipelines 40: the
        gateway never has more than 4 submits outstanding upstream (it stops reading the
        client instead), every submit is answered OK although the last waits 1.5 s, longer
        than response_timeout_s (1 s: a timer runs only once a submit is sent upstream), and
        every OK was received, in the order sent."""
        window = 4
        delay_s = 0.15
        session = SESSION | {"window_size": window}
        async with (
            simulator() as sim,
            consent_gateway(
                sim.port, _sqlite(tmp_path), campaigns=acme_campaigns(), session=session
            ) as gw,
            SmpplibEsme(gw.port) as esme,
        ):
            sim.set_faults(response_delay_s=delay_s)
            requests = [(BYSTANDER, f"m{i}") for i in range(40)]
            started = time.monotonic()
            outcomes = await pipeline(esme, requests)
            elapsed = time.monotonic() - started
            assert_answered_once(esme, len(requests))

        assert set(statuses(outcomes)) == {OK}
        assert_every_ok_was_sent(outcomes, sim)
        assert [m.text for m in sent_to(sim, BYSTANDER)] == [text for _, text in requests]
        assert tap.max_outstanding("upstream", CommandId.SUBMIT_SM) == window
        assert elapsed >= len(requests) / window * delay_s > SESSION["response_timeout_s"]

    async def test_smsc_restart_aiosmpplib_reconnects_and_traffic_flows(self) -> None:
        """The SMSC stops (unbinding its sessions) with 5 submits in flight and starts again on
        the same port: those 5 get 0x08, aiosmpplib's binds meanwhile get 0x08 and it retries
        on its own; once the SMSC is back it binds and every message queued meanwhile goes out
        OK, to the new SMSC."""
        port = free_port()
        hook = Recorder()
        writers: list[asyncio.StreamWriter] = []
        async with (
            running_simulator(port=port, control_port=None, session_config=SIM_SESSION) as first,
            consent_gateway(port, "memory://", campaigns=acme_campaigns(), session=SESSION) as gw,
        ):
            esme = ESME(
                smsc_host="127.0.0.1",
                smsc_port=gw.port,
                system_id="acme",
                password="pw",
                bind_mode=BindMode.TRANSCEIVER,
                hook=hook,
                log_level="CRITICAL",  # its reconnection attempts log errors
                socket_timeout=5.0,
                retry_timer=SimpleExponentialBackoff(min_delay=50, max_increases=2),
            )
            connect = esme.connect

            async def connect_and_keep_writer() -> None:
                # aiosmpplib drops a connection's StreamWriter without closing it when it
                # reconnects (a ResourceWarning, an error here): keep them, close them at the end.
                try:
                    await connect()
                finally:
                    if esme._writer is not None and esme._writer not in writers:
                        writers.append(esme._writer)

            esme.connect = connect_and_keep_writer
            running = asyncio.create_task(esme.start())

            async def send(texts: Iterable[str]) -> None:
                for text in texts:
                    await esme.broker.enqueue(
                        SubmitSm(
                            short_message=text,
                            source=PhoneNumber("+" + NUMBER_1),
                            destination=PhoneNumber("+" + BYSTANDER),
                            log_id=text,
                        )
                    )

            try:
                await send(f"a{i}" for i in range(10))
                await hook.wait_until(lambda: len(hook.responses) == 10)
                first.set_faults(response_delay_s=5.0)  # answers still owed when it stops
                await send(f"b{i}" for i in range(5))
                await first.wait_for(lambda msgs: len(msgs) == 15, timeout=WAIT_S)
                await first.stop()
                await hook.wait_until(lambda: len(hook.responses) == 15 and hook.refused_binds)
                await send(f"c{i}" for i in range(5))  # queued by aiosmpplib while unbound

                async with running_simulator(
                    port=port, control_port=None, session_config=SIM_SESSION
                ) as second:
                    restarted = time.monotonic()
                    await hook.wait_until(lambda: len(hook.responses) == 20)
                    recovered_s = time.monotonic() - restarted
                    await send(f"d{i}" for i in range(10))
                    await hook.wait_until(lambda: len(hook.responses) == 30)
                    await esme.stop()
                    await asyncio.wait_for(running, WAIT_S)
            finally:
                if not running.done():
                    running.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await running
                for writer in writers:
                    writer.close()

        by_text = {r.log_id: r for r in hook.responses}
        assert sorted(Counter(r.log_id for r in hook.responses).values()) == [1] * 30
        status_of = {text: int(r.command_status) for text, r in by_text.items()}
        assert {status_of[f"a{i}"] for i in range(10)} == {OK}
        assert {status_of[f"b{i}"] for i in range(5)} == {RSYSERR}
        assert {status_of[text] for text in status_of if text[0] in "cd"} == {OK}
        assert hook.bind_statuses[0] == OK  # the first bind, before the restart
        assert hook.refused_binds
        assert set(hook.refused_binds) == {RSYSERR}
        assert hook.bind_statuses[-1] == OK  # the bind to the new SMSC
        ok = [
            Outcome(BYSTANDER, text, status, by_text[text].message_id)
            for text, status in status_of.items()
        ]
        assert_every_ok_was_sent(ok, first, second)
        # What was queued while the SMSC was down went to the new one, and only there.
        expected = {f"c{i}" for i in range(5)} | {f"d{i}" for i in range(10)}
        assert sorted(m.text or "" for m in second.messages) == sorted(expected)
        assert recovered_s < WAIT_S


# --- Redis fails under the consent store --------------------------------------------------


@pytest.mark.redis
@needs_redis
class TestRedisFaults:
    async def test_redis_down_at_start_fails_closed_until_it_answers(self, tmp_path: Path) -> None:
        """The gateway starts while its Redis is down: it listens, binds reach the SMSC, MTs get
        0x14 and a STOP 0x64 (not forwarded), /readyz says the store is down. Redis comes up:
        /readyz turns ready, MTs go out OK, the SMSC's redelivered STOP is stored and honoured."""
        server = RedisServer(tmp_path / "redis")  # not started yet
        url = f"{server.url}?{REDIS_QUERY}"
        try:
            async with (
                simulator() as sim,
                consent_gateway(
                    sim.port,
                    url,
                    campaigns=acme_campaigns(),
                    session=SESSION,
                    admin={"listen": "127.0.0.1:0"},
                ) as gw,
                SmpplibEsme(gw.port) as esme,
            ):
                down = await pipeline(esme, [(BYSTANDER, "down"), (SUBSCRIBER, "down2")])
                assert await stop_from(sim, SUBSCRIBER) == ESME_RX_T_APPN
                status, body = await readyz(gw)
                assert status == 503, body
                assert body["checks"]["store"] != "ok"
                assert body["checks"]["upstream"] == "ok"

                await asyncio.to_thread(server.start)
                await guard_of(gw).wait_healthy(WAIT_S)
                up = await pipeline(esme, [(BYSTANDER, "up")])
                retries = await stop_until_acknowledged(sim, SUBSCRIBER)
                after = await pipeline(esme, [(SUBSCRIBER, "after"), (BYSTANDER, "after2")])
                status, body = await readyz(gw)
                assert (status, body["status"]) == (200, "ready"), body
                assert body["store"]["records"] == 1
                assert esme.mo_texts() == [b"STOP"]  # the acknowledged delivery only
                assert_answered_once(esme, 5)
                assert len(await guard_of(gw).history(SUBSCRIBER)) == 1
        finally:
            await asyncio.to_thread(server.stop)

        assert [o.status for o in down] == [STORE_UNAVAILABLE] * 2
        assert [o.status for o in up] == [OK]
        assert len(retries) <= 3
        assert [o.status for o in after] == [OPTED_OUT, OK]
        assert_every_ok_was_sent([*down, *up, *after], sim)
        assert_refused_were_not_sent([*down, *up, *after], sim)
        assert texts_to(sim, SUBSCRIBER) == [OPT_OUT_REPLY]

    async def test_redis_dies_under_traffic_and_comes_back(self, tmp_path: Path) -> None:
        """Redis is killed (SIGKILL) while the client pipelines MTs without pause: MTs get 0x14
        (never forwarded), the opted-out subscriber is never sent to, a STOP is answered 0x64
        (not acknowledged, not forwarded), /readyz is 503. Redis restarted on its data: MTs
        flow again by themselves, the opt-out from before the outage is still honoured, and the
        SMSC's redelivered STOP is stored once and honoured."""
        server = RedisServer(tmp_path / "redis")
        await asyncio.to_thread(server.start)
        url = f"{server.url}?{REDIS_QUERY}"
        try:
            async with (
                simulator() as sim,
                consent_gateway(
                    sim.port,
                    url,
                    campaigns=acme_campaigns(),
                    session=SESSION,
                    admin={"listen": "127.0.0.1:0"},
                ) as gw,
                SmpplibEsme(gw.port) as esme,
            ):
                guard = guard_of(gw)
                assert await stop_from(sim, SUBSCRIBER) == OK
                async with Traffic(esme) as traffic:
                    await traffic.next_batches()
                    await asyncio.to_thread(server.kill)
                    await traffic.wait_until(lambda o: STORE_UNAVAILABLE in statuses(o))
                    assert guard.fault is not None
                    assert await stop_from(sim, OTHER_SUBSCRIBER) == ESME_RX_T_APPN
                    status, body = await readyz(gw)
                    assert status == 503, body
                    during = await traffic.next_batches()

                    await asyncio.to_thread(server.start)
                    await guard.wait_healthy(WAIT_S)
                    back = await traffic.next_batches(2)
                retries = await stop_until_acknowledged(sim, OTHER_SUBSCRIBER)
                after = await pipeline(
                    esme, [(SUBSCRIBER, "x1"), (OTHER_SUBSCRIBER, "x2"), (BYSTANDER, "x3")]
                )
                assert esme.mo_texts() == [b"STOP", b"STOP"]
                assert_answered_once(esme, traffic.sent + 3)
                assert len(await guard.history(SUBSCRIBER)) == 1
                assert len(await guard.history(OTHER_SUBSCRIBER)) == 1
        finally:
            await asyncio.to_thread(server.stop)

        everything = [*traffic.outcomes, *after]
        assert set(statuses(everything)) <= {OK, STORE_UNAVAILABLE, OPTED_OUT}
        assert set(statuses(everything, SUBSCRIBER)) <= {OPTED_OUT, STORE_UNAVAILABLE}
        assert set(statuses(during)) == {STORE_UNAVAILABLE}
        assert set(statuses(back[len(back) // 2 :], BYSTANDER)) == {OK}
        assert set(statuses(back[len(back) // 2 :], SUBSCRIBER)) == {OPTED_OUT}
        assert len(retries) <= 3
        assert [o.status for o in after] == [OPTED_OUT, OPTED_OUT, OK]
        assert_every_ok_was_sent(everything, sim)
        assert_refused_were_not_sent(everything, sim)
        assert texts_to(sim, SUBSCRIBER) == [OPT_OUT_REPLY]
        assert texts_to(sim, OTHER_SUBSCRIBER) == [OPT_OUT_REPLY]

    async def test_sentinel_failover_keeps_every_opt_out(self, tmp_path: Path) -> None:
        """A master, two replicas and a Sentinel on loopback; the gateway finds the master
        through Sentinel and has every write reach both replicas (wait_replicas=2: Sentinel
        may promote either). The master is killed (SIGKILL) under traffic: MTs get 0x14 at
        worst, the subscriber who opted out before is refused throughout and never sent to.
        Once a replica is promoted, a STOP is still answered 0x64 (only one replica left to
        hold it), until the old master is back as a replica of the new one; then the SMSC's
        redelivery is stored and honoured, the earlier opt-out still holds, and MTs flow."""
        if redis_sentinel_binary() is None:
            pytest.skip("redis-sentinel is not installed (Debian package redis-sentinel)")
        master = RedisServer(tmp_path / "master")
        replicas = [
            RedisServer(tmp_path / f"replica{n}", replica_of=(master.host, master.port))
            for n in (1, 2)
        ]
        sentinel = RedisServer(
            tmp_path / "sentinel",
            sentinel_for=(master.host, master.port),
            down_after_ms=500,
            failover_timeout_ms=5000,
        )
        servers = [master, *replicas, sentinel]
        watcher = Redis(host=sentinel.host, port=sentinel.port, decode_responses=True)
        direct = Redis(host=master.host, port=master.port, decode_responses=True)
        try:
            for server in [master, *replicas]:
                await asyncio.to_thread(server.start)
            await direct.set("replicas-streaming", "1")  # both replicas take writes from now
            assert await direct.execute_command("WAIT", 2, int(WAIT_S * 1000)) == 2
            await asyncio.to_thread(sentinel.start)
            await _until(lambda: _replicas_known(watcher, 2))
            url = (
                f"redis+sentinel://{sentinel.host}:{sentinel.port}/mymaster/0?{REDIS_QUERY}"
                "&wait_replicas=2&wait_timeout_s=0.5"
            )
            async with (
                simulator() as sim,
                consent_gateway(sim.port, url, campaigns=acme_campaigns(), session=SESSION) as gw,
                SmpplibEsme(gw.port) as esme,
            ):
                guard = guard_of(gw)
                assert await stop_from(sim, SUBSCRIBER) == OK  # on the master and both replicas
                async with Traffic(esme) as traffic:
                    await traffic.next_batches()
                    await asyncio.to_thread(master.kill)
                    killed = time.monotonic()
                    await _until(lambda: _master_moved(watcher, master.port), timeout_s=20)
                    promoted_s = time.monotonic() - killed
                    assert await stop_from(sim, OTHER_SUBSCRIBER) == ESME_RX_T_APPN
                    during = await traffic.next_batches()
                    # The crashed node comes back as a replica of the new master (what
                    # Sentinel would make of it on its own, within its 10 s INFO period).
                    host, new_port = await watcher.sentinel_get_master_addr_by_name("mymaster")
                    master.replica_of = (host, int(new_port))
                    await asyncio.to_thread(master.start)
                    # The restarted node first resyncs from the new master: on a loaded
                    # machine that alone has taken more than WAIT_S.
                    await guard.wait_healthy(3 * WAIT_S)
                    back = await traffic.next_batches(2)
                    recovered_s = time.monotonic() - killed
                # A STOP is stored once both replicas take writes again: wait for that (the
                # resync), not for as many 0x64 answers as a slow resync makes.
                promoted = Redis(host=host, port=int(new_port), decode_responses=True)
                try:
                    await _until(lambda: _replicas_online(promoted, 2), timeout_s=3 * WAIT_S)
                finally:
                    await promoted.aclose()
                retries = await stop_until_acknowledged(sim, OTHER_SUBSCRIBER)
                after = await pipeline(
                    esme, [(SUBSCRIBER, "x1"), (OTHER_SUBSCRIBER, "x2"), (BYSTANDER, "x3")]
                )
                assert esme.mo_texts() == [b"STOP", b"STOP"]
                assert_answered_once(esme, traffic.sent + 3)
                assert len(await guard.history(SUBSCRIBER)) == 1
                assert len(await guard.history(OTHER_SUBSCRIBER)) == 1
        finally:
            await direct.aclose()
            await watcher.aclose()
            for server in reversed(servers):
                await asyncio.to_thread(server.stop)

        assert int(new_port) in {r.port for r in replicas}
        everything = [*traffic.outcomes, *after]
        assert set(statuses(everything)) <= {OK, STORE_UNAVAILABLE, OPTED_OUT}
        assert set(statuses(everything, SUBSCRIBER)) <= {OPTED_OUT, STORE_UNAVAILABLE}
        assert set(statuses(during, SUBSCRIBER)) <= {OPTED_OUT, STORE_UNAVAILABLE}
        assert set(statuses(back[len(back) // 2 :], BYSTANDER)) == {OK}
        assert set(statuses(back[len(back) // 2 :], SUBSCRIBER)) == {OPTED_OUT}
        assert len(retries) <= 3
        assert [o.status for o in after] == [OPTED_OUT, OPTED_OUT, OK]
        assert_every_ok_was_sent(everything, sim)
        assert_refused_were_not_sent(everything, sim)
        assert texts_to(sim, SUBSCRIBER) == [OPT_OUT_REPLY]
        assert texts_to(sim, OTHER_SUBSCRIBER) == [OPT_OUT_REPLY]
        assert promoted_s < 20
        assert recovered_s < 20 + 2 * WAIT_S


async def _until(check: Callable[[], Any], timeout_s: float = WAIT_S) -> None:
    """Poll an outside process (a Redis server, Sentinel) until ``await check()`` is true."""
    async with asyncio.timeout(timeout_s):
        while not await check():  # noqa: ASYNC110 (another process: nothing to wait on)
            await asyncio.sleep(0.05)


async def _replicas_known(watcher: Redis, count: int) -> bool:
    """Sentinel has connected to ``count`` replicas of the master (none down)."""
    found = await watcher.sentinel_slaves("mymaster")
    return [r["flags"] for r in found] == ["slave"] * count


async def _replicas_online(master: Redis, count: int) -> bool:
    """``count`` replicas are connected to ``master`` and streaming (their resync done)."""
    info = await master.info("replication")
    replicas = [info.get(f"slave{i}") for i in range(int(info.get("connected_slaves", 0)))]
    states = [r.get("state") for r in replicas if isinstance(r, dict)]
    return states == ["online"] * count


async def _master_moved(watcher: Redis, old_port: int) -> bool:
    """Sentinel names a master other than the one on ``old_port`` (a replica was promoted)."""
    address = await watcher.sentinel_get_master_addr_by_name("mymaster")
    return address is not None and int(address[1]) != old_port
