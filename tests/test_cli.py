"""``smpp-gateway``: version, check-config, the staff consent commands and the daemon's run."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import structlog

from gateway import __version__
from gateway.cli import main
from gateway.store.evidence import CSV_COLUMNS
from gateway.store.factory import open_store
from gateway.store.rediscluster import RedisClusterStore
from tests.store.test_contract import make_event
from tests.support.redis_server import RedisClusterServers, RedisServer

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "gateway.toml"
TIMEOUT_S = 20.0
NUMBER = "15551234567"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m gateway ARGS`` as the operator runs it, with a timeout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        cwd=cwd or ROOT,
        env=env,
        check=False,
    )


def write_config(directory: Path, text: str) -> Path:
    path = directory / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def sqlite_config(directory: Path, store_dir: Path | None = None) -> Path:
    """A minimal config in ``directory`` whose consent store is a SQLite file there (or in
    ``store_dir``)."""
    db = ((store_dir or directory) / "consent.db").as_posix()
    return write_config(
        directory,
        f'[upstream]\naddress = "127.0.0.1:2776"\n\n[store]\nurl = "sqlite://{db}"\n',
    )


# (text in the example, its replacement, the key path the error must name)
BROKEN = [
    ('address = "127.0.0.1:2776"', 'address = "smsc"', "upstream.address"),
    ("max_sessions = 1000", "max_sessions = 0", "server.max_sessions"),
    ("window_size = 100", 'window_size = "100"', "session.window_size"),
    ('level = "info"', 'level = "loud"', "logging.level"),
    ('scope = "number"', 'scope = "galaxy"', "campaigns[0].scope"),
    ("log_bodies = false", "log_bodies = false\nlog_body = true", "logging.log_body"),
    ('url = "sqlite:var/consent.db"', 'url = "mysql://db"', "store.url"),
]


class TestVersion:
    """``--version`` prints the package version and exits 0."""

    def test_version(self) -> None:
        """The installed entry point's module prints "smpp-gateway VERSION"."""
        result = run_cli("--version")
        assert result.returncode == 0
        assert result.stdout.strip() == f"smpp-gateway {__version__}"


class TestCheckConfig:
    """``check-config``: exit 0 and a summary for a good file, exit 2 naming the key otherwise."""

    def test_example_is_ok(self) -> None:
        """The shipped example passes and the summary names the listen and upstream addresses."""
        result = run_cli("check-config", "--config", str(EXAMPLE))
        assert result.returncode == 0, result.stderr
        assert "OK" in result.stdout
        assert "127.0.0.1:2775" in result.stdout
        assert "127.0.0.1:2776" in result.stdout

    @pytest.mark.parametrize(("old", "new", "key"), BROKEN, ids=[key for _o, _n, key in BROKEN])
    def test_broken_variant_names_key(self, tmp_path: Path, old: str, new: str, key: str) -> None:
        """A broken variant of the example exits 2 with a message naming the key."""
        text = EXAMPLE.read_text(encoding="utf-8")
        assert old in text
        config = write_config(tmp_path, text.replace(old, new, 1))
        result = run_cli("check-config", "--config", str(config))
        assert result.returncode == 2
        assert f"config error: {key}:" in result.stderr
        assert result.stdout == ""

    def test_missing_file_and_bad_toml(self, tmp_path: Path) -> None:
        """A missing file and a TOML syntax error exit 2 and name the file."""
        missing = tmp_path / "absent.toml"
        result = run_cli("check-config", "--config", str(missing))
        assert result.returncode == 2
        assert str(missing) in result.stderr
        config = write_config(tmp_path, "[upstream\n")
        result = run_cli("check-config", "--config", str(config))
        assert result.returncode == 2
        assert "not valid TOML" in result.stderr

    @pytest.mark.parametrize(
        ("table", "keys"),
        [("server.tls", ("cert_file", "key_file")), ("upstream.tls", ("ca_file",))],
    )
    def test_tls_file_that_does_not_load(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], table: str, keys: tuple[str, ...]
    ) -> None:
        """A TLS file that exists but is not a certificate fails the check (exit 2, the table
        named) instead of a traceback when the daemon starts."""
        junk = tmp_path / "junk.pem"
        junk.write_text("not a certificate\n")
        files = "".join(f'{key} = "{junk.as_posix()}"\n' for key in keys)
        config = write_config(
            tmp_path, f'[upstream]\naddress = "127.0.0.1:2776"\n[{table}]\n{files}'
        )
        assert main(["check-config", "--config", str(config)]) == 2
        assert f"config error: {table}:" in capsys.readouterr().err
        assert main(["run", "--config", str(config)]) == 2

    def test_missing_store_is_reported_not_created(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A SQLite store not created yet is fine for a first install (exit 0) and is said so;
        the check creates nothing."""
        config = sqlite_config(tmp_path, tmp_path / "state")
        assert main(["check-config", "--config", str(config)]) == 0
        out = capsys.readouterr().out
        db = tmp_path / "state" / "consent.db"
        assert (
            f"store sqlite://{db}: does not exist yet; the daemon creates it on first start" in out
        )
        assert not db.exists()

    def test_reports_the_record_count(self, staff: Staff, tmp_path: Path) -> None:
        """An existing store: the number of consent records it holds (an empty store where a
        full one belongs shows here)."""
        staff("opt-out", NUMBER)
        staff("opt-out", "15557654321", "--campaign", "acme")
        staff("opt-in", NUMBER)  # a change of a record, not a new one
        code, out, _ = staff.run("check-config")
        assert code == 0
        assert f"store sqlite://{tmp_path / 'consent.db'}: 2 consent records" in out

    def test_corrupt_store_exits_1(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A store file that is not a database: exit 1 (the config is valid, the store is not),
        the message names the file."""
        config = sqlite_config(tmp_path)
        (tmp_path / "consent.db").write_bytes(b"\x00" * 4096)
        assert main(["check-config", "--config", str(config)]) == 1
        captured = capsys.readouterr()
        assert "OK" in captured.out
        assert "consent.db is corrupt" in captured.err

    @pytest.mark.redis
    def test_redis_store_is_counted_and_its_password_never_shown(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_server: RedisServer
    ) -> None:
        """A Redis store is counted (exit 0); one that cannot be reached is exit 1, and a
        password in the URL shows in neither answer."""
        reachable = f"redis://{redis_server.host}:{redis_server.port}/0?prefix=checkcfg"
        unreachable = "redis://:hunter2@127.0.0.1:1/0?timeout_s=0.5"
        for url, code in ((reachable, 0), (unreachable, 1)):
            config = write_config(
                tmp_path, f'[upstream]\naddress = "127.0.0.1:2776"\n\n[store]\nurl = "{url}"\n'
            )
            assert main(["check-config", "--config", str(config)]) == code
            captured = capsys.readouterr()
            assert "hunter2" not in captured.out + captured.err
            if code == 0:
                assert f"store {reachable}: 0 consent records" in captured.out
        assert "store redis://***@127.0.0.1:1/0?timeout_s=0.5: redis:" in captured.err

    @pytest.mark.redis
    def test_cluster_store_is_counted(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        redis_cluster: RedisClusterServers,
    ) -> None:
        """A Redis Cluster store is counted like the others (its records over every slot); a
        cluster URL with a database path is a config error naming store.url (exit 2)."""
        prefix = f"checkcfg{time.time_ns()}"
        events = [make_event(f"1555000{i:04d}") for i in range(30)]

        async def fill() -> None:
            store = await RedisClusterStore.from_url(
                f"{redis_cluster.url}?prefix={prefix}", instance="t"
            )
            try:
                await store.import_events(events)
            finally:
                await store.close()

        asyncio.run(fill())
        url = f"{redis_cluster.url}?prefix={prefix}"
        config = write_config(
            tmp_path, f'[upstream]\naddress = "127.0.0.1:2776"\n\n[store]\nurl = "{url}"\n'
        )
        assert main(["check-config", "--config", str(config)]) == 0
        assert f"store {url}: 30 consent records" in capsys.readouterr().out
        bad = write_config(
            tmp_path,
            f'[upstream]\naddress = "127.0.0.1:2776"\n\n[store]\nurl = "{redis_cluster.url}/0"\n',
        )
        assert main(["check-config", "--config", str(bad)]) in (1, 2)
        err = capsys.readouterr().err
        assert "store.url" in err
        assert "database 0 only" in err

    def test_a_daemon_secret_not_readable_fails_check_config_not_the_staff_cli(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The service bind's password from an unset variable: check-config exits 2 with one
        line naming the key; the consent commands, which never bind, work."""
        monkeypatch.delenv("SMPP_GW_TEST_SVC_PW", raising=False)
        create_store(tmp_path / "consent.db")
        config = write_config(
            tmp_path,
            sqlite_config(tmp_path).read_text()
            + '\n[upstream.service_bind]\nsystem_id = "gw"\npassword_env = "SMPP_GW_TEST_SVC_PW"\n',
        )
        assert main(["check-config", "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err == (
            "smpp-gateway: config error: upstream.service_bind.password_env: environment "
            "variable SMPP_GW_TEST_SVC_PW is not set\n"
        )
        try:
            assert main(["consent", "show", "--config", str(config), NUMBER]) == 0
        finally:
            structlog.reset_defaults()
        monkeypatch.setenv("SMPP_GW_TEST_SVC_PW", "pw")
        assert main(["check-config", "--config", str(config)]) == 0

    def test_workers_that_cannot_share_the_store_are_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """server.workers above 1 with a store one process keeps to itself is exit 2 for
        check-config and run alike, naming store.url; run --workers 0 is a usage error."""
        config = write_config(
            tmp_path,
            '[server]\nlisten = "127.0.0.1:0"\nworkers = 2\n\n'
            '[upstream]\naddress = "127.0.0.1:2776"\n\n[store]\nurl = "memory://"\n',
        )
        assert main(["check-config", "--config", str(config)]) == 2
        assert "config error: store.url: memory://" in capsys.readouterr().err
        assert main(["run", "--config", str(config)]) == 2
        assert "store.url: memory://" in capsys.readouterr().err
        with pytest.raises(SystemExit) as info:
            main(["run", "--config", str(config), "--workers", "0"])
        assert info.value.code == 2
        assert "positive integer or auto" in capsys.readouterr().err

    def test_unknown_command_is_a_usage_error(self) -> None:
        """argparse refuses an unknown command with exit 2."""
        with pytest.raises(SystemExit) as info:
            main(["frobnicate"])
        assert info.value.code == 2


class Staff:
    """``smpp-gateway consent ...`` in-process against one config, capturing the output."""

    def __init__(self, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.config = config
        self.capsys = capsys

    def __call__(self, action: str, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        try:
            code = main(["consent", action, "--config", str(self.config), *args])
        finally:
            structlog.reset_defaults()  # the command configured logging onto captured stderr
        out, err = self.capsys.readouterr()
        return code, out, err

    def run(self, command: str) -> tuple[int, str, str]:
        """Another command (``check-config``) on the same config."""
        self.capsys.readouterr()
        code = main([command, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, action: str, *args: str) -> Any:
        code, out, err = self(action, *args, "--json")
        assert code == 0, err
        return json.loads(out)


def create_store(path: Path) -> None:
    """Create the SQLite store at ``path`` the way the daemon does on its first start."""

    async def create() -> None:
        store = await open_store(f"sqlite://{path.as_posix()}", instance="daemon", create=True)
        await store.close()

    asyncio.run(create())


@pytest.fixture
def staff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Staff:
    """The staff CLI on a config whose store the daemon has already created."""
    create_store(tmp_path / "consent.db")
    return Staff(sqlite_config(tmp_path), capsys)


class TestConsentCommands:
    """Staff changes on the SQLite store named by the config: the daemon's own store."""

    def test_unknown_number_shows_unknown(self, staff: Staff) -> None:
        """A number never seen has no scopes and the state unknown."""
        shown = staff.json("show", NUMBER)
        assert shown == {"subscriber": NUMBER, "state": "unknown", "scopes": []}

    def test_opt_out_then_show(self, staff: Staff) -> None:
        """After opt-out, show reports opted_out in the global scope, E.164-normalised."""
        code, out, _ = staff("opt-out", f"+{NUMBER}", "--reason", "asked by phone")
        assert code == 0
        assert "opted_out" in out
        shown = staff.json("show", NUMBER)
        assert shown["state"] == "opted_out"
        assert [s["scope"] for s in shown["scopes"]] == ["global:*"]
        code, out, _ = staff("show", f"+{NUMBER}")
        assert code == 0
        assert out.startswith(f"{NUMBER}: opted_out")

    def test_opt_out_of_one_campaign(self, staff: Staff) -> None:
        """--campaign limits an opt-out to that campaign's scope."""
        event = staff.json("opt-out", NUMBER, "--campaign", "acme-marketing")
        assert event["scope"] == "campaign:acme-marketing"
        assert event["state"] == "opted_out"

    def test_block_then_opt_in_is_refused(self, staff: Staff) -> None:
        """A blocked number cannot be opted in: exit 2 and a message saying to unblock first."""
        assert staff("block", NUMBER, "--reason", "fraud")[0] == 0
        code, _, err = staff("opt-in", NUMBER)
        assert code == 2
        assert "blocked" in err
        assert "unblock first" in err
        assert staff.json("show", NUMBER)["state"] == "blocked"

    def test_unblock_leaves_opted_out(self, staff: Staff) -> None:
        """Unblocking does not opt in: the number stays opted out until it opts in itself."""
        staff("block", NUMBER)
        event = staff.json("unblock", NUMBER, "--reason", "cleared")
        assert event["state"] == "opted_out"
        assert staff.json("show", NUMBER)["state"] == "opted_out"
        assert staff("opt-in", NUMBER)[0] == 0
        assert staff.json("show", NUMBER)["state"] == "opted_in"

    def test_unblock_when_not_blocked_changes_nothing(self, staff: Staff) -> None:
        """Unblocking a number that is not blocked records no event and says "unchanged"."""
        code, out, _ = staff("unblock", NUMBER)
        assert code == 0
        assert out == f"{NUMBER}: unchanged (global:* is unknown)\n"
        assert staff.json("history", NUMBER) == []

    def test_history_lists_admin_events_with_reasons(self, staff: Staff) -> None:
        """History lists every change, oldest first, with actor admin and the staff's reason."""
        staff("opt-out", NUMBER, "--reason", "asked by phone")
        staff("block", NUMBER, "--reason", "fraud ticket 42")
        history = staff.json("history", NUMBER)
        assert [(e["state"], e["actor"], e["reason"]) for e in history] == [
            ("opted_out", "admin", "asked by phone"),
            ("blocked", "admin", "fraud ticket 42"),
        ]
        assert all(e["instance"].endswith("/cli") for e in history)
        code, out, _ = staff("history", NUMBER)
        assert code == 0
        header, *lines = out.splitlines()
        assert header.split()[:3] == ["TIME", "(UTC)", "SCOPE"]
        assert len(lines) == 2
        column = header.index("WORDS / REASON")
        assert lines[0][column:].startswith("asked by phone")
        assert lines[1][column:].startswith("fraud ticket 42")
        assert lines[0][header.index("STATE") :].startswith("opted_out")
        assert lines[1][header.index("ACTOR") :].startswith("admin")

    def test_history_formats(self, staff: Staff) -> None:
        """--format json is --json; csv has a header and a line per event; --json with another
        --format is a usage error (exit 2); an empty history is a header alone."""
        code, out, _ = staff("history", NUMBER, "--format", "csv")
        assert (code, out) == (0, ",".join(CSV_COLUMNS) + "\r\n")
        code, out, _ = staff("history", NUMBER)
        assert (code, len(out.splitlines())) == (0, 1)
        staff("opt-out", NUMBER, "--reason", "=HYPERLINK(1)")
        code, out, _ = staff("history", NUMBER, "--format", "json")
        assert code == 0
        assert json.loads(out) == staff.json("history", NUMBER)
        code, out, _ = staff("history", NUMBER, "--format", "csv")
        assert code == 0
        header, line = out.splitlines()
        assert header.startswith("at,scope,state,actor,by,words,")
        assert ",'=HYPERLINK(1)," in line  # a spreadsheet does not run it
        code, out, err = staff("history", NUMBER, "--json", "--format", "csv")
        assert (code, out) == (2, "")
        assert "--json" in err

    @pytest.mark.parametrize("action", ["show", "history", "opt-out", "block"])
    def test_not_a_number_is_refused(self, staff: Staff, action: str) -> None:
        """An alphanumeric argument is not a subscriber: exit 2, nothing recorded."""
        code, out, err = staff(action, "acme")
        assert code == 2
        assert out == ""
        assert "not a phone number" in err

    def test_conflicting_scopes_are_refused(self, staff: Staff) -> None:
        """--campaign with --account is ambiguous: exit 2 with a message naming both."""
        code, _, err = staff("opt-out", NUMBER, "--campaign", "c", "--account", "a")
        assert code == 2
        assert "--campaign" in err
        assert "--account" in err

    def test_changes_are_on_the_configured_store(self, tmp_path: Path, staff: Staff) -> None:
        """A change made by one invocation is seen by a separate process on the same file."""
        staff("opt-out", NUMBER)
        assert (tmp_path / "consent.db").is_file()
        result = run_cli("consent", "show", "--config", str(staff.config), NUMBER, "--json")
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["state"] == "opted_out"

    @pytest.mark.parametrize("action", ["show", "history", "opt-out", "block"])
    def test_missing_store_is_an_error_and_not_created(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], action: str
    ) -> None:
        """With no store file (the daemon never ran, or the config names a wrong path) the CLI
        says so and exits 1; it never creates an empty store the daemon would not read."""
        config = sqlite_config(tmp_path, tmp_path / "state")
        try:
            assert main(["consent", action, "--config", str(config), NUMBER]) == 1
        finally:
            structlog.reset_defaults()
        db = tmp_path / "state" / "consent.db"
        assert capsys.readouterr().err == (
            f"smpp-gateway: no consent store at {db}; the daemon creates it on first start\n"
        )
        assert not (tmp_path / "state").exists()

    def test_bad_config_exits_2(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """The consent commands check the config like check-config does."""
        config = write_config(tmp_path, '[upstream]\naddress = "x"\n')
        assert main(["consent", "show", "--config", str(config), NUMBER]) == 2
        assert "upstream.address" in capsys.readouterr().err


def consent_changed_lines(err: str) -> list[dict[str, Any]]:
    """The consent_changed log lines a command wrote on stderr (JSON lines)."""
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == "consent_changed"]


class TestStaffAttribution:
    """Who made a change: the login name, the sudo caller, or --actor; shown and stored."""

    def test_login_name_by_default(self, staff: Staff, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without --actor the change is recorded as made by the login name."""
        monkeypatch.delenv("SUDO_USER", raising=False)
        monkeypatch.setenv("LOGNAME", "alice-ops")
        code, out, _ = staff("opt-out", NUMBER, "--reason", "asked by phone")
        assert code == 0
        assert " by alice-ops (event " in out
        (event,) = staff.json("history", NUMBER)
        assert (event["by"], event["actor"]) == ("alice-ops", "admin")
        assert event["instance"].endswith("/cli")

    def test_actor_overrides(self, staff: Staff, monkeypatch: pytest.MonkeyPatch) -> None:
        """--actor names the staff member instead (a shared service account, a ticket)."""
        monkeypatch.setenv("LOGNAME", "alice-ops")
        monkeypatch.setenv("SUDO_USER", "bob")
        assert staff.json("block", NUMBER, "--actor", "Carol (ticket 7)")["by"] == (
            "Carol (ticket 7)"
        )
        assert staff.json("unblock", NUMBER, "--actor", "dave")["by"] == "dave"
        history = staff.json("history", NUMBER)
        assert [(e["state"], e["by"]) for e in history] == [
            ("blocked", "Carol (ticket 7)"),
            ("opted_out", "dave"),
        ]

    def test_sudo_caller_is_recorded(self, staff: Staff, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run through sudo as the store's owner, the change is the sudo caller's."""
        monkeypatch.setenv("LOGNAME", "smpp-gateway")
        monkeypatch.setenv("SUDO_USER", "erin")
        assert staff.json("opt-in", NUMBER, "--campaign", "acme")["by"] == "erin"

    def test_uid_when_there_is_no_name(self, staff: Staff, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without a login name or passwd entry, the uid is recorded."""
        import getpass

        def no_name() -> str:
            raise KeyError("getpwuid(): uid not found")

        monkeypatch.delenv("SUDO_USER", raising=False)
        monkeypatch.setattr(getpass, "getuser", no_name)
        assert staff.json("opt-out", NUMBER)["by"] == str(os.getuid())

    @pytest.mark.parametrize("actor", ["", "   ", "a\nb", "x" * 101])
    def test_bad_actor_is_refused(self, staff: Staff, actor: str) -> None:
        """An empty, multi-line or overlong --actor is a usage error; nothing is recorded."""
        code, out, err = staff("opt-out", NUMBER, "--actor", actor)
        assert (code, out) == (2, "")
        assert "--actor" in err
        assert staff.json("history", NUMBER) == []

    def test_change_is_logged_with_who(self, staff: Staff, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every real change writes one consent_changed line (subscriber masked) with by;
        a repeat writes none."""
        monkeypatch.setenv("LOGNAME", "alice-ops")
        monkeypatch.delenv("SUDO_USER", raising=False)
        code, _, err = staff("opt-out", NUMBER, "--campaign", "acme")
        assert code == 0
        (line,) = consent_changed_lines(err)
        (event,) = staff.json("history", NUMBER)
        assert line["event_id"] == event["event_id"]
        assert (line["scope"], line["state"], line["actor"], line["by"]) == (
            "campaign:acme",
            "opted_out",
            "admin",
            "alice-ops",
        )
        assert line["instance"].endswith("/cli")
        assert NUMBER not in err
        assert consent_changed_lines(staff("opt-out", NUMBER, "--campaign", "acme")[2]) == []


class TestStaffIdempotency:
    """A change to the state the number already has adds no event and says "unchanged"."""

    def test_repeated_opt_out(self, staff: Staff) -> None:
        """A second opt-out: exit 0, "unchanged", still one event."""
        first = staff.json("opt-out", NUMBER)
        assert first["changed"] is True
        code, out, _ = staff("opt-out", NUMBER)
        assert (code, out) == (0, f"{NUMBER}: unchanged (global:* is opted_out)\n")
        assert staff.json("opt-out", NUMBER) == {
            "subscriber": NUMBER,
            "changed": False,
            "scope": "global:*",
            "state": "opted_out",
        }
        assert [e["event_id"] for e in staff.json("history", NUMBER)] == [first["event_id"]]

    def test_repeated_block_and_opt_out_of_a_blocked_number(self, staff: Staff) -> None:
        """Blocking twice is one event; an opt-out of a blocked number is unchanged and leaves
        it blocked (it must never replace the block)."""
        assert staff.json("block", NUMBER)["changed"] is True
        assert staff.json("block", NUMBER)["changed"] is False
        for scope in ((), ("--campaign", "acme")):
            answer = staff.json("opt-out", NUMBER, *scope)
            assert (answer["changed"], answer["state"]) == (False, "blocked")
        assert [e["state"] for e in staff.json("history", NUMBER)] == ["blocked"]
        assert staff.json("show", NUMBER)["state"] == "blocked"

    def test_opt_in_at_another_scope_is_a_change(self, staff: Staff) -> None:
        """Opted out everywhere, an opt-in for one campaign is a real change (it wins there)."""
        staff("opt-out", NUMBER)
        assert staff.json("opt-in", NUMBER, "--campaign", "acme")["changed"] is True
        assert staff.json("opt-in", NUMBER, "--campaign", "acme")["changed"] is False
        # The opt-in is newer: repeating the global opt-out stops that campaign again.
        assert staff.json("opt-out", NUMBER)["changed"] is True
        assert [(e["scope"], e["state"]) for e in staff.json("history", NUMBER)] == [
            ("global:*", "opted_out"),
            ("campaign:acme", "opted_in"),
            ("global:*", "opted_out"),
        ]


class TestStaffWithoutAdminToken:
    """The CLI talks to the store, not the API: the API's token secrets are not its business."""

    @pytest.mark.parametrize(
        "admin",
        [
            '[admin]\nlisten = "127.0.0.1:0"\ntoken_env = "SMPP_GW_TEST_UNSET_TOKEN"\n',
            '[admin]\nlisten = "127.0.0.1:0"\n[[admin.tokens]]\nname = "ops"\nrole = "write"\n'
            'token_env = "SMPP_GW_TEST_UNSET_TOKEN"\n',
            '[admin]\nlisten = "127.0.0.1:0"\n[[admin.tokens]]\nname = "ops"\nrole = "write"\n'
            'token_file = "/nonexistent/smpp-gateway/admin.token"\n',
        ],
        ids=["admin.token_env", "tokens.token_env", "tokens.token_file"],
    )
    def test_consent_commands_work_without_the_secret(
        self,
        tmp_path: Path,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        admin: str,
    ) -> None:
        """With the token's variable unset (or its file unreadable) every consent command
        works; check-config, which checks what ``run`` needs, fails naming the key."""
        monkeypatch.delenv("SMPP_GW_TEST_UNSET_TOKEN", raising=False)
        create_store(tmp_path / "consent.db")
        config = sqlite_config(tmp_path)
        config.write_text(config.read_text(encoding="utf-8") + admin, encoding="utf-8")
        staff = Staff(config, capsys)
        assert staff.json("opt-out", NUMBER)["changed"] is True
        assert staff.json("show", NUMBER)["state"] == "opted_out"
        assert len(staff.json("history", NUMBER)) == 1
        code, out, err = staff.run("check-config")
        assert code == 2
        key = "admin.token_env" if "tokens" not in admin else "admin.tokens[0].token_"
        assert f"config error: {key}" in err
        assert out == ""

    def test_run_refuses_to_start_without_the_secret(self, tmp_path: Path) -> None:
        """``run`` with the admin API on and its token variable unset: exit 2, key named."""
        config = write_config(
            tmp_path,
            '[upstream]\naddress = "127.0.0.1:9"\n[server]\nlisten = "127.0.0.1:0"\n'
            '[admin]\nlisten = "127.0.0.1:0"\n[[admin.tokens]]\nname = "ops"\n'
            'role = "read"\ntoken_env = "SMPP_GW_TEST_UNSET_TOKEN"\n',
        )
        env_before = os.environ.pop("SMPP_GW_TEST_UNSET_TOKEN", None)
        try:
            result = run_cli("run", "--config", str(config))
        finally:
            if env_before is not None:
                os.environ["SMPP_GW_TEST_UNSET_TOKEN"] = env_before
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "smpp-gateway: config error: admin.tokens[0].token_env: "
            "environment variable SMPP_GW_TEST_UNSET_TOKEN is not set"
        ]


# --- the daemon ---------------------------------------------------------------------------------


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], queue.Queue[str | None]]]:
    """``smpp-gateway run`` on a free port (port 0) with its stderr lines in a queue."""
    db = (tmp_path / "consent.db").as_posix()
    config = write_config(
        tmp_path,
        "[gateway]\nshutdown_grace_s = 2\n"
        '[server]\nlisten = "127.0.0.1:0"\n'
        '[upstream]\naddress = "127.0.0.1:9"\n'
        '[logging]\nlevel = "info"\nformat = "json"\n'
        f'[store]\nurl = "sqlite://{db}"\n',
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    try:
        yield process, lines
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT_S)
        reader.join(TIMEOUT_S)
        process.stderr.close()


def wait_for_event(lines: queue.Queue[str | None], event: str, **fields: Any) -> dict[str, Any]:
    """The first JSON log line with this event name (and these fields); fails on EOF."""
    while True:
        line = lines.get(timeout=TIMEOUT_S)
        assert line is not None, f"the process ended before logging {event}"
        record = json.loads(line)  # every line is one JSON object
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            return dict(record)


class TestRun:
    """``run``: listens, accepts connections, and drains and exits 0 on SIGTERM."""

    def test_accepts_connections_and_exits_0_on_sigterm(
        self, daemon: tuple[subprocess.Popen[str], queue.Queue[str | None]]
    ) -> None:
        """The daemon logs listener_started with its port, accepts TCP there, exits 0."""
        process, lines = daemon
        started = wait_for_event(lines, "listener_started", tls=False)
        host, _, port = started["listen"].rpartition(":")
        assert host == "127.0.0.1"
        assert int(port) > 0
        wait_for_event(lines, "gateway_started")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as conn:
            conn.settimeout(TIMEOUT_S)
            process.send_signal(signal.SIGTERM)
            # Draining closes the idle, unbound connection: EOF (or a reset) rather than a hang.
            try:
                data = conn.recv(1)
            except ConnectionResetError:
                data = b""
            assert data == b""
        assert process.wait(TIMEOUT_S) == 0
        stopping = wait_for_event(lines, "gateway_stopping")
        assert stopping["sessions"] == 1
        wait_for_event(lines, "gateway_stopped")

    def test_bad_config_exits_2_without_listening(self, tmp_path: Path) -> None:
        """``run`` with a broken config refuses to start: exit 2, the key named."""
        config = write_config(tmp_path, '[upstream]\naddress = "127.0.0.1"\n')
        result = run_cli("run", "--config", str(config))
        assert result.returncode == 2
        assert "upstream.address" in result.stderr
