"""The hit feed in a real browser (Chromium from the OS packages, Selenium): a hit appears, Dismiss marks it wrong."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from facefind.access import Actor
from facefind.samples import gallery_samples, probe_sample
from facefind.service import ServiceSettings
from tests.service.conftest import PASSWORDS, serve

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_S = 90


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    root = tmp_path_factory.mktemp("watch-ui")
    photos = root / "photos"
    photos.mkdir()
    for sample in gallery_samples():
        shutil.copy(sample, photos / sample.name)
    with serve(ServiceSettings(library=root / "library", allow_roots=(photos,)), pipeline) as served:
        served.facefind.watch_add("yao", photos=[probe_sample()], actor=Actor("ivy", "investigator"))
        served.facefind.index([photos], workers=1)
        yield served


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("the browser tests need Chromium: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    scratch = tmp_path_factory.mktemp("chromium")
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver,
                                                               env={**os.environ, "TMPDIR": str(scratch)}))
    yield driver
    driver.quit()


def submit(driver, by: str, value: str) -> None:
    """Click a submit button and wait for the page it leads to."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, value).click()
    WebDriverWait(driver, WAIT_S).until(staleness_of(page))


def test_the_hit_feed_shows_the_hit_and_dismisses_it_in_a_browser(server, browser):
    browser.get(server.url + "/watch")  # not logged in: the login page first, then back here
    browser.find_element(By.ID, "login-name").send_keys("ivy")
    browser.find_element(By.ID, "login-password").send_keys(PASSWORDS["ivy"])
    submit(browser, By.ID, "login-submit")
    row = browser.find_element(By.ID, "hit-1")
    assert "players.jpg" in row.text and "strong" in row.text and "new" in row.text
    assert browser.find_element(By.CSS_SELECTOR, "#hit-1 img").get_attribute("naturalWidth") != "0"  # the crop loads
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "watch-hits.png"))
    submit(browser, By.CSS_SELECTOR, "#hit-1 button.dismiss")
    assert "dismissed by ivy" in browser.find_element(By.ID, "hit-1").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#hit-1 button")  # decided: no buttons left
    browser.get(server.url + "/watch?state=new")
    assert not browser.find_elements(By.ID, "hit-1")
