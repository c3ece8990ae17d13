"""The admin HTTP API over a real socket: probes, metrics and the consent endpoints."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.admin.api import AdminApi
from gateway.store.factory import open_store
from gateway.store.memory import MemoryStore
from gateway.telemetry.metrics import Metrics

TOKEN = "s3cret-token"


async def request(
    port: int, method: str, path: str, body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Length: {len(data)}\r\n\r\n"
    writer.write(head.encode() + data)
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    _headers, _, payload = rest.partition(b"\r\n\r\n")
    status = int(status_line.split()[1])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, payload.decode()


@pytest.fixture
async def api() -> AsyncIterator[AdminApi]:
    ready = {"value": True}
    admin = AdminApi(
        metrics=Metrics(),
        store=MemoryStore(),
        token=TOKEN,
        instance="test",
        default_country="US",
        ready=lambda: ready["value"],
    )
    await admin.start("127.0.0.1", 0)
    admin.ready_flag = ready  # type: ignore[attr-defined]
    try:
        yield admin
    finally:
        await admin.stop()


class TestProbes:
    async def test_healthz_answers_without_a_token(self, api: AdminApi) -> None:
        """/healthz is open and says ok."""
        assert await request(api.port, "GET", "/healthz", token=None) == (200, {"status": "ok"})

    async def test_readyz_follows_the_listener(self, api: AdminApi) -> None:
        """/readyz is 200 while accepting and 503 once the gateway stops accepting."""
        assert (await request(api.port, "GET", "/readyz"))[0] == 200
        api.ready_flag["value"] = False  # type: ignore[attr-defined]
        status, body = await request(api.port, "GET", "/readyz")
        assert status == 503
        assert "not accepting connections" in body["problems"]

    async def test_readyz_reports_the_record_count(self, api: AdminApi) -> None:
        """/readyz tells how many consent records the store holds, ready or not."""
        status, body = await request(api.port, "GET", "/readyz")
        assert (status, body["status"], body["store"]) == (200, "ready", {"records": 0})
        assert body["checks"] == {"accepting": "ok", "store": "ok"}
        await request(api.port, "POST", "/v1/consent/15551234567", {"action": "opt_out"})
        api.ready_flag["value"] = False  # type: ignore[attr-defined]
        status, body = await request(api.port, "GET", "/readyz")
        assert (status, body["store"]) == (503, {"records": 1})

    async def test_readyz_is_503_while_the_store_is_failed_closed(self, tmp_path: Path) -> None:
        """A store whose directory was moved away: /readyz 503 with the reason (and no count it
        cannot read); moved back and recovered: 200 with the count again."""
        state = tmp_path / "state"
        store = await open_store(
            f"sqlite://{state}/consent.db?recovery_interval_s=0.02", instance="t", create=True
        )
        admin = AdminApi(
            metrics=Metrics(),
            store=store,
            token=TOKEN,
            instance="t",
            default_country="US",
            ready=lambda: True,
        )
        await admin.start("127.0.0.1", 0)
        try:
            await request(admin.port, "POST", "/v1/consent/15551234567", {"action": "opt_out"})
            assert (await request(admin.port, "GET", "/readyz"))[1]["store"] == {"records": 1}
            await asyncio.to_thread(state.rename, tmp_path / "away")
            status, body = await request(admin.port, "GET", "/readyz")
            assert status == 503
            assert "store" not in body
            (problem,) = body["problems"]
            assert "consent.db was removed or its directory moved away" in problem
            status, body = await request(admin.port, "GET", "/v1/consent/15551234567")
            assert status == 503
            await asyncio.to_thread((tmp_path / "away").rename, state)
            await store.wait_healthy(10.0)
            status, body = await request(admin.port, "GET", "/readyz")
            assert (status, body["status"], body["store"]) == (200, "ready", {"records": 1})
        finally:
            await admin.stop()
            await store.close()

    async def test_metrics_are_prometheus_text(self, api: AdminApi) -> None:
        """/metrics serves the exposition format with the gateway's metric names."""
        status, body = await request(api.port, "GET", "/metrics", token=None)
        assert status == 200
        assert "smppgw_mt_rejected_total" in body


class TestConsent:
    async def test_token_is_required(self, api: AdminApi) -> None:
        """Without the bearer token the consent endpoints answer 401."""
        assert (await request(api.port, "GET", "/v1/consent/15551234567", token=None))[0] == 401
        assert (await request(api.port, "GET", "/v1/consent/15551234567", token="nope"))[0] == 401

    async def test_opt_out_then_show_and_history(self, api: AdminApi) -> None:
        """An opt-out through the API is stored with actor api and shows in state and history."""
        status, body = await request(
            api.port,
            "POST",
            "/v1/consent/%2B1%20555%20123%204567",
            {"action": "opt_out", "reason": "asked by phone"},
        )
        assert status == 201
        assert body["event"]["actor"] == "api"
        assert body["event"]["subscriber"] == "15551234567"
        status, body = await request(api.port, "GET", "/v1/consent/5551234567")
        assert (status, body["state"]) == (200, "opted_out")
        status, body = await request(api.port, "GET", "/v1/consent/15551234567/history")
        assert [e["words"] for e in body["events"]] == ["asked by phone"]

    async def test_opt_in_of_a_blocked_number_is_refused(self, api: AdminApi) -> None:
        """A blocked number cannot be opted in: 409 names the reason; unblock keeps it opted out."""
        assert (await request(api.port, "POST", "/v1/consent/15551234567", {"action": "block"}))[
            0
        ] == 201
        status, body = await request(
            api.port, "POST", "/v1/consent/15551234567", {"action": "opt_in"}
        )
        assert status == 409
        assert "unblock" in body["error"]
        await request(api.port, "POST", "/v1/consent/15551234567", {"action": "unblock"})
        _, body = await request(api.port, "GET", "/v1/consent/15551234567")
        assert body["state"] == "opted_out"

    @pytest.mark.parametrize(
        ("path", "body", "status"),
        [
            ("/v1/consent/ACME", {"action": "opt_out"}, 400),
            ("/v1/consent/15551234567", {"action": "delete"}, 400),
            ("/v1/consent/15551234567", ["opt_out"], 400),
            ("/v1/consent/15551234567/other", None, 404),
        ],
        ids=["alphanumeric", "unknown-action", "not-an-object", "unknown-path"],
    )
    async def test_bad_requests_get_clear_errors(
        self, api: AdminApi, path: str, body: Any, status: int
    ) -> None:
        """Malformed requests are answered with a 4xx and an error message, never a 500."""
        method = "GET" if body is None else "POST"
        got, payload = await request(api.port, method, path, body)
        assert got == status
        assert payload["error"]

    async def test_disabled_without_a_token(self) -> None:
        """With no token configured, the consent endpoints answer 403."""
        admin = AdminApi(
            metrics=Metrics(),
            store=MemoryStore(),
            token=None,
            instance="t",
            default_country="US",
            ready=lambda: True,
        )
        await admin.start("127.0.0.1", 0)
        try:
            assert (await request(admin.port, "GET", "/v1/consent/15551234567"))[0] == 403
        finally:
            await admin.stop()


class TestHostileRequests:
    @pytest.mark.parametrize(
        "token",
        ["sécret-token", "\u2603" * 20, "s3cret-token\u00a0"],
        ids=["accent", "snowman", "nbsp"],
    )
    async def test_malformed_token_is_401(self, api: AdminApi, token: str) -> None:
        """A bearer token with characters outside ASCII is a wrong token (401), not a 500."""
        status, _ = await request(api.port, "GET", "/v1/consent/15551234567", token=token)
        assert status == 401


class TestReadinessChecks:
    async def test_unreachable_smsc_is_unready_with_the_reason(self) -> None:
        """/readyz is 503 while the SMSC cannot be reached, and names the failed check."""
        from gateway.proxy.probe import UpstreamProbe
        from tests.support.consent import free_port

        probe = UpstreamProbe("127.0.0.1", free_port(), cache_s=0.0)
        admin = AdminApi(
            metrics=Metrics(),
            store=MemoryStore(),
            token=TOKEN,
            instance="test",
            default_country="US",
            ready=lambda: True,
            upstream=probe.check,
        )
        await admin.start("127.0.0.1", 0)
        try:
            status, body = await request(admin.port, "GET", "/readyz", token=None)
        finally:
            await admin.stop()
        assert status == 503
        assert body["checks"]["upstream"].startswith("SMSC 127.0.0.1:")
        assert "unreachable" in body["checks"]["upstream"]
        assert body["checks"]["store"] == "ok"
        assert any(p.startswith("upstream: ") for p in body["problems"])

    async def test_reachable_smsc_is_ready(self) -> None:
        """A listening SMSC makes the upstream check pass (one connect, cached)."""
        from gateway.proxy.probe import UpstreamProbe

        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        probe = UpstreamProbe("127.0.0.1", port)
        try:
            assert await probe.check() is None
            assert await probe.check() is None  # from the cache
        finally:
            server.close()
            await server.wait_closed()
