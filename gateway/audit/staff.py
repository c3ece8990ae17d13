"""The staff tools' side of the audit trail: each stored change appended before the command
says it is done, with the records of a large import made in worker processes meanwhile.

A record's canonical bytes do not depend on the chain (gateway.audit.chain), so ``prepare``
hands an import's events to worker processes while the store writes them; ``record`` (the
store's ``on_change``) then only seals and writes, in order. What a worker made is used only
for the event it was made for (matched by event_id, in order); anything else, or a pool that
cannot start or breaks, is made here instead: the trail is the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Final

from gateway.audit.chain import canonical
from gateway.audit.setup import open_file
from gateway.audit.trail import AuditError, consent_body, utc
from gateway.config import GatewayConfig
from gateway.consent.model import ConsentEvent
from gateway.store.base import StoreError
from gateway.telemetry import logs

PREPARE_AT: Final = 20_000  # fewer changes than this are made here (a pool costs ~0.5 s)
PREPARE_CHUNK: Final = 25_000
_PR_SET_PDEATHSIG: Final = 1  # linux/prctl.h
_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ConsentEvent))


def _row(event: ConsentEvent) -> tuple[Any, ...]:
    return tuple(getattr(event, name) for name in _FIELDS)  # pickles far cheaper than the event


def consent_record(event: ConsentEvent, at: str) -> bytes:
    """The canonical bytes of ``event``'s audit record, made at ``at``."""
    return canonical({"t": at, **consent_body(event)})


def _worker_started(parent: int) -> None:
    """A worker dies with the command (killed, it must leave no process behind holding its
    output pipes) and writes nothing to its output."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    os.close(devnull)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # Linux; elsewhere the queue's EOF
    if os.getppid() != parent:  # the command died before the line above took effect
        os._exit(0)


def _prepare_chunk(
    pseudonyms: logs.Pseudonyms, at: str, rows: list[tuple[Any, ...]]
) -> tuple[list[str], list[bytes]]:
    """In a worker process: the event ids and record bytes of one chunk."""
    logs.set_pseudonyms(pseudonyms)
    events = [ConsentEvent(**dict(zip(_FIELDS, row, strict=True))) for row in rows]
    return [e.event_id for e in events], [consent_record(e, at) for e in events]


class StaffAudit:
    """One staff command's writer of the config's audit file."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._pool: ProcessPoolExecutor | None = None
        self._prepared: list[Future[tuple[list[str], list[bytes]]]] = []

    def prepare(self, events: Sequence[ConsentEvent]) -> None:
        """Start making the records of ``events``, about to be stored (an import), in worker
        processes; a no-op for few events, or where worker processes cannot start."""
        if len(events) < PREPARE_AT or self._prepared:
            return
        workers = os.cpu_count() or 1  # all cores: once the store is written, this one waits
        at = utc(time.time())
        pseudonyms = logs.current_pseudonyms()
        try:
            # spawn: a fresh interpreter, never a fork of this one and its threads.
            self._pool = ProcessPoolExecutor(
                max_workers=workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_started,
                initargs=(os.getpid(),),
            )
            for start in range(0, len(events), PREPARE_CHUNK):
                rows = [_row(e) for e in events[start : start + PREPARE_CHUNK]]
                self._prepared.append(self._pool.submit(_prepare_chunk, pseudonyms, at, rows))
        except (OSError, RuntimeError, BrokenProcessPool):
            self.close()  # made here, then

    @staticmethod
    def _made(prepared: list[Future[tuple[list[str], list[bytes]]]]) -> Iterator[tuple[str, bytes]]:
        for future in prepared:
            try:
                ids, made = future.result()
            except (BrokenProcessPool, OSError, RuntimeError):
                return  # the rest is made here
            yield from zip(ids, made, strict=True)

    def _lines(self, events: Sequence[ConsentEvent]) -> Iterator[bytes]:
        """Each event's record bytes in order: the prepared ones where they match. The events
        stored are the prepared ones in the same order, less those the store refused."""
        at = utc(time.time())
        prepared, self._prepared = self._prepared, []
        made = self._made(prepared)
        for event in events:
            for event_id, line in made:
                if event_id == event.event_id:
                    yield line
                    break
            else:
                yield consent_record(event, at)

    def _write(self, events: Sequence[ConsentEvent]) -> None:
        audit_file = open_file(self.config)
        if audit_file is None:
            return
        try:
            audit_file.append_canonical(self._lines(events))
        finally:
            audit_file.close()

    async def record(self, events: Sequence[ConsentEvent]) -> None:
        """The store's ``on_change``: ``events`` are in the trail when this returns."""
        try:
            await asyncio.to_thread(self._write, events)
        except (AuditError, OSError) as exc:
            # The change stands (the store has it); the command must not say all is well.
            raise StoreError(f"the change is stored, but the audit trail failed: {exc}") from exc
        finally:
            self.close()

    def close(self) -> None:
        pool, self._pool = self._pool, None
        self._prepared = []
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
