"""The evidence for one number: its consent events, each with the confirmation sent for it.

What ``smpp-gateway consent history NUMBER`` and ``GET /v1/consent/NUMBER/history`` show, in
one place so both show the same: ``history_rows`` reads the subscriber's events
(``ConsentStore.history``) and auto-reply records (``ConsentStore.replies``) and makes one row
per event, oldest first, with the record of the confirmation that answered it (linked by
``event_id``) as its ``confirmation``. Auto-replies no event of the rows answers (a HELP answer,
which changes no consent; a second reply to one event) are rows of their own (``record``
``"reply"``), in time order; with a scope filter, only the replies of that scope's events.

Formats: ``render_json`` (the rows as a JSON array, for scripts), ``render_csv`` (one line per
row under a header, ``confirmation`` flattened into ``confirmation_*`` columns; a cell that a
spreadsheet would run as a formula, starting with ``=``, ``+``, ``-``, ``@``, tab or CR, gets a
leading ``'``: subscribers choose their words), ``render_table`` (aligned columns for people;
control characters shown escaped, so no text can break a line or the alignment).

``sending_rules`` is what ``consent show`` adds below the states: the quiet hours that apply to
the number now (its zones and local times, its state, each campaign's rules open or closed);
``frequency_caps`` is what it adds after those: per capped counter, the messages counted now;
``revoke_rules`` the businesses: revoke-all in effect or not, the business-wide record and the
clarifying question asked, if any.
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from gateway.consent.campaign import Campaign, CampaignDirectory
from gateway.consent.hours import closed, local_text, rule_states
from gateway.consent.model import AddressKind, ConsentEvent, SmsAddress
from gateway.consent.numbers import place
from gateway.consent.revoke import question_state
from gateway.store.base import ConsentStore, ReplyOutcome, ReplyRecord
from gateway.store.staff import event_json, utc_stamp

FORMATS: Final = ("table", "json", "csv")

# The keys of every row, in CSV column order (``confirmation`` is flattened below).
ROW_KEYS: Final = (
    "at",
    "scope",
    "state",
    "actor",
    "by",
    "words",
    "match",
    "sender",
    "campaign",
    "system_id",
    "smsc_message_id",
    "instance",
    "reason",
    "record",
    "event_id",
    "subscriber",
)
CONFIRMATION_KEYS: Final = (
    "kind",
    "text",
    "submitted_at",
    "outcome",
    "status",
    "command_status",
    "message_ids",
    "answered_at",
    "source",
    "destination",
    "parts",
    "carrier",
    "error",
    "reply_id",
)
CSV_COLUMNS: Final = (*ROW_KEYS, *(f"confirmation_{k}" for k in CONFIRMATION_KEYS))


def confirmation_json(reply: ReplyRecord) -> dict[str, Any]:
    """One auto-reply record as the history shows it (times ISO UTC; status by name)."""
    status = reply.command_status
    return {
        "kind": reply.kind,
        "text": reply.text,
        "submitted_at": None if reply.outcome is ReplyOutcome.NOT_SENT else utc_stamp(reply.at),
        "outcome": reply.outcome.value,
        "status": reply.status or (None if status is None else f"0x{status:08x}"),
        "command_status": status,
        "message_ids": list(reply.message_ids),
        "answered_at": None if reply.answered_at is None else utc_stamp(reply.answered_at),
        "source": reply.source,
        "destination": reply.destination,
        "parts": reply.parts,
        "carrier": reply.carrier,
        "error": reply.error,
        "reply_id": reply.reply_id,
    }


def _event_row(event: ConsentEvent, reply: ReplyRecord | None) -> dict[str, Any]:
    row: dict[str, Any] = {"record": "event", **event_json(event)}
    row.setdefault("by", event.by)
    row["confirmation"] = None if reply is None else confirmation_json(reply)
    return row


def _reply_row(reply: ReplyRecord) -> dict[str, Any]:
    """An auto-reply no shown event answers (HELP): what the subscriber wrote, and the answer."""
    return {
        "record": "reply",
        "event_id": reply.event_id,
        "at": utc_stamp(reply.at),
        "subscriber": reply.subscriber,
        "scope": None,
        "state": None,
        "actor": None,
        "by": None,
        "match": None,
        "words": reply.words,
        "reason": None,
        "sender": reply.source,
        "campaign": reply.campaign,
        "system_id": reply.system_id,
        "smsc_message_id": None,
        "instance": reply.instance,
        "confirmation": confirmation_json(reply),
    }


def build_rows(
    events: Sequence[ConsentEvent], replies: Iterable[ReplyRecord], *, scoped: bool = False
) -> list[dict[str, Any]]:
    """The rows for ``events`` (in their order) and ``replies`` (in record order); ``scoped``:
    the events are one scope's, so replies of no shown event are left out."""
    shown = {event.event_id for event in events}
    confirming: dict[str, ReplyRecord] = {}
    loose: list[ReplyRecord] = []
    for reply in replies:
        if reply.event_id in shown and reply.event_id not in confirming:
            confirming[reply.event_id] = reply
        elif not scoped or reply.event_id in shown:
            loose.append(reply)
    loose.sort(key=lambda r: r.at)  # stable: record order among equal times
    rows: list[dict[str, Any]] = []
    i = 0
    for event in events:
        while i < len(loose) and loose[i].at < event.at:
            rows.append(_reply_row(loose[i]))
            i += 1
        rows.append(_event_row(event, confirming.get(event.event_id)))
    rows.extend(_reply_row(reply) for reply in loose[i:])
    return rows


async def history_rows(
    store: ConsentStore, subscriber: str, scope: str | None = None
) -> list[dict[str, Any]]:
    """The subscriber's history with its confirmations (see the module docstring)."""
    events = await store.history(subscriber, scope)
    replies = await store.replies(subscriber)
    return build_rows(events, replies, scoped=scope is not None)


# --- formats ----------------------------------------------------------------------------------


def render_json(rows: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(rows)) + "\n"


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def render_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """A header line, then one line per row (RFC 4180 quoting, CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        confirmation = row.get("confirmation") or {}
        writer.writerow(
            [_csv_cell(row.get(key)) for key in ROW_KEYS]
            + [_csv_cell(confirmation.get(key)) for key in CONFIRMATION_KEYS]
        )
    return out.getvalue()


# (header, how a row shows in the column); the confirmation's text goes last, it is the
# longest.
_TABLE: Final[tuple[tuple[str, str], ...]] = (
    ("TIME (UTC)", "at"),
    ("SCOPE", "scope"),
    ("STATE", "state"),
    ("ACTOR", "actor"),
    ("BY", "by"),
    ("WORDS / REASON", "words"),
    ("MATCH", "match"),
    ("SENT TO", "sender"),
    ("CAMPAIGN", "campaign"),
    ("ACCOUNT", "system_id"),
    ("SMSC MSG ID", "smsc_message_id"),
    ("INSTANCE", "instance"),
    ("CONFIRMATION", "c:kind"),
    ("SUBMITTED", "c:submitted_at"),
    ("OUTCOME", "c:outcome"),
    ("SMSC STATUS", "c:status"),
    ("CONF. MSG ID", "c:message_ids"),
    ("ANSWERED", "c:answered_at"),
    ("CONFIRMATION TEXT", "c:text"),
)


def _shown(text: str) -> str:
    """``text`` on one line: control and format characters escaped (``\\n``, ``\\u200b``)."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def _width(text: str) -> int:
    """Terminal columns ``text`` takes (wide East Asian characters two, combining marks 0)."""
    width = 0
    for char in text:
        if unicodedata.combining(char):
            continue
        width += 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1
    return width


def _table_cell(row: Mapping[str, Any], key: str) -> str:
    if key.startswith("c:"):
        confirmation = row.get("confirmation")
        if not confirmation:
            return "-" if key == "c:kind" else ""
        value = confirmation.get(key[2:])
        if key == "c:outcome" and confirmation.get("error"):
            value = f"{value} ({confirmation['error']})"
    else:
        value = row.get(key)
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return _shown(str(value))


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Aligned columns, a header line first; ``-`` for an empty cell."""
    lines = [[header for header, _key in _TABLE]]
    lines += [[_table_cell(row, key) for _header, key in _TABLE] for row in rows]
    widths = [max(_width(line[i]) for line in lines) for i in range(len(_TABLE))]
    out = []
    for line in lines:
        cells = [cell + " " * (widths[i] - _width(cell)) for i, cell in enumerate(line)]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def render(rows: Sequence[Mapping[str, Any]], fmt: str) -> str:
    """``rows`` in one of ``FORMATS``."""
    if fmt == "json":
        return render_json(rows)
    if fmt == "csv":
        return render_csv(rows)
    if fmt == "table":
        return render_table(rows)
    raise ValueError(f"unknown history format {fmt!r} (table, json, csv)")


# --- sending rules: what applies to a number now (``consent show``) ------------------------------


def sending_rules(
    directory: CampaignDirectory, subscriber: SmsAddress, *, country: str, now: float
) -> dict[str, Any] | None:
    """The quiet hours of every campaign that has some, for ``subscriber`` at wall time
    ``now``: its zones, local times and state, and per campaign whether it may be sent to now
    and which rule closes it (None when no campaign has quiet hours)."""
    bound = [c for c in directory if c.hours is not None]
    if not bound:
        return None
    needs_state = any(c.hours is not None and c.hours.needs_subdivision for c in bound)
    where = place(
        subscriber.value,
        short_code=subscriber.kind is AddressKind.SHORT_CODE,
        default_country=country,
        subdivision=needs_state,
    )
    campaigns = []
    for campaign in bound:
        quiet_hours = campaign.hours
        assert quiet_hours is not None
        found = closed(quiet_hours, where, now)
        campaigns.append(
            {
                "campaign": campaign.name,
                "category": campaign.category.value,
                "action": quiet_hours.action.value,
                "open": found is None,
                "closed_by": None if found is None else found.rule,
                "quiet_dates": sorted(d.isoformat() for d in quiet_hours.closed_dates),
                "rules": [
                    {
                        "rule": state.rule,
                        "applies": state.applies,
                        "open": state.open,
                        "window": state.window,
                        "source": state.source,
                        "zones": [
                            {"zone": zone, "local_time": local, "open": is_open}
                            for zone, local, is_open in state.zones
                        ],
                    }
                    for state in rule_states(quiet_hours, where, now)
                ],
            }
        )
    return {
        "at": utc_stamp(now),
        "zones": [{"zone": zone, "local_time": local_text(zone, now)} for zone in where.zones],
        "zones_exact": where.zones_exact,
        "countries": sorted(where.regions),
        "state": where.subdivision,
        "campaigns": campaigns,
    }


def render_sending_rules(rules: Mapping[str, Any]) -> str:
    """``sending_rules`` for people: where the number is, then each campaign's rules."""
    zones = ", ".join(f"{z['zone']} {z['local_time']}" for z in rules["zones"]) or "none known"
    known = "" if rules["zones_exact"] else " (the country's: the number's own are not known)"
    lines = [
        f"sending rules at {rules['at']}:",
        f"  zones: {zones}{known}",
        f"  state: {rules['state'] or 'not known (state presets all apply)'}",
    ]
    for c in rules["campaigns"]:
        verdict = "open" if c["open"] else f"closed by {c['closed_by']}"
        lines.append(f"  {c['campaign']} ({c['category']}, {c['action']}): {verdict}")
        for r in c["rules"]:
            if not r["applies"]:
                lines.append(f"    {r['rule']:<12} does not apply")
                continue
            status = "open" if r["open"] else "closed"
            line = f"    {r['rule']:<12} {status:<7} {r['window']}"
            own = [z["zone"] for z in r["zones"]]
            if own != [z["zone"] for z in rules["zones"]]:  # a window in a zone of its own
                line += " (" + ", ".join(f"{z['zone']} {z['local_time']}" for z in r["zones"]) + ")"
            lines.append(line)
        if c["quiet_dates"]:
            lines.append(f"    quiet dates: {', '.join(c['quiet_dates'])}")
    return "\n".join(lines) + "\n"


# --- frequency caps: what a number has been sent in each capped window (``consent show``) -------


async def frequency_caps(
    directory: CampaignDirectory, store: ConsentStore, subscriber: str, *, now: float
) -> list[dict[str, Any]] | None:
    """Per counter of a capped campaign (one campaign, a business, or the subscriber): the
    cap, the messages counted in its window at wall time ``now``, and whether it is reached
    (None when no campaign is capped)."""
    # Campaigns sharing a counter may still differ in their cap: each cap is shown.
    groups: dict[tuple[str, int, float], list[Campaign]] = {}
    for campaign in directory:
        cap = campaign.cap
        if cap is not None:
            groups.setdefault((campaign.cap_key, cap.count, cap.window_s), []).append(campaign)
    if not groups:
        return None
    shown = []
    for (key, count, window_s), campaigns in sorted(groups.items()):
        cap = campaigns[0].cap
        assert cap is not None
        counted = await store.sends_counted(subscriber, key, window_s, now)
        shown.append(
            {
                "counter": key,
                "per": cap.per.value,
                "campaigns": sorted(c.name for c in campaigns),
                "rule": cap.rule,
                "count": count,
                "window_h": window_s / 3600.0,
                "counted": counted,
                "reached": counted >= count,
            }
        )
    return shown


# --- FCC revoke-all: which business rules apply to a number now (``consent show``) -------------


def revoke_rules(
    directory: CampaignDirectory, history: Sequence[ConsentEvent], *, now: float
) -> list[dict[str, Any]] | None:
    """Per business of the configured campaigns: its campaigns, whether revoke-all is in
    effect at wall time ``now`` (and from when), the number's business-wide record and the
    latest clarifying question (open, answered or ended). None when no campaign has a
    business."""
    by_name: dict[str, list[Campaign]] = {}
    for campaign in directory:
        if campaign.business:
            by_name.setdefault(campaign.business, []).append(campaign)
    if not by_name:
        return None
    shown = []
    for name, campaigns in sorted(by_name.items()):
        first = campaigns[0]
        rules = first.business_rules
        assert first.business_scope is not None
        key = first.business_scope.key
        latest = next((e for e in reversed(history) if e.scope == key), None)
        question = question_state(history, key, now)
        if question is not None:
            question = {
                **question,
                "asked_at": utc_stamp(float(question["asked_at"])),
                "until": utc_stamp(float(question["until"])),
            }
        shown.append(
            {
                "business": name,
                "campaigns": [c.name for c in campaigns],
                "revoke_all": rules.revoke_all_text if rules is not None else "false",
                "in_effect": rules is not None and rules.revoke_all(now),
                "clarify": rules is not None and rules.clarify is not None,
                "scope": key,
                "state": latest.state.value if latest is not None else "unknown",
                "question": question,
            }
        )
    return shown


def render_frequency_caps(caps: list[dict[str, Any]]) -> str:
    """``frequency_caps`` for people: one line per counter."""
    lines = ["frequency caps:"]
    for c in caps:
        verdict = "reached" if c["reached"] else "not reached"
        lines.append(
            f"  {c['counter']:<24} {c['rule']:<8} {c['counted']} of {c['count']} in"
            f" {c['window_h']:g} h, {verdict} ({', '.join(c['campaigns'])})"
        )
    return "\n".join(lines) + "\n"


def render_revoke_rules(businesses: Sequence[Mapping[str, Any]]) -> str:
    """``revoke_rules`` for people: one block per business."""
    lines = []
    for b in businesses:
        effect = "in effect" if b["in_effect"] else "not in effect"
        lines.append(
            f"business {b['business']} ({', '.join(b['campaigns'])}): revoke-all"
            f" {b['revoke_all']}, {effect}{', asks which messages' if b['clarify'] else ''}"
        )
        lines.append(f"  {b['scope']}: {b['state']}")
        q = b["question"]
        if q is not None:
            lines.append(
                f"  question asked {q['asked_at']} via {q['campaign']}, answers until"
                f" {q['until']}: {q['status']}"
            )
    return "".join(f"{line}\n" for line in lines)
