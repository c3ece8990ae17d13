"""The admin HTTP API over a real socket: probes, metrics and the consent endpoints."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.admin.api import AdminApi
from gateway.config import BearerToken, TokenRole, parse
from gateway.store.factory import open_store
from gateway.store.memory import MemoryStore
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

TOKEN = "s3cret-token"
WRITE_TOKEN = "w-0123456789abcdef"
READ_TOKEN = "r-0123456789abcdef"
NAMED_TOKENS = (
    BearerToken(name="support-desk", role=TokenRole.WRITE, secret=WRITE_TOKEN.encode()),
    BearerToken(name="auditor", role=TokenRole.READ, secret=READ_TOKEN.encode()),
)


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
        assert body["event"]["by"] == "admin"  # the token's name: admin.token is "admin"
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


@pytest.fixture
async def named() -> AsyncIterator[AdminApi]:
    """The API with two named tokens: support-desk (write) and auditor (read)."""
    admin = AdminApi(
        metrics=Metrics(),
        store=MemoryStore(),
        tokens=NAMED_TOKENS,
        instance="gw-1",
        default_country="US",
        ready=lambda: True,
    )
    await admin.start("127.0.0.1", 0)
    try:
        yield admin
    finally:
        await admin.stop()


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """The gateway's log configured as the daemon does, into a buffer."""
    stream = io.StringIO()
    logs.configure(level="info", stream=stream)
    yield stream
    structlog.reset_defaults()


def consent_changed(stream: io.StringIO) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in lines if line["event"] == "consent_changed"]


POST = "/v1/consent/15551234567"


class TestNamedTokens:
    """Several tokens, each with a name (recorded as ``by``) and a role (read or write)."""

    async def test_change_records_the_token_name(self, named: AdminApi) -> None:
        """A change made with a named token carries its name in the answer and the history."""
        status, body = await request(
            named.port, "POST", POST, {"action": "opt_out", "reason": "call"}, token=WRITE_TOKEN
        )
        assert status == 201
        assert (body["changed"], body["scope"], body["state"]) == (True, "global:*", "opted_out")
        assert (body["event"]["by"], body["event"]["actor"]) == ("support-desk", "api")
        assert body["event"]["instance"] == "gw-1/api"
        status, body = await request(named.port, "GET", f"{POST}/history", token=READ_TOKEN)
        assert status == 200
        assert [(e["by"], e["actor"]) for e in body["events"]] == [("support-desk", "api")]

    async def test_read_token_reads_and_may_not_change(self, named: AdminApi) -> None:
        """A read token: 200 on the GET endpoints, 403 (JSON error) on a change, nothing
        recorded."""
        for path in (POST, f"{POST}/history"):
            assert (await request(named.port, "GET", path, token=READ_TOKEN))[0] == 200
        for action in ("opt_out", "opt_in", "block", "unblock"):
            status, body = await request(
                named.port, "POST", POST, {"action": action}, token=READ_TOKEN
            )
            assert status == 403
            assert "auditor" in body["error"]
            assert "read" in body["error"]
        _, body = await request(named.port, "GET", f"{POST}/history", token=WRITE_TOKEN)
        assert body["events"] == []

    @pytest.mark.parametrize(
        "token",
        [None, "", "nope", WRITE_TOKEN[:-1], WRITE_TOKEN + "x", f"{READ_TOKEN} {WRITE_TOKEN}"],
        ids=["none", "empty", "wrong", "prefix", "longer", "both"],
    )
    async def test_other_tokens_are_401(self, named: AdminApi, token: str | None) -> None:
        """Anything but one configured token exactly is 401, read or write."""
        for method, body in (("GET", None), ("POST", {"action": "opt_out"})):
            assert (await request(named.port, method, POST, body, token=token))[0] == 401

    async def test_legacy_token_is_a_write_token_named_admin(self, api: AdminApi) -> None:
        """The single admin.token of earlier versions still works and is recorded as admin."""
        status, body = await request(api.port, "POST", POST, {"action": "block"})
        assert status == 201
        assert body["event"]["by"] == "admin"

    async def test_tokens_from_the_config_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """[[admin.tokens]] from the config, secrets from the environment and a private file,
        reach the API as configured."""
        secret_file = tmp_path / "ops.token"
        secret_file.write_text("file-secret-123\n")
        secret_file.chmod(0o600)
        monkeypatch.setenv("SMPP_GW_TEST_AUDIT_TOKEN", "env-secret-456")
        config = parse(
            {
                "upstream": {"address": "127.0.0.1:2776"},
                "admin": {
                    "listen": "127.0.0.1:0",
                    "tokens": [
                        {"name": "ops", "role": "write", "token_file": str(secret_file)},
                        {"name": "audit", "role": "read", "token_env": "SMPP_GW_TEST_AUDIT_TOKEN"},
                    ],
                },
            }
        )
        admin = AdminApi(
            metrics=Metrics(),
            store=MemoryStore(),
            tokens=config.admin.bearer_tokens(),
            instance="t",
            default_country="US",
            ready=lambda: True,
        )
        await admin.start("127.0.0.1", 0)
        try:
            status, body = await request(
                admin.port, "POST", POST, {"action": "opt_out"}, token="file-secret-123"
            )
            assert (status, body["event"]["by"]) == (201, "ops")
            assert (await request(admin.port, "GET", POST, token="env-secret-456"))[0] == 200
            status, _ = await request(
                admin.port, "POST", POST, {"action": "opt_in"}, token="env-secret-456"
            )
            assert status == 403
        finally:
            await admin.stop()


class TestIdempotentChanges:
    """A change to the state the number already has: 200, ``"changed": false``, no event."""

    @pytest.mark.parametrize(
        ("action", "extra", "state"),
        [
            ("opt_out", {}, "opted_out"),
            ("opt_out", {"campaign": "acme"}, "opted_out"),
            ("opt_in", {"sender": "+15557654321"}, "opted_in"),
            ("block", {}, "blocked"),
        ],
    )
    async def test_repeat_is_unchanged(
        self, named: AdminApi, action: str, extra: dict[str, str], state: str
    ) -> None:
        """The first request is 201 changed, the repeat 200 unchanged with the state."""
        body = {"action": action, **extra}
        status, first = await request(named.port, "POST", POST, body, token=WRITE_TOKEN)
        assert (status, first["changed"]) == (201, True)
        status, second = await request(named.port, "POST", POST, body, token=WRITE_TOKEN)
        assert status == 200
        assert second == {
            "subscriber": "15551234567",
            "changed": False,
            "scope": first["scope"],
            "state": state,
        }
        _, history = await request(named.port, "GET", f"{POST}/history", token=WRITE_TOKEN)
        assert len(history["events"]) == 1

    async def test_opt_out_of_a_blocked_number_is_unchanged(self, named: AdminApi) -> None:
        """An opt-out cannot replace a block: unchanged, still blocked; unblock of a number
        that is not blocked is unchanged too."""
        await request(named.port, "POST", POST, {"action": "block"}, token=WRITE_TOKEN)
        status, body = await request(
            named.port, "POST", POST, {"action": "opt_out"}, token=WRITE_TOKEN
        )
        assert (status, body["changed"], body["state"]) == (200, False, "blocked")
        _, shown = await request(named.port, "GET", POST, token=READ_TOKEN)
        assert shown["state"] == "blocked"
        await request(named.port, "POST", POST, {"action": "unblock"}, token=WRITE_TOKEN)
        status, body = await request(
            named.port, "POST", POST, {"action": "unblock"}, token=WRITE_TOKEN
        )
        assert (status, body["changed"], body["state"]) == (200, False, "opted_out")


class TestChangesAreLogged:
    """Every real API change writes one consent_changed line naming the token."""

    async def test_consent_changed_with_the_token_name(
        self, named: AdminApi, log_output: io.StringIO
    ) -> None:
        """Opt-out, its repeat, then block: two lines, with by, actor api, the scope, the
        masked subscriber and the event id the API answered with."""
        answers = []
        for action in ("opt_out", "opt_out", "block"):
            _, body = await request(
                named.port, "POST", POST, {"action": action, "campaign": None}, token=WRITE_TOKEN
            )
            answers.append(body)
        lines = consent_changed(log_output)
        assert [line["event_id"] for line in lines] == [
            answers[0]["event"]["event_id"],
            answers[2]["event"]["event_id"],
        ]
        for line, state in zip(lines, ("opted_out", "blocked"), strict=True):
            assert (line["state"], line["scope"], line["actor"], line["by"]) == (
                state,
                "global:*",
                "api",
                "support-desk",
            )
            assert line["instance"] == "gw-1/api"
            assert line["subscriber"] == logs.mask_subscriber("15551234567")
        assert "15551234567" not in log_output.getvalue()
        assert WRITE_TOKEN not in log_output.getvalue()


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
