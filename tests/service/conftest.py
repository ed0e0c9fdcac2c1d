"""A real server for the service tests: uvicorn on a free loopback port, in a thread, per test module."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import uvicorn

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from facefind.access import Actor
from facefind.api import FaceFind
from facefind.pipeline import FacePipeline
from facefind.service import ServiceSettings, create_app


SETUP = Actor("test-setup", "admin")
PASSWORDS = {"root": "root password 0001", "ivy": "investigator pw 0002", "vera": "viewer password 3",
             "otto": "auditor password 4"}
ROLES = {"root": "admin", "ivy": "investigator", "vera": "viewer", "otto": "auditor"}
PURPOSE = {"case": "CASE-2026-001", "reason": "testing the service end to end"}
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"  # screenshots the browser tests leave for review
BROWSER_WAIT_S = 90


@contextmanager
def headless_chromium(scratch: Path, window_size: str = "1280,1100") -> Iterator[webdriver.Chrome]:
    """Debian's Chromium driven by its chromedriver (nothing downloaded), its profile and sockets under
    ``scratch`` (pytest's temporary folder), quit when the block ends."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and chromedriver):
        raise RuntimeError("the browser tests need Chromium: apt-get install -y chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={window_size}"):
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    service = Service(executable_path=chromedriver, env={**os.environ, "TMPDIR": str(scratch)})
    driver = webdriver.Chrome(options=options, service=service)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        yield driver
    finally:
        driver.quit()


def page_left(page: WebElement):
    """Selenium's staleness_of, also when chromedriver says the old page's node is gone with an "unhandled
    inspector error" instead of a stale element (a few per cent of navigations: SeleniumHQ/selenium#15401)."""
    def gone(_driver: webdriver.Chrome) -> bool:
        try:
            page.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as error:
            if "unhandled inspector error" not in str(error):
                raise
            return True
        return False
    return gone


def submit_and_wait(driver: webdriver.Chrome, button: str, by: str = By.ID) -> None:
    """Click a form's submit button (found ``by`` id, or e.g. By.CSS_SELECTOR) and wait for the next page
    (a click does not wait for it)."""
    page = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(by, button).click()
    WebDriverWait(driver, BROWSER_WAIT_S).until(page_left(page))


def log_in(driver: webdriver.Chrome, url: str, name: str, password: str | None = None) -> None:
    """Open ``url`` logged out (the login page comes first, then goes back there) and log in as ``name``
    (with the test password of that user unless ``password`` is given)."""
    driver.get(url)
    driver.find_element(By.ID, "login-name").send_keys(name)
    driver.find_element(By.ID, "login-password").send_keys(PASSWORDS[name] if password is None else password)
    submit_and_wait(driver, "login-submit")


def add_users(facefind: FaceFind) -> dict[str, str]:
    """The test accounts (one per role); API keys of the investigator and the admin with every scope they may have."""
    for name, role in ROLES.items():
        facefind.accounts.add_user(name, role, PASSWORDS[name], SETUP)
    return {"ivy": facefind.accounts.create_key("ivy", ["search", "index"], None, SETUP)[0],
            "root": facefind.accounts.create_key("root", ["search", "index", "admin", "audit"], None, SETUP)[0]}


@dataclass
class Served:
    """A running service: its base URL, the library API behind it (to prepare data directly), a key."""

    url: str
    facefind: FaceFind
    settings: ServiceSettings
    keys: dict[str, str]

    @property
    def key(self) -> str:
        return self.keys["ivy"]

    def client(self, key: str | None = "", **options) -> httpx.Client:
        """A client sending ``key`` (default: the investigator's); ``key=None`` sends no credentials."""
        headers = options.pop("headers", {}) | ({} if key is None else {"Authorization": f"Bearer {key or self.key}"})
        return httpx.Client(base_url=self.url, timeout=120.0, headers=headers, **options)

    def login(self, name: str, client: httpx.Client | None = None) -> httpx.Client:
        """A client logged in through the login form as ``name``; its CSRF token in ``client.csrf``."""
        client = client or httpx.Client(base_url=self.url, timeout=120.0)
        form = client.get("/login")
        login_csrf = form.text.split('name="login_csrf" value="', 1)[1].split('"', 1)[0]
        done = client.post("/login", data={"name": name, "password": PASSWORDS[name], "login_csrf": login_csrf})
        assert done.status_code == 303, done.text
        page = client.get("/history", headers={"Accept": "text/html"})  # a 403 page for some roles: it has it too
        client.csrf = page.text.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        return client

    def wait_for_job(self, client: httpx.Client, job_id: int, timeout_s: float = 300.0) -> dict:
        """Poll a job until it ends; returns its last state and the distinct progress seen on the way."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = client.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
            if job["status"] != "running":
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still running after {timeout_s} s")


@contextmanager
def serve(settings: ServiceSettings, pipeline: FacePipeline) -> Iterator[Served]:
    """Start the app under uvicorn on 127.0.0.1 (a socket bound here, so no port race); stop it after."""
    facefind = FaceFind(settings.library, max_pixels=settings.max_pixels)
    facefind._pipeline = pipeline  # the session's loaded models
    keys = add_users(facefind)
    app = create_app(settings, facefind)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", facefind, settings, keys)
    finally:
        server.should_exit = True
        thread.join(60)
        listener.close()


def problem_of(response: httpx.Response) -> dict:
    """The RFC 9457 body of an error response, checked for its required shape."""
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert body["status"] == response.status_code and body["reason"] and body["detail"] and body["title"]
    return body


def person_of(path: str) -> str:
    """named_people/train/<person>/photo.jpg -> person."""
    return Path(path).parent.name
