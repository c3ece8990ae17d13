"""Start-up errors: ``run`` and ``check-config`` say what is wrong in one line naming the key
(exit 2, no traceback), and a second gateway on a port in use fails instead of sharing it."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from gateway.config import ConfigError, parse
from gateway.startup import StartupError
from tests.support.consent import ROOT, GatewayProcess, free_port, run_cli, to_toml

# An address of TEST-NET-1 (RFC 5737): valid, and never one of this machine's.
FOREIGN = "192.0.2.1"


def config_data(listen: str, **sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "gateway": {"instance": "startup-test", "shutdown_grace_s": 2},
        "server": {"listen": listen},
        "upstream": {"address": "127.0.0.1:9"},
        "store": {"url": "memory://"},
        "logging": {"level": "info"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def write(path: Path, listen: str, **sections: dict[str, Any]) -> Path:
    path.write_text(to_toml(config_data(listen, **sections)), encoding="utf-8")
    return path


def one_error_line(err: str, key: str) -> str:
    """The stderr of a refused start: exactly one line, naming ``key``, no traceback."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"smpp-gateway: config error: {key}: "), err
    return lines[0]


class TestAddresses:
    """server.listen and admin.listen that cannot be used: check-config and run, exit 2."""

    @pytest.mark.parametrize("command", ["check-config", "run"])
    @pytest.mark.parametrize(
        ("host", "problem"),
        [
            ("999.1.1.1", "'999.1.1.1' is not an IPv4 address"),
            ("no-such-host.invalid", "cannot resolve 'no-such-host.invalid'"),
            (FOREIGN, f"'{FOREIGN}' is not an address of this machine"),
        ],
        ids=["impossible-ip", "unresolvable", "not-local"],
    )
    @pytest.mark.parametrize("key", ["server.listen", "admin.listen"])
    async def test_unusable_address(
        self, tmp_path: Path, command: str, host: str, problem: str, key: str
    ) -> None:
        """An address that is no IP, does not resolve or is not this machine's is one line."""
        bad = f"{host}:{free_port()}"
        if key == "server.listen":
            config = write(tmp_path / "gw.toml", bad)
        else:
            config = write(tmp_path / "gw.toml", "127.0.0.1:0", admin={"listen": bad})
        code, out, err = await run_cli(command, "--config", str(config))
        assert code == 2, (out, err)
        assert problem in one_error_line(err, key)

    @pytest.mark.parametrize("key", ["server.listen", "admin.listen"])
    async def test_port_in_use_fails_run_and_is_a_note_for_check_config(
        self, tmp_path: Path, key: str
    ) -> None:
        """A port another process listens on: run exits 2 naming the key; check-config (most
        often run beside the daemon it checks) says so and passes."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = f"127.0.0.1:{holder.getsockname()[1]}"
            if key == "server.listen":
                config = write(tmp_path / "gw.toml", taken)
            else:
                config = write(tmp_path / "gw.toml", "127.0.0.1:0", admin={"listen": taken})
            code, _, err = await run_cli("run", "--config", str(config))
            assert code == 2
            assert f"{taken} is already in use" in one_error_line(err, key)
            code, out, err = await run_cli("check-config", "--config", str(config))
        assert code == 0, err
        assert f"note: {key}: {taken} is already in use" in out

    @pytest.mark.parametrize("command", ["check-config", "run"])
    async def test_low_port_without_privilege(self, command: str) -> None:
        """Port 1 for a user without CAP_NET_BIND_SERVICE: permission denied, in one line."""
        directory = Path(tempfile.mkdtemp())
        try:
            # Readable by the unprivileged user the check runs as (when the tests run as root).
            os.chmod(directory, 0o755)
            config = write(directory / "gw.toml", "127.0.0.1:1")
            os.chmod(config, 0o644)
            code, err = await unprivileged(command, config)
        finally:
            shutil.rmtree(directory)
        assert code == 2
        line = one_error_line(err, "server.listen")
        assert "permission denied listening on 127.0.0.1:1" in line
        assert "CAP_NET_BIND_SERVICE" in line

    async def test_unresolvable_upstream_is_exit_1_and_does_not_stop_the_daemon(
        self, tmp_path: Path
    ) -> None:
        """The SMSC's name not resolving is reported by check-config (exit 1, like a store it
        cannot reach) but is no start-up error: DNS and the SMSC may come back later."""
        port = free_port()
        config = write(
            tmp_path / "gw.toml",
            f"127.0.0.1:{port}",
            upstream={"address": "smsc.invalid:2775"},
        )
        code, out, err = await run_cli("check-config", "--config", str(config))
        assert code == 1, (out, err)
        assert err.splitlines() == [
            "smpp-gateway: upstream.address: cannot resolve 'smsc.invalid': "
            + err.split("'smsc.invalid': ", 1)[1].strip()
        ]
        daemon = GatewayProcess(config, port)
        await daemon.start()  # gateway_started
        assert await daemon.stop() == 0

    async def test_impossible_upstream_ip_is_a_config_error(self, tmp_path: Path) -> None:
        """Four dotted numbers that are no IPv4 address never become one: exit 2."""
        config = write(tmp_path / "gw.toml", "127.0.0.1:0", upstream={"address": "10.0.0.256:1"})
        code, _, err = await run_cli("check-config", "--config", str(config))
        assert code == 2
        assert "'10.0.0.256' is not an IPv4 address" in one_error_line(err, "upstream.address")

    async def test_bind_failing_after_the_check_names_the_key(self) -> None:
        """A port taken between the check and the daemon's own bind is the same error."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            taken = f"127.0.0.1:{holder.getsockname()[1]}"
            gw = Gateway(parse(config_data(taken)))
            with pytest.raises(StartupError, match=f"^server.listen: {taken} is already in use"):
                await gw.start()
            await gw.stop()


async def unprivileged(command: str, config: Path) -> tuple[int, str]:
    """``python -m gateway COMMAND`` without the privilege to bind low ports: when the tests
    run as root, root without CAP_NET_BIND_SERVICE (setpriv drops it from the bounding set at
    exec; the user stays, so a checkout only root may read still works), else the tests' user."""
    argv = [sys.executable, "-m", "gateway", command, "--config", str(config)]
    if os.geteuid() == 0:
        argv = ["setpriv", "--bounding-set=-net_bind_service", *argv]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    async with asyncio.timeout(30):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


class TestPlaceholders:
    """Footer and reply templates: every {name} they do not fill is refused, naming the key."""

    @pytest.mark.parametrize(
        ("where", "text", "problem"),
        [
            ("replies.help", "Stop: {optout_url}", "{optout_url}: the web opt-out link goes in"),
            ("footer_text", "{brand}: {brnad} STOP", "{brnad}: unknown placeholder"),
            ("footer_text", "{list}: STOP", "{list}: only list_opt_out has a list"),
            ("replies.opt_out", "{brand} {name} bye", "{name}: unknown placeholder"),
            ("replies.help", "{list} help", "{list}: only list_opt_out has a list"),
            ("replies.list_opt_out", "no more {lists}", "{lists}: unknown placeholder"),
        ],
    )
    def test_unknown_placeholder(self, where: str, text: str, problem: str) -> None:
        """The error names the key, the placeholder and what is supported there."""
        table, _, key = where.rpartition(".")
        campaign: dict[str, Any] = {"name": "acme", "numbers": ["+15550100001"]}
        if table:
            campaign[table] = {key: text}
        else:
            campaign[key] = text
        data = {**config_data("127.0.0.1:0"), "campaigns": [campaign]}
        with pytest.raises(ConfigError) as caught:
            parse(data)
        assert str(caught.value).startswith(f"campaigns[0].{where}: {problem}")
        assert "supported here: {brand}" in str(caught.value)

    def test_supported_placeholders_and_other_braces_pass(self) -> None:
        """{brand} and {link} in a footer (with [optout_link]), {list} in list_opt_out, braces
        around no name."""
        campaign = {
            "name": "acme",
            "brand": "ACME",
            "footer_text": "{brand}: Reply STOP {link} {} {1}",
            "replies": {"list_opt_out": "{brand}: no more {list}", "help": "{brand} { x }"},
        }
        link = {"base_url": "https://o.example/o/", "listen": "127.0.0.1:0", "key": "k" * 16}
        config = parse({**config_data("127.0.0.1:0"), "campaigns": [campaign], "optout_link": link})
        acme = config.consent.directory.get("acme")
        assert acme is not None
        assert acme.footer_text == "{brand}: Reply STOP {link} {} {1}"

    async def test_check_config_refuses_optout_url_without_the_link(self, tmp_path: Path) -> None:
        """check-config: exit 2, one line saying {optout_url} needs [optout_link]."""
        config = write(
            tmp_path / "gw.toml",
            "127.0.0.1:0",
            consent={"default": {"footer": "always", "footer_text": "Stop: {optout_url}"}},
        )
        code, _, err = await run_cli("check-config", "--config", str(config))
        assert code == 2
        assert "needs [optout_link]" in one_error_line(err, "consent.default.footer_text")


@pytest.fixture
def configs(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "first.toml", tmp_path / "second.toml"


class TestSecondInstance:
    """Sharing a port between processes only when asked (server.reuse_port)."""

    async def test_second_gateway_on_the_same_port_fails(self, configs: tuple[Path, Path]) -> None:
        """Without reuse_port the second instance exits 2 naming server.listen; the first
        keeps serving."""
        port = free_port()
        first = GatewayProcess(write(configs[0], f"127.0.0.1:{port}"), port)
        await first.start()
        try:
            code, _, err = await run_cli(
                "run", "--config", str(write(configs[1], f"127.0.0.1:{port}"))
            )
            assert code == 2
            assert "already in use" in one_error_line(err, "server.listen")
            with socket.create_connection(("127.0.0.1", port), timeout=10):
                pass
        finally:
            assert await first.stop() == 0

    @pytest.mark.parametrize(("first_shares", "second_shares"), [(True, False), (False, True)])
    async def test_one_side_sharing_is_not_enough(
        self, configs: tuple[Path, Path], first_shares: bool, second_shares: bool
    ) -> None:
        """The port is shared only when both processes ask for it."""
        port = free_port()
        listen = f"127.0.0.1:{port}"
        first = GatewayProcess(write(configs[0], listen, server={"reuse_port": first_shares}), port)
        await first.start()
        try:
            second = write(configs[1], listen, server={"reuse_port": second_shares})
            code, _, err = await run_cli("run", "--config", str(second))
            assert code == 2
            assert "already in use" in one_error_line(err, "server.listen")
        finally:
            assert await first.stop() == 0

    async def test_both_asking_share_the_port(self, configs: tuple[Path, Path]) -> None:
        """server.reuse_port = true in both: both start and listen on the one port."""
        port = free_port()
        listen = f"127.0.0.1:{port}"
        first = GatewayProcess(write(configs[0], listen, server={"reuse_port": True}), port)
        second = GatewayProcess(write(configs[1], listen, server={"reuse_port": True}), port)
        await first.start()
        try:
            await second.start()
            assert await second.stop() == 0
        finally:
            assert await first.stop() == 0

    async def test_admin_port_is_never_shared(self, configs: tuple[Path, Path]) -> None:
        """Two instances sharing the SMPP port still need their own admin.listen."""
        port, admin = free_port(), f"127.0.0.1:{free_port()}"
        listen = f"127.0.0.1:{port}"
        sections: dict[str, dict[str, Any]] = {
            "server": {"reuse_port": True},
            "admin": {"listen": admin},
        }
        first = GatewayProcess(write(configs[0], listen, **sections), port)
        await first.start()
        try:
            code, _, err = await run_cli(
                "run", "--config", str(write(configs[1], listen, **sections))
            )
            assert code == 2
            assert f"{admin} is already in use" in one_error_line(err, "admin.listen")
        finally:
            assert await first.stop() == 0
