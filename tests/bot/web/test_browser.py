"""The gallery in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, which
``.ci/run`` installs when missing) driven by Selenium through the system's chromedriver; Selenium Manager
never runs (the driver's path is given), so nothing is downloaded. Screenshots go to ``test-artifacts/``.

The bot's web server runs on this test's event loop, so every Selenium call (which blocks) goes through
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.app import VQGANBot
from engine.queue import JobQueue
from tests.bot.conftest import FakeRunner, web_config, web_url
from tests.bot.web.conftest import gallery_links, paint

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for this module's tests."""
    if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        pytest.skip(f"no Chromium here ({CHROMIUM}, {CHROMEDRIVER}): apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is a dev dependency: pip install -e .[dev]")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900",
                "--no-first-run", "--disable-extensions", "--disable-background-networking"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


async def call(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


async def open_page(driver: Any, url: str) -> None:
    await call(driver.get, url)
    await call(driver.execute_async_script, """
        const done = arguments[arguments.length - 1];
        const images = Array.from(document.images);
        Promise.all(images.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; }))).then(done);
    """)


async def images_loaded(driver: Any) -> list[int]:
    """Each picture's naturalWidth: 0 for one that did not load."""
    return await call(driver.execute_script,
                      "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0);")


def csp_complaints(driver: Any) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


async def test_a_persons_gallery_shows_their_pictures_and_copies_a_prompt(fake, tmp_path, browser):
    cfg = web_config(tmp_path, fake)
    bot = VQGANBot(cfg, JobQueue(cfg, runner=FakeRunner()))
    async with fake.running(bot):
        w = await paint(fake, bot)
        [link] = await gallery_links(fake, w.alice)
        await call(browser.execute_cdp_cmd, "Browser.grantPermissions", {
            "origin": web_url(cfg), "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
        await open_page(browser, link)
        widths = await images_loaded(browser)
        assert len(widths) == 2 and all(width > 0 for width in widths), widths  # alice's two pictures
        prompts = await call(browser.execute_script,
                             "return Array.from(document.querySelectorAll('.prompt')).map(p => p.textContent);")
        assert prompts == ["a blue jay <b>& friends</b>", "a red fox in the snow"]  # newest first, as typed

        from selenium.webdriver.common.by import By

        button = (await call(browser.find_elements, By.CSS_SELECTOR, "button.copy"))[0]
        await call(button.click)
        await fake.wait_for(lambda: button.get_attribute("data-state"), timeout=5)
        assert button.get_attribute("data-state") == "copied" and button.text == "Copied ✓"
        copied = await call(browser.execute_async_script, """
            const done = arguments[arguments.length - 1];
            navigator.clipboard.readText().then(done, e => done("could not read the clipboard: " + e));
        """)
        assert copied == "a blue jay <b>& friends</b>"
        assert csp_complaints(browser) == []
        ARTIFACTS.mkdir(exist_ok=True)
        await call(browser.save_screenshot, str(ARTIFACTS / "gallery-user.png"))


async def test_a_moderator_sees_the_servers_pictures_and_status_and_a_changed_link_is_refused(fake, tmp_path,
                                                                                             browser):
    cfg = web_config(tmp_path, fake, moderator_roles=["mods"], allowed_guilds=[fake.guild_id])
    bot = VQGANBot(cfg, JobQueue(cfg, runner=FakeRunner()))
    async with fake.running(bot):
        w = await paint(fake, bot)
        _, server, status = await gallery_links(fake, w.mod)
        await open_page(browser, server)
        widths = await images_loaded(browser)
        assert len(widths) == 3 and all(width > 0 for width in widths), widths  # everyone's, on this server
        ARTIFACTS.mkdir(exist_ok=True)
        await call(browser.save_screenshot, str(ARTIFACTS / "gallery-server.png"))

        await open_page(browser, status)
        text = await call(browser.execute_script, "return document.body.innerText;")
        assert "Lanes" in text and "Workers" in text and "Today's usage (UTC)" in text and str(w.bob.id) in text
        await call(browser.save_screenshot, str(ARTIFACTS / "gallery-status.png"))

        altered = server[:-2] + ("AA" if not server.endswith("AA") else "BB")
        await open_page(browser, altered)
        text = await call(browser.execute_script, "return document.body.innerText;")
        assert "This link does not work" in text and await images_loaded(browser) == []
        assert csp_complaints(browser) == []
