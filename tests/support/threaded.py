"""A simulator and a consent gateway running on their own event loop in a thread, and a
blocking SMPP client on our codec: for synchronous tests that drive many examples through one
running gateway (Hypothesis cannot run an example per event loop cheaply).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import struct
import threading
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from gateway.app import Gateway
from gateway.simulator import Simulator
from gateway.simulator.server import ReceivedRequest
from gateway.smpp import pdu as p
from gateway.smpp.codec import decode, encode
from tests.support.consent import WAIT_S, consent_gateway, simulator

T = TypeVar("T")


class ThreadedRig:
    """``with ThreadedRig(...) as rig``: the SMSC and the gateway listen while the block runs;
    ``rig.call(coro)`` runs a coroutine on their loop and returns its result."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        campaigns: Sequence[Mapping[str, Any]],
        consent: Mapping[str, Any] | None = None,
    ) -> None:
        self._url = f"sqlite:{tmp_path}/consent.db"
        self._campaigns = campaigns
        self._consent = consent
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stack = contextlib.AsyncExitStack()
        self.sim: Simulator | None = None
        self.gw: Gateway | None = None

    def __enter__(self) -> ThreadedRig:
        self._thread.start()
        self.call(self._start())
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.call(self._stack.aclose())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(WAIT_S)
            self._loop.close()

    async def _start(self) -> None:
        self.sim = await self._stack.enter_async_context(simulator())
        self.gw = await self._stack.enter_async_context(
            consent_gateway(
                self.sim.port, self._url, campaigns=self._campaigns, consent=self._consent
            )
        )

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(WAIT_S * 3)

    @property
    def port(self) -> int:
        assert self.gw is not None
        return self.gw.port

    def messages(self) -> list[ReceivedRequest]:
        """What the SMSC has received so far (read on the loop)."""
        sim = self.sim
        assert sim is not None

        async def read() -> list[ReceivedRequest]:
            return list(sim.messages)

        return self.call(read())


class BlockingEsme:
    """A bound transmitter on a plain socket: ``request(pdu)`` sends and returns the answer
    (answering the gateway's enquire_link on the way)."""

    def __init__(self, port: int, system_id: str = "acme") -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
        self._sequence = 0
        resp = self.request(p.BindTransmitter(system_id=system_id, password="pw"))
        assert resp.command_status == 0, resp

    def request(self, pdu: p.Pdu) -> p.Pdu:
        self._sequence += 1
        self._sock.sendall(encode(dataclasses.replace(pdu, sequence_number=self._sequence)))
        while True:
            answer = self._read()
            if isinstance(answer, p.EnquireLink):
                link = p.EnquireLinkResp(sequence_number=answer.sequence_number)
                self._sock.sendall(encode(link))
                continue
            assert answer.sequence_number == self._sequence, answer
            return answer

    def _read(self) -> p.Pdu:
        head = self._exactly(4)
        (length,) = struct.unpack(">I", head)
        return decode(head + self._exactly(length - 4))

    def _exactly(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self._sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the gateway closed the connection")
            data += chunk
        return bytes(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.request(p.Unbind())
        self._sock.close()


@contextlib.contextmanager
def blocking_esme(port: int, system_id: str = "acme") -> Iterator[BlockingEsme]:
    esme = BlockingEsme(port, system_id)
    try:
        yield esme
    finally:
        esme.close()
