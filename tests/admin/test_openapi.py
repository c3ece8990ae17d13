"""gateway/admin/openapi.json against the real admin API: every documented path and method is
served and answers with a documented status and content type, every endpoint served is
documented, and every JSON answer validates against its documented schema."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from gateway.admin.api import AdminApi, openapi_document
from gateway.config import BearerToken, TokenRole
from gateway.store.memory import MemoryStore
from gateway.telemetry.metrics import Metrics

WRITE = "w-0123456789abcdef"
READ = "r-0123456789abcdef"
TOKENS = (
    BearerToken(name="support-desk", role=TokenRole.WRITE, secret=WRITE.encode()),
    BearerToken(name="auditor", role=TokenRole.READ, secret=READ.encode()),
)
NUMBER = "+15552220000"
DOC: dict[str, Any] = json.loads(openapi_document())


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


async def call(
    port: int,
    method: str,
    path: str,
    *,
    body: Any = None,
    token: str | None = None,
    content_length: int | None = None,
) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Length: {len(data) if content_length is None else content_length}\r\n\r\n"
    writer.write(head.encode() + data)
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    status_line, _, rest = raw.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    fields = dict(line.decode().split(": ", 1) for line in headers.split(b"\r\n") if b": " in line)
    content_type = {k.lower(): v for k, v in fields.items()}["content-type"]
    return Answer(int(status_line.split()[1]), content_type, payload)


async def started(**options: Any) -> AdminApi:
    api = AdminApi(
        metrics=Metrics(),
        instance="test",
        default_country="US",
        **{"store": MemoryStore(), "tokens": TOKENS, "ready": lambda: True, **options},
    )
    await api.start("127.0.0.1", 0)
    return api


@pytest.fixture
async def apis() -> AsyncIterator[dict[str, AdminApi]]:
    """One API as configured normally, and the variants some statuses need."""
    made = {
        "normal": await started(),
        "unready": await started(ready=lambda: False),
        "no_tokens": await started(tokens=()),
        "no_store": await started(store=None),
    }
    try:
        yield made
    finally:
        for api in made.values():
            await api.stop()


# (operation, which API, method, concrete path, request options): each documented status of each
# operation is produced by at least one case (checked below).
CASES: list[tuple[str, str, str, str, dict[str, Any]]] = [
    ("/healthz", "normal", "GET", "/healthz", {}),
    ("/readyz", "normal", "GET", "/readyz", {}),
    ("/readyz", "unready", "GET", "/readyz", {}),
    ("/metrics", "normal", "GET", "/metrics", {}),
    ("/openapi.json", "normal", "GET", "/openapi.json", {}),
    # consent, read
    ("/v1/consent/{number}", "normal", "GET", f"/v1/consent/{NUMBER}", {"token": READ}),
    ("/v1/consent/{number}", "normal", "GET", "/v1/consent/not-a-number", {"token": READ}),
    ("/v1/consent/{number}", "normal", "GET", f"/v1/consent/{NUMBER}", {}),
    ("/v1/consent/{number}", "normal", "GET", f"/v1/consent/{NUMBER}", {"token": "wrong"}),
    ("/v1/consent/{number}", "no_tokens", "GET", f"/v1/consent/{NUMBER}", {"token": READ}),
    ("/v1/consent/{number}", "normal", "GET", f"/v1/consent/{NUMBER}/nope", {"token": READ}),
    ("/v1/consent/{number}", "no_store", "GET", f"/v1/consent/{NUMBER}", {"token": READ}),
    # consent, write
    (
        "/v1/consent/{number}",
        "normal",
        "POST",
        f"/v1/consent/{NUMBER}",
        {"token": WRITE, "body": {"action": "opt_out", "reason": "asked by phone"}},
    ),
    (
        "/v1/consent/{number}",
        "normal",
        "POST",
        f"/v1/consent/{NUMBER}",
        {"token": WRITE, "body": {"action": "opt_out", "reason": "asked again"}},
    ),
    (
        "/v1/consent/{number}",
        "normal",
        "POST",
        f"/v1/consent/{NUMBER}",
        {"token": WRITE, "body": {"action": "dance"}},
    ),
    (
        "/v1/consent/{number}",
        "normal",
        "POST",
        f"/v1/consent/{NUMBER}",
        {"token": READ, "body": {"action": "opt_out"}},
    ),
    ("/v1/consent/{number}", "normal", "POST", f"/v1/consent/{NUMBER}", {"body": {}}),
    (
        "/v1/consent/{number}",
        "normal",
        "POST",
        f"/v1/consent/{NUMBER}",
        {"token": WRITE, "body": {"action": "opt_in", "campaign": "a", "account": "b"}},
    ),
    (
        "/v1/consent/{number}",
        "normal",
        "POST",
        f"/v1/consent/{NUMBER}",
        {"token": WRITE, "content_length": 2 * 1024 * 1024},
    ),
    (
        "/v1/consent/{number}",
        "normal",
        "POST",
        f"/v1/consent/{NUMBER}/x/y",
        {"token": WRITE, "body": {"action": "block"}},
    ),
    (
        "/v1/consent/{number}",
        "no_store",
        "POST",
        f"/v1/consent/{NUMBER}",
        {"token": WRITE, "body": {"action": "block"}},
    ),
    # history (after the changes above: the opt-out and its reason are in it)
    (
        "/v1/consent/{number}/history",
        "normal",
        "GET",
        f"/v1/consent/{NUMBER}/history",
        {"token": READ},
    ),
    (
        "/v1/consent/{number}/history",
        "normal",
        "GET",
        f"/v1/consent/{NUMBER}/history?format=csv&scope=global:*",
        {"token": READ},
    ),
    (
        "/v1/consent/{number}/history",
        "normal",
        "GET",
        f"/v1/consent/{NUMBER}/history?format=xml",
        {"token": READ},
    ),
    ("/v1/consent/{number}/history", "normal", "GET", f"/v1/consent/{NUMBER}/history", {}),
    (
        "/v1/consent/{number}/history",
        "no_tokens",
        "GET",
        f"/v1/consent/{NUMBER}/history",
        {"token": READ},
    ),
    (
        "/v1/consent/{number}/history",
        "normal",
        "GET",
        "/v1/consent/12/history/more",
        {"token": READ},
    ),
    (
        "/v1/consent/{number}/history",
        "no_store",
        "GET",
        f"/v1/consent/{NUMBER}/history",
        {"token": READ},
    ),
]


def schema_validator(schema: dict[str, Any]) -> OAS31Validator:
    """A validator for ``schema`` whose ``#/components/...`` references resolve in DOC."""
    return OAS31Validator({**schema, "components": DOC["components"]})


def operations() -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in DOC["paths"].items()
        for method in item
        if method in ("get", "post", "put", "delete", "patch")
    }


class TestDocument:
    def test_is_a_valid_openapi_3_1_document(self) -> None:
        """The shipped document passes the OpenAPI 3.1 specification validator."""
        assert DOC["openapi"].startswith("3.1")
        validate_spec(DOC)

    async def test_is_served_at_openapi_json(self, apis: dict[str, AdminApi]) -> None:
        """GET /openapi.json answers the shipped document, as JSON."""
        answer = await call(apis["normal"].port, "GET", "/openapi.json")
        assert answer.status == 200
        assert answer.content_type == "application/json"
        assert json.loads(answer.body) == DOC

    def test_every_served_endpoint_is_documented(self) -> None:
        """Each route of the admin server is a documented operation (the consent prefix route
        stands for the number's path and its history)."""
        api = AdminApi(
            metrics=Metrics(), store=None, instance="t", default_country="US", ready=lambda: True
        )
        documented = operations()
        for method, route in api.server.routes:
            if route == "/v1/consent/*":
                paths = ["/v1/consent/{number}"]
                if method == "GET":
                    paths.append("/v1/consent/{number}/history")
            else:
                paths = [route]
            for path in paths:
                assert (path, method) in documented, f"{method} {path} is not documented"

    def test_every_documented_operation_is_served(self) -> None:
        """Each documented path and method reaches a handler of the admin server."""
        api = AdminApi(
            metrics=Metrics(), store=None, instance="t", default_country="US", ready=lambda: True
        )
        for path, method in operations():
            concrete = path.replace("{number}", NUMBER)
            assert api.server._route(method, concrete) is not None, f"{method} {path}"


class TestAnswers:
    async def test_every_answer_is_documented_and_validates(
        self, apis: dict[str, AdminApi]
    ) -> None:
        """Each case answers with a status and content type its operation documents, a JSON
        answer validates against the documented schema, and every documented status of every
        operation is produced by some case."""
        produced: set[tuple[str, str, str]] = set()
        for path, which, method, concrete, options in CASES:
            operation = DOC["paths"][path][method.lower()]
            answer = await call(apis[which].port, method, concrete, **options)
            where = f"{method} {concrete} ({which})"
            status = str(answer.status)
            assert status in operation["responses"], f"{where}: undocumented {status}"
            content = operation["responses"][status]["content"]
            assert answer.content_type in content, f"{where}: {answer.content_type}"
            produced.add((path, method, status))
            media = content[answer.content_type]
            if answer.content_type == "application/json":
                schema_validator(media["schema"]).validate(json.loads(answer.body))
            else:
                assert answer.body.decode()  # text answers (metrics, CSV) are not empty
        documented = {
            (path, method, status)
            for path, method in operations()
            for status in DOC["paths"][path][method.lower()]["responses"]
        }
        assert documented - produced == set()

    async def test_history_rows_validate_with_a_confirmation_and_a_reply_row(self) -> None:
        """A history with an event, its confirmation and a HELP reply row validates too."""
        from gateway.consent.model import Actor, ConsentEvent, ConsentState
        from gateway.store.base import ReplyOutcome, ReplyRecord

        store = MemoryStore()
        await store.append(
            ConsentEvent(
                event_id="e1", at=1_700_000_000.0, subscriber="15552220000", scope="global:*",
                state=ConsentState.OPTED_OUT, actor=Actor.KEYWORD, words="STOP",
                sender="15550100", campaign="acme", system_id="acme", instance="gw",
            )
        )  # fmt: skip
        for reply_id, event_id, kind in (("r1", "e1", "opt_out"), ("r2", None, "help")):
            await store.record_reply(
                ReplyRecord(
                    reply_id=reply_id, event_id=event_id, subscriber="15552220000", kind=kind,
                    text="ACME: ...", source="15550100", destination="15552220000",
                    at=1_700_000_001.0, outcome=ReplyOutcome.ACCEPTED, command_status=0,
                    status="ESME_ROK", message_ids=("m1",), answered_at=1_700_000_001.5,
                    words="HELP" if event_id is None else None,
                )
            )  # fmt: skip
        api = await started(store=store)
        try:
            answer = await call(api.port, "GET", f"/v1/consent/{NUMBER}/history", token=READ)
        finally:
            await api.stop()
        rows = json.loads(answer.body)["events"]
        assert [row["record"] for row in rows] == ["event", "reply"]
        assert rows[0]["confirmation"]["reply_id"] == "r1"
        operation = DOC["paths"]["/v1/consent/{number}/history"]["get"]
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        schema_validator(schema).validate(json.loads(answer.body))
