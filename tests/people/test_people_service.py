"""People over HTTP (a real uvicorn on 127.0.0.1) and the people pages in a real browser (Chromium)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.ui import WebDriverWait

from facefind.samples import probe_sample
from facefind.service import ServiceSettings
from tests.people.conftest import write_photos
from tests.service.conftest import PASSWORDS, PURPOSE, problem_of, serve

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
WAIT_S = 90


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    root = tmp_path_factory.mktemp("people-http")
    photos = write_photos(root / "photos")
    settings = ServiceSettings(library=root / "library", allow_roots=(photos,), index_workers=1)
    with serve(settings, pipeline) as served:
        served.facefind.index([photos], workers=1)
        yield served


def file_of(client: httpx.Client, person_id: int) -> list[str]:
    return [Path(f["source"]["path"]).name for f in client.get(f"/api/v1/people/{person_id}").json()["face_list"]]


def test_people_over_http(server) -> None:
    with server.client() as client:
        built = client.post("/api/v1/people/build", json={}).raise_for_status().json()
        assert built["kind"] == "build" and built["people"] >= 2
        people = client.get("/api/v1/people").raise_for_status().json()
        yao = next(p["person_id"] for p in people if "yaoming.jpg" in file_of(client, p["person_id"]))
        other = next(p["person_id"] for p in people if p["person_id"] != yao and "twice.jpg" in file_of(client, p["person_id"]))
        named = client.post(f"/api/v1/people/{yao}/name", json={"name": "Yao Ming"}).raise_for_status().json()
        assert named["name"] == "Yao Ming" and named["confirmed"]
        refused = client.post(f"/api/v1/people/{yao}/merge", json={"others": [other]})
        assert refused.status_code == 409 and problem_of(refused)["reason"] == "people_conflict"
        assert client.get("/api/v1/people/999999").status_code == 404
        together = client.get(f"/api/v1/people/{yao}/with").raise_for_status().json()
        assert other in {c["person_id"] for c in together}
        graphml = client.get("/api/v1/people/export", params={"format": "graphml"})
        assert graphml.headers["content-type"].startswith("application/graphml+xml") and "Yao Ming" in graphml.text
        with probe_sample().open("rb") as probe:
            found = client.post("/api/v1/search", files={"file": ("probe.jpg", probe, "image/jpeg")},
                                data=PURPOSE).raise_for_status().json()
        assert found["matches"][0]["person"]["name"] == "Yao Ming"
    viewer = server.login("vera")
    assert viewer.get("/api/v1/people").status_code == 200
    denied = viewer.post(f"/api/v1/people/{yao}/name", json={"name": "x"}, headers={"x-csrf-token": viewer.csrf})
    assert denied.status_code == 403 and problem_of(denied)["reason"] == "forbidden"


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory):
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.fail("the browser tests need Chromium: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100"):
        options.add_argument(argument)
    scratch = tmp_path_factory.mktemp("chromium")
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver,
                                                               env={**os.environ, "TMPDIR": str(scratch)}))
    ARTIFACTS.mkdir(exist_ok=True)
    driver.get(server.url + "/people")
    driver.find_element(By.ID, "login-name").send_keys("ivy")
    driver.find_element(By.ID, "login-password").send_keys(PASSWORDS["ivy"])
    submit(driver, By.ID, "login-submit")
    yield driver
    driver.quit()


def submit(driver, by: str, value: str) -> None:
    """Click a submit button and wait for the page it leads to."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, value).click()
    WebDriverWait(driver, WAIT_S).until(staleness_of(page))


def test_people_page_lists_names_and_splits_in_a_browser(server, browser) -> None:
    browser.get(server.url + "/people")
    if not browser.find_elements(By.CSS_SELECTOR, "tr.person"):
        submit(browser, By.ID, "people-build")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.person")
    assert rows and "1 in" in rows[0].text  # cohesion or nearest shown as a calibrated FMR
    browser.save_screenshot(str(ARTIFACTS / "people.png"))
    submit(browser, By.CSS_SELECTOR, "tr.person a")
    assert browser.find_elements(By.CSS_SELECTOR, "#person-faces img")  # the person's face crops
    field = browser.find_element(By.ID, "person-new-name")
    field.clear()
    field.send_keys("Named in the browser")
    submit(browser, By.CSS_SELECTOR, "#rename-form button")
    assert "Named in the browser" in browser.find_element(By.ID, "person-name").text
    before = browser.current_url
    browser.find_elements(By.CSS_SELECTOR, "#person-faces input[type=checkbox]")[-1].click()
    submit(browser, By.ID, "split-button")
    assert browser.current_url != before  # the new person's page
    browser.save_screenshot(str(ARTIFACTS / "person.png"))
    browser.get(before)
    assert "Named in the browser" in browser.find_element(By.ID, "person-name").text
