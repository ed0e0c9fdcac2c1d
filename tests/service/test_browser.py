"""The web UI in a real browser: Chromium from the OS packages, driven by Selenium (no downloads).

Screenshots of every page go to tests/artifacts/ (git-ignored); the README's two come from here.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from facefind.samples import gallery_samples, probe_sample
from facefind.service import ServiceSettings
from tests.conftest import face_scene, write_video
from tests.service.conftest import (
    ARTIFACTS,
    BROWSER_WAIT_S,
    PURPOSE,
    headless_chromium,
    log_in,
    person_of,
    serve,
    submit_and_wait,
)

pytestmark = pytest.mark.shared_data

WAIT_S = BROWSER_WAIT_S


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data_dir, sample_rgb) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ui")
    samples, incoming = root / "samples", root / "incoming"
    samples.mkdir()
    incoming.mkdir()
    for sample in gallery_samples():
        shutil.copy(sample, samples / sample.name)
    empty = np.full((240, 320, 3), 90, np.uint8)
    frames = [face_scene(sample_rgb) if 10 <= t < 30 or 50 <= t < 70 else empty for t in range(80)]
    write_video(samples / "interview.mp4", frames)  # the sample player on screen 1-3 s and 5-7 s of 8 s
    for photo in ("obama.jpg", "obama2.jpg"):
        shutil.copy(data_dir / "named_people" / "train" / "obama" / photo, incoming / photo)
    return {"library": root / "library", "samples": samples, "incoming": incoming,
            "people": data_dir / "named_people"}


@pytest.fixture(scope="module")
def server(folders, pipeline):
    settings = ServiceSettings(library=folders["library"], allow_roots=(folders["incoming"],), index_workers=1)
    with serve(settings, pipeline) as served:
        report = served.facefind.index([folders["people"] / "train", folders["samples"]], workers=1)
        assert report.failed == 0
        yield served


def state_purpose(driver, case: str, reason: str) -> None:
    driver.find_element(By.ID, "purpose-case").send_keys(case)
    driver.find_element(By.ID, "purpose-reason").send_keys(reason)
    submit_and_wait(driver, "purpose-submit")


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    with headless_chromium(tmp_path_factory.mktemp("chromium")) as driver:
        log_in(driver, server.url + "/search", "ivy")
        state_purpose(driver, PURPOSE["case"], PURPOSE["reason"])
        assert driver.find_element(By.ID, "purpose").text.startswith(f"Purpose: case {PURPOSE['case']}")
        yield driver


def wait(browser, condition, timeout_s: float = WAIT_S):
    """Wait until ``condition`` holds; elements the page replaced meanwhile just mean "not yet"."""
    return WebDriverWait(browser, timeout_s, ignored_exceptions=(StaleElementReferenceException,)).until(condition)


def upload_probe(browser, server, probe: Path) -> None:
    browser.get(server.url + "/search")
    browser.find_element(By.ID, "probe-file").send_keys(str(probe))
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".results") or d.find_element(By.ID, "status").text
         not in ("", "Searching..."))


def searched_face(browser) -> int:
    return int(browser.find_element(By.CSS_SELECTOR, ".results").get_attribute("data-searched-face"))


def first_card_person(browser) -> str:
    return person_of(browser.find_element(By.CSS_SELECTOR, ".card .path").text)


def shoot(browser, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    browser.save_screenshot(str(path))
    return path


def test_clicking_the_second_face_of_a_two_person_photo_finds_that_person(browser, server, folders):
    upload_probe(browser, server, folders["people"] / "probes" / "obama_and_biden.jpg")
    boxes = wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".face-box")) >= 2
                 and d.find_elements(By.CSS_SELECTOR, ".face-box"))
    assert searched_face(browser) == 0 and "searched" in boxes[0].get_attribute("class")
    first = first_card_person(browser)
    boxes[1].click()
    wait(browser, lambda d: searched_face(d) == 1)
    second = first_card_person(browser)
    assert {first, second} == {"obama", "biden"}
    card = browser.find_element(By.CSS_SELECTOR, ".card")
    assert "pairs of different people score this high" in card.text
    assert "Expected false matches in this gallery" in card.text
    assert card.find_element(By.CSS_SELECTOR, "img.crop").get_property("naturalWidth") == 112
    shoot(browser, "search-second-face")


def test_no_match_page_then_candidates_shown_anyway_marked(browser, server, folders):
    upload_probe(browser, server, folders["people"] / "misc" / "lin-manuel-miranda.png")
    no_match = browser.find_element(By.CSS_SELECTOR, ".no-match")
    assert "No match" in no_match.text
    shoot(browser, "search-no-match")
    no_match.find_element(By.CSS_SELECTOR, "button[data-show-all]").click()
    cards = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".card"))
    assert all("beyond" in card.get_attribute("class") for card in cards)
    assert "beyond limits" in cards[0].text
    shoot(browser, "search-show-all")


def test_evidence_opens_as_a_printable_page(browser, server, folders):
    upload_probe(browser, server, folders["people"] / "probes" / "obama1.jpg")
    link = browser.find_element(By.CSS_SELECTOR, ".card a.evidence")
    match_id = link.text.split()[-1]
    browser.get(link.get_attribute("href"))
    assert browser.find_element(By.TAG_NAME, "h1").text == f"Match {match_id}"
    assert "uploaded image, not kept" in browser.page_source  # an upload is not stored: only its face box is
    assert len(browser.find_elements(By.CSS_SELECTOR, "img.crop")) == 1, "the match's aligned crop"
    shoot(browser, "evidence")


def test_a_video_hit_shows_its_timeline_and_plays_from_that_time(browser, server):
    upload_probe(browser, server, probe_sample())
    hit = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".video-hit"))[0]
    ranges = hit.find_elements(By.CSS_SELECTOR, ".timeline .range")
    assert len(ranges) == 2, "on screen twice, with a cut between"
    shoot(browser, "search-video-hit")  # built-in sample content only: the README shows it
    start = float(ranges[1].get_attribute("href").rsplit("t=", 1)[1])
    assert 4.5 <= start <= 5.5
    ranges[1].click()
    player = wait(browser, lambda d: d.find_elements(By.ID, "player"))[0]
    wait(browser, lambda d: d.execute_script("return arguments[0].readyState", player) >= 1)
    position = browser.execute_script("return arguments[0].currentTime", player)
    assert abs(position - start) < 0.6, "the player starts at the appearance (served with range requests)"
    shoot(browser, "video")


def test_library_starts_an_index_job_and_shows_it_finish(browser, server, folders):
    browser.get(server.url + "/library")
    field = browser.find_element(By.ID, "job-path")
    field.clear()
    field.send_keys(str(folders["incoming"]))
    browser.find_element(By.ID, "job-start").click()
    wait(browser, lambda d: d.find_element(By.ID, "job").get_attribute("data-status") == "finished")
    status = browser.find_element(By.ID, "job-status").text
    assert status.startswith("finished: 2/2 files") and "0 failed" in status
    assert browser.execute_script("return document.getElementById('job-bar').value") == 2
    shoot(browser, "library-job")
    browser.get(server.url + "/library?status=indexed")
    assert "incoming/obama2.jpg" in browser.page_source


def test_a_file_page_draws_its_faces(browser, server):
    browser.get(server.url + "/library")
    browser.find_element(By.PARTIAL_LINK_TEXT, "gdp.jpg").click()
    boxes = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".file-frame .box.numbered"))
    assert len(boxes) == len(browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")) >= 3
    shoot(browser, "library-file")


def test_history_lists_searches_and_reopens_one(browser, server):
    browser.get(server.url + "/history")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
    assert len(rows) >= 4
    shoot(browser, "history")
    rows[-1].find_element(By.LINK_TEXT, "Open").click()
    assert wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".results .card"))
    assert "reopened from the log" in browser.find_element(By.CSS_SELECTOR, ".summary").text
    shoot(browser, "history-search")


def test_a_poor_probe_is_warned_about_above_the_results(browser, server, tmp_path, sample_rgb):
    tiny = tmp_path / "tiny.png"
    Image.fromarray(sample_rgb).resize((sample_rgb.shape[1] // 8, sample_rgb.shape[0] // 8), Image.LANCZOS).save(tiny)
    upload_probe(browser, server, tiny)
    warning = browser.find_element(By.CSS_SELECTOR, ".results .warning.serious")
    assert "cannot support an identification" in warning.text and "poor" in warning.text
    answer = browser.find_element(By.CSS_SELECTOR, ".results .cards, .results .no-match")
    assert warning.location["y"] < answer.location["y"], "the warning comes before any result"
    shoot(browser, "search-poor-probe")


def test_api_docs_render_offline(browser, server):
    browser.get(server.url + "/docs")
    operations = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock"))
    assert any("/api/v1/search" in operation.text for operation in operations)
    shoot(browser, "api-docs")


def test_a_missing_page_is_an_html_problem_page(browser, server):
    browser.get(server.url + "/library/file?path=/no/such/file.jpg")
    assert browser.find_element(By.TAG_NAME, "h1").text == "404 Not Found"
    assert "not_found" in browser.find_element(By.CSS_SELECTOR, ".problem").text


def test_logout_then_login_asks_for_the_purpose_before_the_first_search(browser, server):
    """Runs last: it ends the module's session. A wrong password, then the purpose form, then the search form."""
    browser.get(server.url + "/search")
    submit_and_wait(browser, "logout")
    browser.get(server.url + "/history")
    assert "/login?next=%2Fhistory" in browser.current_url
    log_in(browser, server.url + "/search", "ivy", "not her password")
    assert "wrong user name or password" in browser.find_element(By.ID, "login-error").text
    shoot(browser, "login")
    log_in(browser, server.url + "/search", "ivy")
    wait(browser, lambda d: d.current_url.endswith("/search"))
    assert not browser.find_elements(By.ID, "search-form"), "the purpose comes first"
    state_purpose(browser, "CASE-9", "too short")
    assert "at least" in browser.find_element(By.ID, "purpose-error").text
    shoot(browser, "purpose")
    browser.find_element(By.ID, "purpose-reason").clear()
    state_purpose(browser, "", "a suspect seen at the depot on the 3rd")
    assert "case CASE-9" in browser.find_element(By.ID, "purpose").text
    assert browser.find_element(By.ID, "search-form")
    assert "ivy (investigator)" in browser.find_element(By.ID, "actor").text


def test_an_admin_adds_an_investigator_who_states_a_purpose_searches_and_opens_evidence(browser, server, folders):
    browser.delete_all_cookies()
    log_in(browser, server.url + "/search", "root")
    browser.find_element(By.LINK_TEXT, "Accounts").click()
    browser.find_element(By.ID, "user-name").send_keys("ines")
    browser.find_element(By.ID, "user-password").send_keys("ines has a long password")
    submit_and_wait(browser, "user-add")
    assert "ines investigator" in browser.find_element(By.ID, "users").text
    shoot(browser, "accounts")
    browser.delete_all_cookies()
    log_in(browser, server.url + "/search", "ines", "ines has a long password")
    assert not browser.find_elements(By.LINK_TEXT, "Accounts"), "an investigator does not manage accounts"
    state_purpose(browser, "CASE-77", "who is in the depot photo of the 3rd")
    upload_probe(browser, server, folders["people"] / "probes" / "obama1.jpg")
    assert "CASE-77" in browser.find_element(By.ID, "purpose").text, "the purpose stands above the results"
    browser.get(browser.find_element(By.CSS_SELECTOR, ".card a.evidence").get_attribute("href"))
    assert browser.find_element(By.TAG_NAME, "h1").text.startswith("Match")
    done = [(e["action"], e["purpose"]) for e in server.facefind.audit_log.entries() if e["actor"] == "ines"]
    assert [action for action, _ in done] == ["login", "search", "evidence_export"]
    assert "CASE-77" in done[1][1]

    # she shares the search with a viewer, who sees it and nothing else
    search_id = server.facefind.audit_entries(who="ines", action="search", actor=server.facefind.local_actor())[0][
        "details"]["search_id"]
    browser.get(f"{server.url}/history/{search_id}")
    browser.find_element(By.ID, "share-user").send_keys("vera")
    submit_and_wait(browser, "share")
    assert "Shared with vera" in browser.find_element(By.ID, "shared").text
    browser.delete_all_cookies()
    log_in(browser, server.url + "/search", "vera")
    browser.get(server.url + "/history")
    rows = browser.find_elements(By.CSS_SELECTOR, "table.list tbody tr")
    assert [row.find_element(By.TAG_NAME, "td").text for row in rows] == [str(search_id)], "only what was shared"
    rows[0].find_element(By.LINK_TEXT, "Open").click()
    assert wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".results .card"))
    assert not browser.find_elements(By.ID, "share-form"), "a viewer shares nothing on"

    # the auditor logs in and sees those entries: who, why, and the search as it was seen
    browser.delete_all_cookies()
    log_in(browser, server.url + "/search", "otto")
    browser.get(server.url + "/")
    wait(browser, lambda d: d.find_elements(By.ID, "audit-entries"))  # an auditor's home is the audit log
    browser.find_element(By.ID, "filter-actor").send_keys("ines")
    submit_and_wait(browser, "filter")
    shown = [row.get_attribute("data-action") for row in browser.find_elements(By.CSS_SELECTOR, ".audit-entry")]
    assert shown == ["share", "evidence_export", "search", "login"]
    assert "CASE-77" in browser.find_element(By.ID, "audit-entries").text
    shoot(browser, "audit")
    search_row = browser.find_elements(By.CSS_SELECTOR, ".audit-entry")[2]
    search_row.find_element(By.LINK_TEXT, "Open").click()
    wait(browser, lambda d: d.find_elements(By.ID, "entry-results"))
    crop = browser.find_element(By.ID, "probe-crop")
    assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", crop) == 48
    assert "case CASE-77" in browser.find_element(By.ID, "entry-purpose").text
    assert browser.find_elements(By.CSS_SELECTOR, ".entry-result"), "the results shown, with their FMR"
    shoot(browser, "audit-search")
