"""Hardening, tried as an attacker or an abusive client would: floods of idle sockets, session
limits per address and account, refusals by the hundred thousand. Each test fails on a gateway
without the defence."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import smpplib.client
import smpplib.exceptions
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from tests.support.consent import (
    FAST_SESSION,
    NUMBER_1,
    SUBSCRIBER,
    RawEsme,
    acme_campaigns,
    simulator,
    staff_opt_out,
)
from tests.support.gateway import running_gateway
from tests.support.sim import running_simulator

OPTED_OUT = 0x45
BIND_FAIL = 0x0D


@contextlib.asynccontextmanager
async def gateway(sim: Simulator, **server: Any) -> AsyncIterator[Gateway]:
    async with running_gateway(
        sim.port,
        session=FAST_SESSION,
        server={"listen": "127.0.0.1:0", **server},
        campaigns=acme_campaigns(),
    ) as gw:
        yield gw


def bind_and_submit(port: int, system_id: str = "acme") -> int:
    """A well-behaved smpplib client: bind, one submit, unbind; the submit's status."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    answers: list[Any] = []
    client.set_message_sent_handler(lambda pdu: answers.append(pdu))
    client.connect()
    try:
        client.bind_transmitter(system_id=system_id, password="pw")
        client.send_message(
            source_addr_ton=1, source_addr="15550199999", dest_addr_ton=1,
            destination_addr="15559990000", short_message=b"still here",
        )  # fmt: skip
        while not answers:
            client.read_once()
        client.unbind()
        return int(answers[0].status)
    finally:
        client.disconnect()


class TestIdleSocketFlood:
    async def test_a_thousand_idle_sockets_do_not_lock_clients_out(self) -> None:
        """1,000 sockets that never bind (all from one address, as loopback is) leave at most
        max_unbound_per_address of them open, and a real client still binds and sends."""
        async with simulator() as sim, gateway(sim) as gw:
            sockets = []
            try:
                for _ in range(1000):
                    sockets.append(await asyncio.open_connection("127.0.0.1", gw.port))
                # Every accepted socket has reached the listener once one more round trip
                # through the same accept queue has: the real client's.
                assert await asyncio.to_thread(bind_and_submit, gw.port) == 0
                assert gw.listener.unbound <= 10
                assert len(sim.messages) == 1
            finally:
                for _reader, writer in sockets:
                    writer.close()

    async def test_idle_socket_is_closed_at_the_bind_deadline(self) -> None:
        """A connection that sends no bind is closed after server.bind_timeout_s."""
        async with simulator() as sim, gateway(sim, bind_timeout_s=0.3) as gw:
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            started = time.monotonic()
            async with asyncio.timeout(5):
                assert await reader.read(1) == b""  # closed by the gateway
            assert time.monotonic() - started < 3
            writer.close()


class TestSessionLimits:
    async def test_sessions_per_address(self) -> None:
        """Past max_sessions_per_address bound sessions from one address, a bind gets
        ESME_RBINDFAIL; when one leaves, binds succeed again."""
        async with (
            simulator() as sim,
            gateway(sim, max_sessions_per_address=2) as gw,
            RawEsme.bound(gw.port) as _first,
            RawEsme.bound(gw.port) as _second,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            third = RawEsme(reader, writer)
            resp = await third.request(p.BindTransmitter(system_id="acme", password="pw"))
            assert resp.command_status == BIND_FAIL
            writer.close()
        async with simulator() as sim, gateway(sim, max_sessions_per_address=2) as gw:
            assert await asyncio.to_thread(bind_and_submit, gw.port) == 0

    async def test_sessions_per_account_whatever_the_spelling(self) -> None:
        """max_sessions_per_account counts 'acme' and 'ACME ' as one account."""
        async with (
            simulator() as sim,
            gateway(sim, max_sessions_per_account=1) as gw,
            RawEsme.bound(gw.port, "acme") as _first,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            resp = await RawEsme(reader, writer).request(
                p.BindTransmitter(system_id="ACME ", password="pw")
            )
            assert resp.command_status == BIND_FAIL
            writer.close()
            assert await asyncio.to_thread(bind_and_submit, gw.port, "other") == 0


class TestRefusalFlood:
    async def test_many_refusals_are_summed_up_not_logged_one_by_one(self, tmp_path: Path) -> None:
        """3,000 MT to an opted-out number: each refused (0x45) and counted, at most 100
        mt_rejected lines and then one summary line with the count."""
        async with (
            simulator() as sim,
            running_gateway(
                sim.port,
                session=FAST_SESSION,
                store={"url": f"sqlite:{tmp_path}/consent.db"},
                campaigns=acme_campaigns(),
            ) as gw,
        ):
            assert gw.store is not None
            assert gw.enforcer is not None
            await gw.store.append(staff_opt_out(SUBSCRIBER))
            mt = p.SubmitSm(
                source_addr_ton=1, source_addr=NUMBER_1, dest_addr_ton=1,
                destination_addr=SUBSCRIBER, short_message=b"again",
            )  # fmt: skip
            with capture_logs() as logs:
                async with RawEsme.bound(gw.port) as esme:
                    for _ in range(3000):
                        assert (await esme.request(mt)).command_status == OPTED_OUT
                gw.enforcer._refusals.flush()  # the interval's end
            rejected = [e for e in logs if e["event"] == "mt_rejected"]
            assert len(rejected) == 101
            assert rejected[-1]["repeats"] == 2900
            counted = gw.metrics.mt_rejected_total.labels("opted_out", "acme")._value.get()
            assert counted == 3000
            assert sim.messages == []


def flood_without_reading(port: int, frames: int) -> tuple[int, str]:
    """Send enquire_link after enquire_link on a socket that never reads (small receive
    buffer); returns how many were written before the gateway dropped it, and how it ended."""
    frame = encode(p.EnquireLink(sequence_number=1))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    batch = frame * 1024
    sent = 0
    try:
        while sent < frames:
            sock.sendall(batch)
            sent += 1024
    except OSError as exc:
        return sent, type(exc).__name__
    finally:
        sock.close()
    return sent, "not dropped"


class TestPeerThatNeverReads:
    async def test_memory_stays_bounded_and_the_peer_is_dropped(self) -> None:
        """A client that sends enquire_link by the million and reads nothing: the gateway's
        send buffer towards it stays bounded (it stops reading it), and it is dropped after
        session.write_stall_timeout_s; another client is served meanwhile."""
        async with (
            simulator() as sim,
            running_gateway(
                sim.port,
                session={**FAST_SESSION, "write_stall_timeout_s": 1},
                server={"listen": "127.0.0.1:0", "bind_timeout_s": 30},
                campaigns=acme_campaigns(),
            ) as gw,
        ):
            flood = asyncio.create_task(
                asyncio.to_thread(flood_without_reading, gw.port, 2_000_000)
            )
            peak = 0
            while not flood.done():  # sample the gateway's buffer while the flood runs
                for bridge in list(gw.listener.bridges):
                    transport = bridge.client.transport
                    if transport is not None:
                        peak = max(peak, transport.get_write_buffer_size())
                await asyncio.sleep(0.01)  # sampling pace, not a synchronisation
                if peak and not flood.done():
                    assert await asyncio.to_thread(bind_and_submit, gw.port) == 0
            sent, ended = await flood
        assert ended != "not dropped", sent
        assert sent < 2_000_000
        assert 0 < peak < 1_000_000, peak


async def bind_status(port: int, system_id: str, password: str, source: str) -> int:
    """One bind from the local address ``source`` (127.0.0.x are all loopback); its status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        esme = RawEsme(reader, writer)
        resp = await esme.request(p.BindTransmitter(system_id=system_id, password=password))
        return resp.command_status
    finally:
        writer.close()


class TestPasswordGuessing:
    async def test_failed_binds_are_slowed_then_refused_without_the_smsc(self) -> None:
        """200 wrong passwords for 'victim' from one address: the SMSC sees the first five,
        the rest are refused by the gateway at once; a client the account bound from before
        still binds; a new address for the blocked account is refused."""
        binds = {"delay_after": 2, "delay_s": 0.01, "max_delay_s": 0.05, "block_after": 5}
        async with (
            running_simulator(control_port=None, accounts={"victim": "right"}) as sim,
            running_gateway(
                sim.port,
                session=FAST_SESSION,
                server={"listen": "127.0.0.1:0", "binds": binds},
                campaigns=acme_campaigns(),
            ) as gw,
        ):
            assert await bind_status(gw.port, "victim", "right", "127.0.0.1") == 0
            statuses = [
                await bind_status(gw.port, "victim", f"guess{i}", "127.0.0.2") for i in range(200)
            ]
            assert set(statuses[:5]) == {0x0E}  # ESME_RINVPASWD, from the SMSC
            assert set(statuses[5:]) == {BIND_FAIL}
            seen = [r for r in sim.requests if r.command == "bind_transmitter"]
            assert len(seen) == 6  # the real one and five guesses
            assert await bind_status(gw.port, "victim", "right", "127.0.0.1") == 0
            assert await bind_status(gw.port, "victim", "right", "127.0.0.3") == BIND_FAIL
            throttled = gw.metrics.binds_throttled_total.labels("refused")._value.get()
            assert throttled == 196


class TestTrickle:
    async def test_a_pdu_trickled_an_octet_at_a_time_is_cut_off(self) -> None:
        """A bound client that sends one octet of a PDU now and then is closed once the PDU
        has been incomplete for session.partial_pdu_timeout_s; traffic that keeps completing
        PDUs is never cut, however its reads split them."""
        async with (
            simulator() as sim,
            running_gateway(
                sim.port,
                session={**FAST_SESSION, "partial_pdu_timeout_s": 0.5},
                server={"listen": "127.0.0.1:0"},
                campaigns=acme_campaigns(),
            ) as gw,
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            esme = RawEsme(reader, writer)
            bound = await esme.request(p.BindTransmitter(system_id="acme", password="pw"))
            assert bound.command_status == 0
            frame = encode(p.EnquireLink(sequence_number=7))
            # For longer than the deadline every write ends inside a PDU, but PDUs keep
            # completing: never cut.
            writer.write(frame[:9])
            started = time.monotonic()
            while time.monotonic() - started < 1.0:
                writer.write(frame[9:] + frame * 2 + frame[:9])
                await writer.drain()
                await asyncio.sleep(0.05)  # the pace of this client, not a synchronisation
            writer.write(frame[9:])
            assert (await esme.request(p.EnquireLink())).command_status == 0
            # Now a PDU that never completes: cut after the deadline.
            esme.writer.write(frame[:5])
            await esme.writer.drain()
            async with asyncio.timeout(5):
                while await reader.read(4096):
                    pass  # answers to the enquire_links above, then end of stream
            writer.close()


class TestAllowedNetworks:
    async def test_only_allowed_networks_get_in(self) -> None:
        """server.allow_networks closes connections from elsewhere at once; per account,
        [server.accounts.ID] allow_networks refuses its binds from other addresses."""
        server = {
            "allow_networks": ["127.0.0.1/32", "127.0.0.2"],
            "accounts": {"ACME": {"allow_networks": ["127.0.0.2/32"]}},
        }
        async with simulator() as sim, gateway(sim, **server) as gw:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gw.port, local_addr=("127.0.0.3", 0)
            )
            async with asyncio.timeout(5):
                assert await reader.read(1) == b""  # closed before any bind
            writer.close()
            assert await bind_status(gw.port, "acme", "pw", "127.0.0.1") == BIND_FAIL
            assert await bind_status(gw.port, "acme", "pw", "127.0.0.2") == 0
            assert await bind_status(gw.port, "other", "pw", "127.0.0.1") == 0
