"""The benchmark harness: its parts in-process, and one tiny end-to-end run against the gateway.

No test here looks at a timing: figures on a shared machine are for the report, not for asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.__main__ import (
    CONFIGURATIONS,
    ROOT,
    gateway_config,
    merge,
    select_configs,
    to_toml,
)
from bench.load import LoadProtocol, generate, percentile, submit_templates
from bench.relay import RelayStats, start_relay
from bench.sink import MESSAGE_ID, SinkStats, start_sink
from gateway.config import parse
from gateway.smpp import codec
from gateway.smpp.constants import CommandStatus, Tag
from gateway.smpp.framing import FrameBuffer
from gateway.smpp.pdu import (
    BindTransmitter,
    BindTransmitterResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    RawPdu,
    SubmitSm,
    SubmitSmResp,
    Tlv,
    Unbind,
    UnbindResp,
)
from gateway.text import gsm7
from tests.support.redis_server import RedisServer, redis_server_binary

HOST = "127.0.0.1"


async def _read_frames(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    buffer = FrameBuffer()
    frames: list[bytes] = []
    while len(frames) < count:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, "connection closed early"
        buffer.feed(data)
        frames += buffer.frames()
    return frames


async def _unbind_and_wait_for_close(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """End a session the way the sink expects: unbind, read until it closes, close our side."""
    writer.write(codec.encode(Unbind(sequence_number=0x7FFFFFFE)))
    while await asyncio.wait_for(reader.read(65536), 10):
        pass
    writer.close()
    await writer.wait_closed()


@pytest.fixture
async def sink() -> AsyncIterator[tuple[int, SinkStats]]:
    stats = SinkStats()
    server = await start_sink(HOST, 0, stats)
    try:
        yield server.sockets[0].getsockname()[1], stats
    finally:
        server.close()
        await server.wait_closed()


class TestSink:
    async def test_answers_each_request_with_its_sequence_number(
        self, sink: tuple[int, SinkStats]
    ) -> None:
        """bind, submit_sm, enquire_link, an unknown command and unbind sent in one write are
        answered in order, with their own sequence numbers, and counted; then the sink closes."""
        port, stats = sink
        reader, writer = await asyncio.open_connection(HOST, port)
        requests = [
            BindTransmitter(system_id="a", password="b", sequence_number=1),
            SubmitSm(destination_addr="1", short_message=b"x", sequence_number=7),
            SubmitSm(destination_addr="2", short_message=b"y", sequence_number=0x7FFFFFFF),
            EnquireLink(sequence_number=9),
            RawPdu(command_id=0x00000777, body=b"", sequence_number=10),
            Unbind(sequence_number=11),
        ]
        writer.write(b"".join(codec.encode(r) for r in requests))
        answers = [codec.decode(f) for f in await _read_frames(reader, len(requests))]
        assert await asyncio.wait_for(reader.read(65536), 10) == b"", "closed after unbind"
        writer.close()
        await writer.wait_closed()
        assert [type(a) for a in answers] == [
            BindTransmitterResp,
            SubmitSmResp,
            SubmitSmResp,
            EnquireLinkResp,
            GenericNack,
            UnbindResp,
        ]
        assert [a.sequence_number for a in answers] == [1, 7, 0x7FFFFFFF, 9, 10, 11]
        assert answers[1] == SubmitSmResp(message_id=MESSAGE_ID, sequence_number=7)
        assert answers[4].command_status == CommandStatus.ESME_RINVCMDID
        counted = stats.as_dict()
        assert (counted["binds"], counted["submit_sm"], counted["other_requests"]) == (1, 2, 4)

    async def test_reset_clears_the_counters(self, sink: tuple[int, SinkStats]) -> None:
        """After reset the counters start from zero again."""
        port, stats = sink
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(codec.encode(SubmitSm(sequence_number=1)))
        await _read_frames(reader, 1)
        await _unbind_and_wait_for_close(reader, writer)
        assert stats.submit_sm == 1
        stats.reset()
        assert stats.as_dict()["submit_sm"] == 0


class TestLoad:
    def test_templates_are_realistic_submit_sm(self) -> None:
        """Every template decodes to a submit_sm from 15550100 to its own number, GSM text of
        about 60 characters, registered_delivery 1."""
        templates = submit_templates(50)
        pdus = [codec.decode(head + (5).to_bytes(4, "big") + tail) for head, tail in templates]
        assert all(isinstance(p, SubmitSm) for p in pdus)
        assert len({p.destination_addr for p in pdus if isinstance(p, SubmitSm)}) == 50
        first = pdus[0]
        assert isinstance(first, SubmitSm)
        assert first.source_addr == "15550100"
        assert first.registered_delivery == 1
        assert first.sequence_number == 5
        assert 50 <= len(gsm7.decode(first.short_message)) <= 70

    def test_percentile_is_nearest_rank(self) -> None:
        """p50 and p99 of 1..100 are 50 and 99; a single sample is every percentile."""
        ordered = list(range(1, 101))
        assert (percentile(ordered, 50), percentile(ordered, 99)) == (50, 99)
        assert percentile([7], 99) == 7

    @pytest.mark.parametrize("window", [1, 7, 100])
    async def test_run_gets_every_response(self, sink: tuple[int, SinkStats], window: int) -> None:
        """A run of 523 messages at any window ends with 523 OK responses and 523 at the sink."""
        port, stats = sink
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(
            lambda: LoadProtocol(submit_templates(10)), HOST, port
        )
        try:
            result = await proto.run(523, window, 30.0, latency=window == 1)
            await proto.request(codec.encode(Unbind()), 10.0)
            await asyncio.wait_for(proto.lost, 10)  # the sink closes after unbind_resp
        finally:
            proto.close()
        assert (result.responses, result.statuses, result.timed_out) == (
            523,
            {"ESME_ROK": 523},
            False,
        )
        assert stats.submit_sm == 523
        assert (result.latencies_ns is not None) == (window == 1)

    async def test_generate_binds_measures_and_unbinds(self, sink: tuple[int, SinkStats]) -> None:
        """The whole session (bind, warm-up, measured batch, unbind) reports ok with its counts."""
        port, stats = sink
        args = argparse.Namespace(
            host=HOST,
            port=port,
            messages=300,
            window=10,
            warmup=20,
            latency=True,
            bind="transceiver",
            system_id="s",
            password="p",
            destinations=5,
            timeout=30.0,
            connect_timeout=5.0,
            connections=1,
        )
        result = await generate(args)
        assert result["ok"], result["error"]
        assert (result["responses"], result["accepted"]) == (300, 300)
        assert result["latency_us"]["count"] == 300
        assert stats.submit_sm == 320
        assert stats.binds == 1

    async def test_generate_shares_the_messages_over_several_sessions(
        self, sink: tuple[int, SinkStats]
    ) -> None:
        """--connections 3 binds three sessions that send every message between them, each
        with its share of the window."""
        port, stats = sink
        args = argparse.Namespace(
            host=HOST,
            port=port,
            messages=301,
            window=10,
            warmup=0,
            latency=False,
            bind="transmitter",
            system_id="s",
            password="p",
            destinations=5,
            timeout=30.0,
            connect_timeout=5.0,
            connections=3,
        )
        result = await generate(args)
        assert result["ok"], result["error"]
        assert (result["responses"], result["accepted"]) == (301, 301)
        assert (result["connections"], result["window"]) == (3, 12)
        assert stats.submit_sm == 301
        assert stats.binds == 3

    async def test_generate_reports_an_unreachable_port(self) -> None:
        """A port nobody listens on gives ok false and says so, without raising."""
        probe = await asyncio.start_server(lambda r, w: None, HOST, 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        args = argparse.Namespace(
            host=HOST,
            port=port,
            destinations=1,
            connect_timeout=5.0,
            bind="transmitter",
            connections=1,
        )
        result = await generate(args)
        assert not result["ok"]
        assert "connect" in result["error"]


class TestRelay:
    async def test_copies_both_ways(self, sink: tuple[int, SinkStats]) -> None:
        """Requests through the relay reach the sink and the answers come back unchanged."""
        sink_port, stats = sink
        relay_stats = RelayStats()
        relay = await start_relay(HOST, 0, HOST, sink_port, relay_stats)
        try:
            reader, writer = await asyncio.open_connection(HOST, relay.sockets[0].getsockname()[1])
            frames = [codec.encode(SubmitSm(sequence_number=n)) for n in range(1, 201)]
            writer.write(b"".join(frames))
            answers = await _read_frames(reader, 200)
            await _unbind_and_wait_for_close(reader, writer)
        finally:
            relay.close()
            await relay.wait_closed()
        assert [codec.decode_header(a).sequence_number for a in answers] == list(range(1, 201))
        assert stats.submit_sm == 200
        unbind, unbind_resp = 16, 16
        assert relay_stats.bytes_up == sum(len(f) for f in frames) + unbind
        assert relay_stats.bytes_down == sum(len(a) for a in answers) + unbind_resp


class TestParsingRelay:
    async def test_remaps_sequences_adds_the_footer_and_refuses_the_opted_out(
        self, sink: tuple[int, SinkStats]
    ) -> None:
        """Through the parsing relay: each answer carries the client's sequence number, the
        SMSC sees the text with the footer (decoded by the gateway's codec), and a submit to
        the relay's one opted-out number is answered ESME_RSUBMITFAIL and never forwarded."""
        from bench.parsing_relay import OPTED_OUT, Stats, start

        sink_port, sink_stats = sink
        stats = Stats()
        relay = await start(HOST, 0, HOST, sink_port, stats)
        (refused,) = OPTED_OUT
        try:
            reader, writer = await asyncio.open_connection(HOST, relay.sockets[0].getsockname()[1])
            requests = [
                SubmitSm(
                    sequence_number=1000 + n, source_addr="15550100",
                    destination_addr=refused.decode() if n == 7 else f"1202555{n:04d}",
                    short_message=b"hello %d" % n, registered_delivery=1,
                )
                for n in range(20)
            ]  # fmt: skip
            writer.write(b"".join(codec.encode(r) for r in requests))
            answers = [codec.decode(a) for a in await _read_frames(reader, 20)]
            await _unbind_and_wait_for_close(reader, writer)
        finally:
            relay.close()
            await relay.wait_closed()
        statuses = {a.sequence_number: a.command_status for a in answers}
        assert sorted(statuses) == [1000 + n for n in range(20)]
        assert statuses.pop(1007) == CommandStatus.ESME_RSUBMITFAIL
        assert set(statuses.values()) == {CommandStatus.ESME_ROK}
        assert sink_stats.submit_sm == 19
        assert (stats.submits, stats.refused) == (20, 1)

    def test_rewrite_keeps_every_field_and_appends_the_footer(self) -> None:
        from bench.parsing_relay import FOOTER, rewrite_submit

        pdu = SubmitSm(
            sequence_number=5, service_type="CMT", source_addr="15550100",
            destination_addr="12025550123", esm_class=0, registered_delivery=1,
            validity_period="000001000000000R", short_message=b"Your code is 1234",
            tlvs=(Tlv(tag=Tag.SAR_MSG_REF_NUM, value=b"\x00\x01"),),
        )  # fmt: skip
        frame = codec.encode(pdu)
        destination, body = rewrite_submit(frame[16:])
        assert destination == b"12025550123"
        length = 16 + len(body)
        rewritten = codec.decode(length.to_bytes(4, "big") + frame[4:16] + body)
        assert isinstance(rewritten, SubmitSm)
        assert rewritten.short_message == b"Your code is 1234" + FOOTER
        assert rewritten == dataclasses.replace(pdu, short_message=rewritten.short_message)

    def test_rewrite_leaves_what_does_not_fit_or_is_not_gsm(self) -> None:
        from bench.parsing_relay import rewrite_submit

        for pdu in (
            SubmitSm(destination_addr="1", short_message=b"x" * 150),
            SubmitSm(destination_addr="1", short_message=b"\x00h\x00i", data_coding=8),
        ):
            body = codec.encode(pdu)[16:]
            assert rewrite_submit(body) == (b"1", body)


_scalars = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.booleans()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
)
_tables: st.SearchStrategy[dict[str, Any]] = st.recursive(
    st.dictionaries(st.text(max_size=5), _scalars | st.lists(_scalars, max_size=3), max_size=4),
    lambda inner: st.dictionaries(
        st.text(max_size=5),
        inner | st.lists(inner, min_size=1, max_size=2) | _scalars,
        max_size=4,
    ),
    max_leaves=12,
)


class TestConfigFiles:
    @given(_tables)
    def test_to_toml_round_trips(self, data: dict[str, Any]) -> None:
        """Whatever TOML parses to, to_toml writes back text that parses to the same value."""
        assert tomllib.loads(to_toml(data)) == data

    def test_merge_overrides_keys_and_keeps_the_rest(self) -> None:
        """A fragment replaces the keys it names inside a table and leaves the others."""
        merged = merge({"store": {"url": "a", "x": 1}, "server": {}}, {"store": {"url": "b"}})
        assert merged == {"store": {"url": "b", "x": 1}, "server": {}}

    @pytest.mark.parametrize(
        "config", [c for c in CONFIGURATIONS if c.route == "gateway"], ids=lambda c: c.name
    )
    def test_every_gateway_configuration_is_accepted_by_the_gateway(
        self, config: Any, tmp_path: Path
    ) -> None:
        """The generated config of each gateway row passes the gateway's own strict parser."""
        services = {
            "redis_url": "redis://127.0.0.1:6379/0",
            "redis_cluster_url": "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
        }
        data = gateway_config(
            config, listen_port=1, sink_port=2, window=100, tmpdir=tmp_path, services=services
        )
        parsed = parse(tomllib.loads(to_toml(data)))
        assert str(parsed.upstream.address) == "127.0.0.1:2"
        assert parsed.logging.level == "warning"

    def test_configs_filter_keeps_the_order_given(self) -> None:
        """--configs picks the named rows in the order given and rejects unknown names."""
        assert [c.name for c in select_configs("gateway,direct")] == ["gateway", "direct"]
        with pytest.raises(SystemExit):
            select_configs("direct,nonesuch")


def _bench(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class TestHarness:
    def test_smoke_run_prints_the_table_and_exits_zero(self, tmp_path: Path) -> None:
        """A tiny run against the real gateway prints every row, the ratios and the command
        line, counts every message at the sink, and exits 0."""
        out = tmp_path / "raw.json"
        done = _bench(
            "--messages", "300", "--latency-messages", "30", "--warmup", "20", "--window", "20",
            "--rounds", "1", "--json", str(out),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        text = done.stdout
        for config in CONFIGURATIONS:
            assert config.label in text
        assert "ratios, gateway / reference" in text
        assert "300/300" in text
        assert "FAILED" not in text
        assert "command: " in text
        assert "--messages 300" in text
        raw = json.loads(out.read_text())
        assert [r["name"] for r in raw["rows"]] == [c.name for c in CONFIGURATIONS]
        assert all(r["error"] is None and r["sink"]["submit_sm"] == 300 for r in raw["rows"])

    def test_unknown_configuration_is_refused(self) -> None:
        """A configuration that does not exist is refused with a non-zero exit at once."""
        done = _bench("--configs", "nonesuch", timeout=30)
        assert done.returncode != 0
        assert "nonesuch" in done.stderr


class TestMessageIdsBench:
    ROWS = ("put 10, one at a time", "put 10, 3 in flight", "get, found", "get, absent")

    def _run(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "bench.message_ids", "--calls", "6", "--concurrency", "3",
             "--prefill", "20", "--json", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        results: dict[str, Any] = json.loads(done.stdout)["results"]
        return results

    def test_sqlite_rows(self, tmp_path: Path) -> None:
        """A tiny run on SQLite prints one JSON object with every row and its mean."""
        results = self._run("--backends", "sqlite", "--dir", str(tmp_path))
        assert tuple(results["sqlite"]) == self.ROWS
        assert all(row["mean_us"] > 0 for row in results["sqlite"].values())

    @pytest.mark.redis
    def test_redis_rows(self, redis_server: RedisServer) -> None:
        """A tiny run on a given Redis prints one JSON object with every row and its mean."""
        results = self._run("--backends", "redis", "--redis-url", redis_server.url)
        assert tuple(results["redis"]) == self.ROWS
        assert all(row["mean_us"] > 0 for row in results["redis"].values())


class TestLongMessagesBench:
    def test_tiny_run_prints_every_pattern(self) -> None:
        """A tiny run prints one JSON object with a row per pattern, each part answered."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.long_messages", "--rounds", "2", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        results = json.loads(done.stdout)
        assert len(results) == 6
        assert all(row["parts"] > 0 and row["max_ms"] >= row["p50_ms"] for row in results.values())


class TestProfile:
    """bench.profile's reading of py-spy's collapsed stacks (root first, a count per line)."""

    RAW = (
        'process 7:"python -m gateway";thread (0x1);<module> (gateway/__main__.py:3);'
        "flush (gateway/proxy/connection.py:187) 30\n"
        'process 7:"python -m gateway";thread (0x1);<module> (gateway/__main__.py:3);'
        "decode_body (gateway/smpp/codec.py:40);_short (gateway/smpp/codec.py:90) 10\n"
        'process 7:"python -m gateway";thread (0x1);<module> (gateway/__main__.py:3);'
        "decode_body (gateway/smpp/codec.py:41) 5\n"
        "a line that is not a stack\n"
    )

    def test_own_and_inclusive_by_function(self) -> None:
        from bench.profile import parse_raw

        profile = parse_raw(self.RAW.splitlines())
        assert profile.total == 45
        assert profile.own == {
            "connection.py:flush": 30,
            "codec.py:_short": 10,
            "codec.py:decode_body": 5,  # two lines of one function: one entry
        }
        assert profile.inclusive["codec.py:decode_body"] == 15
        assert profile.inclusive["__main__.py:<module>"] == 45

    def test_areas_are_the_packages_of_the_frames(self) -> None:
        from bench.profile import by_area, parse_raw

        areas = by_area(parse_raw(self.RAW.splitlines()))
        assert areas == {"proxy: bridge, enforcer, footer": 30, "smpp codec and session": 15}

    def test_report_scales_the_samples_to_the_cpu_time(self) -> None:
        """With the process's CPU time, the figures are sample shares of it, not sample counts."""
        from bench.profile import RATE_HZ, parse_raw, report

        profile = parse_raw(self.RAW.splitlines())
        # 45 samples; CPU time for 90 samples' worth: every figure doubles.
        text = report(profile, 1, 5, "row", "cmd", cpu_s=90 / RATE_HZ)
        assert f"gateway CPU per message: {90 / RATE_HZ * 1e6:.2f} us (process CPU time" in text
        flush = next(line for line in text.splitlines() if "connection.py:flush" in line)
        assert float(flush.split()[1]) == pytest.approx(60 / RATE_HZ * 1e6, abs=0.01)
        unscaled = report(profile, 1, 5, "row", "cmd")
        assert f"gateway CPU per message: {45 / RATE_HZ * 1e6:.2f} us" in unscaled

    def test_cpu_seconds_of_this_process(self) -> None:
        """cpu_seconds reads a live process's user + system time; None for no such process."""
        import os

        from bench.profile import cpu_seconds

        spent = cpu_seconds(os.getpid())
        assert spent is not None
        assert spent > 0
        assert cpu_seconds(2**22 + 12345) is None

    def test_io_calls_count_this_process_reading(self) -> None:
        """io_calls reads syscr / syscw of a live process: a read of a file adds to the reads."""
        import os

        from bench.profile import io_calls

        before = io_calls(os.getpid())
        if before is None:
            pytest.skip("/proc/PID/io is not readable here")
        with open(__file__, "rb") as f:
            f.read(1)
        after = io_calls(os.getpid())
        assert after is not None
        assert after[0] > before[0]
        assert io_calls(2**22 + 12345) is None

    def test_report_gives_the_submit_sm_per_system_call(self) -> None:
        """With the call counts, the report says how many submit_sm one read and one write carry."""
        from bench.profile import parse_raw, report

        profile = parse_raw(self.RAW.splitlines())
        text = report(profile, 1000, 5, "row", "cmd", calls=(40, 20))
        assert "system calls: 40 reads, 20 writes (25.0 and 50.0 submit_sm each;" in text


class TestCostBench:
    def test_report_has_both_windows_their_ratio_and_the_excess_over_the_first_row(self) -> None:
        """The table divides window-1 CPU by window-100 CPU and subtracts the first row's."""
        from bench.cost import Cost, RowCost, report

        relay = RowCost("relay", "plain TCP relay", Cost(100, 10, 0.5, 0.02, 0.02, None),
                        Cost(1, 10, 40.0, 2.0, 2.0, 95.0))  # fmt: skip
        gateway = RowCost("gateway", "gateway", Cost(100, 10, 20.0, 0.03, 0.02, None),
                          Cost(1, 10, 160.0, 3.0, 2.0, 250.0))  # fmt: skip
        lines = report([relay, gateway], 100, "cmd").splitlines()
        row = next(line for line in lines if line.startswith("gateway"))
        assert row.split() == ["gateway", "20.0", "0.05", "160.0", "5.00", "8.0x", "250", "+120.0"]
        assert lines[-1] == "command: cmd"

    def test_tiny_run_of_the_relay_measures_both_windows(self) -> None:
        """A real run (sink, relay, load generator) gives CPU and calls at both windows."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.cost", "--configs", "relay", "--messages", "200",
             "--latency-messages", "50", "--warmup", "20", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        (row,) = json.loads(done.stdout)["rows"]
        assert row["name"] == "relay"
        assert row["batched"]["window"] == 100
        assert row["serial"]["window"] == 1
        assert row["serial"]["p50_us"] > 0
        # /proc counts CPU in clock ticks: a run this short may have used none of one.
        assert row["serial"]["cpu_us"] is not None
        assert row["serial"]["cpu_us"] >= 0
        if row["serial"]["reads"] is None:
            pytest.skip("/proc/PID/io is not readable here")
        # Every message crosses the relay: at window 1 that is at least a read and a write
        # per direction and message.
        assert row["serial"]["reads"] >= 2.0
        assert row["serial"]["writes"] >= 2.0

    def test_bad_arguments_are_refused(self) -> None:
        """A window below 1 is an error naming the option, exit status 2."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.cost", "--window", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 2
        assert "--window must be at least 1" in done.stderr


class TestSessionsBench:
    def _run(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "bench.sessions", "--sessions", "3,5", "--warmup", "1",
             "--messages", "2", "--json", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def test_tiny_run_reports_each_step_per_pair(self) -> None:
        """Five pairs bound in two steps: each step's memory and per-pair figures, every
        submit_sm of every pair (the warm-up's included) reached the sink, a clean exit."""
        result = self._run()
        assert [step["pairs"] for step in result["steps"]] == [3, 5]
        for step in result["steps"]:
            assert step["memory"]["rss"] > result["baseline"]["rss"] // 2
            assert set(step["per_pair"]) == {"rss", "pss", "private"}
        assert result["sink"]["submit_sm"] == (1 + 5) * 2
        assert result["gateway_exit"] == 0

    def test_tracemalloc_lists_the_gateway_lines(self) -> None:
        """Under --tracemalloc the report names the gateway's own lines and files."""
        result = self._run("--tracemalloc", "--top", "40")
        assert any(row["where"].startswith("gateway/") for row in result["allocations"])
        files = {row["where"] for row in result["allocations_by_file"]}
        assert "gateway/smpp/session.py" in files


class TestRecordsLoader:
    """bench.records' loaders write what the stores' own appends write."""

    LOADED = 1000
    SPACE = 100_000
    COMPARED = 50  # the first records, also appended one by one through the store

    def _subscribers(self) -> list[str]:
        from bench.records import number, record_indices

        return [number(i) for i in record_indices(self.LOADED, self.SPACE)]

    async def test_sqlite_rows_are_the_stores_own(self, tmp_path: Path) -> None:
        """The loaded file's rows (events, current, counters) are those the store's appends
        make, and the store reads the records back as current() and history() would."""
        import sqlite3

        from bench.records import fill_sqlite, record_event, record_indices
        from gateway.store.sqlite import SqliteStore

        indices = record_indices(self.LOADED, self.SPACE)
        loaded_path = tmp_path / "loaded.db"
        # Small chunks: the triggers are dropped after the first, the counters kept by hand.
        assert await asyncio.to_thread(fill_sqlite, loaded_path, indices, 64) == self.LOADED
        reference = await SqliteStore.open(tmp_path / "appended.db", create=True)
        events = [record_event(k, i) for k, i in enumerate(indices)]
        try:
            for event in events[: self.COMPARED]:
                assert await reference.append(event)
        finally:
            await reference.close()
        partial = tmp_path / "partial.db"
        await asyncio.to_thread(fill_sqlite, partial, indices[: self.COMPARED], 7)

        def dump(path: Path) -> tuple[list[Any], list[Any], list[Any]]:
            conn = sqlite3.connect(path)
            try:
                return (
                    conn.execute(
                        "SELECT seq, event_id, subscriber, scope, at, state, dedup_key, body"
                        " FROM events ORDER BY seq"
                    ).fetchall(),
                    conn.execute("SELECT * FROM current ORDER BY subscriber").fetchall(),
                    conn.execute("SELECT key, value FROM meta ORDER BY key").fetchall(),
                )
            finally:
                conn.close()

        assert dump(partial) == dump(tmp_path / "appended.db")
        assert dump(partial)[2] != dump(loaded_path)[2]  # the counters did count
        store = await SqliteStore.open(loaded_path)
        try:
            assert await store.record_count() == self.LOADED
            for event in events[:: self.LOADED // 20] + events[-1:]:
                current = await store.current(event.subscriber)
                assert current[event.scope].last_event_id == event.event_id
                assert current[event.scope].state is event.state
                assert await store.history(event.subscriber) == [event]
        finally:
            await store.close()

    @pytest.mark.redis
    async def test_redis_keys_are_the_stores_own(self, redis_server: RedisServer) -> None:
        """The loaded keys and values (current hash, history list, record counter) are those
        the store's appends make, and the store reads the records back."""
        import redis.asyncio as aioredis

        from bench.records import fill_redis, record_event, record_indices
        from gateway.store.redis import RedisStore

        url = f"redis://{redis_server.host}:{redis_server.port}/7"  # a database of its own
        indices = record_indices(self.LOADED, self.SPACE)
        events = [record_event(k, i) for k, i in enumerate(indices)]
        client = aioredis.Redis.from_url(url, decode_responses=True)
        try:
            assert await asyncio.to_thread(fill_redis, url, indices) == self.LOADED
            reference = await RedisStore.from_url(url + "?prefix=ref", instance="bench")
            try:
                for event in events[: self.COMPARED]:
                    assert await reference.append(event)
            finally:
                await reference.close()
            for event in events[: self.COMPARED]:
                for kind, read in (("c", client.hgetall), ("h", client.lrange)):
                    args = (0, -1) if kind == "h" else ()
                    ours = await read(f"gw:{{{event.subscriber}}}:{kind}", *args)  # type: ignore[operator]
                    theirs = await read(f"ref:{{{event.subscriber}}}:{kind}", *args)  # type: ignore[operator]
                    assert ours == theirs
            assert int(await client.get("ref:records")) == self.COMPARED
            store = await RedisStore.from_url(url, instance="bench")
            try:
                assert await store.record_count() == self.LOADED
                for event in events[:: self.LOADED // 20] + events[-1:]:
                    current = await store.current(event.subscriber)
                    assert current[event.scope].last_event_id == event.event_id
                    assert await store.history(event.subscriber) == [event]
            finally:
                await store.close()
        finally:
            await client.flushdb()
            await client.aclose()


class TestRecordsBench:
    def _run(self, *args: str) -> list[dict[str, Any]]:
        done = subprocess.run(
            [sys.executable, "-m", "bench.records", "--records", "100,1000", "--space",
             "20000", "--messages", "300", "--warmup", "20", "--json", *args],
            cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows

    @pytest.mark.parametrize("store", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
    def test_tiny_run_measures_each_size(self, store: str) -> None:
        """Two sizes filled and measured: a start-up time, an RSS and every submit_sm
        answered OK for each, the gateway exiting cleanly."""
        if store == "redis" and redis_server_binary() is None:
            pytest.skip("redis-server is not installed")
        rows = self._run("--store", store)
        assert [(r["store"], r["records"]) for r in rows] == [(store, 100), (store, 1000)]
        for row in rows:
            assert row["startup_s"] > 0
            assert row["rss"] > 0
            assert row["fill_s"] > 0
            assert row["throughput"]["accepted"] == 300
            assert row["gateway_exit"] == 0


class TestQuietBench:
    def test_rows(self) -> None:
        """A tiny run prints one JSON object with every row's cost per call."""
        done = subprocess.run(
            [sys.executable, "-m", "bench.quiet", "--calls", "50", "--json"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        rows = json.loads(done.stdout)["ns_per_call"]
        assert list(rows) == [
            "no quiet hours",
            "quiet hours: new number",
            "quiet hours: memo hit",
            "quiet hours: new minute",
        ]
        assert all(ns > 0 for ns in rows.values())


class TestSmppPathBench:
    def test_tiny_run_relays_every_message(self) -> None:
        """A tiny run of the in-process SMPP path answers every submit and prints each phase."""
        from bench.smpp_path import main

        assert main(["--batches", "3", "--window", "7", "--repeats", "1"]) == 0

    def test_phases_are_timed_once_each(self) -> None:
        """run_once gives one non-negative figure per phase."""
        from bench.smpp_path import PHASES, run_once

        spent = run_once(2, 5)
        assert len(spent) == len(PHASES)
        assert all(seconds >= 0 for seconds in spent)
