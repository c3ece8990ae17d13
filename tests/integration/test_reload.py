"""SIGHUP to a running daemon (``python -m gateway run``): what it applies, what needs a restart,
and a file that fails the check, each told by exactly one log line."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.app import RESTART_KEYS, keep_running, restart_changes
from gateway.config import parse
from gateway.simulator import Simulator
from tests.support.consent import (
    NUMBER_1,
    SUBSCRIBER,
    WAIT_S,
    GatewayProcess,
    SmpplibEsme,
    free_port,
    run_cli,
    simulator,
    texts_to,
    to_toml,
    wait_texts,
)

OPTED_OUT = 0x45
TOKEN = "reload-test-token"
OLD_FOOTER = "{brand}: Reply STOP to opt out"
NEW_FOOTER = "{brand}: Reply STOP to end"


def config_data(
    tmp_path: Path, sim_port: int, listen_port: int, admin_port: int, footer_text: str
) -> dict[str, Any]:
    return {
        "gateway": {"instance": "reload-gw", "shutdown_grace_s": 2},
        "server": {"listen": f"127.0.0.1:{listen_port}"},
        "upstream": {"address": f"127.0.0.1:{sim_port}"},
        "session": {"unbind_timeout_s": 1, "response_timeout_s": 5},
        "store": {"url": f"sqlite:{tmp_path}/consent.db"},
        "admin": {"listen": f"127.0.0.1:{admin_port}", "token": TOKEN},
        "logging": {"level": "info", "format": "json"},
        "campaigns": [
            {
                "name": "acme",
                "brand": "ACME",
                "numbers": ["+" + NUMBER_1],
                "footer": "always",
                "footer_text": footer_text,
            }
        ],
    }


@dataclass
class Running:
    sim: Simulator
    daemon: GatewayProcess
    config: Path
    data: dict[str, Any]
    admin_port: int

    def write(self, data: dict[str, Any] | str) -> None:
        self.config.write_text(data if isinstance(data, str) else to_toml(data), encoding="utf-8")

    async def hup(self, event: str) -> dict[str, Any]:
        """SIGHUP, then the line ``event`` it logs (the first such line since the start)."""
        assert self.daemon.proc is not None
        count = len(self.daemon.events(event)) + 1
        self.daemon.proc.send_signal(signal.SIGHUP)
        return await self.daemon.wait_for(event, count)

    def reload_lines(self) -> list[str]:
        return [
            line["event"]
            for name in ("config_reloaded", "config_reload_partial", "config_reload_failed")
            for line in self.daemon.events(name)
        ]

    async def texts(self, esme: SmpplibEsme, text: str) -> str | None:
        """An MT of the campaign to SUBSCRIBER: the text the SMSC got."""
        before = len(texts_to(self.sim, SUBSCRIBER))
        assert await esme.submit(SUBSCRIBER, text, source=NUMBER_1) == 0
        return (await wait_texts(self.sim, SUBSCRIBER, before + 1))[-1]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    port, admin_port = free_port(), free_port()
    async with simulator() as sim:
        data = config_data(tmp_path, sim.port, port, admin_port, OLD_FOOTER)
        config = tmp_path / "gateway.toml"
        config.write_text(to_toml(data), encoding="utf-8")
        daemon = GatewayProcess(config, port)
        await daemon.start()
        try:
            yield Running(sim=sim, daemon=daemon, config=config, data=data, admin_port=admin_port)
            assert await daemon.stop() == 0
        finally:
            await daemon.kill()


async def http_get(port: int, path: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """A GET to the admin API: status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n".encode())
    async with asyncio.timeout(WAIT_S):
        raw = await reader.read()
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def changed(data: dict[str, Any], **sections: dict[str, Any]) -> dict[str, Any]:
    out = {name: dict(value) if isinstance(value, dict) else value for name, value in data.items()}
    for name, values in sections.items():
        out[name].update(values)
    return out


class TestApplied:
    async def test_footer_change_reaches_sessions_bound_before(self, running: Running) -> None:
        """Consent rules apply to every message after the reload, on sessions bound before it
        as on new ones; one config_reloaded line, nothing else."""
        async with SmpplibEsme(running.daemon.port, "acme") as esme:
            assert await running.texts(esme, "hello") == "hello ACME: Reply STOP to opt out"
            campaign = {**running.data["campaigns"][0], "footer_text": NEW_FOOTER}
            running.write({**running.data, "campaigns": [campaign]})
            line = await running.hup("config_reloaded")
            assert line["source"] == str(running.config)
            assert await running.texts(esme, "again") == "again ACME: Reply STOP to end"
        async with SmpplibEsme(running.daemon.port, "acme") as fresh:
            assert await running.texts(fresh, "new") == "new ACME: Reply STOP to end"
        assert running.reload_lines() == ["config_reloaded"]


class TestRestartKeys:
    async def test_keys_that_need_a_restart_keep_their_running_value(
        self, running: Running, tmp_path: Path
    ) -> None:
        """logging.level, server.listen, admin.token and store.url changed: one
        config_reload_partial naming them, and the daemon goes on with the old values (same
        port, same store, same token) while the rest of the file applies."""
        code, _, err = await run_cli(
            "consent", "opt-out", SUBSCRIBER, "--config", str(running.config)
        )
        assert code == 0, err
        other_port = free_port()
        campaign = {**running.data["campaigns"][0], "footer_text": NEW_FOOTER}
        new = changed(
            running.data,
            logging={"level": "debug"},
            server={"listen": f"127.0.0.1:{other_port}"},
            admin={"token": "another-token"},
            store={"url": f"sqlite:{tmp_path}/other.db"},
        )
        running.write({**new, "campaigns": [campaign]})
        line = await running.hup("config_reload_partial")
        assert line["restart_needed"] == ["server.listen", "store.url", "admin.tokens", "logging"]
        assert line["level"] == "warning"
        assert running.reload_lines() == ["config_reload_partial"]

        # The same listener, the same store (its one record), the same token.
        status, ready = await http_get(running.admin_port, "/readyz")
        assert ready["store"] == {"records": 1}, (status, ready)
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", other_port)
        status, _ = await http_get(running.admin_port, f"/v1/consent/{SUBSCRIBER}", TOKEN)
        assert status == 200
        status, _ = await http_get(running.admin_port, f"/v1/consent/{SUBSCRIBER}", "another-token")
        assert status == 401
        async with SmpplibEsme(running.daemon.port, "acme") as esme:
            assert await esme.submit(SUBSCRIBER, "hi", source=NUMBER_1) == OPTED_OUT
            # The keys that do reload applied all the same.
            running_other = "15557654321"
            before = len(texts_to(running.sim, running_other))
            assert await esme.submit(running_other, "x", source=NUMBER_1) == 0
            texts = await wait_texts(running.sim, running_other, before + 1)
            assert texts[-1] == "x ACME: Reply STOP to end"
        # Logging stayed at info: a new connection's debug line is not written.
        assert not running.daemon.events("connection_accepted")


class TestFailed:
    @pytest.mark.parametrize(
        ("broken", "key"),
        [
            ("not toml [", "not valid TOML"),
            ("footer", "campaigns[0].footer_text: {optout_url}"),
            ("tls", "upstream.tls: cannot load"),
        ],
    )
    async def test_invalid_file_changes_nothing(
        self, running: Running, tmp_path: Path, broken: str, key: str
    ) -> None:
        """A file that fails the check: config_reload_failed only (never also reloaded), the
        running config whole; the next good file applies."""
        campaign = {**running.data["campaigns"][0], "footer_text": NEW_FOOTER}
        if broken == "not toml [":
            running.write(to_toml({**running.data, "campaigns": [campaign]}) + "\n[[[\n")
        elif broken == "footer":
            running.write(
                {**running.data, "campaigns": [{**campaign, "footer_text": "{optout_url}"}]}
            )
        else:
            junk = tmp_path / "junk.pem"
            junk.write_text("not a certificate\n")
            upstream = {**running.data["upstream"], "tls": {"ca_file": str(junk)}}
            running.write({**running.data, "upstream": upstream, "campaigns": [campaign]})
        line = await running.hup("config_reload_failed")
        assert key in line["error"]
        async with SmpplibEsme(running.daemon.port, "acme") as esme:
            assert await running.texts(esme, "a") == "a ACME: Reply STOP to opt out"
            running.write({**running.data, "campaigns": [campaign]})
            await running.hup("config_reloaded")
            assert await running.texts(esme, "b") == "b ACME: Reply STOP to end"
        assert running.reload_lines() == ["config_reloaded", "config_reload_failed"]


class TestClassification:
    def test_every_restart_key_is_detected_and_kept(self, tmp_path: Path) -> None:
        """Each key listed as needing a restart, changed alone, is named and keeps its value."""
        base = config_data(tmp_path, 2776, 2775, 8775, OLD_FOOTER)
        variants: dict[str, dict[str, Any]] = {
            "gateway.instance": {"gateway": {"instance": "other"}},
            "server.listen": {"server": {"listen": "127.0.0.1:2000"}},
            "server.reuse_port": {"server": {"reuse_port": True}},
            "server.workers": {"server": {"workers": 2}},
            "server.worker_timeout_s": {"server": {"worker_timeout_s": 5}},
            "server.tls": {"server": {"tls": {"cert_file": __file__, "key_file": __file__}}},
            "server.proxy_protocol": {
                "server": {"proxy_protocol": True, "proxy_networks": ["10.0.0.0/8"]}
            },
            "upstream.service_bind": {"upstream": {"service_bind": {"system_id": "gw"}}},
            "store.url": {"store": {"url": f"sqlite:{tmp_path}/other.db"}},
            "consent.enabled": {"consent": {"enabled": False}},
            "consent.mo_dedup_window_s": {"consent": {"mo_dedup_window_s": 60}},
            "consent.mo_reassembly_timeout_s": {"consent": {"mo_reassembly_timeout_s": 60}},
            "text.receipt_ids_ttl_s": {"text": {"receipt_ids_ttl_s": 60}},
            "admin.listen": {"admin": {"listen": "127.0.0.1:2001"}},
            "admin.tls": {"admin": {"tls": {"cert_file": __file__, "key_file": __file__}}},
            "admin.tokens": {"admin": {"token": "x-other"}},
            "optout_link": {
                "optout_link": {
                    "base_url": "https://o.example/o/",
                    "listen": "127.0.0.1:2002",
                    "key": "k" * 16,
                }
            },
            "audit": {"audit": {"fsync": False}},
            "privacy": {"privacy": {"show_digits": 2}},
            "logging": {"logging": {"format": "console"}},
        }
        assert sorted(variants) == sorted(RESTART_KEYS)
        old = parse(base)
        for key, sections in variants.items():
            data = {name: dict(v) if isinstance(v, dict) else v for name, v in base.items()}
            for name, values in sections.items():
                data.setdefault(name, {}).update(values)
            new = parse(data)
            assert restart_changes(old, new) == [key], key
            kept = keep_running(old, new, [key])
            assert restart_changes(old, kept) == [], key
