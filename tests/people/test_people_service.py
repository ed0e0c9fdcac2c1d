"""People over HTTP (a real uvicorn on 127.0.0.1) and the people pages in a real browser (Chromium)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from facefind.samples import probe_sample
from facefind.service import ServiceSettings
from tests.people.conftest import write_photos
from tests.service.conftest import ARTIFACTS, PURPOSE, headless_chromium, log_in, problem_of, serve, submit_and_wait


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
    with headless_chromium(tmp_path_factory.mktemp("chromium")) as driver:
        log_in(driver, server.url + "/people", "ivy")
        yield driver


def test_people_page_lists_names_and_splits_in_a_browser(server, browser) -> None:
    browser.get(server.url + "/people")
    if not browser.find_elements(By.CSS_SELECTOR, "tr.person"):
        submit_and_wait(browser, "people-build")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.person")
    assert rows and "1 in" in rows[0].text  # cohesion or nearest shown as a calibrated FMR
    browser.save_screenshot(str(ARTIFACTS / "people.png"))
    submit_and_wait(browser, "tr.person a", By.CSS_SELECTOR)
    assert browser.find_elements(By.CSS_SELECTOR, "#person-faces img")  # the person's face crops
    field = browser.find_element(By.ID, "person-new-name")
    field.clear()
    field.send_keys("Named in the browser")
    submit_and_wait(browser, "#rename-form button", By.CSS_SELECTOR)
    assert "Named in the browser" in browser.find_element(By.ID, "person-name").text
    before = browser.current_url
    browser.find_elements(By.CSS_SELECTOR, "#person-faces input[type=checkbox]")[-1].click()
    submit_and_wait(browser, "split-button")
    assert browser.current_url != before  # the new person's page
    browser.save_screenshot(str(ARTIFACTS / "person.png"))
    browser.get(before)
    assert "Named in the browser" in browser.find_element(By.ID, "person-name").text
