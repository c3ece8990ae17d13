"""server.proxy_protocol on a real listener, without HAProxy: raw sockets from loopback
addresses play the balancer (127.0.0.1, in proxy_networks) and strangers (127.0.0.2), send
PROXY headers written from the spec, then SMPP from our codec or from smpplib."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import smpplib.consts
from structlog.testing import capture_logs

from gateway.app import Gateway
from gateway.config import ConfigError, load
from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from tests.support.consent import (
    FAST_SESSION,
    GatewayProcess,
    RawEsme,
    acme_campaigns,
    free_port,
    simulator,
    to_toml,
)
from tests.support.gateway import gateway_config, running_gateway
from tests.support.proxyproto import v1, v2_local, v2_tcp4, v2_tcp6
from tests.support.sim import running_simulator

BALANCER = "127.0.0.1"
STRANGER = "127.0.0.2"
BIND_FAIL = 0x0D
CLIENT = "203.0.113.7"


@contextlib.asynccontextmanager
async def gateway(sim: Simulator, **server: Any) -> AsyncIterator[Gateway]:
    async with running_gateway(
        sim.port,
        session=FAST_SESSION,
        server={
            "listen": "127.0.0.1:0",
            "proxy_protocol": True,
            "proxy_networks": [f"{BALANCER}/32"],
            "proxy_header_timeout_s": 0.5,
            **server,
        },
        campaigns=acme_campaigns(),
    ) as gw:
        yield gw


@contextlib.asynccontextmanager
async def through(port: int, header: bytes, *, source: str = BALANCER) -> AsyncIterator[RawEsme]:
    """A connection from ``source`` that sends ``header`` first, as a balancer would."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(header)
    try:
        yield RawEsme(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def bind_via(port: int, header: bytes, system_id: str = "acme", password: str = "pw") -> int:
    async with through(port, header) as esme:
        resp = await esme.request(p.BindTransmitter(system_id=system_id, password=password))
        return resp.command_status


async def closed(reader: asyncio.StreamReader) -> bool:
    """The gateway closed the connection (within a bound far above any deadline here)."""
    async with asyncio.timeout(5):
        while True:
            try:
                if not await reader.read(4096):
                    return True
            except ConnectionResetError:
                return True


def peers(logs: list[dict[str, Any]], event: str) -> list[str]:
    """The ``peer`` of the gateway's lines of ``event`` (the in-process simulator's left out)."""
    return [x["peer"] for x in logs if x["event"] == event and x.get("component") != "smsc-sim"]


def counted(gw: Gateway, outcome: str) -> float:
    value: float = gw.metrics.proxy_headers_total.labels(outcome)._value.get()
    return value


class TestHeaderNamesTheClient:
    async def test_v2_header_then_bind_in_one_write(self) -> None:
        """A v2 header and a bind in one segment: the bind is served, the session relays,
        and the logs' peer is the header's source, not the balancer's address."""
        async with simulator() as sim, gateway(sim) as gw:
            bind = encode(p.BindTransmitter(system_id="acme", password="pw", sequence_number=1))
            with capture_logs() as logs:
                async with through(
                    gw.port, v2_tcp4(CLIENT, "10.0.0.1", 40001, 2775) + bind
                ) as esme:
                    esme.sequence = 1
                    resp = await esme.read()
                    assert resp.command_status == 0
                    sent = await esme.request(
                        p.SubmitSm(
                            source_addr="15550199999", destination_addr="15559990000",
                            short_message=b"via the balancer",
                        )
                    )  # fmt: skip
                    assert sent.command_status == 0
            assert peers(logs, "bind_requested") == [f"{CLIENT}:40001"]
            assert peers(logs, "bind_completed") == [f"{CLIENT}:40001"]
            assert [m.text for m in sim.messages] == ["via the balancer"]
            assert counted(gw, "read") == 1

    async def test_v1_header_split_across_writes(self) -> None:
        """A v1 header cut in three writes, then the bind in its own: the header's source is
        the peer; IPv6 sources keep their colons."""
        async with simulator() as sim, gateway(sim) as gw:
            header = v1("2001:db8::42", "2001:db8::1", 51234, 2775)
            with capture_logs() as logs:
                async with through(gw.port, header[:3]) as esme:
                    for part in (header[3:20], header[20:]):
                        await asyncio.sleep(0.05)  # separate reads, not a synchronisation
                        esme.writer.write(part)
                    resp = await esme.request(p.BindTransmitter(system_id="acme", password="pw"))
                    assert resp.command_status == 0
            assert peers(logs, "bind_requested") == ["2001:db8::42:51234"]

    async def test_smpplib_client_behind_a_header(self) -> None:
        """smpplib, on a socket whose first octets were a v2 header, binds and sends as it
        would directly (its own encoder and reader, the whole session)."""
        async with simulator() as sim, gateway(sim) as gw:
            with capture_logs() as logs:
                status = await asyncio.to_thread(
                    smpplib_send, gw.port, v2_tcp6("2001:db8::7", "2001:db8::1", 1234, 2775)
                )
            assert status == 0
            assert peers(logs, "bind_requested") == ["2001:db8::7:1234"]
            assert [m.text for m in sim.messages] == ["from smpplib"]

    async def test_local_header_keeps_the_connections_own_address(self) -> None:
        """LOCAL (a balancer's health check) and v1 UNKNOWN: the peer is the connection's."""
        async with simulator() as sim, gateway(sim) as gw:
            with capture_logs() as logs:
                assert await bind_via(gw.port, v2_local()) == 0
                assert await bind_via(gw.port, b"PROXY UNKNOWN\r\n") == 0
            assert [peer.rpartition(":")[0] for peer in peers(logs, "bind_requested")] == [
                BALANCER,
                BALANCER,
            ]
            assert counted(gw, "local") == 2

    async def test_after_the_header_the_session_reads_the_transport(self) -> None:
        """Once the header is in, the client connection is the transport's protocol: reads
        go straight to the session, with nothing between."""
        async with (
            simulator() as sim,
            gateway(sim) as gw,
            through(gw.port, v2_tcp4(CLIENT, "10.0.0.1", 1, 2775)) as esme,
        ):
            assert (await esme.request(p.BindTransmitter(system_id="acme"))).command_status == 0
            (bridge,) = gw.listener.bridges
            assert bridge.client.transport is not None
            assert bridge.client.transport.get_protocol() is bridge.client
            assert bridge.client.peer == f"{CLIENT}:1"


def smpplib_send(port: int, header: bytes) -> int:
    """smpplib from a socket that sent ``header`` first: bind, one submit; its status."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(header)
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    client._socket = sock
    client.state = smpplib.consts.SMPP_CLIENT_STATE_OPEN
    answers: list[Any] = []
    client.set_message_sent_handler(lambda pdu: answers.append(pdu))
    try:
        client.bind_transmitter(system_id="acme", password="pw")
        client.send_message(
            source_addr_ton=1, source_addr="15550199999", dest_addr_ton=1,
            destination_addr="15559990000", short_message=b"from smpplib",
        )  # fmt: skip
        while not answers:
            client.read_once()
        client.unbind()
        return int(answers[0].status)
    finally:
        client.disconnect()


class TestWhoMaySendAHeader:
    async def test_a_stranger_is_closed_at_once_even_with_a_valid_header(self) -> None:
        """From an address outside proxy_networks, a connection is closed before anything is
        read: a client cannot name itself another address."""
        async with simulator() as sim, gateway(sim) as gw:
            with capture_logs() as logs:
                async with through(
                    gw.port, v2_tcp4("10.9.9.9", "10.0.0.1", 1, 2775), source=STRANGER
                ) as esme:
                    assert await closed(esme.reader)
            (line,) = [x for x in logs if x["event"] == "proxy_header_failed"]
            assert line["outcome"] == "untrusted"
            assert line["peer"].startswith(f"{STRANGER}:")
            assert counted(gw, "untrusted") == 1
            assert not [x for x in logs if x["event"] == "bind_requested"]

    async def test_a_balancer_that_sends_no_header_is_closed(self) -> None:
        """A bind straight from the balancer's address (send-proxy missing) is refused as an
        invalid header, not served as the balancer's own."""
        async with simulator() as sim, gateway(sim) as gw:
            bind = encode(p.BindTransmitter(system_id="acme", password="pw", sequence_number=1))
            with capture_logs() as logs:
                async with through(gw.port, bind) as esme:
                    assert await closed(esme.reader)
            assert [x["outcome"] for x in logs if x["event"] == "proxy_header_failed"] == [
                "invalid"
            ]
            assert counted(gw, "invalid") == 1
            assert not [r for r in sim.requests if r.command == "bind_transmitter"]

    async def test_no_header_within_the_timeout(self) -> None:
        """A balancer connection that sends half a header and stops is closed after
        proxy_header_timeout_s, logged as a timeout."""
        async with simulator() as sim, gateway(sim) as gw:
            with capture_logs() as logs:
                async with through(gw.port, v2_tcp4(CLIENT, "10.0.0.1", 1, 2)[:10]) as esme:
                    assert await closed(esme.reader)
            assert [x["outcome"] for x in logs if x["event"] == "proxy_header_failed"] == [
                "timeout"
            ]
            assert counted(gw, "timeout") == 1
            assert gw.listener.unbound == 0


class TestLimitsUseTheClientAddress:
    async def test_failed_binds_block_the_client_not_the_balancer(self) -> None:
        """Wrong passwords from one client behind the balancer get it blocked; another client
        behind the same balancer (the same connecting address) still binds."""
        binds = {"delay_after": 100, "block_after": 3}
        async with (
            running_simulator(control_port=None, accounts={"acme": "pw", "mallory": "x"}) as sim,
            gateway(sim, binds=binds) as gw,
        ):
            guesser = v2_tcp4("198.51.100.66", "10.0.0.1", 1000, 2775)
            statuses = [await bind_via(gw.port, guesser, "mallory", f"guess{i}") for i in range(5)]
            assert statuses == [0x0E, 0x0E, 0x0E, BIND_FAIL, BIND_FAIL]
            other = v2_tcp4("198.51.100.77", "10.0.0.1", 1000, 2775)
            assert await bind_via(gw.port, other, "acme", "pw") == 0
            assert await bind_via(gw.port, guesser, "acme", "pw") == BIND_FAIL

    async def test_allow_networks_see_the_header_source(self) -> None:
        """server.allow_networks and per-account networks are matched against the header's
        source: the balancer itself is in neither."""
        server = {
            "allow_networks": ["198.51.100.0/24", "2001:db8::/32"],
            "accounts": {"acme": {"allow_networks": ["198.51.100.0/25"]}},
        }
        async with simulator() as sim, gateway(sim, **server) as gw:
            assert await bind_via(gw.port, v2_tcp4("198.51.100.5", "10.0.0.1", 1, 2)) == 0
            assert await bind_via(gw.port, v1("2001:db8::5", "2001:db8::1", 1, 2), "other") == 0
            high = v2_tcp4("198.51.100.200", "10.0.0.1", 1, 2)
            assert await bind_via(gw.port, high) == BIND_FAIL  # not acme's network
            async with through(gw.port, v2_tcp4("192.0.2.1", "10.0.0.1", 1, 2)) as esme:
                assert await closed(esme.reader)  # not in allow_networks at all

    async def test_unbound_limits_count_header_less_connections_and_client_addresses(
        self,
    ) -> None:
        """Connections that never send a header count against max_unbound from accept;
        once headers are in, max_unbound_per_address counts per client, so one idle client
        does not crowd out another behind the same balancer."""
        async with (
            simulator() as sim,
            gateway(sim, max_unbound=5, max_unbound_per_address=2, proxy_header_timeout_s=30) as gw,
        ):
            silent = [
                await asyncio.open_connection("127.0.0.1", gw.port, local_addr=(BALANCER, 0))
                for _ in range(12)
            ]
            try:
                async with contextlib.AsyncExitStack() as stack:
                    idle = v2_tcp4("198.51.100.1", "10.0.0.1", 1, 2)
                    for _ in range(4):
                        await stack.enter_async_context(through(gw.port, idle))
                    # A bind from another client gets through: the round trip also shows
                    # every connection before it has been accepted.
                    assert await bind_via(gw.port, v2_tcp4("198.51.100.2", "10.0.0.1", 1, 2)) == 0
                    assert gw.listener.unbound <= 5
                    at = gw.listener._unbound_at.get("198.51.100.1", {})
                    assert len(at) <= 2
                    evicted = gw.metrics.connections_total.labels("evicted")._value.get()
                    assert evicted >= 12 + 4 - 5
                for reader, _writer in silent[:7]:
                    assert await closed(reader)  # the oldest header-less ones made room
            finally:
                for _reader, writer in silent:
                    writer.close()


class TestConfig:
    def test_proxy_protocol_needs_networks(self) -> None:
        """proxy_protocol = true without proxy_networks is a config error naming the key."""
        with pytest.raises(ConfigError, match=r"server\.proxy_networks"):
            gateway_config(2776, server={"proxy_protocol": True})

    def test_proxy_protocol_refuses_tls(self) -> None:
        """proxy_protocol with [server.tls] is a config error naming proxy_protocol."""
        tls = {"cert_file": __file__, "key_file": __file__}
        with pytest.raises(ConfigError, match=r"server\.proxy_protocol.*server\.tls"):
            gateway_config(
                2776, server={"proxy_protocol": True, "proxy_networks": ["10.0.0.0/8"], "tls": tls}
            )

    def test_off_by_default(self) -> None:
        """Without the keys the listener reads SMPP from the first octet, as before."""
        server = gateway_config(2776).server
        assert not server.proxy_protocol
        assert server.proxy_networks == ()
        assert server.proxy_header_timeout_s == 5.0


class TestReload:
    async def test_sighup_applies_networks_and_keeps_the_protocol(self, tmp_path: Path) -> None:
        """On reload proxy_networks is applied to the next connection; proxy_protocol keeps
        its running value (restart needed); a file that would leave it on without networks
        fails the reload and changes nothing."""
        async with simulator() as sim:
            path = tmp_path / "gateway.toml"
            server = {
                "listen": "127.0.0.1:0",
                "proxy_protocol": True,
                "proxy_networks": [f"{BALANCER}/32"],
            }
            data = {
                "gateway": {"instance": "pp-gw", "shutdown_grace_s": 1},
                "server": server,
                "upstream": {"address": f"127.0.0.1:{sim.port}"},
                "consent": {"enabled": False},
            }
            path.write_text(to_toml(data))
            gw = Gateway(load(path))
            await gw.start()
            try:
                assert await bind_via(gw.port, v2_local()) == 0
                with capture_logs() as logs:
                    path.write_text(
                        to_toml({**data, "server": {**server, "proxy_networks": ["127.0.0.9/32"]}})
                    )
                    gw.reload()
                    path.write_text(to_toml({**data, "server": {"listen": "127.0.0.1:0"}}))
                    gw.reload()
                    off = {"listen": "127.0.0.1:0", "proxy_networks": ["127.0.0.9/32"]}
                    path.write_text(to_toml({**data, "server": off}))
                    gw.reload()
                events = [x for x in logs if x["event"].startswith("config_reload")]
                assert [x["event"] for x in events] == [
                    "config_reloaded",
                    "config_reload_failed",
                    "config_reload_partial",
                ]
                assert "server.proxy_networks" in events[1]["error"]
                assert events[2]["restart_needed"] == ["server.proxy_protocol"]
                limits = gw.listener.limits
                assert limits.proxy_protocol
                assert limits.proxy_networks == (ipaddress.ip_network("127.0.0.9/32"),)
                # 127.0.0.1 is no balancer any more: its connection is closed unread.
                async with through(gw.port, v2_local()) as esme:
                    assert await closed(esme.reader)
            finally:
                await gw.stop()


class TestWorkers:
    async def test_every_worker_reads_the_header(self, tmp_path: Path) -> None:
        """``run`` with two workers on the supervisor's socket: binds through headers from
        four clients are each logged with their client's address."""
        async with simulator() as sim:
            port = free_port()
            data = {
                "gateway": {"instance": "pp-workers", "shutdown_grace_s": 1},
                "server": {
                    "listen": f"127.0.0.1:{port}",
                    "workers": 2,
                    "proxy_protocol": True,
                    "proxy_networks": [f"{BALANCER}/32"],
                },
                "upstream": {"address": f"127.0.0.1:{sim.port}"},
                "store": {"url": f"sqlite:{tmp_path}/consent.db"},
                "admin": {"listen": f"127.0.0.1:{free_port()}"},
                "logging": {"level": "info", "format": "json"},
            }
            path = tmp_path / "gateway.toml"
            path.write_text(to_toml(data))
            daemon = GatewayProcess(path, port, cwd=tmp_path)
            await daemon.start()
            try:
                clients = [f"198.51.100.{n}" for n in range(1, 5)]
                for n, client in enumerate(clients):
                    assert await bind_via(port, v2_tcp4(client, "10.0.0.1", 1000 + n, 2)) == 0
                await daemon.wait_for("bind_requested", len(clients))
                logged = sorted(x["peer"] for x in daemon.events("bind_requested"))
                assert logged == [f"{c}:{1000 + n}" for n, c in enumerate(clients)]
            finally:
                assert await daemon.stop() == 0
