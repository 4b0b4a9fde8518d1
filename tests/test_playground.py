"""The playground page at GET / in a real headless browser (Debian's chromium and its driver)."""

from __future__ import annotations

import shutil
import tempfile
import time

import pytest

from .test_serve import Server

CHROMIUM = shutil.which("chromium")
DRIVER = "/usr/bin/chromedriver"

pytestmark = [pytest.mark.slow,  # a real browser
              pytest.mark.skipif(CHROMIUM is None or shutil.which(DRIVER) is None,
                                 reason="chromium and chromium-driver are not installed (apt-get install chromium "
                                        "chromium-driver)")]


@pytest.fixture()
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="dlm-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)  # no driver download
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def test_the_page_denoises_a_prompt_live(browser):
    from selenium.webdriver.common.by import By

    s = Server("-m", "tiny-llada")
    try:
        browser.get(s.url + "/")
        assert "dlm playground" in browser.title
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("reverse hello")
        browser.find_element(By.ID, "temperature").send_keys("0")
        # Record every distinct state of the canvas as the stream redraws it.
        browser.execute_script("""
            window.states = [];
            new MutationObserver(() => {
              const t = document.getElementById('canvas').textContent;
              if (window.states[window.states.length - 1] !== t) window.states.push(t);
            }).observe(document.getElementById('canvas'), {subtree: true, childList: true, characterData: true});
        """)
        browser.find_element(By.ID, "go").click()
        deadline = time.monotonic() + 60
        while browser.execute_script("return document.getElementById('status').dataset.done") != "1":
            assert time.monotonic() < deadline, browser.find_element(By.ID, "status").text
            time.sleep(0.05)
        assert browser.find_element(By.ID, "answer").text == "olleh"
        states = browser.execute_script("return window.states")
        assert len(states) >= 3, states  # all masks, part-way, final
        assert set(states[0]) == {"\u2591"}  # it starts as a canvas of masks
        assert states[-1].startswith("olleh") and "\u2591" not in states[-1]
        assert "step" in browser.find_element(By.ID, "status").text
    finally:
        assert s.stop() == 0
