"""The auto-reply evidence: ReplyTrack (the parts' answers -> one record) and ReplyRecorder (the
background writer that never holds up or breaks the relay)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from structlog.testing import capture_logs

from gateway.proxy.replies import ReplyRecorder, ReplyTrack, reply_kind
from gateway.smpp import pdu as p
from gateway.store.base import ReplyOutcome, ReplyRecord, StoreUnavailableError
from gateway.store.memory import MemoryStore
from gateway.telemetry import logs
from gateway.telemetry.metrics import Metrics
from tests.store.test_contract import SUB_A, make_reply


def base(parts: int = 1) -> ReplyRecord:
    return dataclasses.replace(
        make_reply(),
        outcome=ReplyOutcome.NO_ANSWER,
        command_status=None,
        status=None,
        message_ids=(),
        answered_at=None,
        error=None,
        parts=parts,
    )


def ok(message_id: str) -> p.SubmitSmResp:
    return p.SubmitSmResp(message_id=message_id)


def refused(status: int) -> p.Pdu:
    return p.SubmitSmResp(command_status=status, message_id=None)


class Collect:
    """A recorder stand-in that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[ReplyRecord] = []

    def record(self, reply: ReplyRecord) -> None:
        self.records.append(reply)


def track(parts: int = 1) -> tuple[ReplyTrack, Collect]:
    sink = Collect()
    return ReplyTrack(sink, base(parts)), sink  # type: ignore[arg-type]


def records_counted(metrics: Metrics, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "smppgw_auto_reply_records_total", {"outcome": outcome}
    )
    return value or 0.0


class TestTrack:
    def test_accepted_part_gives_status_and_id(self) -> None:
        """One part answered OK: accepted, ESME_ROK, its message id and the answer's time."""
        t, sink = track()
        t.answer(ok("m-1"))
        (record,) = sink.records
        assert (record.outcome, record.command_status, record.status) == (
            ReplyOutcome.ACCEPTED,
            0,
            "ESME_ROK",
        )
        assert record.message_ids == ("m-1",)
        assert record.answered_at is not None
        assert record.answered_at >= record.at

    def test_record_waits_for_every_part(self) -> None:
        """Nothing is recorded until the last part is answered; then all ids, in order."""
        t, sink = track(3)
        t.answer(ok("a"))
        t.answer(ok("b"))
        assert sink.records == []
        t.answer(ok("c"))
        (record,) = sink.records
        assert record.message_ids == ("a", "b", "c")
        t.answer(ok("late"))  # a stray answer after the end changes nothing
        assert len(sink.records) == 1

    def test_refused_part_is_the_status(self) -> None:
        """A refused part makes the reply refused with that status (by name), ids of the
        parts accepted kept."""
        t, sink = track(2)
        t.answer(ok("a"))
        t.answer(refused(0x45))
        (record,) = sink.records
        assert (record.outcome, record.command_status, record.status) == (
            ReplyOutcome.REFUSED,
            0x45,
            "ESME_RSUBMITFAIL",
        )
        assert record.message_ids == ("a",)

    def test_lost_answer_is_no_answer(self) -> None:
        """No answer (timeout, session gone): no_answer, no status, no time, a reason."""
        t, sink = track()
        t.answer(None)
        (record,) = sink.records
        assert record.outcome is ReplyOutcome.NO_ANSWER
        assert (record.command_status, record.answered_at, record.message_ids) == (None, None, ())
        assert record.error is not None
        assert "no answer" in record.error

    def test_part_not_sent_counts_as_unanswered(self) -> None:
        """A later part the session would not take settles as missing."""
        t, sink = track(2)
        t.answer(ok("a"))
        t.part_not_sent()
        (record,) = sink.records
        assert record.outcome is ReplyOutcome.NO_ANSWER
        assert record.error is not None
        assert "1 of 2" in record.error

    @pytest.mark.parametrize(
        ("decision", "kind"),
        [
            ("opted_out", "opt_out_confirmation"),
            ("list_opted_out", "list_opt_out_confirmation"),
            ("repeat_opt_out", "already_opted_out"),
            ("opted_in", "opt_in_confirmation"),
            ("reopted_in", "opt_in_confirmation"),
            ("help", "help"),
            ("opt_in_request", "opt_in_request"),
            ("something_new", "something_new"),
        ],
    )
    def test_kind_of_each_decision(self, decision: str, kind: str) -> None:
        """Each decision's reply is recorded under the name the history shows."""
        assert reply_kind(decision) == kind


class HangingStore(MemoryStore):
    """record_reply never returns (a backend that hangs)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def record_reply(self, reply: ReplyRecord) -> bool:
        self.calls += 1
        await asyncio.Event().wait()
        return True


class FailingStore(MemoryStore):
    async def record_reply(self, reply: ReplyRecord) -> bool:
        raise StoreUnavailableError("sqlite: disk I/O error")


class TestRecorder:
    async def test_records_are_written_in_the_background(self) -> None:
        """record() returns at once; the records land in the store in order; counted."""
        store, metrics = MemoryStore(), Metrics()
        recorder = ReplyRecorder(store, metrics)
        replies = [make_reply(at=float(i)) for i in range(3)]
        for reply in replies:
            recorder.record(reply)
        assert await store.replies(SUB_A) == []  # nothing written inside record()
        await recorder.drain(5.0)
        assert await store.replies(SUB_A) == replies
        assert records_counted(metrics, "stored") == 3
        assert recorder.pending == 0

    async def test_hanging_store_never_blocks_record(self) -> None:
        """A backend that hangs: record() still returns at once, the queue is bounded (the rest
        dropped and counted), each write gives up after write_timeout_s, drain is bounded."""
        store, metrics = HangingStore(), Metrics()
        recorder = ReplyRecorder(store, metrics, max_pending=2, write_timeout_s=0.05)
        with capture_logs() as captured:
            for i in range(5):
                recorder.record(make_reply(at=float(i)))
            assert recorder.pending == 2
            assert records_counted(metrics, "dropped") == 3
            await recorder.drain(5.0)
        assert store.calls == 2
        assert records_counted(metrics, "failed") == 2
        assert recorder.pending == 0
        failed = [e for e in captured if e["event"] == logs.AUTO_REPLY_RECORD_FAILED]
        assert {e["reason"] for e in failed} == {"queue_full", "store"}
        assert all(e["subscriber"] != SUB_A for e in failed)  # masked

    async def test_store_failure_is_counted_and_logged_not_raised(self) -> None:
        """Every failed write is counted; the log says so once per interval, not per record."""
        store, metrics = FailingStore(), Metrics()
        recorder = ReplyRecorder(store, metrics)
        with capture_logs() as captured:
            for i in range(4):
                recorder.record(make_reply(at=float(i)))
            await recorder.drain(5.0)
        assert records_counted(metrics, "failed") == 4
        failed = [e for e in captured if e["event"] == logs.AUTO_REPLY_RECORD_FAILED]
        assert len(failed) == 1
        assert "disk I/O error" in failed[0]["error"]
        # The recorder goes on working once the store does.
        recorder.store = MemoryStore()
        recorder.record(make_reply())
        await recorder.drain(5.0)
        assert len(await recorder.store.replies(SUB_A)) == 1

    def test_without_a_loop_it_drops_and_counts(self) -> None:
        """Called where no event loop runs, record() drops the record instead of raising."""
        metrics = Metrics()
        recorder = ReplyRecorder(MemoryStore(), metrics)
        recorder.record(make_reply())
        assert records_counted(metrics, "dropped") == 1
        assert recorder.pending == 0
