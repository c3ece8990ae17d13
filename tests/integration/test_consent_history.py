"""The evidence for one number, end to end: a subscriber's STOP through a running gateway (the
bundled SMSC simulator, a smpplib client, a SQLite store), its confirmation at the SMSC, and
``smpp-gateway consent history`` (a subprocess on the same store) and the admin API showing the
whole story: when, which words, to which number, which campaign and account, who, and the
confirmation's text, submission time, the SMSC's status and message id, and when it answered.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from gateway.smpp import pdu as p
from gateway.smpp.constants import CommandStatus
from gateway.store.base import ConsentStore, ReplyRecord
from gateway.store.evidence import CSV_COLUMNS
from tests.support.consent import (
    FAST_SESSION,
    HELP_REPLY,
    NUMBER_1,
    OPT_IN_REPLY,
    OPT_OUT_REPLY,
    SUBSCRIBER,
    WAIT_S,
    Rig,
    acme_campaigns,
    consent_rig,
    run_cli,
    sent_to,
    to_toml,
    wait_texts,
)

TOKEN = "history-token"
ADMIN = {"listen": "127.0.0.1:0", "token": TOKEN}
MO_SMSC_ID = "smsc-mo-4711"  # the MO's receipted_message_id, kept as the event's SMSC id


def stamp(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def cli_config(tmp_path: Path, rig: Rig) -> Path:
    """A config file naming the running gateway's store, for the staff CLI."""
    path = tmp_path / "staff.toml"
    path.write_text(
        to_toml(
            {
                "upstream": {"address": f"127.0.0.1:{rig.sim.port}"},
                "store": {"url": rig.store_url},
                "campaigns": acme_campaigns(),
            }
        )
    )
    return path


async def wait_replies(rig: Rig, count: int) -> list[ReplyRecord]:
    """The subscriber's auto-reply records once at least ``count`` are stored (they are written
    in the background after the SMSC's answer)."""
    store: ConsentStore | None = rig.gw.store
    assert store is not None
    deadline = time.monotonic() + WAIT_S
    while len(replies := await store.replies(SUBSCRIBER)) < count:
        assert time.monotonic() < deadline, f"only {len(replies)} reply records"
        await asyncio.sleep(0.01)  # poll the condition, bounded by the deadline
    return replies


async def history(config: Path, *options: str) -> str:
    code, out, err = await run_cli("consent", "history", "--config", str(config), *options)
    assert code == 0, err
    return out


async def http_get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """A GET with the token; (status, headers lower-cased, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def table_lines(out: str) -> tuple[str, list[str]]:
    header, *rows = out.rstrip("\n").split("\n")
    return header, rows


def assert_in_column(header: str, line: str, column: str, value: str) -> None:
    """``value`` starts exactly where the header's ``column`` starts (ASCII text)."""
    start = header.index(column)
    assert line[start : start + len(value)] == value, (column, line[start:])


class TestStopEvidence:
    async def test_stop_and_its_confirmation_in_every_format(self, tmp_path: Path) -> None:
        """STOP -> one confirmation accepted by the SMSC; history (JSON, --json, CSV, table)
        and the API (JSON, CSV) show every field of the event and of the confirmation, the
        SMSC's message id included, all alike."""
        async with consent_rig(tmp_path, admin=ADMIN) as rig:
            before = time.time()
            tlv = p.Tlv(0x001E, MO_SMSC_ID.encode() + b"\0")
            assert await rig.mo("STOP", tlvs=(tlv,)) == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            (sent,) = sent_to(rig.sim, SUBSCRIBER)
            assert sent.message_id
            (reply,) = await wait_replies(rig, 1)
            after = time.time()
            assert rig.gw.store is not None
            (event,) = await rig.gw.store.history(SUBSCRIBER)
            config = cli_config(tmp_path, rig)

            rows = json.loads(await history(config, SUBSCRIBER, "--format", "json"))
            assert json.loads(await history(config, SUBSCRIBER, "--json")) == rows
            (row,) = rows
            assert isinstance(sent.pdu, p.SubmitSm)
            assert row == {
                "record": "event",
                "event_id": event.event_id,
                "at": stamp(event.at),
                "subscriber": SUBSCRIBER,
                "scope": "campaign:acme",
                "state": "opted_out",
                "actor": "keyword",
                "by": None,
                "match": "keyword",
                "words": "STOP",
                "reason": None,
                "sender": NUMBER_1,
                "campaign": "acme",
                "system_id": "acme",
                "smsc_message_id": MO_SMSC_ID,
                "instance": "test-gw",
                "confirmation": {
                    "kind": "opt_out_confirmation",
                    "text": OPT_OUT_REPLY,
                    "submitted_at": stamp(reply.at),
                    "outcome": "accepted",
                    "status": "ESME_ROK",
                    "command_status": 0,
                    "message_ids": [sent.message_id],
                    "answered_at": stamp(reply.answered_at or 0),
                    "source": sent.pdu.source_addr,
                    "destination": sent.pdu.destination_addr,
                    "parts": 1,
                    "carrier": reply.carrier,
                    "error": None,
                    "reply_id": reply.reply_id,
                },
            }
            assert reply.event_id == event.event_id
            assert reply.answered_at is not None
            assert before <= event.at <= reply.at <= reply.answered_at <= after
            assert reply.carrier is not None
            assert reply.carrier != "service-bind"  # over the client's own session

            out = await history(config, SUBSCRIBER, "--format", "csv")
            assert out.startswith(",".join(CSV_COLUMNS) + "\r\n")
            (line,) = list(csv.DictReader(io.StringIO(out)))
            assert line["at"] == row["at"]
            assert (line["scope"], line["state"], line["actor"], line["by"]) == (
                "campaign:acme",
                "opted_out",
                "keyword",
                "",
            )
            assert (line["words"], line["match"], line["sender"]) == ("STOP", "keyword", NUMBER_1)
            assert (line["campaign"], line["system_id"]) == ("acme", "acme")
            assert (line["smsc_message_id"], line["instance"]) == (MO_SMSC_ID, "test-gw")
            assert line["confirmation_text"] == OPT_OUT_REPLY
            assert line["confirmation_submitted_at"] == stamp(reply.at)
            assert line["confirmation_status"] == "ESME_ROK"
            assert line["confirmation_message_ids"] == sent.message_id
            assert line["confirmation_answered_at"] == stamp(reply.answered_at)
            assert line["confirmation_outcome"] == "accepted"

            table = await history(config, SUBSCRIBER)
            assert await history(config, SUBSCRIBER, "--format", "table") == table
            header, (data,) = table_lines(table)
            for column, value in (
                ("TIME (UTC)", stamp(event.at)),
                ("SCOPE", "campaign:acme"),
                ("STATE", "opted_out"),
                ("ACTOR", "keyword"),
                ("BY", "-"),
                ("WORDS / REASON", "STOP"),
                ("MATCH", "keyword"),
                ("SENT TO", NUMBER_1),
                ("CAMPAIGN", "acme"),
                ("ACCOUNT", "acme"),
                ("SMSC MSG ID", MO_SMSC_ID),
                ("INSTANCE", "test-gw"),
                ("CONFIRMATION", "opt_out_confirmation"),
                ("SUBMITTED", stamp(reply.at)),
                ("OUTCOME", "accepted"),
                ("SMSC STATUS", "ESME_ROK"),
                ("CONF. MSG ID", sent.message_id),
                ("ANSWERED", stamp(reply.answered_at)),
                ("CONFIRMATION TEXT", OPT_OUT_REPLY),
            ):
                assert_in_column(header, data, column, value)

            assert rig.gw.admin is not None
            port = rig.gw.admin.port
            status, headers, body = await http_get(port, f"/v1/consent/{SUBSCRIBER}/history")
            assert status == 200
            assert json.loads(body) == {"subscriber": SUBSCRIBER, "events": rows}
            status, headers, body = await http_get(
                port, f"/v1/consent/%2B{SUBSCRIBER}/history?format=csv"
            )
            assert status == 200
            assert headers["content-type"].startswith("text/csv")
            assert body.decode() == out
            status, _, body = await http_get(port, f"/v1/consent/{SUBSCRIBER}/history?format=xml")
            assert status == 400

    async def test_refused_confirmation_shows_the_smsc_error(self, tmp_path: Path) -> None:
        """A confirmation the SMSC refuses is recorded with its error status and no message
        id; the history (CLI and API) says so."""
        async with consent_rig(tmp_path, admin=ADMIN) as rig:
            rig.sim.set_faults(refuse_after=0, refuse_status=CommandStatus.ESME_RSUBMITFAIL)
            assert await rig.mo("STOP") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            (reply,) = await wait_replies(rig, 1)
            config = cli_config(tmp_path, rig)
            (row,) = json.loads(await history(config, SUBSCRIBER, "--json"))
            confirmation = row["confirmation"]
            assert (confirmation["outcome"], confirmation["status"]) == (
                "refused",
                "ESME_RSUBMITFAIL",
            )
            assert confirmation["command_status"] == CommandStatus.ESME_RSUBMITFAIL
            assert confirmation["message_ids"] == []
            assert confirmation["text"] == OPT_OUT_REPLY
            assert confirmation["answered_at"] == stamp(reply.answered_at or 0)
            header, (data,) = table_lines(await history(config, SUBSCRIBER))
            assert_in_column(header, data, "OUTCOME", "refused")
            assert_in_column(header, data, "SMSC STATUS", "ESME_RSUBMITFAIL")
            assert_in_column(header, data, "CONF. MSG ID", "-")
            (line,) = list(
                csv.DictReader(io.StringIO(await history(config, SUBSCRIBER, "--format", "csv")))
            )
            assert line["confirmation_status"] == "ESME_RSUBMITFAIL"
            assert line["confirmation_message_ids"] == ""
            assert rig.gw.admin is not None
            status, _, body = await http_get(rig.gw.admin.port, f"/v1/consent/{SUBSCRIBER}/history")
            assert status == 200
            assert json.loads(body)["events"] == [row]

    async def test_unanswered_confirmation_is_no_answer(self, tmp_path: Path) -> None:
        """A confirmation the SMSC never answers is recorded, once its request times out, as
        "no_answer": submitted, no status, no message id, no answer time."""
        session: dict[str, Any] = {**FAST_SESSION, "response_timeout_s": 1}
        async with consent_rig(tmp_path, session=session) as rig:
            rig.sim.set_faults(respond=False)
            assert await rig.mo("STOP") == 0
            assert await wait_texts(rig.sim, SUBSCRIBER, 1) == [OPT_OUT_REPLY]
            (reply,) = await wait_replies(rig, 1)
            (row,) = json.loads(await history(cli_config(tmp_path, rig), SUBSCRIBER, "--json"))
            confirmation = row["confirmation"]
            assert confirmation["outcome"] == "no_answer"
            assert confirmation["submitted_at"] == stamp(reply.at)
            assert (confirmation["status"], confirmation["answered_at"]) == (None, None)
            assert confirmation["message_ids"] == []
            assert "no answer" in confirmation["error"]


class TestWholeStory:
    async def test_stop_help_staff_opt_in_in_order(self, tmp_path: Path) -> None:
        """STOP, HELP, a staff opt-out (by alice) and START: four rows in order; the HELP
        answer is a row of its own (no event), the staff change names who made it."""
        async with consent_rig(tmp_path, admin=ADMIN) as rig:
            config = cli_config(tmp_path, rig)
            assert await rig.mo("STOP") == 0
            await wait_replies(rig, 1)
            assert await rig.mo("HELP") == 0
            await wait_replies(rig, 2)
            code, _, err = await run_cli(
                "consent", "opt-out", "--config", str(config), SUBSCRIBER,
                "--actor", "alice", "--reason", "called support",
            )  # fmt: skip
            assert code == 0, err
            assert await rig.mo("START") == 0
            await wait_replies(rig, 3)
            assert await wait_texts(rig.sim, SUBSCRIBER, 3) == [
                OPT_OUT_REPLY,
                HELP_REPLY,
                OPT_IN_REPLY,
            ]
            rows = json.loads(await history(config, SUBSCRIBER, "--json"))
            summary = [
                (
                    r["record"],
                    r["state"],
                    r["actor"],
                    r["by"],
                    r["words"],
                    (r["confirmation"] or {}).get("kind"),
                )
                for r in rows
            ]
            assert summary == [
                ("event", "opted_out", "keyword", None, "STOP", "opt_out_confirmation"),
                ("reply", None, None, None, "HELP", "help"),
                ("event", "opted_out", "admin", "alice", "called support", None),
                ("event", "opted_in", "keyword", None, "START", "opt_in_confirmation"),
            ]
            texts = [(r["confirmation"] or {}).get("text") for r in rows]
            assert texts == [OPT_OUT_REPLY, HELP_REPLY, None, OPT_IN_REPLY]
            assert rows[1]["event_id"] is None
            assert all(
                r["confirmation"]["outcome"] == "accepted" for r in rows if r["confirmation"]
            )
            header, lines = table_lines(await history(config, SUBSCRIBER))
            assert len(lines) == 4
            assert_in_column(header, lines[1], "CONFIRMATION", "help")
            assert_in_column(header, lines[2], "BY", "alice")
            assert_in_column(header, lines[2], "CONFIRMATION", "-")
            scoped = json.loads(
                await history(config, SUBSCRIBER, "--json", "--scope", "campaign:acme")
            )
            assert [r["words"] for r in scoped] == ["STOP", "START"]  # no HELP, no global row
