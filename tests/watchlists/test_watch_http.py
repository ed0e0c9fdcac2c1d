"""Watchlists over real HTTP: the /api/v1 routes, the web UI's hit feed and its CSRF forms, webhooks from the server."""

from __future__ import annotations

import json
import time
from contextlib import closing

import pytest

from facefind.samples import probe_sample
from facefind.service import ServiceSettings
from tests.service.conftest import problem_of, serve
from tests.watchlists.conftest import SECRET, webhook_receiver


@pytest.fixture(scope="module")
def receiver():
    with webhook_receiver(fail_first=1) as receiver:  # the server's first POST fails: it retries on its own
        yield receiver


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline, receiver):
    """A server whose investigator watches for the sample portrait, named to the viewer, then indexes the team photo."""
    root = tmp_path_factory.mktemp("watch-http")
    photos = root / "photos"
    photos.mkdir()
    settings = ServiceSettings(library=root / "library", allow_roots=(photos,), index_workers=1)
    with serve(settings, pipeline) as served:
        with served.client() as client:
            added = client.post("/api/v1/watchlists", data={
                "name": "yao", "visible_user": ["vera"], "webhook_url": receiver.url, "webhook_secret": SECRET,
            }, files={"photo": ("reference.jpg", probe_sample().read_bytes(), "image/jpeg")})
            assert added.status_code == 201, added.text
            for sample in ("players.jpg", "gdp.jpg"):
                (photos / sample).write_bytes((probe_sample().parent / sample).read_bytes())
            job = client.post("/api/v1/jobs", json={"paths": [str(photos)]}).json()
            assert served.wait_for_job(client, job["job_id"])["status"] == "finished"
        yield served


def test_the_hit_feed_shows_the_listed_person_with_calibrated_figures(server):
    with server.client() as client:
        listed = client.get("/api/v1/watchlists").json()
        hits = client.get("/api/v1/watchlists/hits").json()
    assert [w["name"] for w in listed] == ["yao"] and "webhook_secret" not in listed[0]
    assert listed[0]["entries"][0]["label"] == "uploaded photo 1" and listed[0]["entries"][0]["probe_sha256"]
    assert hits["total"] == 1
    hit = hits["items"][0]
    assert hit["media_path"].endswith("players.jpg") and hit["verdict"] == "strong" and hit["fmr"] <= 1e-5


def test_the_server_retries_its_webhook_until_it_is_delivered_signed(server, receiver):
    deadline = time.monotonic() + 30  # first attempt fails, the retry follows after RETRY_BASE_S
    while not receiver.accepted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [a["signed"] for a in receiver.attempts] == [True, True] and len(receiver.accepted) == 1
    with server.client() as client:
        hit = client.get("/api/v1/watchlists/hits").json()["items"][0]
    assert receiver.accepted[0]["hit_id"] == hit["hit_id"]
    assert hit["delivery"] == {"status": "delivered", "attempts": 2, "last_error": None}


# key owner -> hits they see; what acknowledging answers
@pytest.mark.parametrize("who, seen, status", [("root", 0, 404), ("ivy", 1, None)])
def test_only_those_the_watchlist_names_see_its_hits(server, who, seen, status):
    with server.client(server.keys[who]) as client:
        assert client.get("/api/v1/watchlists/hits").json()["total"] == seen
        assert len(client.get("/api/v1/watchlists").json()) == seen
        if status is not None:
            answer = client.post("/api/v1/watchlists/hits/1/dismiss")
            assert answer.status_code == status and problem_of(answer)["reason"] == "not_found"


def test_the_viewer_named_by_the_watchlist_reads_the_feed_but_may_not_decide(server):
    with closing(server.login("vera")) as viewer:
        page = viewer.get("/watch", headers={"Accept": "text/html"})
        assert page.status_code == 200 and 'id="hit-1"' in page.text and "players.jpg" in page.text
        assert 'class="acknowledge"' not in page.text  # no buttons for a role that may not decide
        answer = viewer.post("/watch/hits/1/acknowledge", data={"csrf_token": viewer.csrf})
        assert answer.status_code == 403


def test_acknowledging_in_the_web_ui_needs_the_csrf_token_and_is_audited(server):
    with closing(server.login("ivy")) as ivy:
        page = ivy.get("/watch", headers={"Accept": "text/html"})
        assert 'action="/watch/hits/1/acknowledge"' in page.text and 'class="dismiss"' in page.text
        forged = ivy.post("/watch/hits/1/acknowledge", data={})
        assert forged.status_code == 403 and problem_of(forged)["reason"] == "csrf"
        done = ivy.post("/watch/hits/1/acknowledge", data={"csrf_token": ivy.csrf})
        assert done.status_code == 303 and done.headers["location"] == "/watch"
        assert "acknowledged by ivy" in ivy.get("/watch?state=acknowledged", headers={"Accept": "text/html"}).text
    out = server.settings.library.parent / "audit.jsonl"
    server.facefind.audit_export(out)
    entries = [entry for entry in map(json.loads, out.read_text().splitlines())
               if entry["action"] == "watch_hit_acknowledge"]
    assert [(e["actor"], e["details"]["hit_id"]) for e in entries] == [("ivy", 1)]


@pytest.mark.parametrize("form, files, status, reason", [
    ({"name": "empty"}, None, 400, "bad_argument"),
    ({"name": "junk"}, {"photo": ("x.jpg", b"not an image", "image/jpeg")}, 415, "not_an_image"),
    ({"name": "yao"}, {"photo": ("y.jpg", probe_sample().read_bytes(), "image/jpeg")}, 409, "exists"),
    ({"name": "outside", "photo_path": "/etc/passwd"}, None, 403, "forbidden_path"),
    ({"name": "hook", "webhook_url": "http://127.0.0.1:9/"}, {"photo": ("y.jpg", probe_sample().read_bytes(),
                                                                         "image/jpeg")}, 400, "bad_argument"),
])
def test_bad_watchlists_get_a_problem_not_a_traceback(server, form, files, status, reason):
    with server.client() as client:
        answer = client.post("/api/v1/watchlists", data=form, files=files)
    assert answer.status_code == status and problem_of(answer)["reason"] == reason


def test_a_viewer_key_cannot_create_a_watchlist(server):
    with closing(server.login("vera")) as viewer:
        answer = viewer.post("/api/v1/watchlists", data={"name": "mine"}, headers={"X-CSRF-Token": viewer.csrf},
                             files={"photo": ("y.jpg", probe_sample().read_bytes(), "image/jpeg")})
    assert answer.status_code == 403 and problem_of(answer)["reason"] == "forbidden"
