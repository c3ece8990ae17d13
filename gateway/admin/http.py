"""A minimal HTTP/1.1 server on asyncio streams, for small JSON endpoints (the admin API, the
simulator's control endpoint).

Enough for scripts, curl and urllib: one request at a time per connection, bodies framed by
Content-Length only (no chunked encoding), keep-alive unless the client asks to close. Handlers
are coroutines keyed by (method, path); anything else gets a plain JSON error. The standard
library's http.server is thread-based and would block the event loop the SMPP side runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from ssl import SSLContext
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gateway.telemetry import logs

log = logs.get_logger()

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 1024 * 1024
IDLE_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""

    def json(self) -> Any:
        """The body parsed as JSON (an empty body is ``{}``); raises HttpError 400."""
        if not self.body.strip():
            return {}
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"body is not JSON: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    status: int = HTTPStatus.OK
    body: bytes = b""
    content_type: str = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)  # more headers (names as sent)


class HttpError(Exception):
    """Raised by a handler (or the parser) to answer with ``status`` and a JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Handler = Callable[[Request], Awaitable[Response]]


def json_response(value: object, status: int = HTTPStatus.OK) -> Response:
    return Response(status=status, body=json.dumps(value).encode() + b"\n")


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


class HttpServer:
    """Serves ``routes`` on one TCP port until ``stop``.

    A route's path ending in ``/*`` matches every path under it (the handler reads the rest from
    ``request.path``).
    """

    def __init__(self, routes: Mapping[tuple[str, str], Handler], *, name: str = "control") -> None:
        self.routes = dict(routes)
        self.name = name
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(
        self,
        host: str,
        port: int,
        ssl: SSLContext | None = None,
        *,
        sock: socket.socket | None = None,
    ) -> None:
        """Listen on host:port, or serve on the listening ``sock`` (a Unix socket too)."""
        if sock is not None:
            self._server = await asyncio.start_server(self._serve, sock=sock, ssl=ssl)
            log.info(logs.LISTENER_STARTED, component=self.name, listen=str(sock.getsockname()))
            return
        self._server = await asyncio.start_server(self._serve, host, port, ssl=ssl)
        log.info(logs.LISTENER_STARTED, component=self.name, listen=f"{host}:{self.port}")

    async def stop(self) -> None:
        server = self._server
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()
        # Python 3.11's wait_closed does not wait for open connections, hence the close above.
        await server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    request = await asyncio.wait_for(_read_request(reader), IDLE_TIMEOUT_S)
                except HttpError as exc:
                    await _write(writer, error_response(exc.status, exc.message), close=True)
                    return
                if request is None:
                    return  # the client closed between requests
                response = await self._dispatch(request)
                close = request.headers.get("connection", "").lower() == "close"
                await _write(writer, response, close=close)
                if close:
                    return
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> Handler | None:
        handler = self.routes.get((method, path))
        if handler is not None:
            return handler
        for (route_method, route_path), prefix_handler in self.routes.items():
            if (
                route_method == method
                and route_path.endswith("/*")
                and path.startswith(route_path[:-1])
            ):
                return prefix_handler
        return None

    def _known_path(self, path: str) -> bool:
        return any(
            p == path or (p.endswith("/*") and path.startswith(p[:-1])) for _, p in self.routes
        )

    async def _dispatch(self, request: Request) -> Response:
        handler = self._route(request.method, request.path)
        if handler is None:
            if self._known_path(request.path):
                return error_response(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")
            return error_response(HTTPStatus.NOT_FOUND, f"no such endpoint: {request.path}")
        try:
            return await handler(request)
        except HttpError as exc:
            return error_response(exc.status, exc.message)
        except Exception:  # a request boundary: answer 500, keep serving
            log.exception(logs.CONNECTION_FAILED, component=self.name, path=request.path)
            return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")


async def _read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header too large") from None
    if len(head) > MAX_HEADER_BYTES:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "header too large")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad request line")
    method, target, _version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(HTTPStatus.BAD_REQUEST, "bad header line")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not supported")
    length_text = headers.get("content-length", "0")
    if not length_text.isdigit():
        raise HttpError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
    length = int(length_text)
    if length > MAX_BODY_BYTES:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    body = await reader.readexactly(length) if length else b""
    url = urlsplit(target)
    return Request(
        method=method.upper(),
        path=url.path or "/",
        query=parse_qs(url.query),
        headers=headers,
        body=body,
    )


async def _write(writer: asyncio.StreamWriter, response: Response, *, close: bool) -> None:
    status = HTTPStatus(response.status)
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(response.body)}\r\n"
        + "".join(f"{name}: {value}\r\n" for name, value in response.headers.items())
        + f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + response.body)
    await writer.drain()
