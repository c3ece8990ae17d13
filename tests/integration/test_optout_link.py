"""The web opt-out link end to end: the footer carries a signed link per subscriber, opening
it changes nothing, confirming it opts out (actor ``link``) and the next MT is refused; forged,
tampered and expired links change nothing.

The gateway is a real consent gateway on SQLite, the SMSC the simulator, the client smpplib;
the pages are fetched over HTTP with urllib (tests/integration/test_optout_browser.py does the
same in a real Chromium).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.admin.optout import link_day
from gateway.consent.link import LinkSigner
from gateway.consent.model import Actor, ConsentState
from gateway.text.segment import CONCAT_8BIT
from tests.integration.test_footer_e2e import check_parts
from tests.support.consent import (
    NUMBER_1,
    SUBSCRIBER,
    Rig,
    acme_campaigns,
    consent_rig,
    free_port,
    wait_texts,
)

KEY = "optout-link-test-key-0123456789"
OPTED_OUT = 0x45
FOOTER = "{brand}: stop at {optout_url}"
LINK = re.compile(r"(http://127\.0\.0\.1:\d+/o/[A-Za-z0-9_-]{32})")


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]


def fetch(url: str, method: str = "GET") -> Page:
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return Page(answer.status, answer.read().decode(), dict(answer.headers))
    except urllib.error.HTTPError as exc:
        return Page(exc.code, exc.read().decode(), dict(exc.headers))


async def page(url: str, method: str = "GET") -> Page:
    return await asyncio.to_thread(fetch, url, method)


@asynccontextmanager
async def link_rig(
    tmp_path: Path, store_url: str | None = None, **link: object
) -> AsyncIterator[tuple[Rig, str]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/o/"
    async with consent_rig(
        tmp_path,
        store_url=store_url,
        campaigns=acme_campaigns(footer="always", footer_text=FOOTER),
        optout_link={"base_url": base, "listen": f"127.0.0.1:{port}", "key": KEY, **link},
    ) as rig:
        yield rig, base


async def link_of(rig: Rig, text: str = "Your code is 1234") -> str:
    """Send one MT to SUBSCRIBER; the link in the footer the SMSC received."""
    before = len(await wait_texts(rig.sim, SUBSCRIBER, 0))
    assert await rig.mt(SUBSCRIBER, text=text) == 0
    received = (await wait_texts(rig.sim, SUBSCRIBER, before + 1))[-1]
    assert received is not None
    assert received.startswith(text + " ACME: stop at http://")
    found = LINK.search(received)
    assert found is not None, received
    return found.group(1)


class TestOptOutLink:
    async def test_open_then_confirm_opts_out_of_the_campaign(self, tmp_path: Path) -> None:
        async with link_rig(tmp_path) as (rig, _base):
            url = await link_of(rig)
            assert rig.gw.store is not None

            shown = await page(url)
            assert shown.status == 200
            assert "Stop messages from ACME?" in shown.text
            assert "ending 67" in shown.text
            assert SUBSCRIBER not in shown.text + url
            assert shown.headers["Cache-Control"] == "no-store"
            assert "default-src 'none'" in shown.headers["Content-Security-Policy"]
            # Opening (a person, a link preview, a scanner) changes nothing.
            assert await rig.gw.store.history(SUBSCRIBER) == []
            assert await rig.mt(SUBSCRIBER, text="still subscribed") == 0

            done = await page(url, "POST")
            assert done.status == 200
            assert "You are unsubscribed" in done.text
            (event,) = await rig.gw.store.history(SUBSCRIBER)
            assert (event.scope, event.state, event.actor, event.by) == (
                "campaign:acme",
                ConsentState.OPTED_OUT,
                Actor.LINK,
                "optout-link",
            )
            assert await rig.mt(SUBSCRIBER, text="after") == OPTED_OUT

            again = await page(url, "POST")  # a second click: the same answer, no new event
            assert again.status == 200
            assert len(await rig.gw.store.history(SUBSCRIBER)) == 1

    async def test_forged_tampered_and_expired_links_change_nothing(self, tmp_path: Path) -> None:
        async with link_rig(tmp_path, ttl_days=30) as (rig, base):
            url = await link_of(rig)
            token = url.rsplit("/", 1)[1]
            today = link_day()
            forged = LinkSigner(b"another-key-entirely-0123", ttl_days=30, campaigns=("acme",))
            expired = LinkSigner(KEY.encode(), ttl_days=30, campaigns=("acme",))
            cases = {
                "tampered": base + token[:-1] + ("A" if token[-1] != "A" else "B"),
                "forged": base + forged.token("acme", SUBSCRIBER, today),
                "expired": base + expired.token("acme", SUBSCRIBER, today - 31),
                "truncated": base + token[:20],
                "empty": base,
            }
            for name, bad in cases.items():
                for method in ("GET", "POST"):
                    answer = await page(bad, method)
                    expected = 410 if name == "expired" else 404
                    assert answer.status == expected, (name, method, answer.text)
                    assert "Nothing was changed" in answer.text
            assert rig.gw.store is not None
            assert await rig.gw.store.history(SUBSCRIBER) == []
            assert await rig.mt(SUBSCRIBER, text="still subscribed") == 0

    async def test_a_store_that_fails_records_nothing_and_says_try_again(
        self, tmp_path: Path
    ) -> None:
        """The store's write lock held elsewhere past its busy timeout: the confirmation is a
        503 page asking to try again and nothing is recorded; once the store answers again,
        MTs go (the number is still subscribed) and the same link opts out."""
        db = tmp_path / "consent.db"
        async with link_rig(tmp_path, store_url=f"sqlite:{db}?busy_timeout_s=0.3") as (rig, _b):
            url = await link_of(rig)
            blocker = sqlite3.connect(db, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
            try:
                failed = await page(url, "POST")
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert failed.status == 503
            assert "Please try again" in failed.text
            assert "reply <b>STOP</b>" in failed.text
            assert rig.gw.store is not None
            await rig.gw.store.wait_healthy(10)  # fails closed until its probe succeeds
            assert await rig.gw.store.history(SUBSCRIBER) == []
            failures = rig.gw.metrics.registry.get_sample_value(
                "smppgw_optout_link_total", {"outcome": "failed", "reason": "store"}
            )
            assert failures == 1
            assert await rig.mt(SUBSCRIBER, text="not recorded, still subscribed") == 0

            done = await page(url, "POST")
            assert done.status == 200
            assert "You are unsubscribed" in done.text
            assert [e.actor for e in await rig.gw.store.history(SUBSCRIBER)] == [Actor.LINK]
            assert await rig.mt(SUBSCRIBER, text="after") == OPTED_OUT

    async def test_the_link_counts_in_the_segments(self, tmp_path: Path) -> None:
        """120 characters fit one part alone and need two with the footer and its link: the
        SMSC receives two parts that rejoin to text + footer with this subscriber's link."""
        async with link_rig(tmp_path) as (rig, base):
            text = "x" * 120
            assert await rig.mt(SUBSCRIBER, text=text) == 0
            records = await rig.sim.wait_for(lambda m: len(m) >= 2, timeout=10)
            link = base + LinkSigner(KEY.encode(), ttl_days=90, campaigns=("acme",)).token(
                "acme", SUBSCRIBER, link_day()
            )
            check_parts(records, f"{text} ACME: stop at {link}", CONCAT_8BIT)
            assert len(records) == 2

    async def test_without_the_link_section_the_placeholder_is_refused(self) -> None:
        from gateway.config import ConfigError, parse

        data = {
            "upstream": {"address": "127.0.0.1:2776"},
            "campaigns": [
                {"name": "acme", "numbers": ["+" + NUMBER_1], "footer_text": "Stop: {optout_url}"}
            ],
        }
        with pytest.raises(ConfigError, match=r"needs \[optout_link\]"):
            parse(data)


def test_check_config_reads_the_link_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A link key from an unset variable: check-config exits 2 naming the key."""
    from gateway.cli import main

    monkeypatch.delenv("SMPP_GW_TEST_LINK_KEY", raising=False)
    config = tmp_path / "gw.toml"
    config.write_text(
        '[upstream]\naddress = "127.0.0.1:2776"\n\n'
        f'[store]\nurl = "sqlite:{tmp_path}/consent.db"\n\n'
        '[optout_link]\nbase_url = "https://o.example/o/"\nlisten = "127.0.0.1:0"\n'
        'key_env = "SMPP_GW_TEST_LINK_KEY"\n'
    )
    assert main(["check-config", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (
        "smpp-gateway: config error: optout_link.key_env: environment variable "
        "SMPP_GW_TEST_LINK_KEY is not set\n"
    )
