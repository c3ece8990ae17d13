"""The web opt-out link in a real browser: Debian's headless Chromium, driven by chromedriver.

The footer's link, as the SMSC received it, is opened in Chromium; the page is screenshotted
and the screenshot checked (a rendered page with its red confirm button, not a blank or an
error page); the button is clicked and the store then holds the opt-out, with actor ``link``,
and the next MT is refused. scripts/test installs chromium and chromium-driver.

Every WebDriver call runs in a thread: the gateway serves the page on this test's event loop, so a
call that waits for a page to load (a click's navigation is not always over when click returns)
must never block that loop.
"""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from gateway.consent.model import Actor, ConsentState
from tests.integration.test_optout_link import OPTED_OUT, link_of, link_rig
from tests.support.consent import SUBSCRIBER

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
TITLE = "Stop messages from ACME?"  # the confirm page's
BUTTON_RED = (0xB0, 0x00, 0x20)  # the confirm button's background (gateway.admin.optout)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed (scripts/test installs them)",
)


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    assert CHROMIUM is not None
    assert CHROMEDRIVER is not None
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=480,800"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def red_pixels(png: bytes) -> int:
    """How many pixels of the screenshot are the confirm button's red."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    return sum(
        1
        for r, g, b in image.get_flattened_data()
        if abs(r - BUTTON_RED[0]) < 12 and g < 24 and abs(b - BUTTON_RED[2]) < 16
    )


async def text_of(browser: webdriver.Chrome, tag: str) -> str:
    """The text of the first ``tag`` element, read off the loop (it may wait for a page load)."""
    return await asyncio.to_thread(lambda: browser.find_element(By.TAG_NAME, tag).text)


async def title_after(browser: webdriver.Chrome, old: str) -> str:
    """Wait, off the loop, until the page titled ``old`` has been replaced; the new title.

    Polled on the title, not on an element of the old page: during the navigation such an
    element may be stale, or a node that belongs to no document, depending on the moment.
    """
    await asyncio.to_thread(
        WebDriverWait(browser, 30, poll_frequency=0.05).until, lambda d: d.title not in (old, "")
    )
    return await asyncio.to_thread(lambda: browser.title)


async def test_a_person_opts_out_in_chromium(tmp_path: Path, browser: webdriver.Chrome) -> None:
    async with link_rig(tmp_path) as (rig, _base):
        url = await link_of(rig)
        await asyncio.to_thread(browser.get, url)
        assert await asyncio.to_thread(lambda: browser.title) == TITLE
        shot = await asyncio.to_thread(browser.get_screenshot_as_png)
        (tmp_path / "optout-page.png").write_bytes(shot)
        image = Image.open(io.BytesIO(shot))
        assert image.size[0] >= 400
        assert (
            len(set(image.convert("L").get_flattened_data())) > 8
        )  # text was drawn, not a blank page
        assert red_pixels(shot) > 1500  # the button is on screen
        assert rig.gw.store is not None
        assert await rig.gw.store.history(SUBSCRIBER) == []  # opening changed nothing

        button = await asyncio.to_thread(browser.find_element, By.ID, "confirm")
        await asyncio.to_thread(button.click)
        # click may return before the form's POST is answered
        assert await title_after(browser, TITLE) == "You are unsubscribed"
        assert await text_of(browser, "h1") == "You are unsubscribed"
        assert "ACME" in await text_of(browser, "body")
        assert red_pixels(await asyncio.to_thread(browser.get_screenshot_as_png)) == 0
        (event,) = await rig.gw.store.history(SUBSCRIBER)
        assert (event.state, event.actor, event.scope) == (
            ConsentState.OPTED_OUT,
            Actor.LINK,
            "campaign:acme",
        )
        assert await rig.mt(SUBSCRIBER, text="after") == OPTED_OUT
