"""The history rows and their formats (gateway.store.evidence): events with their
confirmations, replies of their own, CSV that a spreadsheet cannot run, a table that no text
can break."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import UTC, datetime

import pytest

from gateway.consent.campaign import Campaign, CampaignDirectory
from gateway.consent.model import (
    Actor,
    AddressKind,
    ConsentEvent,
    ConsentState,
    MatchType,
    SmsAddress,
)
from gateway.store.base import ReplyOutcome
from gateway.store.evidence import (
    CSV_COLUMNS,
    build_rows,
    history_rows,
    render,
    render_csv,
    render_sending_rules,
    render_table,
    sending_rules,
)
from gateway.store.memory import MemoryStore
from tests.store.test_contract import SUB_A, make_reply


def event(event_id: str, at: float, words: str = "STOP", **fields: object) -> ConsentEvent:
    values: dict[str, object] = {
        "event_id": event_id,
        "at": at,
        "subscriber": SUB_A,
        "scope": "campaign:acme",
        "state": ConsentState.OPTED_OUT,
        "actor": Actor.KEYWORD,
        "match": MatchType.KEYWORD,
        "words": words,
        "sender": "15550100",
        "campaign": "acme",
        "system_id": "acme_sys",
        "instance": "gw-1",
    }
    values.update(fields)
    return ConsentEvent(**values)  # type: ignore[arg-type]


class TestRows:
    def test_confirmation_is_attached_to_its_event(self) -> None:
        """A reply linked by event_id is that event's confirmation; others stay null."""
        stop, staff = event("e1", 100.0), event("e2", 200.0, actor=Actor.ADMIN, words="why")
        rows = build_rows([stop, staff], [make_reply(event_id="e1", at=100.5)])
        assert [r["record"] for r in rows] == ["event", "event"]
        assert rows[0]["confirmation"]["kind"] == "opt_out_confirmation"
        assert rows[0]["confirmation"]["message_ids"] == ["m-17", "m-18"]
        assert rows[0]["confirmation"]["submitted_at"] == "1970-01-01T00:01:40Z"
        assert rows[1]["confirmation"] is None
        assert rows[1]["reason"] == "why"

    def test_replies_without_an_event_are_rows_in_time_order(self) -> None:
        """A HELP answer (no event) and a second reply to one event are rows of their own,
        placed by time among the events."""
        stop, start = event("e1", 100.0), event("e2", 300.0, state=ConsentState.OPTED_IN)
        first = make_reply(event_id="e1", at=100.1)
        again = make_reply(event_id="e1", at=400.0)
        help_reply = make_reply(event_id=None, at=200.0)
        rows = build_rows([stop, start], [first, help_reply, again])
        assert [(r["record"], r["event_id"]) for r in rows] == [
            ("event", "e1"),
            ("reply", None),
            ("event", "e2"),
            ("reply", "e1"),
        ]
        assert rows[1]["words"] == "HELP"
        assert rows[1]["state"] is None
        assert rows[1]["sender"] == help_reply.source

    def test_scoped_rows_leave_out_other_replies(self) -> None:
        """With a scope filter, replies of events not shown (and HELP answers) are left out."""
        stop = event("e1", 100.0)
        rows = build_rows(
            [stop],
            [make_reply(event_id="other", at=50.0), make_reply(event_id=None, at=150.0)],
            scoped=True,
        )
        assert [r["record"] for r in rows] == ["event"]

    async def test_history_rows_reads_the_store(self) -> None:
        """history_rows joins a store's events and replies (and filters by scope)."""
        store = MemoryStore()
        stop = event("e1", 100.0)
        await store.append(stop)
        await store.append(event("e2", 200.0, scope="global:*", actor=Actor.ADMIN))
        await store.record_reply(make_reply(event_id="e1"))
        rows = await history_rows(store, SUB_A)
        assert [r["event_id"] for r in rows] == ["e1", "e2"]
        assert rows[0]["confirmation"] is not None
        scoped = await history_rows(store, SUB_A, "global:*")
        assert [r["event_id"] for r in scoped] == ["e2"]


class TestFormats:
    def test_csv_header_and_flattened_confirmation(self) -> None:
        """CSV: the header, then one line per row; list cells joined by spaces."""
        rows = build_rows([event("e1", 100.0)], [make_reply(event_id="e1")])
        (line,) = list(csv.DictReader(io.StringIO(render_csv(rows))))
        assert list(line) == list(CSV_COLUMNS)
        assert line["confirmation_message_ids"] == "m-17 m-18"
        assert line["confirmation_status"] == "ESME_ROK"
        assert line["by"] == ""

    @pytest.mark.parametrize("words", ["=cmd|' /C calc'!A0", "+1+1", "-2", "@SUM(A1)", "\tx"])
    def test_csv_cells_are_never_formulas(self, words: str) -> None:
        """A subscriber's words that a spreadsheet would run start with a quote in CSV; JSON
        keeps them exactly."""
        rows = build_rows([event("e1", 1.0, words=words)], [])
        (line,) = list(csv.DictReader(io.StringIO(render_csv(rows))))
        assert line["words"] == "'" + words
        assert json.loads(render(rows, "json"))[0]["words"] == words

    def test_table_is_aligned_and_unbreakable(self) -> None:
        """Newlines and zero-width characters are shown escaped; wide characters count two
        columns, so every column starts at the same terminal column on every line."""
        rows = build_rows(
            [
                event("e1", 1.0, words="STOP\nnow\u200b"),
                event("e2", 2.0, words="\uff33\uff34\uff2f\uff30"),
                event("e3", 3.0, words="x"),
            ],
            [],
        )
        out = render_table(rows)
        header, *lines = out.rstrip("\n").split("\n")
        assert len(lines) == 3
        assert "STOP\\nnow\\u200b" in lines[0]
        start = header.index("MATCH")
        # Terminal columns up to MATCH: ASCII rows by index, the wide row by display width.
        assert lines[0][start:].startswith("keyword")
        assert lines[2][start:].startswith("keyword")
        wide = lines[1]
        assert wide[start - 4 :].startswith("keyword")  # four wide characters, four columns more

    def test_empty_cells_show_a_dash(self) -> None:
        """A field with no value is '-' in the table, empty in CSV, null in JSON."""
        rows = build_rows([event("e1", 1.0, campaign=None)], [])
        header, line = render_table(rows).rstrip("\n").split("\n")
        assert line[header.index("CAMPAIGN") :].startswith("- ")
        assert json.loads(render(rows, "json"))[0]["campaign"] is None

    def test_not_sent_reply_has_no_submission_time(self) -> None:
        """A reply that never went out shows no submission time and says why."""
        unsent = dataclasses.replace(
            make_reply(event_id="e1"),
            outcome=ReplyOutcome.NOT_SENT,
            command_status=None,
            status=None,
            message_ids=(),
            answered_at=None,
            error="no transmit-capable session",
        )
        rows = build_rows([event("e1", 1.0)], [unsent])
        confirmation = rows[0]["confirmation"]
        assert (confirmation["submitted_at"], confirmation["status"]) == (None, None)
        header, line = render_table(rows).rstrip("\n").split("\n")
        assert line[header.index("OUTCOME") :].startswith("not_sent (no transmit-capable session)")

    def test_unknown_format_is_refused(self) -> None:
        with pytest.raises(ValueError, match="table, json, csv"):
            render([], "xml")


# --- sending rules (consent show) ---------------------------------------------------------------


def _quiet_directory() -> CampaignDirectory:
    from gateway.consent.hours import PRESETS, QuietAction, QuietHours

    rules = (PRESETS["us-federal"], PRESETS["us-tx"], PRESETS["us-fl"])
    return CampaignDirectory(
        [
            Campaign(
                name="promo",
                numbers=("15550100",),
                quiet_hours=QuietHours(rules=rules, action=QuietAction.DEFER),
            ),
            Campaign(name="plain", numbers=("15550101",)),
        ]
    )


class TestSendingRules:
    AUSTIN = SmsAddress(kind=AddressKind.E164, value="15125550100")
    # Sunday 6 December 2026, 11:30 in Austin.
    SUNDAY_MORNING = datetime(2026, 12, 6, 17, 30, tzinfo=UTC).timestamp()

    def test_rules_of_a_number_now(self) -> None:
        """Zones, local time and state of the number; per campaign with quiet hours, whether
        it is open and each rule's verdict (campaigns without quiet hours are not listed)."""
        rules = sending_rules(
            _quiet_directory(), self.AUSTIN, country="US", now=self.SUNDAY_MORNING
        )
        assert rules is not None
        assert rules["zones"] == [{"zone": "America/Chicago", "local_time": "2026-12-06 11:30 Sun"}]
        assert rules["state"] == "US-TX"
        (promo,) = rules["campaigns"]
        assert (promo["campaign"], promo["action"], promo["open"]) == ("promo", "defer", False)
        assert promo["closed_by"] == "us-tx"
        verdicts = {r["rule"]: (r["applies"], r["open"]) for r in promo["rules"]}
        assert verdicts == {
            "us-federal": (True, True),
            "us-tx": (True, False),
            "us-fl": (False, True),
        }
        text = render_sending_rules(rules)
        assert "promo (marketing, defer): closed by us-tx" in text
        assert "us-fl        does not apply" in text

    def test_none_without_quiet_hours(self) -> None:
        """No campaign has quiet hours: nothing to show."""
        directory = CampaignDirectory([Campaign(name="plain", numbers=("15550101",))])
        assert sending_rules(directory, self.AUSTIN, country="US", now=0.0) is None
