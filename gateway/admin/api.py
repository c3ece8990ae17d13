"""The admin HTTP API: health, readiness, Prometheus metrics, consent read/write.

``openapi.json`` beside this module describes every endpoint (served at ``/openapi.json``;
tests/admin/test_openapi.py holds it to what the endpoints answer).

``/healthz``, ``/readyz``, ``/metrics`` and ``/openapi.json`` are open (probes and scrapers run
without secrets; bind the admin listener to loopback or a management network). The consent
endpoints need ``Authorization: Bearer <token>`` with one of the ``[[admin.tokens]]`` (or
``admin.token``): a missing or wrong token is 401, a ``read`` token's change 403; without any
token configured they answer 403. A change records the token's name as its ``by``; a change to the
state the subscriber already has records nothing and answers ``"changed": false``.

- ``GET  /v1/consent/{number}``          current state per scope and the deciding state
- ``GET  /v1/consent/{number}/history``  every event, oldest first, with the confirmation sent
  for it (``?scope=KEY`` to filter; ``?format=csv`` for CSV, as ``consent history`` prints it)
- ``POST /v1/consent/{number}``          ``{"action": "opt_out" | "opt_in" | "block" | "unblock",
  "reason": "...", "campaign"/"account"/"sender"/"list": "..."}`` (a scope option for opt-out /
  opt-in; none means everything)
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from importlib import resources
from socket import socket
from ssl import SSLContext
from typing import Any
from urllib.parse import unquote

from gateway.admin.http import HttpError, HttpServer, Request, Response, json_response
from gateway.config import LEGACY_TOKEN_NAME, BearerToken, TokenRole
from gateway.consent.campaign import AccountMatch
from gateway.consent.model import Actor, ConsentState
from gateway.consent.numbers import normalise
from gateway.store.base import ConsentStore, StoreError, StoreUnavailableError
from gateway.store.evidence import history_rows, render_csv
from gateway.store.staff import (
    StaffChange,
    StaffError,
    event_json,
    scope_from,
    set_blocked,
    set_state,
    summary,
    utc_stamp,
)
from gateway.telemetry.metrics import Metrics

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CSV_TEXT = "text/csv; charset=utf-8; header=present"


def openapi_document() -> bytes:
    """The OpenAPI 3.1 description of this API, as shipped in the package."""
    return resources.files("gateway.admin").joinpath("openapi.json").read_bytes()


class AdminApi:
    def __init__(
        self,
        *,
        metrics: Metrics,
        store: ConsentStore | None,
        tokens: Sequence[BearerToken] = (),
        token: str | None = None,  # one write token named "admin" (as admin.token configures)
        instance: str,
        default_country: str,
        ready: Callable[[], bool],
        upstream: Callable[[], Awaitable[str | None]] | None = None,
        account_match: AccountMatch = AccountMatch.FOLD,
        render_metrics: Callable[[], Awaitable[bytes]] | None = None,
        workers: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.metrics = metrics
        # A supervisor's admin API (gateway.workers): /metrics sums its workers' samples,
        # and /readyz has a "workers" check (None: every worker ready, or the reason).
        self.render_metrics = render_metrics
        self.workers = workers
        self.store = store
        self.tokens = tuple(tokens)
        if token:
            self.tokens += (
                BearerToken(name=LEGACY_TOKEN_NAME, role=TokenRole.WRITE, secret=token.encode()),
            )
        self.instance = instance
        self.default_country = default_country
        self.ready = ready
        # None, or the reason the SMSC cannot be reached (gateway.proxy.probe, via the app).
        self.upstream = upstream
        self.account_match = account_match
        self._openapi = openapi_document()
        self.server = HttpServer(
            {
                ("GET", "/healthz"): self.healthz,
                ("GET", "/readyz"): self.readyz,
                ("GET", "/metrics"): self.metrics_text,
                ("GET", "/openapi.json"): self.openapi,
                ("GET", "/v1/consent/*"): self.consent_get,
                ("POST", "/v1/consent/*"): self.consent_post,
            },
            name="admin",
        )

    async def start(
        self, host: str, port: int, ssl: SSLContext | None = None, *, sock: socket | None = None
    ) -> None:
        await self.server.start(host, port, ssl=ssl, sock=sock)

    async def stop(self) -> None:
        await self.server.stop()

    @property
    def port(self) -> int:
        return self.server.port

    async def healthz(self, _request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(self, _request: Request) -> Response:
        """200 while accepting and the store answers; 503 with ``problems`` otherwise (a
        failed-closed store gives its reason). ``store.records`` is the record count whenever
        it can be read, so an empty store where a full one belongs shows."""
        problems = []
        body: dict[str, Any] = {}
        checks: dict[str, str] = {"accepting": "ok"}
        if not self.ready():
            problems.append("not accepting connections")
            checks["accepting"] = "not accepting connections"
        if self.store is not None:
            checks["store"] = "ok"
            try:
                await self.store.ping()
                body["store"] = {"records": await self.store.record_count()}
            except StoreError as exc:
                problems.append(f"store: {exc}")
                checks["store"] = str(exc)
        if self.workers is not None:
            reason = await self.workers()
            checks["workers"] = reason or "ok"
            if reason is not None:
                problems.append(f"workers: {reason}")
        if self.upstream is not None:
            reason = await self.upstream()
            checks["upstream"] = reason or "ok"
            if reason is not None:
                problems.append(f"upstream: {reason}")
        body["checks"] = checks
        if problems:
            return json_response({"status": "unready", "problems": problems, **body}, 503)
        return json_response({"status": "ready", **body})

    async def metrics_text(self, _request: Request) -> Response:
        if self.render_metrics is not None:
            return Response(body=await self.render_metrics(), content_type=PROMETHEUS_TEXT)
        return Response(body=self.metrics.render(), content_type=PROMETHEUS_TEXT)

    async def openapi(self, _request: Request) -> Response:
        return Response(body=self._openapi, content_type="application/json")

    # --- consent ------------------------------------------------------------------------------

    def _authorise(self, request: Request, *, write: bool) -> tuple[ConsentStore, BearerToken]:
        """The store and the token the request carries; 401 for a missing or wrong token, 403
        for a change with a read token."""
        if not self.tokens:
            raise HttpError(HTTPStatus.FORBIDDEN, "consent API disabled: configure admin.tokens")
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # Compared as octets: a token with characters outside ASCII is simply wrong (401), it
        # must not make compare_digest raise (500). Every token is compared (no early exit),
        # so the time taken does not tell which one came closest.
        offered = value.strip().encode("utf-8", "surrogateescape")
        found: BearerToken | None = None
        for token in self.tokens:
            if hmac.compare_digest(offered, token.secret) and found is None:
                found = token
        if scheme.lower() != "bearer" or found is None:
            raise HttpError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")
        if write and found.role is not TokenRole.WRITE:
            raise HttpError(
                HTTPStatus.FORBIDDEN, f"token {found.name!r} may only read (role {found.role})"
            )
        if self.store is None:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, "consent is disabled")
        return self.store, found

    def _subscriber(self, text: str) -> str:
        ton = 1 if text.startswith("+") else 0
        address = normalise(text, ton, 1, self.default_country)
        if address is None or not address.is_subscriber:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"not a phone number: {text!r}")
        return address.value

    def _parse_path(self, path: str) -> tuple[str, str | None]:
        rest = unquote(path.removeprefix("/v1/consent/")).strip("/")
        number, _, tail = rest.partition("/")
        if not number or tail not in ("", "history"):
            raise HttpError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        return self._subscriber(number), tail or None

    async def consent_get(self, request: Request) -> Response:
        store, _token = self._authorise(request, write=False)
        subscriber, tail = self._parse_path(request.path)
        try:
            if tail == "history":
                return await self._history(store, subscriber, request)
            records = await store.current(subscriber)
        except StoreUnavailableError as exc:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"store unavailable: {exc}") from None
        state = summary(records) if records else ConsentState.UNKNOWN
        return json_response(
            {
                "subscriber": subscriber,
                "state": state.value,
                "scopes": [
                    {
                        "scope": r.scope,
                        "state": r.state.value,
                        "updated_at": utc_stamp(r.updated_at),
                    }
                    for r in sorted(records.values(), key=lambda r: r.scope)
                ],
            }
        )

    async def _history(self, store: ConsentStore, subscriber: str, request: Request) -> Response:
        """The rows of ``consent history`` (gateway.store.evidence): JSON, or CSV."""
        fmt = request.query.get("format", ["json"])[0]
        if fmt not in ("json", "csv"):
            raise HttpError(HTTPStatus.BAD_REQUEST, "format must be json or csv")
        rows = await history_rows(store, subscriber, request.query.get("scope", [None])[0])
        if fmt == "csv":
            return Response(body=render_csv(rows).encode(), content_type=CSV_TEXT)
        return json_response({"subscriber": subscriber, "events": rows})

    async def consent_post(self, request: Request) -> Response:
        store, token = self._authorise(request, write=True)
        subscriber, tail = self._parse_path(request.path)
        if tail is not None:
            raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")
        body = request.json()
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        action = body.get("action")
        reason = body.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise HttpError(HTTPStatus.BAD_REQUEST, "reason must be a string")
        instance = f"{self.instance}/api"
        try:
            if action in ("opt_out", "opt_in"):
                options = {k: body.get(k) for k in ("campaign", "account", "sender", "list")}
                if any(v is not None and not isinstance(v, str) for v in options.values()):
                    raise HttpError(HTTPStatus.BAD_REQUEST, "scope options must be strings")
                sender = options["sender"]
                scope = scope_from(
                    campaign=options["campaign"],
                    account=options["account"],
                    sender=self._subscriber(sender) if sender else None,
                    list_name=options["list"],
                    account_match=self.account_match,
                )
                state = ConsentState.OPTED_OUT if action == "opt_out" else ConsentState.OPTED_IN
                change: StaffChange = await set_state(
                    store,
                    subscriber=subscriber,
                    scope=scope,
                    state=state,
                    actor=Actor.API,
                    reason=reason,
                    instance=instance,
                    by=token.name,
                )
            elif action in ("block", "unblock"):
                change = await set_blocked(
                    store,
                    subscriber=subscriber,
                    blocked=action == "block",
                    actor=Actor.API,
                    reason=reason,
                    instance=instance,
                    by=token.name,
                )
            else:
                raise HttpError(
                    HTTPStatus.BAD_REQUEST, "action must be opt_out, opt_in, block or unblock"
                )
        except StaffError as exc:
            raise HttpError(HTTPStatus.CONFLICT, str(exc)) from None
        except StoreUnavailableError as exc:
            raise HttpError(HTTPStatus.SERVICE_UNAVAILABLE, f"store unavailable: {exc}") from None
        answer = {
            "subscriber": subscriber,
            "changed": change.changed,
            "scope": change.scope,
            "state": change.state.value,
        }
        if change.event is None:
            return json_response(answer)
        return json_response({**answer, "event": event_json(change.event)}, HTTPStatus.CREATED)
