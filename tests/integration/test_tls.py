"""TLS on both legs: clients bind over TLS to the gateway, the gateway speaks TLS to the SMSC.

Certificates come from a throwaway CA made with the ``openssl`` command line in a temp dir. The
SMSC is the bundled simulator behind a small TLS-terminating proxy (the simulator speaks plain
TCP), so the gateway's upstream leg really verifies a certificate chain and a host name.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.simulator import Simulator
from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandStatus
from tests.integration.conftest import SIM_SESSION, WAIT_S, RawEsme, running_relay
from tests.support.sim import running_simulator

SMSC_NAME = "smsc.test"
GATEWAY_NAME = "gateway.test"

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@dataclass(frozen=True, slots=True, kw_only=True)
class Pki:
    ca: Path  # the CA both legs trust
    other_ca: Path  # a CA that signed nothing here
    smsc_cert: Path
    smsc_key: Path
    gateway_cert: Path
    gateway_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl(
        "req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt",
        "ec_paramgen_curve:prime256v1", "-keyout", key.name, "-out", cert.name, "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], *, usage: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    extensions = directory / f"{name}.ext"
    extensions.write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName=DNS:{name},DNS:localhost,IP:127.0.0.1\n"
    )
    _openssl(
        "req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", key.name, "-out", csr.name, "-subj", f"/CN={name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", csr.name, "-CA", ca[0].name, "-CAkey", ca[1].name,
        "-CAcreateserial", "-out", cert.name, "-days", "2", "-extfile", extensions.name,
        cwd=directory,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA with certificates for the SMSC, the gateway and a client."""
    directory = tmp_path_factory.mktemp("pki")
    ca = _ca(directory, "test-ca")
    other = _ca(directory, "other-ca")
    smsc = _leaf(directory, SMSC_NAME, ca, usage="serverAuth")
    gateway = _leaf(directory, GATEWAY_NAME, ca, usage="serverAuth")
    client = _leaf(directory, "client.test", ca, usage="clientAuth")
    return Pki(
        ca=ca[0],
        other_ca=other[0],
        smsc_cert=smsc[0],
        smsc_key=smsc[1],
        gateway_cert=gateway[0],
        gateway_key=gateway[1],
        client_cert=client[0],
        client_key=client[1],
    )


class TlsTerminator:
    """Accepts TLS on a loopback port and pipes the plain bytes to ``target_port``."""

    def __init__(self, context: ssl.SSLContext, target_port: int) -> None:
        self.context = context
        self.target_port = target_port
        self.handshakes = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.context)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1  # called only once the TLS handshake succeeded
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        pipes = [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]
        self._tasks.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pipes:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                w.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


@contextlib.asynccontextmanager
async def tls_smsc(pki: Pki) -> AsyncIterator[tuple[Simulator, TlsTerminator]]:
    """The simulator behind a TLS terminator presenting the SMSC's certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.smsc_cert, pki.smsc_key)
    async with running_simulator(control_port=None, session_config=SIM_SESSION) as sim:
        terminator = TlsTerminator(context, sim.port)
        await terminator.start()
        try:
            yield sim, terminator
        finally:
            await terminator.stop()


def gateway_sections(pki: Pki, smsc_port: int, **upstream_tls: Any) -> dict[str, Any]:
    tls = {"ca_file": str(pki.ca), "server_hostname": SMSC_NAME, **upstream_tls}
    return {
        "server": {
            "listen": "127.0.0.1:0",
            "tls": {"cert_file": str(pki.gateway_cert), "key_file": str(pki.gateway_key)},
        },
        "upstream": {"address": f"127.0.0.1:{smsc_port}", "tls": tls},
    }


def client_context(pki: Pki, *, with_certificate: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


async def tls_client(port: int, context: ssl.SSLContext) -> RawEsme:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=GATEWAY_NAME),
        WAIT_S,
    )
    return RawEsme(reader, writer)


async def closed_without_answer(esme: RawEsme) -> bool:
    """True once the peer ended the connection without sending a byte."""
    try:
        async with asyncio.timeout(WAIT_S):
            return await esme.reader.read(1) == b""
    except (ConnectionError, ssl.SSLError):
        return True


class TestTls:
    """Both legs encrypted and verified; failures surface as clear SMPP outcomes."""

    async def test_bind_and_submit_over_tls_both_ways(self, pki: Pki) -> None:
        """A TLS client binds and submits; the gateway reaches the SMSC over verified TLS."""
        async with (
            tls_smsc(pki) as (sim, terminator),
            running_relay(terminator.port, **gateway_sections(pki, terminator.port)) as gw,
        ):
            esme = await tls_client(gw.port, client_context(pki))
            try:
                cipher = esme.writer.get_extra_info("cipher")
                assert cipher is not None
                bound = await esme.request(p.BindTransceiver(system_id="tls", password="pw"))
                assert bound.command_status == CommandStatus.ESME_ROK
                resp = await esme.request(
                    p.SubmitSm(destination_addr="15551234567", short_message=b"over tls")
                )
                assert isinstance(resp, p.SubmitSmResp)
                assert resp.command_status == CommandStatus.ESME_ROK
                assert [m.message_id for m in sim.messages] == [resp.message_id]
                assert terminator.handshakes == 1
                unbind = await esme.request(p.Unbind())
                assert isinstance(unbind, p.UnbindResp)
            finally:
                await esme.close()

    async def test_plain_client_cannot_bind(self, pki: Pki) -> None:
        """A client speaking plain SMPP to the TLS listener gets no bind_resp, only a close."""
        async with (
            tls_smsc(pki) as (sim, terminator),
            running_relay(terminator.port, **gateway_sections(pki, terminator.port)) as gw,
        ):
            esme = await RawEsme.connect(gw.port)
            try:
                await esme.send(p.BindTransceiver(system_id="plain", password="pw"))
                assert await closed_without_answer(esme)
            finally:
                await esme.close()
            assert terminator.handshakes == 0
            assert sim.bound() == []

    async def test_failed_handshake_leaves_no_session(self, pki: Pki) -> None:
        """A client that fails the TLS handshake leaves nothing behind in the listener."""
        async with (
            tls_smsc(pki) as (_sim, terminator),
            running_relay(terminator.port, **gateway_sections(pki, terminator.port)) as gw,
        ):
            esme = await RawEsme.connect(gw.port)
            try:
                await esme.send(p.BindTransceiver(system_id="plain", password="pw"))
                assert await closed_without_answer(esme)
            finally:
                await esme.close()
            assert not gw.listener.bridges

    @pytest.mark.parametrize(
        "upstream_tls",
        [{"ca_file": "other"}, {"server_hostname": "impostor.test"}],
        ids=["wrong-ca", "wrong-hostname"],
    )
    async def test_unverifiable_smsc_fails_the_bind(
        self, pki: Pki, upstream_tls: dict[str, str]
    ) -> None:
        """An SMSC certificate from another CA, or for another name, fails the upstream
        connect; the client's bind gets ESME_RSYSERR (temporary) and nothing reaches the SMSC."""
        if upstream_tls.get("ca_file") == "other":
            upstream_tls = {"ca_file": str(pki.other_ca)}
        sections = gateway_sections(pki, 0, **upstream_tls)
        async with tls_smsc(pki) as (sim, terminator):
            sections["upstream"]["address"] = f"127.0.0.1:{terminator.port}"
            async with running_relay(terminator.port, **sections) as gw:
                esme = await tls_client(gw.port, client_context(pki))
                try:
                    bound = await esme.request(p.BindTransceiver(system_id="tls", password="pw"))
                    assert bound.command_status == CommandStatus.ESME_RSYSERR
                finally:
                    await esme.close()
            assert terminator.handshakes == 0
            assert sim.bound() == []

    async def test_listener_can_require_client_certificates(self, pki: Pki) -> None:
        """With server.tls.ca_file, a client without a certificate from that CA is turned away
        and one with it binds."""
        sections = gateway_sections(pki, 0)
        sections["server"]["tls"]["ca_file"] = str(pki.ca)
        async with tls_smsc(pki) as (sim, terminator):
            sections["upstream"]["address"] = f"127.0.0.1:{terminator.port}"
            async with running_relay(terminator.port, **sections) as gw:
                anonymous = await tls_client(gw.port, client_context(pki))
                try:
                    # TLS 1.3 completes the client's side of the handshake before the server
                    # checks the certificate: the refusal arrives as an alert on the first read.
                    await anonymous.send(p.BindTransceiver(system_id="anon", password="pw"))
                    assert await closed_without_answer(anonymous)
                finally:
                    with contextlib.suppress(ssl.SSLError):
                        await anonymous.close()
                known = await tls_client(gw.port, client_context(pki, with_certificate=True))
                try:
                    bound = await known.request(p.BindTransceiver(system_id="known", password="pw"))
                    assert bound.command_status == CommandStatus.ESME_ROK
                    assert [s.system_id for s in sim.bound()] == ["known"]
                finally:
                    await known.close()
            assert terminator.handshakes == 1

    async def test_system_id_must_be_named_by_the_client_certificate(self, pki: Pki) -> None:
        """With system_id_in_certificate, a client may bind only as a name its certificate
        carries (CN or a DNS subjectAltName): another system_id gets ESME_RBINDFAIL."""
        sections = gateway_sections(pki, 0)
        sections["server"]["tls"]["ca_file"] = str(pki.ca)
        sections["server"]["tls"]["system_id_in_certificate"] = True
        async with tls_smsc(pki) as (sim, terminator):
            sections["upstream"]["address"] = f"127.0.0.1:{terminator.port}"
            async with running_relay(terminator.port, **sections) as gw:
                for system_id, status in (
                    ("someone.else", CommandStatus.ESME_RBINDFAIL),
                    ("CLIENT.TEST", CommandStatus.ESME_ROK),  # compared as system_ids are
                ):
                    esme = await tls_client(gw.port, client_context(pki, with_certificate=True))
                    try:
                        bound = await esme.request(p.BindTransceiver(system_id=system_id))
                        assert bound.command_status == status, system_id
                    finally:
                        with contextlib.suppress(ssl.SSLError, ConnectionError):
                            await esme.close()
                assert [s.system_id for s in sim.bound()] == ["CLIENT.TEST"]

    async def test_admin_api_over_tls(self, pki: Pki) -> None:
        """[admin.tls] serves the admin API over HTTPS; a plain-text request gets nothing."""
        sections = gateway_sections(pki, 0)
        sections["admin"] = {
            "listen": "127.0.0.1:0",
            "tls": {"cert_file": str(pki.gateway_cert), "key_file": str(pki.gateway_key)},
        }
        async with tls_smsc(pki) as (_sim, terminator):
            sections["upstream"]["address"] = f"127.0.0.1:{terminator.port}"
            async with running_relay(terminator.port, **sections) as gw:
                assert gw.admin is not None
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1",
                    gw.admin.port,
                    ssl=client_context(pki),
                    server_hostname=GATEWAY_NAME,
                )
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = await asyncio.wait_for(reader.read(), WAIT_S)
                writer.close()
                assert answer.startswith(b"HTTP/1.1 200")
                reader, writer = await asyncio.open_connection("127.0.0.1", gw.admin.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                with contextlib.suppress(ConnectionError):
                    answer = await asyncio.wait_for(reader.read(), WAIT_S)
                    assert not answer.startswith(b"HTTP/1.1 200")
                writer.close()
