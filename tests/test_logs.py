"""The log catalogue (docs/LOGS.md) against the code, and redaction of secrets and bodies."""

from __future__ import annotations

import ast
import asyncio
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import structlog

from gateway.consent.model import Actor, ConsentState
from gateway.store.staff import scope_from, set_state
from gateway.telemetry import logs
from tests.support.gateway import running_gateway
from tests.support.sim import running_simulator

ROOT = Path(__file__).resolve().parent.parent
CATALOGUE = ROOT / "docs" / "LOGS.md"
LOGS_MODULE = ROOT / "gateway" / "telemetry" / "logs.py"
LEVELS = frozenset({"debug", "info", "warning", "warn", "error", "exception", "critical", "msg"})
EVENT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def catalogue_constants() -> dict[str, str]:
    """Event-name constants in logs.py: module-level ``NAME: Final = "snake_case"``."""
    found: dict[str, str] = {}
    for node in ast.parse(LOGS_MODULE.read_text(encoding="utf-8")).body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id.isupper()
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and EVENT_NAME.match(node.value.value)
        ):
            found[node.target.id] = node.value.value
    return found


def documented_events() -> list[str]:
    """Event names in the first column of the tables under docs/LOGS.md's "## Events"."""
    text = CATALOGUE.read_text(encoding="utf-8")
    section = text.split("\n## Events\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([a-z0-9_]+)` \|", section, re.MULTILINE)


def log_calls() -> Iterator[tuple[str, int, ast.Call]]:
    """Every ``<something log>.<level>(...)`` call in gateway/, with file and line."""
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
            ):
                continue
            receiver = node.func.value
            name = (
                receiver.id
                if isinstance(receiver, ast.Name)
                else receiver.attr
                if isinstance(receiver, ast.Attribute)
                else ""
            )
            if "log" in name.lower():
                yield str(path.relative_to(ROOT)), node.lineno, node


class TestCatalogue:
    """docs/LOGS.md lists exactly the event names logs.py defines, each once."""

    def test_constants_are_found(self) -> None:
        """The parser sees the catalogue (a parser that finds nothing would prove nothing)."""
        constants = catalogue_constants()
        assert constants["MT_REJECTED"] == "mt_rejected"
        assert len(constants) >= 20
        assert "REDACTED" not in constants

    def test_doc_lists_exactly_the_constants(self) -> None:
        """Every constant is documented and every documented event is a constant."""
        constants = set(catalogue_constants().values())
        documented = set(documented_events())
        assert not constants - documented, f"missing from docs/LOGS.md: {constants - documented}"
        assert not documented - constants, f"not in logs.py: {documented - constants}"

    def test_each_event_documented_once(self) -> None:
        """No event appears in two rows (two descriptions would disagree sooner or later)."""
        events = documented_events()
        assert len(events) == len(set(events))

    def test_constant_values_are_unique_snake_case(self) -> None:
        """Two constants never share a name, and names are snake_case."""
        values = list(catalogue_constants().values())
        assert len(values) == len(set(values))
        assert all(EVENT_NAME.match(v) for v in values)


class TestLogCalls:
    """Code logs catalogue constants only, so a SIEM's event list cannot silently drift."""

    def test_scanner_finds_calls(self) -> None:
        """The scan sees the relay's and the consent enforcer's log calls."""
        files = {path for path, _line, _call in log_calls()}
        assert "gateway/proxy/bridge.py" in files
        assert "gateway/proxy/consent.py" in files

    def test_every_call_uses_a_logs_constant(self) -> None:
        """The event of every log call is ``logs.NAME`` for a NAME logs.py defines."""
        constants = catalogue_constants()
        bad = []
        for path, line, call in log_calls():
            event = call.args[0] if call.args else None
            if not (
                isinstance(event, ast.Attribute)
                and isinstance(event.value, ast.Name)
                and event.value.id == "logs"
                and event.attr in constants
            ):
                shown = ast.unparse(event) if event is not None else "(no event)"
                bad.append(f"{path}:{line}: {shown}")
        assert not bad, "log calls without a logs.<CONSTANT> event:\n" + "\n".join(bad)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """structlog configured as the daemon configures it, writing into a buffer."""
    stream = io.StringIO()
    logs.configure(level="debug", stream=stream)
    yield stream
    structlog.reset_defaults()


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestRedactor:
    """Secrets are never written; message bodies only with logging.log_bodies."""

    @pytest.mark.parametrize("log_bodies", [False, True])
    def test_secrets_always_redacted(self, log_bodies: bool) -> None:
        """password, secret, token and bearer_token are replaced whatever log_bodies says."""
        stream = io.StringIO()
        logs.configure(level="info", stream=stream, log_bodies=log_bodies)
        try:
            logs.get_logger().info(
                logs.BIND_REQUESTED,
                password="hunter2",
                secret="s3",
                token="t0k",
                bearer_token="b3",
                system_id="acct",
            )
        finally:
            structlog.reset_defaults()
        (record,) = records(stream)
        for key in ("password", "secret", "token", "bearer_token"):
            assert record[key] == logs.REDACTED
        assert record["system_id"] == "acct"
        for value in ("hunter2", "s3", "t0k", "b3"):
            assert value not in stream.getvalue()

    def test_bodies_redacted_by_default(self, log_output: io.StringIO) -> None:
        """short_message, message_payload, text, body and words are replaced by default."""
        fields = {k: f"body-{k}" for k in logs.BODY_FIELDS}
        logs.get_logger().info(logs.MT_REJECTED, **fields)
        (record,) = records(log_output)
        assert all(record[k] == logs.REDACTED for k in fields)
        assert "body-" not in log_output.getvalue()

    def test_bodies_kept_with_log_bodies(self) -> None:
        """With log_bodies the text is written as given (the operator asked for it)."""
        stream = io.StringIO()
        logs.configure(level="info", stream=stream, log_bodies=True)
        try:
            logs.get_logger().info(logs.MT_REJECTED, short_message="hello there", password="pw")
        finally:
            structlog.reset_defaults()
        (record,) = records(stream)
        assert record["short_message"] == "hello there"
        assert record["password"] == logs.REDACTED

    def test_bound_context_is_redacted(self, log_output: io.StringIO) -> None:
        """Fields bound to a logger (and to contextvars) are redacted like call fields."""
        bound = logs.get_logger().bind(password="bound-pw")
        structlog.contextvars.bind_contextvars(text="ctx-text")
        try:
            bound.info(logs.BIND_COMPLETED)
        finally:
            structlog.contextvars.clear_contextvars()
        out = log_output.getvalue()
        assert "bound-pw" not in out
        assert "ctx-text" not in out

    def test_level_and_event_fields(self, log_output: io.StringIO) -> None:
        """Each line is one JSON object with event, level and an ISO UTC timestamp."""
        logs.get_logger().warning(logs.UPSTREAM_CONNECT_FAILED, error="refused")
        (record,) = records(log_output)
        assert record["event"] == "upstream_connect_failed"
        assert record["level"] == "warning"
        assert record["timestamp"].endswith("Z")

    def test_processor_alone(self) -> None:
        """The processor redacts in place and leaves other fields alone."""
        redact = logs.Redactor(log_bodies=False)
        out = redact(None, "info", {"event": "x", "password": "p", "text": "t", "n": 1})
        assert out == {"event": "x", "password": logs.REDACTED, "text": logs.REDACTED, "n": 1}

    def test_mask_subscriber_is_stable_and_hides_the_number(self) -> None:
        """A masked number keeps a short prefix/suffix and a hash: same input, same mask."""
        masked = logs.mask_subscriber("15551234567")
        assert masked == logs.mask_subscriber("15551234567")
        assert masked != logs.mask_subscriber("15551234568")
        assert "15551234567" not in masked
        assert "1234" not in masked


# --- a real run -------------------------------------------------------------------------------

PASSWORD = "Pw9xQzK"  # a test credential that must never reach the log
TEXT = "zebra quartz lantern 42"
OPTED_OUT = "15557654321"
ALLOWED = "15551230000"


def _client_run(port: int) -> list[int]:
    """smpplib: bind with a password, submit TEXT to both numbers, unbind; the statuses."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=10)
    client.connect()
    statuses = []
    try:
        client.bind_transceiver(system_id="acct", password=PASSWORD)
        for destination in (OPTED_OUT, ALLOWED):
            client.send_message(
                source_addr_ton=1,
                source_addr="15550100",
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=destination,
                short_message=TEXT.encode(),
            )
            statuses.append(client.read_pdu().status)
        client.unbind()
    finally:
        client.disconnect()
    return statuses


class TestGatewayRun:
    """A gateway and simulator in-process, a real client: the log holds no secret, no text."""

    async def test_no_password_or_text_in_the_log(self, log_output: io.StringIO) -> None:
        """Bind with a password and submit twice (one refused for consent): every line is JSON
        and none holds the password, the text (plain or hex) or a full subscriber number."""
        async with (
            running_simulator(control_port=None) as sim,
            running_gateway(sim.port) as gw,
        ):
            assert gw.store is not None
            await set_state(
                gw.store,
                subscriber=OPTED_OUT,
                scope=scope_from(),
                state=ConsentState.OPTED_OUT,
                actor=Actor.ADMIN,
                reason="test",
                instance="test",
            )
            statuses = await asyncio.to_thread(_client_run, gw.port)
            assert len(sim.messages) == 1  # answered OK: the simulator has it
        assert statuses[0] == 0x45  # opted_out: ESME_RSUBMITFAIL
        assert statuses[1] == 0
        out = log_output.getvalue()
        lines = records(log_output)
        events = {r["event"] for r in lines}
        assert {"bind_requested", "bind_completed", "mt_rejected", "sim_message_received"} <= events
        assert all(r["event"] in set(catalogue_constants().values()) for r in lines)
        for secret in (PASSWORD, TEXT, TEXT.encode().hex(), OPTED_OUT, ALLOWED):
            assert secret not in out, f"{secret!r} was logged"
        rejected = next(r for r in lines if r["event"] == "mt_rejected")
        assert rejected["subscriber"] == logs.mask_subscriber(OPTED_OUT)
        assert rejected["system_id"] == "acct"
        assert rejected["conn_id"]


class TestUnderAbuse:
    """Log lines a peer can cause are bounded in length and in number."""

    def test_long_fields_are_cut(self, log_output: io.StringIO) -> None:
        """A 65 KB system_id is written as its first 256 characters and how much was cut."""
        logs.get_logger().info(logs.BIND_REQUESTED, system_id="A" * 65_536, peer="p")
        (line,) = records(log_output)
        assert line["system_id"] == "A" * 256 + f"...[+{65_536 - 256} chars]"
        assert len(log_output.getvalue()) < 1000

    def test_summary_logs_a_burst_then_one_line_with_the_count(self) -> None:
        """Beyond the burst, lines of one key are counted and written as one summary line;
        another key has a burst of its own."""
        written: list[tuple[str, dict[str, Any]]] = []

        def method(event: str, **fields: Any) -> None:
            written.append((event, fields))

        summary = logs.Summary(interval_s=10.0, burst=3)
        for i in range(1000):
            summary.emit(method, ("c1", "opted_out"), logs.MT_REJECTED, n=i)
        summary.emit(method, ("c2", "opted_out"), logs.MT_REJECTED, n=0)
        assert [f["n"] for _e, f in written] == [0, 1, 2, 0]
        summary.flush()
        assert written[-1] == (
            logs.MT_REJECTED,
            {"repeats": 997, "interval_s": 10.0, "n": 999},
        )
        summary.emit(method, ("c1", "opted_out"), logs.MT_REJECTED, n=1000)
        assert written[-1] == (logs.MT_REJECTED, {"n": 1000})  # a new interval, a new burst

    def test_summary_is_bounded_in_keys(self) -> None:
        """A flood of distinct keys flushes what is counted instead of growing without end."""
        written: list[dict[str, Any]] = []
        summary = logs.Summary(interval_s=10.0, burst=1, max_keys=10)
        for i in range(100):
            summary.emit(lambda _e, **f: written.append(f), i, logs.MT_REJECTED, n=i)
        assert len(summary._counts) <= 10
        assert len(written) == 100
