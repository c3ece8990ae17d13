"""The audit trail file: sealed records appended by the daemon, the staff CLI and the import.

One chain per file, one file per gateway instance (``audit.path``; with several instances on
one Redis, each keeps its own chain, and ``audit verify`` takes all of them to reconcile the
shared store). Several processes of one instance (the daemon, the staff CLI) append to the same
file: each append takes an exclusive ``flock`` on it, resumes from the last record on disk if
another process wrote since, and writes and fsyncs before letting go, so the chain never forks.

Consent changes wait for their record to be on disk before the change is acknowledged (group
commit: one fsync for whatever queued meanwhile), up to ``CONSENT_WAIT_S``; if the file cannot
be written, the change still stands (the store has it), its record stays queued and is retried,
and ``audit_write_failed`` is logged and counted. Refused MTs never wait: they are counted, the
first ``refusal_burst`` of a kind per interval written one by one and the rest in one record with
their ``count`` at the interval's end, so a flood cannot flood the file and no refusal goes
uncounted. Records that could not be kept at all (the file unwritable for so long that the queue
reached its bound) are counted, and that count is written as a ``records_lost`` record as soon as
the file works again: the loss is in the chain itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import itertools
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from gateway.audit.chain import EMPTY, FORMAT, Head, canonical, head_of_line, seal
from gateway.consent.model import ConsentEvent
from gateway.errors import GatewayError
from gateway.store.base import event_to_json
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics

_log = logs.get_logger()

CONSENT_WAIT_S: Final = 2.0
RETRY_S: Final = 1.0
MAX_QUEUED: Final = 200_000
WRITE_CHUNK: Final = 4096  # records sealed and written at a time
_TAIL_READ: Final = 1 << 16
# Fields of a consent event that its audit record carries when set (besides those always set).
# clarify_until: a revoke-all opt-out whose confirmation asked which messages to stop.
_OPTIONAL_FIELDS: Final = ("by", "campaign", "sender", "system_id", "instance", "clarify_until")


class AuditError(GatewayError):
    """The audit file cannot be opened or continued (the message names the file and why)."""


def utc(at: float) -> str:
    """An ISO 8601 UTC time with milliseconds (records are ordered by seq, not by time)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"


def event_digest(event: ConsentEvent) -> str:
    """What binds an audit record to the store's copy of the event (``audit verify --store``)."""
    return hashlib.sha256(event_to_json(event).encode()).hexdigest()


def consent_body(event: ConsentEvent) -> dict[str, Any]:
    """The audit record of one consent change. The number only as its keyed pseudonym; the
    words stay in the store (bound to this record by ``event``, the event's digest)."""
    body: dict[str, Any] = {
        "kind": "consent",
        "at": utc(event.at),
        "event_id": event.event_id,
        "scope": event.scope,
        "state": event.state.value,
        "actor": event.actor.value,
        "match": event.match.value,
    }
    for name in _OPTIONAL_FIELDS:
        value = getattr(event, name)
        if value is not None:
            body[name] = value
    body["subscriber"] = logs.mask_subscriber(event.subscriber)
    body["event"] = event_digest(event)
    return body


class AuditFile:
    """Blocking appends to one chain file (call from a worker thread in the daemon)."""

    def __init__(self, path: str, *, fsync: bool = True, instance: str = "") -> None:
        self.path = path
        self.fsync = fsync
        self.instance = instance
        self._fd: int | None = None
        self._end = -1  # file size after our last append; another writer changes it
        self._head = EMPTY

    def open(self) -> Head:
        """Open (creating the file, owner-only, with its first record) and find the head."""
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o750, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as exc:
            raise AuditError(f"audit.path {self.path}: cannot open: {exc.strerror}") from exc
        with self._locked():
            self._resume()
            if self._head is EMPTY:
                now = utc(time.time())
                first = {"t": now, "kind": "chain_started", "v": FORMAT, "chain_of": self.instance}
                self._write([canonical(first)])
        return self._head

    @property
    def head(self) -> Head:
        return self._head

    def append(self, bodies: Iterable[Mapping[str, Any]]) -> Head:
        """Seal and append ``bodies`` (each given its time ``t`` now) after whatever the file
        ends with now; durable on return (when ``fsync``). Raises OSError when the file cannot
        be written (nothing was kept)."""
        now = utc(time.time())
        return self.append_canonical(canonical({"t": now, **body}) for body in bodies)

    def append_canonical(self, covered: Iterable[bytes]) -> Head:
        """``append`` for bodies already in their canonical bytes (``t`` included): what a
        large import prepares in worker processes. Read lazily, ``WRITE_CHUNK`` at a time:
        millions of records are never held at once."""
        if self._fd is None:
            raise AuditError(f"audit.path {self.path}: not open")
        with self._locked():
            if os.fstat(self._fd).st_size != self._end:
                self._resume()
            self._write(covered)
        return self._head

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def _locked(self) -> Any:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _write(self, covered: Iterable[bytes]) -> None:
        assert self._fd is not None
        head = self._head
        start = end = os.fstat(self._fd).st_size
        pending = iter(covered)
        try:
            while chunk := list(itertools.islice(pending, WRITE_CHUNK)):
                lines = []
                for body in chunk:
                    line, head = seal(head, body)
                    lines.append(line)
                view = memoryview(b"".join(lines))
                end += len(view)
                while view:
                    view = view[os.write(self._fd, view) :]
            if self.fsync:
                os.fsync(self._fd)  # once for the whole append
        except OSError:
            # Nothing half-written may stay: the next writer would chain onto a torn record.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            self._end = -1
            raise
        self._head = head
        self._end = end

    def _resume(self) -> None:
        """Find the head from the file's last record (another process may have appended)."""
        assert self._fd is not None
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._head, self._end = EMPTY, 0
            return
        start = max(0, size - _TAIL_READ)
        tail = os.pread(self._fd, size - start, start)
        if not tail.endswith(b"\n"):
            # A record torn by a crash before its fsync returned: it was never acknowledged.
            cut = tail.rfind(b"\n")
            if cut < 0 and start > 0:
                raise AuditError(f"audit.path {self.path}: the last record is unreadable")
            keep = start + cut + 1
            os.ftruncate(self._fd, keep)
            _log.warning(logs.AUDIT_TAIL_REPAIRED, path=self.path, cut_bytes=size - keep)
            tail = tail[: cut + 1]
            size = keep
            if size == 0:
                self._head, self._end = EMPTY, 0
                return
        last = tail[tail.rfind(b"\n", 0, len(tail) - 1) + 1 :]
        head = head_of_line(last)
        if head is None:
            raise AuditError(
                f"audit.path {self.path}: the last record is unreadable; "
                "run `smpp-gateway audit verify` on it, move it aside, and start again"
            )
        self._head, self._end = head, size


class _Pending:
    __slots__ = ("body", "done")

    def __init__(self, body: Mapping[str, Any], done: asyncio.Future[None] | None) -> None:
        self.body = body
        self.done = done


class AuditTrail:
    """The daemon's side: queues records, writes them in batches off the event loop, sums up
    refusals, logs the chain head at an interval."""

    def __init__(
        self,
        file: AuditFile,
        *,
        metrics: Metrics | None = None,
        refusal_burst: int = 10,
        refusal_interval_s: float = 10.0,
        head_interval_s: float = 60.0,
        max_queued: int = MAX_QUEUED,
        max_refusal_keys: int = 10_000,
    ) -> None:
        self.file = file
        self.metrics = metrics
        self.refusal_burst = refusal_burst
        self.refusal_interval_s = refusal_interval_s
        self.head_interval_s = head_interval_s
        self.max_queued = max_queued
        self.max_refusal_keys = max_refusal_keys
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._lost = 0
        self._failing = False
        # key -> [written this interval, only counted, latest fields, first at]
        self._refusals: dict[tuple[Any, ...], list[Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._logged_head: Head | None = None
        self._closing = False

    async def start(self) -> None:
        head = await asyncio.to_thread(self.file.open)
        _log.info(logs.AUDIT_OPENED, path=self.file.path, seq=head.seq, hash=head.hash)
        self._tasks = [
            asyncio.create_task(self._writer(), name="audit-writer"),
            asyncio.create_task(self._ticker(), name="audit-ticker"),
        ]

    # --- what gets recorded ---------------------------------------------------------------

    async def consent_changed(self, events: Sequence[ConsentEvent]) -> None:
        """Queue the records of stored changes and wait (bounded) until they are on disk."""
        if not events:
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        for event in events[:-1]:
            self._enqueue(consent_body(event), None)
        self._enqueue(consent_body(events[-1]), done)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(done), CONSENT_WAIT_S)

    def mt_refused(
        self,
        *,
        subscriber: str,
        reason: str,
        status: int,
        account: str,
        campaign: str | None,
        sender: str | None,
        rule: str | None = None,
    ) -> None:
        """Record one refused MT (never waits; summed up per kind under a flood). ``rule``:
        the sending rule that refused it (a quiet-hours preset), where one did."""
        masked = logs.mask_subscriber(subscriber)
        key = (account, reason, campaign, sender, masked, rule)
        entry = self._refusals.get(key)
        now = time.time()
        if entry is None:
            if len(self._refusals) >= self.max_refusal_keys:
                self._flush_refusals()
            entry = self._refusals[key] = [0, 0, None, now]
        fields = {
            "kind": "mt_refused",
            "reason": reason,
            "status": f"0x{status:08X}",
            "account": account,
            "campaign": campaign,
            "sender": sender,
            "subscriber": masked,
        }
        if rule is not None:
            fields["rule"] = rule
        if entry[0] < self.refusal_burst:
            entry[0] += 1
            self._enqueue({**fields, "at": utc(now), "count": 1}, None)
        else:
            entry[1] += 1
            entry[2] = fields

    def _flush_refusals(self) -> None:
        refusals, self._refusals = self._refusals, {}
        now = time.time()
        for _written, counted, fields, first in refusals.values():
            if counted:
                self._enqueue(
                    {**fields, "at": utc(now), "count": counted, "since": utc(first)}, None
                )

    def _enqueue(self, body: Mapping[str, Any], done: asyncio.Future[None] | None) -> None:
        if len(self._queue) >= self.max_queued and done is None:
            self._lost += 1  # counted; written as records_lost once the file works again
            if self.metrics is not None:
                self.metrics.audit_records_lost_total.inc()
            return
        self._queue.append(_Pending(body, done))
        self._wake.set()

    # --- writing ----------------------------------------------------------------------------

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._drain()
            if self._closing:
                return

    async def _drain(self) -> None:
        while self._queue or self._lost:
            batch, self._queue = self._queue, []
            bodies = [p.body for p in batch]
            lost = self._lost
            if lost:
                bodies.append({"kind": "records_lost", "count": lost, "at": utc(time.time())})
            try:
                await asyncio.to_thread(self.file.append, bodies)
            except (OSError, AuditError) as exc:
                self._queue[:0] = batch  # kept, in order, for the retry
                if self.metrics is not None:
                    self.metrics.audit_write_failures_total.inc()
                if not self._failing:
                    self._failing = True
                    _log.error(
                        logs.AUDIT_WRITE_FAILED,
                        path=self.file.path,
                        error=getattr(exc, "strerror", None) or str(exc),
                        queued=len(self._queue),
                    )
                if self._closing:
                    return
                await asyncio.sleep(RETRY_S)
                continue
            self._lost -= lost
            if self._failing:
                self._failing = False
                _log.info(logs.AUDIT_WRITE_RECOVERED, path=self.file.path)
            if self.metrics is not None:
                self.metrics.audit_records_total.inc(len(bodies))
            for pending in batch:
                if pending.done is not None and not pending.done.done():
                    pending.done.set_result(None)

    async def _ticker(self) -> None:
        elapsed = 0.0
        step = min(self.refusal_interval_s, self.head_interval_s)
        while True:
            await asyncio.sleep(step)
            elapsed += step
            self._flush_refusals()
            if elapsed >= self.head_interval_s:
                elapsed = 0.0
                self.log_head()

    def log_head(self) -> None:
        """Log the chain head (for the SIEM's copy) when it moved since the last time."""
        head = self.file.head
        if head != self._logged_head:
            self._logged_head = head
            _log.info(logs.AUDIT_CHAIN_HEAD, path=self.file.path, seq=head.seq, hash=head.hash)

    async def close(self) -> None:
        """Write what is counted and queued (one attempt), log the head, close the file."""
        for task in self._tasks[1:]:
            task.cancel()
        self._flush_refusals()
        self._closing = True
        self._wake.set()
        if self._tasks:
            await asyncio.gather(self._tasks[0], return_exceptions=True)
            await asyncio.gather(*self._tasks[1:], return_exceptions=True)
        if self._queue:
            _log.error(
                logs.AUDIT_WRITE_FAILED,
                path=self.file.path,
                error="not written at shutdown",
                queued=len(self._queue),
            )
        self.log_head()
        self.file.close()
