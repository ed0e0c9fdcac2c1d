"""The hit feed in a real browser (Chromium from the OS packages, Selenium): a hit appears, Dismiss marks it wrong."""

from __future__ import annotations

import shutil

import pytest
from selenium.webdriver.common.by import By

from facefind.access import Actor
from facefind.samples import gallery_samples, probe_sample
from facefind.service import ServiceSettings
from tests.service.conftest import ARTIFACTS, headless_chromium, log_in, serve, submit_and_wait



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
    with headless_chromium(tmp_path_factory.mktemp("chromium"), window_size="1400,900") as driver:
        yield driver


def test_the_hit_feed_shows_the_hit_and_dismisses_it_in_a_browser(server, browser):
    log_in(browser, server.url + "/watch", "ivy")  # not logged in: the login page first, then back here
    row = browser.find_element(By.ID, "hit-1")
    assert "players.jpg" in row.text and "strong" in row.text and "new" in row.text
    assert browser.find_element(By.CSS_SELECTOR, "#hit-1 img").get_attribute("naturalWidth") != "0"  # the crop loads
    browser.save_screenshot(str(ARTIFACTS / "watch-hits.png"))
    submit_and_wait(browser, "#hit-1 button.dismiss", By.CSS_SELECTOR)
    assert "dismissed by ivy" in browser.find_element(By.ID, "hit-1").text
    assert not browser.find_elements(By.CSS_SELECTOR, "#hit-1 button")  # decided: no buttons left
    browser.get(server.url + "/watch?state=new")
    assert not browser.find_elements(By.ID, "hit-1")
