"""The deployment files agree with each other and with the gateway's own config checker: the
Dockerfile and its container config, the systemd unit and the single-instance example, the
scale-out configs, haproxy.cfg and compose.yaml (which run together in test_haproxy.py).

No container runtime runs here, so the image itself is not built; what it would run is checked
piece by piece, and its HEALTHCHECK command is run against a real gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.config import load, sqlite_dir
from tests.support.consent import GatewayProcess, free_port, to_toml
from tests.support.gateway import running_gateway
from tests.support.sim import running_simulator

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKER_CONFIG = ROOT / "config" / "docker.toml"
EXAMPLE = ROOT / "config" / "gateway.toml"
UNIT = ROOT / "systemd" / "smpp-gateway.service"
SCALE_OUT = ROOT / "config" / "scale-out"


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and line[0] != "#")
    ]


def instructions(name: str) -> list[str]:
    return [args for word, args in dockerfile() if word == name]


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def host_of(address: str) -> str:
    return address.rpartition(":")[0]


def within(path: str, directory: str) -> bool:
    return PurePosixPath(path).is_relative_to(directory)


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def commented_paths(text: str) -> list[str]:
    """Absolute paths in a config's values, also those of commented-out example keys."""
    return re.findall(r'^#?\s*\w+ = "(/[^"]+)"', text, re.MULTILINE)


class TestDockerfile:
    """The image: a pinned base, the container config, volumes, a health check."""

    def test_base_image_is_pinned_to_an_exact_release(self) -> None:
        """Every stage starts from one ARG whose default names an exact Python and Debian
        release (a digest may follow), never a moving tag such as python:3.11-slim."""
        (arg,) = [a for a in instructions("ARG") if a.startswith("PYTHON_IMAGE=")]
        image = arg.split("=", 1)[1]
        assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image)
        froms = instructions("FROM")
        assert len(froms) == 2
        assert all(f.split()[0] == "${PYTHON_IMAGE}" for f in froms), froms

    def test_container_config_is_the_one_it_runs(self) -> None:
        """CMD runs the config that the image copies from config/docker.toml."""
        (cmd,) = instructions("CMD")
        args = json.loads(cmd)
        assert args[:2] == ["run", "--config"]
        copies = [c.split() for c in instructions("COPY") if "config/docker.toml" in c]
        (copy,) = copies
        assert copy[-2:] == ["config/docker.toml", args[2]]
        assert json.loads(instructions("ENTRYPOINT")[0]) == ["smpp-gateway"]

    def test_container_config_listens_on_every_interface(self) -> None:
        """Inside a container 127.0.0.1 cannot be reached from outside: the SMPP listener
        and the admin API listen on 0.0.0.0, on the ports the image exposes."""
        config = load(DOCKER_CONFIG)
        assert config.server.listen.host == "0.0.0.0"
        assert config.admin.listen is not None
        assert config.admin.listen.host == "0.0.0.0"
        (expose,) = instructions("EXPOSE")
        assert {int(p) for p in expose.split()} == {
            config.server.listen.port,
            config.admin.listen.port,
        }

    def test_state_and_config_are_volumes_at_the_configs_paths(self) -> None:
        """The store, the trail and the privacy key (beside the trail) lie in the state
        volume, which is also the working directory; the config directory is a volume."""
        config = load(DOCKER_CONFIG)
        (volume,) = instructions("VOLUME")
        volumes = json.loads(volume)
        (workdir,) = [w for w in instructions("WORKDIR") if w != "/src"]
        (cmd,) = instructions("CMD")
        assert os.path.dirname(json.loads(cmd)[2]) in volumes
        assert workdir in volumes
        directory = sqlite_dir(config.store.url)
        assert directory is not None
        assert config.audit.path is not None
        for path in (directory, config.audit.path):
            assert os.path.isabs(path), path
            assert within(path, workdir), path

    def test_check_config_accepts_the_container_config(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """``smpp-gateway check-config`` passes the container config (its store does not
        exist yet: the daemon creates it on first start). Its SMSC, ``smsc``, is a host name of
        the container's network: outside it, that name alone is reported (exit 1)."""
        code = main(["check-config", "--config", str(DOCKER_CONFIG)])
        captured = capsys.readouterr()
        assert "OK (listen 0.0.0.0:2775" in captured.out
        assert "does not exist yet" in captured.out
        if code != 0:
            assert code == 1
            assert captured.err.startswith("smpp-gateway: upstream.address: cannot resolve 'smsc'")
            assert captured.err.count("\n") == 1

    def test_runs_as_its_own_user(self) -> None:
        """The last USER is the unprivileged account the image creates."""
        assert instructions("USER")[-1] == "smpp-gateway"
        (run,) = [r for r in instructions("RUN") if "useradd" in r]
        assert "--system" in run

    async def test_healthcheck_command_asks_healthz(self) -> None:
        """The HEALTHCHECK is a python one-liner (no curl in the image) on the URL of
        SMPP_GATEWAY_HEALTH_URL, by default /healthz on the container config's admin port:
        run here, it exits 0 against a running gateway and non-zero without one."""
        (check,) = instructions("HEALTHCHECK")
        options, _, command = check.partition(" CMD ")
        assert re.search(r"--interval=\d+s", options)
        argv = json.loads(command)
        assert argv[0] == "python"
        (env,) = [e for e in instructions("ENV") if e.startswith("SMPP_GATEWAY_HEALTH_URL=")]
        url = env.split("=", 1)[1]
        config = load(DOCKER_CONFIG)
        assert config.admin.listen is not None
        assert url == f"http://127.0.0.1:{config.admin.listen.port}/healthz"

        async def health(target: str) -> int:
            env = {**os.environ, "SMPP_GATEWAY_HEALTH_URL": target}
            process = await asyncio.create_subprocess_exec(
                sys.executable, *argv[1:], env=env,
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            async with asyncio.timeout(30):
                return await process.wait()

        async with (
            running_simulator(control_port=None) as sim,
            running_gateway(sim.port, admin={"listen": "127.0.0.1:0"}) as gw,
        ):
            assert gw.admin is not None
            assert await health(f"http://127.0.0.1:{gw.admin.port}/healthz") == 0
            admin_port = gw.admin.port
        assert await health(f"http://127.0.0.1:{admin_port}/healthz") != 0


class TestSystemdUnit:
    """systemd/smpp-gateway.service runs config/gateway.toml as installed by the README."""

    def test_example_paths_land_in_the_state_directory(self) -> None:
        """WorkingDirectory is the StateDirectory, so the example's relative store path,
        its audit trail and privacy key (beside the store) are in the one writable place."""
        settings = unit_settings()
        (state,) = settings["StateDirectory"]
        (workdir,) = settings["WorkingDirectory"]
        assert workdir == f"/var/lib/{state}"
        config = load(EXAMPLE)
        directory = sqlite_dir(config.store.url)
        assert directory is not None
        assert not os.path.isabs(directory)  # relative: resolved in WorkingDirectory
        assert config.audit.path is not None
        for path in (directory, config.audit.path):
            resolved = os.path.normpath(os.path.join(workdir, path))
            assert within(resolved, workdir), resolved

    async def test_example_runs_in_the_working_directory(self, tmp_path: Path) -> None:
        """``smpp-gateway run`` on the example (ports made free) started in an empty state
        directory, as the unit starts it: store, trail and privacy key are made in there,
        the key and the store owner-only, and SIGTERM ends it with exit 0."""
        data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
        state = tmp_path / "state"
        state.mkdir()
        async with running_simulator(control_port=None) as sim:
            data["server"]["listen"] = f"127.0.0.1:{free_port()}"
            data["admin"]["listen"] = f"127.0.0.1:{free_port()}"
            data["upstream"]["address"] = f"127.0.0.1:{sim.port}"
            config = tmp_path / "gateway.toml"
            config.write_text(to_toml(data))
            gateway = GatewayProcess(config, port_of(data["server"]["listen"]), cwd=state)
            await gateway.start()
            assert await gateway.stop() == 0
        made = {p.relative_to(state).as_posix() for p in state.rglob("*") if p.is_file()}
        assert {"var/consent.db", "var/audit.jsonl", "var/privacy.key"} <= made, made
        for name in ("var/consent.db", "var/privacy.key"):
            assert (state / name).stat().st_mode & 0o077 == 0, name

    def test_config_file_is_in_the_configuration_directory(self) -> None:
        """ExecStart's --config file, and every absolute path the example names (TLS files,
        token files, keys), are in /etc/ConfigurationDirectory or the state directory."""
        settings = unit_settings()
        (conf,) = settings["ConfigurationDirectory"]
        (state,) = settings["StateDirectory"]
        words = shlex.split(settings["ExecStart"][0])
        config_path = words[words.index("--config") + 1]
        assert os.path.dirname(config_path) == f"/etc/{conf}"
        paths = commented_paths(EXAMPLE.read_text(encoding="utf-8"))
        assert paths  # the example shows where TLS files and tokens go
        for path in paths:
            assert within(path, f"/etc/{conf}") or within(path, f"/var/lib/{state}"), path

    def test_hardening_is_kept(self) -> None:
        """The sandbox directives stay, and nothing but the state directory is writable."""
        settings = unit_settings()
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "PrivateDevices": "yes",
            "RestrictNamespaces": "yes",
            "MemoryDenyWriteExecute": "yes",
            "CapabilityBoundingSet": "",
        }.items():
            assert settings[key] == [value], key
        assert "ReadWritePaths" not in settings

    def test_systemd_analyze_verify(self, tmp_path: Path) -> None:
        """``systemd-analyze verify`` finds nothing to say about the unit (with ExecStart's
        program pointed at the installed smpp-gateway, which is elsewhere on this machine)."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            pytest.skip("systemd-analyze is not installed")
        program = shutil.which("smpp-gateway", path=os.path.dirname(sys.executable))
        assert program is not None
        text = UNIT.read_text(encoding="utf-8")
        (start,) = unit_settings()["ExecStart"]
        unit = tmp_path / UNIT.name
        unit.write_text(text.replace(shlex.split(start)[0], program))
        result = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def scale_out_config(n: int) -> dict[str, Any]:
    return tomllib.loads((SCALE_OUT / f"gateway-{n}.toml").read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((SCALE_OUT / "compose.yaml").read_text(encoding="utf-8"))
    return data


def haproxy_servers() -> dict[str, tuple[str, int, int]]:
    """``server NAME HOST:PORT check port N`` lines: name -> (host, port, check port)."""
    text = (SCALE_OUT / "haproxy.cfg").read_text(encoding="utf-8")
    return {
        m.group(1): (m.group(2), int(m.group(3)), int(m.group(4)))
        for m in re.finditer(r"^\s*server (\S+) (\S+):(\d+) check port (\d+)$", text, re.M)
    }


class TestScaleOutExample:
    """config/scale-out/: what must differ per instance does, the rest is the same."""

    def test_configs_pass_the_checker(self) -> None:
        """Both gateway configs load (the checker's rules, key by key)."""
        for n in (1, 2):
            load(SCALE_OUT / f"gateway-{n}.toml")

    def test_instances_differ_where_they_must(self) -> None:
        """Distinct instance names, SMPP and admin ports and audit trails; the same store,
        SMSC, privacy key, consent rules and campaigns."""
        one, two = scale_out_config(1), scale_out_config(2)
        for key in ("gateway", "server", "admin", "audit"):
            assert one[key] != two[key], key
        assert one["audit"]["path"] != two["audit"]["path"]
        same = ("upstream", "session", "store", "privacy", "consent", "campaigns", "logging")
        for key in same:
            assert one[key] == two[key], key
        assert set(one) == set(two)
        assert one["store"]["url"].startswith("redis://")
        # Behind HAProxy the gateways read the PROXY header, from HAProxy's fixed address only.
        proxy = compose()["services"]["haproxy"]["networks"]["default"]["ipv4_address"]
        for config in (one, two):
            assert config["server"]["proxy_protocol"] is True
            assert config["server"]["proxy_networks"] == [f"{proxy}/32"]

    def test_haproxy_points_at_each_gateway(self) -> None:
        """One server line per gateway: its SMPP port, health-checked on its admin port."""
        servers = haproxy_servers()
        for n in (1, 2):
            config = scale_out_config(n)
            name = config["gateway"]["instance"]
            host, port, check = servers[name]
            assert host == name  # the compose service of that gateway
            assert port == port_of(config["server"]["listen"])
            assert check == port_of(config["admin"]["listen"])
            assert host_of(config["admin"]["listen"]) == "0.0.0.0"  # reachable by HAProxy
        assert len(servers) == 2

    def test_haproxy_settings(self) -> None:
        """TCP mode, leastconn, HTTP checks of /readyz, a PROXY v2 header on every server,
        session timeouts longer than the gateways' enquire_link interval."""
        text = (SCALE_OUT / "haproxy.cfg").read_text(encoding="utf-8")
        assert re.search(r"^\s*mode tcp$", text, re.M)
        assert re.search(r"^\s*balance leastconn$", text, re.M)
        assert re.search(r"^\s*option httpchk GET /readyz$", text, re.M)
        assert re.search(r"^\s*default-server .*\bsend-proxy-v2\b", text, re.M)
        interval = scale_out_config(1)["session"]["enquire_link_interval_s"]
        for side in ("client", "server"):
            found = re.search(rf"^\s*timeout {side} (\d+)(s|m)$", text, re.M)
            assert found is not None, side
            seconds = int(found.group(1)) * (60 if found.group(2) == "m" else 1)
            assert seconds > 2 * interval, side

    def test_compose_runs_the_committed_files(self) -> None:
        """compose.yaml: each gateway mounts its config where the image's CMD reads it, its
        health URL is its admin port, and the host names of the configs are its services."""
        services = compose()["services"]
        assert set(services) == {"redis", "smsc", "gw-1", "gw-2", "haproxy"}
        (cmd,) = instructions("CMD")
        config_path = json.loads(cmd)[2]
        (volume,) = instructions("VOLUME")
        state = [v for v in json.loads(volume) if v.startswith("/var/lib/")]
        for n in (1, 2):
            config = scale_out_config(n)
            service = services[config["gateway"]["instance"]]
            assert f"./gateway-{n}.toml:{config_path}:ro" in service["volumes"]
            assert any(v.endswith(f":{state[0]}") for v in service["volumes"])
            admin = port_of(config["admin"]["listen"])
            health = service["environment"]["SMPP_GATEWAY_HEALTH_URL"]
            assert health == f"http://127.0.0.1:{admin}/healthz"
            assert "SMPP_GATEWAY_PRIVACY_KEY" in service["environment"]
            assert config["privacy"]["key_env"] == "SMPP_GATEWAY_PRIVACY_KEY"
            assert "ports" not in service  # clients come through HAProxy
            upstream = config["upstream"]["address"]
            assert host_of(upstream) in services
            sim_command = services[host_of(upstream)]["command"]
            assert sim_command[0] == "smsc-sim"
            listen = sim_command[sim_command.index("--listen") + 1]
            assert port_of(listen) == port_of(upstream)
            redis_host = config["store"]["url"].split("//", 1)[1].split(":")[0]
            assert redis_host in services
        redis_command = " ".join(services["redis"]["command"])
        assert "--appendonly yes" in redis_command
        assert "--appendfsync always" in redis_command
        proxy = services["haproxy"]
        assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
        assert "2775:2775" in proxy["ports"]
        assert re.fullmatch(r"haproxy:\d+\.\d+\.\d+", proxy["image"])
        assert re.fullmatch(r"redis:\d+\.\d+\.\d+-\w+", services["redis"]["image"])
