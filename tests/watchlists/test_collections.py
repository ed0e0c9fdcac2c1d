"""Watchlists over HTTP for users limited to collections (hits on faces outside them are neither seen, counted nor
decided), and pausing / deleting a watchlist through the API, the web UI and the command line (audited).

The library of tests/people/test_collections.py: case-a holds the listed player's team photo twice, case-b his
portrait; amy reads case-a, bob case-b, root (admin) everything. root's watchlist names every investigator."""

from __future__ import annotations

import json
import shutil
from contextlib import closing

import pytest

from facefind.samples import probe_sample
from facefind.service import ServiceSettings
from tests.people.test_collections import USERS, add_limited_investigators, client_of, write_collections
from tests.service.conftest import SETUP, problem_of, serve
from tests.test_cli import run

PORTRAIT = {"photo": ("reference.jpg", probe_sample().read_bytes(), "image/jpeg")}


@pytest.fixture(scope="module")
def served(tmp_path_factory, pipeline):
    root = tmp_path_factory.mktemp("watch-collections")
    folders = write_collections(root)
    settings = ServiceSettings(library=root / "library", allow_roots=(root,), index_workers=1)
    with serve(settings, pipeline) as server:
        facefind = server.facefind
        server.folders = folders
        with server.client(key=server.keys["root"]) as admin:
            added = admin.post("/api/v1/watchlists", data={"name": "yao", "visible_role": ["investigator"]},
                               files=PORTRAIT)
            assert added.status_code == 201, added.text
        assert facefind.index(list(folders.values()), workers=1, actor=SETUP).failed == 0
        facefind.people_build(actor=SETUP)
        for name, folder in folders.items():
            facefind.set_collection(name, [folder], actor=SETUP)
        add_limited_investigators(server)
        yield server


def collection_of(server, path: str) -> str:
    return next(name for name, folder in server.folders.items() if path.startswith(str(folder) + "/"))


def all_hits(server) -> list[dict]:
    with client_of(server, "root") as root:
        return root.get("/api/v1/watchlists/hits", params={"limit": 500}).json()["items"]


def test_the_watchlist_hits_faces_in_both_collections(served):
    assert {collection_of(served, hit["media_path"]) for hit in all_hits(served)} == {"case-a", "case-b"}


@pytest.mark.parametrize("user", sorted(USERS))
def test_the_hit_feed_holds_and_counts_only_readable_hits(served, user):
    expected = sorted(h["hit_id"] for h in all_hits(served) if collection_of(served, h["media_path"]) in USERS[user])
    with client_of(served, user) as client:
        page = client.get("/api/v1/watchlists/hits", params={"limit": 1}).json()
        every = client.get("/api/v1/watchlists/hits", params={"limit": 500}).json()
    assert page["total"] == every["total"] == len(expected) and len(page["items"]) == 1
    assert sorted(h["hit_id"] for h in every["items"]) == expected


@pytest.mark.parametrize(("user", "decision"), [("amy", "acknowledge"), ("bob", "dismiss")])
def test_another_collections_hit_cannot_be_decided_and_ones_own_can(served, user, decision):
    hits = [h for h in all_hits(served) if h["state"] == "new"]
    own = next(h for h in hits if collection_of(served, h["media_path"]) in USERS[user])
    other = next(h for h in hits if collection_of(served, h["media_path"]) not in USERS[user])
    with client_of(served, user) as client:
        refused = client.post(f"/api/v1/watchlists/hits/{other['hit_id']}/{decision}")
        assert refused.status_code == 404 and problem_of(refused)["reason"] == "not_found"
        done = client.post(f"/api/v1/watchlists/hits/{own['hit_id']}/{decision}")
        assert done.status_code == 200 and done.json()["decided_by"] == user
    assert next(h for h in all_hits(served) if h["hit_id"] == other["hit_id"])["state"] == "new", "untouched"


@pytest.mark.parametrize(("user", "status"), [("amy", 201), ("bob", 404)])
def test_only_a_person_with_a_face_in_ones_collections_can_be_watched(served, user, status):
    """The team-mates are in case-a only: bob may not watch (or learn of) them."""
    with served.facefind._library() as library:
        team_faces = set(library.catalog.face_ids_under(str(served.folders["case-a"])))
    everyone = served.facefind.people_list(actor=SETUP)
    mate = next(p.person_id for p in everyone
                if {f.face.face_id for f in served.facefind.person(p.person_id, actor=SETUP).face_list} <= team_faces)
    with client_of(served, user) as client:
        answer = client.post("/api/v1/watchlists", data={"name": f"mate of {user}", "person": str(mate)})
    assert answer.status_code == status, answer.text
    if status == 404:
        assert problem_of(answer)["reason"] == "not_found"


# -- pausing and deleting --

def test_a_paused_watchlist_raises_no_hits_until_resumed_and_its_maker_deletes_it(served):
    later = served.folders["case-a"] / "later"
    later.mkdir()
    with client_of(served, "amy") as amy, client_of(served, "bob") as bob:
        made = amy.post("/api/v1/watchlists", data={"name": "amy's", "visible_user": ["bob"]}, files=PORTRAIT).json()
        mine = made["watchlist_id"]
        paused = amy.post(f"/api/v1/watchlists/{mine}/pause")
        assert paused.status_code == 200 and paused.json()["active"] is False
        shutil.copy(probe_sample(), later / "first.jpg")
        job = amy.post("/api/v1/jobs", json={"paths": [str(later)]}).json()
        assert served.wait_for_job(amy, job["job_id"])["status"] == "finished"
        assert amy.get("/api/v1/watchlists/hits", params={"watchlist": mine}).json()["total"] == 0
        assert amy.post(f"/api/v1/watchlists/{mine}/resume").json()["active"] is True
        shutil.copy(probe_sample(), later / "second.jpg")
        job = amy.post("/api/v1/jobs", json={"paths": [str(later)]}).json()
        assert served.wait_for_job(amy, job["job_id"])["status"] == "finished"
        hits = amy.get("/api/v1/watchlists/hits", params={"watchlist": mine}).json()
        assert [h["media_path"] for h in hits["items"]] == [str(later / "second.jpg")]
        refused = bob.delete(f"/api/v1/watchlists/{mine}")  # he sees it, but did not make it
        assert refused.status_code == 403 and problem_of(refused)["reason"] == "forbidden"
        assert amy.delete(f"/api/v1/watchlists/{mine}").status_code == 204
        assert mine not in [w["watchlist_id"] for w in amy.get("/api/v1/watchlists").json()]
        gone = amy.get("/api/v1/watchlists/hits", params={"watchlist": mine})
        assert gone.status_code == 404
        assert amy.delete(f"/api/v1/watchlists/{mine}").status_code == 404
    store = served.facefind._watch_store()[0]
    assert not store.hits([mine], None, 0, 10)[1], "its hits went with it"
    logged = [(e["action"], e["details"]["watchlist_id"]) for e in
              served.facefind.audit_entries(who="amy", actor=SETUP)
              if e["action"] in ("watch_add", "watch_pause", "watch_resume", "watch_remove")]
    assert logged[:4] == [("watch_remove", mine), ("watch_resume", mine), ("watch_pause", mine),
                          ("watch_add", mine)]  # newest first


def test_the_web_ui_pauses_and_deletes_with_the_csrf_token(served):
    with client_of(served, "root") as admin:
        made = admin.post("/api/v1/watchlists", data={"name": "via the page"}, files=PORTRAIT).json()["watchlist_id"]
    with closing(served.login("root")) as page:
        shown = page.get("/watch", headers={"Accept": "text/html"}).text
        assert f'action="/watch/lists/{made}/pause"' in shown and f'action="/watch/lists/{made}/remove"' in shown
        forged = page.post(f"/watch/lists/{made}/pause", data={})
        assert forged.status_code == 403 and problem_of(forged)["reason"] == "csrf"
        done = page.post(f"/watch/lists/{made}/pause", data={"csrf_token": page.csrf})
        assert done.status_code == 303 and done.headers["location"] == "/watch"
        row = page.get("/watch", headers={"Accept": "text/html"}).text.split(f'id="watchlist-{made}"', 1)[1]
        assert '<td class="state">paused</td>' in row.split("</tr>", 1)[0]
        assert page.post(f"/watch/lists/{made}/remove", data={"csrf_token": page.csrf}).status_code == 303
        assert f'id="watchlist-{made}"' not in page.get("/watch", headers={"Accept": "text/html"}).text
    with closing(served.login("vera")) as viewer:  # a viewer named by no list: no buttons, and no changing
        assert viewer.post("/watch/lists/1/pause", data={"csrf_token": viewer.csrf}).status_code == 403


def test_watch_pause_resume_and_remove_on_the_command_line(tmp_path, photo_folder):
    library = tmp_path / "lib"
    run(library, "watch", "add", "yao", "--photo", str(probe_sample()))
    assert "watchlist 1 yao is paused" in run(library, "watch", "pause", "1").stdout
    assert "paused" in run(library, "watch", "list").stdout
    run(library, "index", str(photo_folder), "--workers", "1")
    assert json.loads(run(library, "watch", "hits", "--json").stdout)["total"] == 0
    assert "is active again" in run(library, "watch", "pause", "1", "--resume").stdout
    assert "deleted with 0 hits" in run(library, "watch", "remove", "1").stdout
    assert "no watchlist 1" in run(library, "watch", "remove", "1", check_code=2).stderr
    assert "no watchlists you may see" in run(library, "watch", "list").stdout
