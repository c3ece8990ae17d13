"""The scale-out example (config/scale-out/) run for real: Debian's HAProxy with the committed
haproxy.cfg in front of two ``smpp-gateway run`` processes with the committed gateway configs,
on a real redis-server, with the bundled simulator as the SMSC.

The test changes only what cannot be the same here: ports become free loopback ports, the
compose service names (``redis``, ``smsc``, ``gw-1``, ``gw-2``) become 127.0.0.1 and so does
HAProxy's address in ``server.proxy_networks``. Every other setting (balancing, health checks,
timeouts, the PROXY protocol header, store, campaigns, audit paths) is the example's, unless a
test says otherwise. Clients connect from other loopback addresses (127.0.0.2, ...), so the
gateways can tell them from HAProxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import shutil
import socket
import subprocess
import tomllib
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.codec import encode
from tests.support.consent import (
    BYSTANDER,
    UNGROUPED,
    GatewayProcess,
    SmpplibEsme,
    free_port,
    simulator,
    texts_to,
    to_toml,
    wait_texts,
)
from tests.support.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.haproxy]

ROOT = Path(__file__).resolve().parents[2]
SCALE_OUT = ROOT / "config" / "scale-out"
NAMES = ("gw-1", "gw-2")
SUBSCRIBER = "15551234567"
CAMPAIGN_NUMBER = "+15550100"  # the example campaign's first sender number
OPTED_OUT = 0x45
WAIT_S = 30.0  # bound on any one awaited state (HAProxy checks every 2 s, two in a row count)
PRIVACY_KEY = "scale-out-test-key-0123456789"


def haproxy_binary() -> str:
    """The haproxy binary; its absence fails under CI (scripts/test installs it)."""
    # Debian installs it in /usr/sbin, which a non-root PATH may lack.
    binary = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("haproxy is not installed (scripts/test installs Debian's haproxy)")
        pytest.skip("haproxy is not installed")
    return binary


def replace_once(pattern: str, replacement: str, text: str) -> str:
    """``re.sub`` that insists the committed file has exactly one such line."""
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} matched {count} times in the committed example"
    return new


@dataclass
class Instance:
    name: str
    config: dict[str, Any]  # the committed config, as parsed
    smpp_port: int
    admin_port: int
    process: GatewayProcess

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"


def gateway_config(
    name: str, *, sim: Simulator, store_url: str, binds: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The committed config of ``name`` and its text with free ports and loopback hosts."""
    text = (SCALE_OUT / f"gateway-{name[-1]}.toml").read_text()
    committed, data = tomllib.loads(text), tomllib.loads(text)
    assert data["gateway"]["instance"] == name
    host, _, _port = data["server"]["listen"].rpartition(":")
    data["server"]["listen"] = f"{host}:{free_port()}"
    admin_host, _, _port = data["admin"]["listen"].rpartition(":")
    data["admin"]["listen"] = f"{admin_host}:{free_port()}"
    assert data["upstream"]["address"] == "smsc:2776"
    data["upstream"]["address"] = f"127.0.0.1:{sim.port}"
    assert data["store"]["url"] == "redis://redis:6379/0"
    data["store"]["url"] = store_url
    # HAProxy connects from loopback here, not from its compose address.
    assert data["server"]["proxy_networks"] == ["172.28.0.10/32"]
    data["server"]["proxy_networks"] = ["127.0.0.1/32"]
    if binds is not None:
        data["server"]["binds"] = binds
    return committed, to_toml(data)


def haproxy_config(
    instances: list[Instance], frontend: int, stats: int, *, send_proxy: str = "send-proxy-v2"
) -> str:
    text = (SCALE_OUT / "haproxy.cfg").read_text()
    text = replace_once(r"^(\s*default-server .*)\bsend-proxy-v2\b", rf"\1{send_proxy}", text)
    text = replace_once(r"^(\s*bind) :2775$", rf"\1 127.0.0.1:{frontend}", text)
    text = replace_once(r"^(\s*bind) :8404$", rf"\1 127.0.0.1:{stats}", text)
    for gw in instances:
        smpp = gw.config["server"]["listen"].rpartition(":")[2]
        admin = gw.config["admin"]["listen"].rpartition(":")[2]
        text = replace_once(
            rf"^(\s*server {gw.name}) {gw.name}:{smpp} check port {admin}$",
            rf"\1 127.0.0.1:{gw.smpp_port} check port {gw.admin_port}",
            text,
        )
    return text


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@dataclass
class ScaleOut:
    sim: Simulator
    gateways: list[Instance]
    frontend: int
    stats: int

    async def servers(self) -> dict[str, dict[str, str]]:
        """HAProxy's stats page (CSV): one row per server of the ``gateways`` backend."""
        status, body = await asyncio.to_thread(get, f"http://127.0.0.1:{self.stats}/stats;csv")
        assert status == 200, body
        rows = csv.DictReader(io.StringIO(body.lstrip("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == "gateways" and r["svname"] in NAMES}

    async def wait_servers(self, **wanted: str) -> dict[str, dict[str, str]]:
        """Wait until HAProxy reports each named server (gw_1="UP") in that status."""
        want = {name.replace("_", "-"): status for name, status in wanted.items()}
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    servers = await self.servers()
                except urllib.error.URLError:  # HAProxy still starting: its port not open yet
                    servers = {}
                if servers and all(servers[n]["status"] == s for n, s in want.items()):
                    return servers
                await asyncio.sleep(0.2)  # polling another process's state, not a timing check

    async def sessions(self) -> dict[str, dict[str, int]]:
        """Bound client sessions per gateway and bind type, from each gateway's /metrics."""
        found: dict[str, dict[str, int]] = {}
        for gw in self.gateways:
            if gw.process.proc is None:
                continue  # stopped: no sessions, and no admin port to ask
            status, body = await asyncio.to_thread(get, f"{gw.admin}/metrics")
            assert status == 200
            found[gw.name] = {
                m.group(1): int(float(m.group(2)))
                for m in re.finditer(r'^smppgw_sessions\{bind_type="(\w+)"\} (\S+)$', body, re.M)
            }
        return found

    async def totals(self) -> dict[str, int]:
        return {name: sum(by_type.values()) for name, by_type in (await self.sessions()).items()}

    def client(self, bind: str = "transceiver", *, source: str | None = None) -> SmpplibEsme:
        """An smpplib client of account "acme" binding through HAProxy (from the loopback
        address ``source``, where given)."""
        esme = SmpplibEsme(self.frontend, "acme", bind=bind)
        if source is not None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(60)
            sock.bind((source, 0))
            esme.client._socket = sock  # smpplib connects the socket it is given
        return esme

    def peers(self, event: str) -> list[str]:
        """The hosts of the ``peer`` field of every gateway's ``event`` lines."""
        return [
            line["peer"].rpartition(":")[0]
            for gw in self.gateways
            for line in gw.process.events(event)
        ]


@contextlib.contextmanager
def haproxy(config: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    binary = haproxy_binary()
    check = subprocess.run(
        [binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-db", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def bind_status(port: int, system_id: str, password: str, source: str) -> int:
    """One bind_transmitter from the loopback address ``source``; its command_status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        seq = 1
        writer.write(
            encode(p.BindTransmitter(system_id=system_id, password=password, sequence_number=seq))
        )
        async with asyncio.timeout(WAIT_S):
            head = await reader.readexactly(16)
        return int.from_bytes(head[8:12], "big")
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


@contextlib.asynccontextmanager
async def scale_out(
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    *,
    send_proxy: str = "send-proxy-v2",
    binds: dict[str, Any] | None = None,
) -> AsyncIterator[ScaleOut]:
    """Simulator, two gateway processes on one Redis, HAProxy in front; both servers UP."""
    haproxy_binary()
    # [privacy] key_env of the example: one key for both instances.
    monkeypatch.setenv("SMPP_GATEWAY_PRIVACY_KEY", PRIVACY_KEY)
    store_url = f"{redis_server.url}?prefix=t{uuid.uuid4().hex[:12]}"  # apart from other tests
    async with simulator() as sim:
        gateways = []
        for name in NAMES:
            committed, text = gateway_config(name, sim=sim, store_url=store_url, binds=binds)
            parsed = tomllib.loads(text)
            path = tmp_path / f"{name}.toml"
            path.write_text(text)
            port = int(parsed["server"]["listen"].rpartition(":")[2])
            gateways.append(
                Instance(
                    name=name,
                    config=committed,
                    smpp_port=port,
                    admin_port=int(parsed["admin"]["listen"].rpartition(":")[2]),
                    # The state directory is the working directory, as in the container.
                    process=GatewayProcess(path, port, cwd=tmp_path),
                )
            )
        started: list[GatewayProcess] = []
        try:
            for gw in gateways:
                await gw.process.start()
                started.append(gw.process)
            rig = ScaleOut(sim=sim, gateways=gateways, frontend=free_port(), stats=free_port())
            config = tmp_path / "haproxy.cfg"
            config.write_text(
                haproxy_config(gateways, rig.frontend, rig.stats, send_proxy=send_proxy)
            )
            with haproxy(config, tmp_path / "haproxy.log"):
                servers = await rig.wait_servers(gw_1="UP", gw_2="UP")
                # UP by the HTTP check of /readyz (layer 7), not by a TCP connect.
                assert [servers[n]["check_status"] for n in NAMES] == ["L7OK", "L7OK"]
                yield rig
        finally:
            for process in started:
                if process.proc is not None:
                    await process.kill()


class TestScaleOutExample:
    async def test_binds_through_haproxy_land_on_both_gateways(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Six clients bound through HAProxy are spread three and three (balance leastconn),
        and each can send."""
        async with (
            scale_out(tmp_path, redis_server, monkeypatch) as rig,
            contextlib.AsyncExitStack() as stack,
        ):
            clients = [await stack.enter_async_context(rig.client()) for _ in range(6)]
            assert await rig.totals() == {"gw-1": 3, "gw-2": 3}
            for i, client in enumerate(clients):
                assert await client.submit(f"155599900{i:02d}", "hi", source=UNGROUPED) == 0
            assert len(rig.sim.messages) == 6

    async def test_stop_through_one_gateway_is_honoured_by_the_other(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A STOP taken by the gateway of one client refuses the other gateway's next MT to
        that subscriber with 0x45; only the confirmation reaches the SMSC."""
        async with scale_out(tmp_path, redis_server, monkeypatch) as rig:
            campaign = rig.gateways[0].config["campaigns"][0]
            reply = campaign["replies"]["opt_out"]
            before = f"before {campaign['footer_text']}"  # the example's footer = "always"
            async with rig.client("transceiver") as receiver:
                on = await rig.sessions()
                (mo_gateway,) = [name for name, s in on.items() if s.get("transceiver")]
                async with rig.client("transmitter") as sender:
                    on = await rig.sessions()
                    (mt_gateway,) = [name for name, s in on.items() if s.get("transmitter")]
                    assert mt_gateway != mo_gateway  # leastconn: the second bind, the other one
                    # The sender's gateway reads the subscriber (and caches it) first.
                    assert await sender.submit(SUBSCRIBER, "before", source=CAMPAIGN_NUMBER) == 0
                    assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [before]

                    status = await rig.sim.send_mo(
                        source=SUBSCRIBER, destination=CAMPAIGN_NUMBER, text="STOP",
                        system_id="acme",
                    )  # fmt: skip
                    assert status == 0
                    await receiver.wait_until(lambda: receiver.mo_texts() == [b"STOP"])
                    assert await wait_texts(rig.sim, SUBSCRIBER, 2) == [before, reply]

                    assert await sender.submit(SUBSCRIBER, "after", source=CAMPAIGN_NUMBER) == (
                        OPTED_OUT
                    )
                    # The session still carries traffic, and the refused MT never went out.
                    assert await sender.submit(BYSTANDER, "marker", source=UNGROUPED) == 0
                    await rig.sim.wait_for(lambda msgs: msgs[-1].text == "marker")
                    assert texts_to(rig.sim, SUBSCRIBER) == [before, reply]

    async def test_a_stopped_gateway_is_taken_out_and_brought_back(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With gw-2 stopped its health check fails, HAProxy marks it DOWN and every new bind
        goes to gw-1; started again, it is UP and gets the next bind (the emptier one)."""
        async with scale_out(tmp_path, redis_server, monkeypatch) as rig:
            _gw1, gw2 = rig.gateways
            async with contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(rig.client())
                assert await gw2.process.stop() == 0  # SIGTERM: drains, exits 0
                servers = await rig.wait_servers(gw_1="UP", gw_2="DOWN")
                assert servers["gw-2"]["check_status"] != "L7OK"
                for _ in range(4):
                    client = await stack.enter_async_context(rig.client())
                    assert await client.submit(BYSTANDER, "hi", source=UNGROUPED) == 0
                assert await rig.totals() == {"gw-1": 5}

                await gw2.process.start()
                await rig.wait_servers(gw_1="UP", gw_2="UP")
                await stack.enter_async_context(rig.client())
                assert await rig.totals() == {"gw-1": 5, "gw-2": 1}

    async def test_unready_gateways_get_no_clients(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With the SMSC gone, both gateways still listen but their /readyz answers 503:
        HAProxy marks both DOWN by the HTTP status (L7STS) and a client's connection is
        closed without reaching either gateway (its bind could only have failed)."""
        async with scale_out(tmp_path, redis_server, monkeypatch) as rig:
            await rig.sim.stop()
            servers = await rig.wait_servers(gw_1="DOWN", gw_2="DOWN")
            assert [servers[n]["check_status"] for n in NAMES] == ["L7STS", "L7STS"]
            for gw in rig.gateways:
                status, body = await asyncio.to_thread(get, f"{gw.admin}/readyz")
                assert status == 503
                assert "unreachable" in json.loads(body)["checks"]["upstream"]
            # A bind through HAProxy: no gateway to pass it to, so the connection just closes.
            reader, writer = await asyncio.open_connection("127.0.0.1", rig.frontend)
            bind = p.BindTransceiver(system_id="acme", password="pw", sequence_number=1)
            writer.write(encode(bind))
            async with asyncio.timeout(WAIT_S):
                assert await reader.read() == b""
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            assert await rig.totals() == {"gw-1": 0, "gw-2": 0}


class TestClientAddressesThroughHaproxy:
    """send-proxy-v2 (or send-proxy) in haproxy.cfg, server.proxy_protocol in the gateways."""

    async def test_each_client_is_seen_with_its_own_address(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Two clients from 127.0.0.2 and 127.0.0.3 bind through HAProxy (one per gateway):
        the gateways log each bind with the client's address, never HAProxy's."""
        async with (
            scale_out(tmp_path, redis_server, monkeypatch) as rig,
            rig.client(source="127.0.0.2") as first,
            rig.client(source="127.0.0.3") as second,
        ):
            assert await rig.totals() == {"gw-1": 1, "gw-2": 1}
            assert await first.submit(BYSTANDER, "one", source=UNGROUPED) == 0
            assert await second.submit(BYSTANDER, "two", source=UNGROUPED) == 0
            assert sorted(rig.peers("bind_requested")) == ["127.0.0.2", "127.0.0.3"]
            assert sorted(rig.peers("bind_completed")) == ["127.0.0.2", "127.0.0.3"]

    async def test_v1_header_works_too(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With send-proxy (the text header) instead of send-proxy-v2 a client binds, sends,
        and is logged with its own address."""
        async with (
            scale_out(tmp_path, redis_server, monkeypatch, send_proxy="send-proxy") as rig,
            rig.client(source="127.0.0.4") as client,
        ):
            assert await client.submit(BYSTANDER, "v1", source=UNGROUPED) == 0
            assert rig.peers("bind_requested") == ["127.0.0.4"]
            await rig.sim.wait_for(lambda msgs: msgs[-1].text == "v1")

    async def test_a_client_blocked_for_failed_binds_blocks_no_other(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A client failing binds through HAProxy until both gateways refuse it at once does
        not shut out another client behind the same HAProxy (same connecting address)."""
        binds = {"delay_after": 100, "block_after": 3}
        async with scale_out(tmp_path, redis_server, monkeypatch, binds=binds) as rig:
            rig.sim.accounts = {"acme": "pw"}  # the SMSC now refuses other credentials
            statuses = []
            for _ in range(40):
                if all(gw.process.events("bind_throttled") for gw in rig.gateways):
                    break
                statuses.append(await bind_status(rig.frontend, "mallory", "guess", "127.0.0.2"))
            assert all(gw.process.events("bind_throttled") for gw in rig.gateways)
            assert statuses.count(0x0F) == 6  # ESME_RINVSYSID from the SMSC: three per gateway
            assert set(statuses[6:]) <= {0x0D}  # then ESME_RBINDFAIL from the gateways
            assert set(rig.peers("bind_throttled")) == {"127.0.0.2"}
            async with (
                rig.client(source="127.0.0.3") as first,
                rig.client(source="127.0.0.3") as second,
            ):
                assert await rig.totals() == {"gw-1": 1, "gw-2": 1}
                assert await first.submit(BYSTANDER, "still", source=UNGROUPED) == 0
                assert await second.submit(BYSTANDER, "served", source=UNGROUPED) == 0

    async def test_a_direct_connection_is_closed(
        self, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A client that connects to a gateway directly (not from HAProxy's address) is
        closed before its bind is read, and logged."""
        async with scale_out(tmp_path, redis_server, monkeypatch) as rig:
            gw = rig.gateways[0]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", gw.smpp_port, local_addr=("127.0.0.2", 0)
            )
            writer.write(
                encode(p.BindTransceiver(system_id="acme", password="pw", sequence_number=1))
            )
            async with asyncio.timeout(WAIT_S):
                # Closed with the bind unread, the kernel may answer with a reset instead.
                with contextlib.suppress(ConnectionResetError):
                    assert await reader.read() == b""
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            line = await gw.process.wait_for("proxy_header_failed")
            assert line["outcome"] == "untrusted"
            assert line["peer"].startswith("127.0.0.2:")
            assert not gw.process.events("bind_requested")
