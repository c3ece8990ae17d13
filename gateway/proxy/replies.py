"""The evidence of auto-replies: what the SMSC answered to each confirmation, kept in the store.

A confirmation is the gateway's own ``submit_sm`` (one per part). ``ReplyTrack`` follows one
auto-reply from its submission to the last part's ``submit_sm_resp`` (or to its loss: a
timeout, a session gone) and then hands one ``ReplyRecord`` to the ``ReplyRecorder``.

The recorder writes records in the background, never on the relay's path: ``record`` only
queues (it never awaits, never raises); one task per gateway process writes what is queued,
one record after the other, each write bounded by ``write_timeout_s``. At most
``max_pending`` records wait; beyond that new ones are dropped. A failed or dropped record is
counted (``smppgw_auto_reply_records_total{outcome}``) and logged
(``auto_reply_record_failed``, summed up under a flood), and the relay goes on: the
confirmation itself was sent, only its evidence is missing. ``drain`` (shutdown) waits,
bounded, for what is still queued, before the store closes.

``ReplySender`` sends the replies: it chooses the session that carries one (a transmit-capable
session of the account, the one the MO came in on first, else the service bind), applies the
per-subscriber rate limit (``consent.reply_limit_per_hour``; an opt-out confirmation always
goes) and starts the ``ReplyTrack`` of each. It also names the receiving sessions of an
account, which the gateway's own delivery receipts go over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Set
from typing import Final

from gateway.config import ConsentConfig
from gateway.consent.policy import AutoReply
from gateway.messages.replies import ReplyLimiter, reply_pdus
from gateway.proxy.clock import Clock
from gateway.proxy.hooks import LegPair, MoRequest, ResponseCallback
from gateway.proxy.service import ServiceLink
from gateway.smpp import pdu as p
from gateway.smpp.constants import status_name
from gateway.store.base import ConsentStore, ReplyKind, ReplyOutcome, ReplyRecord
from gateway.telemetry import logs
from gateway.telemetry.logs import mask_subscriber
from gateway.telemetry.metrics import Metrics
from gateway.text.dcs import Alphabet

log = logs.get_logger()

MAX_PENDING: Final = 10_000
WRITE_TIMEOUT_S: Final = 10.0
FAILURE_LOG_INTERVAL_S: Final = 10.0
TRANSMIT_BINDS: Final = frozenset({"transmitter", "transceiver"})
RECEIVE_BINDS: Final = frozenset({"receiver", "transceiver"})

# The decision behind an auto-reply (the ``kind`` label of smppgw_auto_replies_total) -> what
# its record calls it.
_KINDS: Final[dict[str, ReplyKind]] = {
    "opted_out": ReplyKind.OPT_OUT_CONFIRMATION,
    "list_opted_out": ReplyKind.LIST_OPT_OUT_CONFIRMATION,
    "repeat_opt_out": ReplyKind.ALREADY_OPTED_OUT,
    "repeat_list_opt_out": ReplyKind.ALREADY_OPTED_OUT,
    "opted_in": ReplyKind.OPT_IN_CONFIRMATION,
    "reopted_in": ReplyKind.OPT_IN_CONFIRMATION,
    "opt_in_requested": ReplyKind.OPT_IN_REQUEST,
    "opt_in_request": ReplyKind.OPT_IN_REQUEST,
    "help": ReplyKind.HELP,
}


def reply_kind(decision: str) -> str:
    """The record's ``kind`` for an auto-reply sent for ``decision``."""
    kind = _KINDS.get(decision)
    return decision if kind is None else kind.value


def new_reply_id() -> str:
    return uuid.uuid4().hex


class ReplyRecorder:
    """Writes ``ReplyRecord``s to the store in the background (one per gateway process)."""

    def __init__(
        self,
        store: ConsentStore,
        metrics: Metrics,
        *,
        max_pending: int = MAX_PENDING,
        write_timeout_s: float = WRITE_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.max_pending = max_pending
        self.write_timeout_s = write_timeout_s
        self._pending: deque[ReplyRecord] = deque()
        self._task: asyncio.Task[None] | None = None
        self._failures = logs.Summary(interval_s=FAILURE_LOG_INTERVAL_S, burst=1)

    @property
    def pending(self) -> int:
        """Records queued or being written."""
        return len(self._pending)

    def record(self, reply: ReplyRecord) -> None:
        """Queue ``reply`` to be written; returns at once and never raises."""
        if len(self._pending) >= self.max_pending:
            self._failed(reply, "dropped", "queue_full", f"{self.max_pending} records waiting")
            return
        if self._task is None or self._task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a synchronous caller): nothing can write it
                self._failed(reply, "dropped", "no_loop", "no event loop is running")
                return
            self._pending.append(reply)
            self._task = loop.create_task(self._write_all(), name="auto-reply-records")
            return
        self._pending.append(reply)

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) until what is queued is written (shutdown, before the store closes)."""
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=timeout_s)

    async def _write_all(self) -> None:
        while self._pending:
            reply = self._pending[0]
            try:
                async with asyncio.timeout(self.write_timeout_s):
                    await self.store.record_reply(reply)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is counted and logged
                self._failed(reply, "failed", "store", str(exc) or type(exc).__name__)
            else:
                self.metrics.auto_reply_records_total.labels("stored").inc()
            finally:
                if self._pending and self._pending[0] is reply:
                    self._pending.popleft()

    def _failed(self, reply: ReplyRecord, outcome: str, reason: str, error: str) -> None:
        self.metrics.auto_reply_records_total.labels(outcome).inc()
        self._failures.emit(
            log.warning,
            reason,
            logs.AUTO_REPLY_RECORD_FAILED,
            kind=reply.kind,
            reason=reason,
            subscriber=mask_subscriber(reply.subscriber),
            event_id=reply.event_id,
            error=error,
        )


class ReplyTrack:
    """One auto-reply from its submission to its last part's answer; then one record.

    ``answer`` is the response callback of every part (``None``: no answer came: the request
    timed out or its session closed). Once every submitted part is settled, the record goes
    to the recorder; a part that could not be submitted (``part_not_sent``) counts as settled
    without an answer.
    """

    __slots__ = (
        "_answers",
        "_base",
        "_done",
        "_expected",
        "_last_answer",
        "_missing",
        "_recorder",
    )

    def __init__(self, recorder: ReplyRecorder, base: ReplyRecord) -> None:
        self._recorder = recorder
        self._base = base  # the fields known at submission (outcome NO_ANSWER until answered)
        self._expected = base.parts
        self._answers: list[p.Pdu] = []
        self._missing = 0  # parts without an answer (lost, or never submitted)
        self._last_answer: float | None = None
        self._done = False

    def answer(self, pdu: p.Pdu | None, _frame: bytes | None = None) -> None:
        if self._done:
            return
        if pdu is None:
            self._missing += 1
        else:
            self._answers.append(pdu)
            self._last_answer = time.time()
        self._settle()

    def part_not_sent(self) -> None:
        """A later part could not be handed to the session (it will never be answered)."""
        if self._done:
            return
        self._missing += 1
        self._settle()

    def _settle(self) -> None:
        if len(self._answers) + self._missing < self._expected:
            return
        self._done = True
        base = self._base
        refused = [a.command_status for a in self._answers if a.command_status != 0]
        ids = tuple(
            mid
            for a in self._answers
            if a.command_status == 0
            for mid in (getattr(a, "message_id", None),)
            if mid
        )
        status: int | None
        error: str | None
        if refused:
            outcome, status, error = ReplyOutcome.REFUSED, refused[0], None
        elif self._missing:
            outcome = ReplyOutcome.NO_ANSWER
            status = 0 if self._answers else None
            error = (
                f"{self._missing} of {self._expected} parts got no answer"
                " (timed out, or the session closed)"
                if self._expected > 1
                else "no answer (timed out, or the session closed)"
            )
        else:
            outcome, status, error = ReplyOutcome.ACCEPTED, 0, None
        self._recorder.record(
            dataclasses.replace(
                base,
                outcome=outcome,
                command_status=status,
                status=None if status is None else status_name(status),
                message_ids=ids,
                answered_at=self._last_answer,
                error=error,
            )
        )


class ReplySender:
    """Sends the gateway's auto-replies and has their evidence recorded (one per process).

    ``bridges`` is the registry of bound sessions by account, kept by whoever sees sessions
    bind and close (the consent enforcer); the sender only reads it.
    """

    def __init__(
        self,
        *,
        config: ConsentConfig,
        bridges: Mapping[str, Set[LegPair]],
        recorder: ReplyRecorder,
        metrics: Metrics,
        clock: Clock,
        instance: str,
        default_alphabet: Alphabet,
        service: ServiceLink | None = None,
    ) -> None:
        self.config = config
        self.bridges = bridges
        self.recorder = recorder
        self.metrics = metrics
        self.clock = clock
        self.instance = instance
        self.default_alphabet = default_alphabet
        self.service = service
        self._limits = ReplyLimiter()
        self._reference = 0  # the concatenation reference of the last multi-part reply

    def reconfigure(self, config: ConsentConfig, default_alphabet: Alphabet) -> None:
        """SIGHUP: the rate limit and the SMSC's alphabet apply from the next reply on."""
        self.config = config
        self.default_alphabet = default_alphabet

    def transmitting(self, system_id: str, prefer: LegPair | None = None) -> list[LegPair]:
        """The account's sessions that may send to the SMSC, ``prefer`` first."""
        return self._bound(system_id, TRANSMIT_BINDS, prefer)

    def receiving(self, system_id: str, prefer: LegPair | None = None) -> list[LegPair]:
        """The account's sessions that may receive from the SMSC, ``prefer`` first."""
        return self._bound(system_id, RECEIVE_BINDS, prefer)

    def _bound(
        self, system_id: str, bind_types: frozenset[str], prefer: LegPair | None
    ) -> list[LegPair]:
        bridges = [
            b for b in self.bridges.get(system_id, ()) if b.client_info.bind_type in bind_types
        ]
        if prefer is not None and prefer in bridges:
            bridges.remove(prefer)
            bridges.insert(0, prefer)
        return bridges

    def send(
        self,
        system_id: str,
        reply: AutoReply,
        kind: str,
        request: MoRequest | None,
        *,
        always: bool = False,
        event_id: str | None = None,
        words: str | None = None,
    ) -> None:
        """Send ``reply`` over a transmit-capable session of the account (or the service bind)
        and record it, linked to ``event_id``, once the SMSC answered (or it was not sent)."""
        subscriber = reply.destination.value
        self._reference = (self._reference + 1) % 256
        pdus = reply_pdus(
            reply,
            request.pdu if request is not None else None,
            default_alphabet=self.default_alphabet,
            reference=self._reference,
        )
        evidence = ReplyRecord(
            reply_id=new_reply_id(),
            event_id=event_id,
            subscriber=subscriber,
            kind=reply_kind(kind),
            text=reply.text,
            source=pdus[0].source_addr,
            destination=pdus[0].destination_addr,
            at=self.clock.wall(),
            outcome=ReplyOutcome.NO_ANSWER,
            parts=len(pdus),
            campaign=reply.campaign,
            system_id=system_id,
            words=words,
            instance=self.instance,
        )
        limits = self._limits
        if not always and not limits.allow(
            subscriber, self.clock.monotonic(), self.config.reply_limit_per_hour
        ):
            self._not_sent(
                evidence,
                kind,
                "rate_limited",
                "rate limit",
                "rate limit (consent.reply_limit_per_hour)",
                warn=False,
            )
            return
        if always:
            limits.note(subscriber, self.clock.monotonic())
        prefer = request.bridge if request is not None else None
        carriers: list[tuple[str, Callable[[p.Pdu, ResponseCallback], bool]]] = [
            (bridge.conn_id, bridge.originate_upstream)
            for bridge in self.transmitting(system_id, prefer)
        ]
        if self.service is not None:
            carriers.append(("service-bind", self.service.send))
        for name, send in carriers:
            track = ReplyTrack(
                self.recorder, dataclasses.replace(evidence, carrier=name, at=self.clock.wall())
            )
            done = self._done(kind, subscriber, track)
            # The first part picks the carrier; the other parts follow on the same session.
            if not send(pdus[0], done):
                continue
            for pdu in pdus[1:]:
                if not send(pdu, done):
                    track.part_not_sent()
            self.metrics.auto_replies_total.labels(kind, "sent").inc()
            log.info(
                logs.AUTO_REPLY_SENT,
                kind=kind,
                campaign=reply.campaign,
                subscriber=mask_subscriber(subscriber),
                system_id=system_id,
                conn_id=name,
                segments=len(pdus),
            )
            return
        self._not_sent(
            evidence,
            kind,
            "no_session",
            "no transmit-capable session",
            "no transmit-capable session",
            warn=True,
        )

    def _not_sent(
        self, evidence: ReplyRecord, kind: str, outcome: str, reason: str, error: str, *, warn: bool
    ) -> None:
        """A reply that was not sent: counted under ``outcome``, logged, and recorded."""
        self.metrics.auto_replies_total.labels(kind, outcome).inc()
        (log.warning if warn else log.info)(
            logs.AUTO_REPLY_SUPPRESSED,
            kind=kind,
            reason=reason,
            subscriber=mask_subscriber(evidence.subscriber),
            system_id=evidence.system_id,
        )
        self.recorder.record(
            dataclasses.replace(evidence, outcome=ReplyOutcome.NOT_SENT, error=error)
        )

    def _done(self, kind: str, subscriber: str, track: ReplyTrack) -> ResponseCallback:
        def done(pdu: p.Pdu | None, frame: bytes | None) -> None:
            track.answer(pdu, frame)  # the record is written later, in the background
            status = None if pdu is None else pdu.command_status
            if status != 0:
                self.metrics.auto_replies_total.labels(kind, "failed").inc()
                log.warning(
                    logs.AUTO_REPLY_SUPPRESSED,
                    kind=kind,
                    reason="smsc refused or timed out",
                    command_status=None if status is None else status_name(status),
                    subscriber=mask_subscriber(subscriber),
                )

        return done
