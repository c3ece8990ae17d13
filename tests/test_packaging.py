"""What ships: the wheel and its entry point, the systemd unit, the Dockerfile, README and CI."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
UNIT = ROOT / "systemd" / "smpp-gateway.service"
DOCKERFILE = ROOT / "Dockerfile"
CI = ROOT / ".ci" / "run"
# pip's messages when it cannot reach an index for the build backend.
OFFLINE = re.compile(
    r"No matching distribution|Could not find a version|NewConnectionError|"
    r"Temporary failure in name resolution|Network is unreachable|ConnectTimeout",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel . --no-deps`` (without build isolation where hatchling is installed, so the
    build needs no network); skips when the build backend cannot be had offline."""
    out = tmp_path_factory.mktemp("wheel")
    command = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(out)]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-build-isolation")
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    if result.returncode != 0 and OFFLINE.search(result.stderr):
        pytest.skip(f"cannot build offline: {result.stderr.strip().splitlines()[-1]}")
    assert result.returncode == 0, result.stderr
    (built,) = out.glob("smpp_gateway-*.whl")
    return built


def sh_blocks(text: str) -> list[str]:
    """The command lines of the ```sh blocks in a Markdown text."""
    return [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def readme_test_command() -> str:
    (command,) = [c for c in sh_blocks(README.read_text(encoding="utf-8")) if "scripts/test" in c]
    return command


def unit_settings() -> dict[str, list[str]]:
    """``Key=value`` lines of the unit file (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


class TestWheel:
    """The wheel installs the gateway package and the smpp-gateway command."""

    def test_contains_every_module(self, wheel: Path) -> None:
        """Every gateway/ module is in the wheel, and nothing from tests/ or bench/."""
        names = set(zipfile.ZipFile(wheel).namelist())
        modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gateway").rglob("*.py")}
        assert modules <= names, modules - names
        assert not [n for n in names if n.startswith(("tests/", "bench/"))]
        assert not [n for n in names if "__pycache__" in n]

    def test_contains_the_openapi_document(self, wheel: Path) -> None:
        """gateway/admin/openapi.json ships in the wheel (the admin API serves it from there)."""
        with zipfile.ZipFile(wheel) as archive:
            document = json.loads(archive.read("gateway/admin/openapi.json"))
        assert document["openapi"].startswith("3.1")

    def test_console_script(self, wheel: Path) -> None:
        """The wheel declares ``smpp-gateway = gateway.cli:main``."""
        with zipfile.ZipFile(wheel) as archive:
            (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
            text = archive.read(entry_points).decode()
        section = text.split("[console_scripts]", 1)[1]
        assert re.search(r"^smpp-gateway\s*=\s*gateway\.cli:main\s*$", section, re.MULTILINE)

    def test_metadata_names_the_runtime_dependencies(self, wheel: Path) -> None:
        """The installed package pulls in what the daemon imports (structlog, phonenumbers...)."""
        with zipfile.ZipFile(wheel) as archive:
            (metadata,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
            text = archive.read(metadata).decode()
        required = re.findall(r"^Requires-Dist: ([A-Za-z0-9_.-]+)(?!.*extra ==)", text, re.M)
        for name in ("structlog", "phonenumbers", "prometheus-client", "redis"):
            assert name in required, name


class TestSystemd:
    """systemd/smpp-gateway.service: notify readiness, watchdog, hardening, reload by HUP."""

    def test_notify_and_watchdog(self) -> None:
        """Type=notify (the daemon sends READY=1) and a watchdog interval the daemon pings."""
        settings = unit_settings()
        assert settings["Type"] == ["notify"]
        (watchdog,) = settings["WatchdogSec"]
        assert re.fullmatch(r"[1-9]\d*s?", watchdog), watchdog

    def test_hardening(self) -> None:
        """NoNewPrivileges and a read-only system: the daemon needs its state dir only."""
        settings = unit_settings()
        assert settings["NoNewPrivileges"] == ["yes"]
        assert settings["ProtectSystem"] == ["strict"]
        assert settings["User"] != ["root"]

    def test_reload_sends_hup_and_start_runs_the_daemon(self) -> None:
        """``systemctl reload`` sends SIGHUP to the main process; ExecStart is ``run``."""
        settings = unit_settings()
        (reload,) = settings["ExecReload"]
        assert "-HUP" in reload
        assert "$MAINPID" in reload
        (start,) = settings["ExecStart"]
        words = shlex.split(start)
        assert Path(words[0]).name == "smpp-gateway"
        assert words[1:3] == ["run", "--config"]


class TestDockerfile:
    """The image runs the gateway as an unprivileged user."""

    def test_runs_as_non_root(self) -> None:
        """The last USER before the entry point is neither root nor uid 0."""
        lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
        users = [line.split(None, 1)[1] for line in lines if line.upper().startswith("USER ")]
        assert users, "no USER instruction: the container would run as root"
        user = users[-1].split(":")[0]
        assert user not in ("root", "0")
        last_user = max(i for i, line in enumerate(lines) if line.upper().startswith("USER "))
        entry = [
            i for i, line in enumerate(lines) if line.upper().startswith(("ENTRYPOINT", "CMD"))
        ]
        assert entry
        assert all(i > last_user for i in entry)

    def test_runs_the_daemon_with_the_copied_config(self) -> None:
        """ENTRYPOINT + CMD start ``smpp-gateway run`` on the container config the image
        copies in (config/docker.toml)."""
        text = DOCKERFILE.read_text(encoding="utf-8")
        assert re.search(r'^ENTRYPOINT \["smpp-gateway"\]', text, re.M)
        cmd = re.search(r"^CMD (\[.*\])", text, re.M)
        assert cmd is not None
        args = json.loads(cmd.group(1))  # the exec form is a JSON array
        assert args[:2] == ["run", "--config"]
        assert re.search(rf"^COPY (--\S+ )*config/docker.toml {re.escape(args[2])}$", text, re.M)


class TestReadme:
    """README's commands exist, and CI runs the README's test command and nothing else."""

    def test_test_command_exists(self) -> None:
        """The README's test command is an executable script in the repository."""
        command = readme_test_command()
        script = ROOT / shlex.split(command)[0]
        assert script.is_file(), command
        assert os.access(script, os.X_OK), f"{script} is not executable"

    def test_ci_runs_exactly_the_readme_test_command(self) -> None:
        """.ci/run's one command is the README's test command."""
        commands = [
            line.strip()
            for line in CI.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))
        ]
        assert len(commands) == 1, commands
        command = commands[0].removeprefix("exec ").strip()
        assert command == readme_test_command()
        assert os.access(CI, os.X_OK)

    def test_run_commands_name_real_files_and_subcommands(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Every ``smpp-gateway X`` in the README is a real subcommand, and the files its
        commands name (config/gateway.toml) exist."""
        text = README.read_text(encoding="utf-8")
        with pytest.raises(SystemExit):
            main(["--help"])
        usage = capsys.readouterr().out
        commands = set(re.findall(r"smpp-gateway ([a-z][a-z-]+)", text))
        assert {"run", "check-config", "smsc-sim"} <= commands
        for command in commands:
            assert re.search(rf"^\s+{re.escape(command)}\s", usage, re.M), command
        files = set(re.findall(r"--config ([\w./-]+\.toml)", text))
        assert "config/gateway.toml" in files
        # Absolute: where the unit and the image read their config (tests/deploy checks both).
        installed = {shlex.split(unit_settings()["ExecStart"][0])[3]}
        cmd = re.search(r"^CMD (\[.*\])", DOCKERFILE.read_text(encoding="utf-8"), re.M)
        assert cmd is not None
        installed.add(json.loads(cmd.group(1))[2])
        for name in files:
            assert (ROOT / name).is_file() or name in installed, name

    def test_quick_start_runs_the_example(self) -> None:
        """The quick start runs the daemon on the shipped example config."""
        runs = [c for c in sh_blocks(README.read_text(encoding="utf-8")) if " run --config " in c]
        assert any("config/gateway.toml" in c for c in runs), runs
