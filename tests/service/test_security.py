"""Who may do what, over real HTTP: every route without credentials, with the wrong role, the wrong key scope,
an expired or revoked key; CSRF; cookie flags; lockout; rate limits. An empty library is enough."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from PIL import Image

from facefind.access import Actor
from facefind.accounts import Accounts
from facefind.samples import gallery_samples, probe_sample
from facefind.service import ServiceSettings
from tests.service.conftest import PASSWORDS, PURPOSE, SETUP, problem_of, serve


def grey_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = grey_png()
# (method, path, request arguments, the library operation it needs: access.PERMISSIONS)
API_ROUTES = [
    ("POST", "/api/v1/search", {"files": {"file": ("p.png", IMAGE)}, "data": PURPOSE}, "search"),
    ("POST", "/api/v1/verify", {"files": {"a": ("a.png", IMAGE), "b": ("b.png", IMAGE)}, "data": PURPOSE}, "verify"),
    ("POST", "/api/v1/faces", {"files": {"file": ("p.png", IMAGE)}}, "faces"),
    ("GET", "/api/v1/media", {}, "faces"),
    ("GET", "/api/v1/media/item?path=/x.jpg", {}, "faces"),
    ("GET", "/api/v1/media/faces?path=/x.jpg", {}, "faces"),
    ("GET", "/api/v1/media/file?path=/x.jpg", {}, "read_results"),
    ("GET", "/api/v1/thumbnails/x.jpg", {}, "read_results"),
    ("POST", "/api/v1/jobs", {"json": {"paths": ["/nowhere"]}}, "index"),
    ("GET", "/api/v1/jobs", {}, "index"),
    ("GET", "/api/v1/jobs/1", {}, "index"),
    ("POST", "/api/v1/jobs/1/cancel", {}, "index"),
    ("GET", "/api/v1/stats", {}, "stats"),
    ("POST", "/api/v1/remove", {"json": {"face_ids": [1]}}, "remove"),
    ("GET", "/api/v1/evidence/1-1", {}, "evidence"),
    ("GET", "/api/v1/evidence/1-1/html", {}, "evidence"),
    ("GET", "/api/v1/searches", {}, "read_results"),
    ("GET", "/api/v1/searches/1", {}, "read_results"),
    ("POST", "/api/v1/searches/1/share", {"json": {"user": "vera"}}, "share"),
    ("POST", "/api/v1/users/nobody/role", {"json": {"role": "viewer"}}, "settings"),
    ("DELETE", "/api/v1/users/nobody", {}, "settings"),
    ("POST", "/api/v1/users/nobody/grants", {"json": {"collection": "x"}}, "settings"),
    ("GET", "/api/v1/audit", {}, "audit_read"),
    # people (people_routes.py)
    ("POST", "/api/v1/people/build", {"json": {}}, "people_edit"),
    ("GET", "/api/v1/people", {}, "people_read"),
    ("GET", "/api/v1/people/export?format=graphml", {}, "people_read"),
    ("GET", "/api/v1/people/1", {}, "people_read"),
    ("GET", "/api/v1/people/1/with", {}, "people_read"),
    ("POST", "/api/v1/people/1/name", {"json": {"name": "x"}}, "people_edit"),
    ("POST", "/api/v1/people/1/merge", {"json": {"others": [2]}}, "people_edit"),
    ("POST", "/api/v1/people/1/split", {"json": {}}, "people_edit"),
    ("POST", "/api/v1/people/1/faces", {"json": {"face_id": 1}}, "people_edit"),
    ("POST", "/api/v1/people/1/not", {"json": {"face_id": 1}}, "people_edit"),
    ("POST", "/api/v1/people/1/hide", {"json": {"hidden": True}}, "people_edit"),
    # watchlists
    ("GET", "/api/v1/watchlists", {}, "watch_read"),
    ("POST", "/api/v1/watchlists", {"data": {"name": "w", "person": "999"}}, "watch_manage"),
    ("GET", "/api/v1/watchlists/hits", {}, "watch_read"),
    ("POST", "/api/v1/watchlists/hits/1/acknowledge", {}, "watch_review"),
    ("POST", "/api/v1/watchlists/hits/1/dismiss", {}, "watch_review"),
    ("POST", "/api/v1/watchlists/1/pause", {}, "watch_manage"),
    ("POST", "/api/v1/watchlists/1/resume", {}, "watch_manage"),
    ("DELETE", "/api/v1/watchlists/1", {}, "watch_manage"),
]
UI_PAGES = [
    ("GET", "/search", {}, "search"),
    ("GET", "/library", {}, "faces"),
    ("GET", "/library/file?path=/x.jpg", {}, "faces"),
    ("GET", "/video?path=/x.mp4", {}, "read_results"),
    ("GET", "/history", {}, "read_results"),
    ("GET", "/history/1", {}, "read_results"),
    ("GET", "/evidence/1-1", {}, "evidence"),
    ("POST", "/ui/results", {"files": {"file": ("p.png", IMAGE)}}, "search"),
    ("POST", "/purpose", {"data": PURPOSE}, "search"),
    ("GET", "/admin/accounts", {}, "settings"),
    ("POST", "/admin/users", {"data": {"name": "newbie", "role": "viewer", "password": "x"}}, "settings"),
    ("POST", "/admin/keys", {"data": {"user": "vera", "scope": "search"}}, "settings"),
    ("POST", "/admin/keys/999/revoke", {}, "settings"),
    ("POST", "/admin/users/nobody/role", {"data": {"role": "viewer"}}, "settings"),
    ("POST", "/admin/users/nobody/remove", {}, "settings"),
    ("POST", "/admin/users/nobody/grants", {"data": {"collection": "x"}}, "settings"),
    ("POST", "/history/1/share", {"data": {"user": "vera"}}, "share"),
    ("GET", "/audit", {}, "audit_read"),
    ("GET", "/audit/entries/1", {}, "audit_read"),
    ("GET", "/audit/export?format=csv", {}, "audit_read"),
    ("GET", "/people", {}, "people_read"),
    ("GET", "/people/1", {}, "people_read"),
    ("POST", "/people/build", {}, "people_edit"),
    ("POST", "/people/1/name", {"data": {"name": "x"}}, "people_edit"),
    ("POST", "/people/1/merge", {"data": {"other": "2"}}, "people_edit"),
    ("POST", "/people/1/split", {}, "people_edit"),
    ("POST", "/people/1/not", {"data": {"face_id": "1"}}, "people_edit"),
    ("POST", "/people/1/hide", {"data": {"hidden": "true"}}, "people_edit"),
    ("GET", "/watch", {}, "watch_read"),
    ("POST", "/watch/hits/1/acknowledge", {}, "watch_review"),
    ("POST", "/watch/hits/1/dismiss", {}, "watch_review"),
    ("POST", "/watch/lists/1/pause", {}, "watch_manage"),
    ("POST", "/watch/lists/1/remove", {}, "watch_manage"),
]
# key name -> (owner, scopes)
KEYS = {"auditor": ("otto", ["audit"]), "viewer": ("vera", ["search"]), "index-only": ("ivy", ["index"]),
        "search-only": ("ivy", ["search"]), "admin": ("root", ["search", "index", "admin", "audit"])}
ROLE_OF = {"otto": "auditor", "vera": "viewer", "ivy": "investigator", "root": "admin"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, pipeline):
    settings = ServiceSettings(library=tmp_path_factory.mktemp("security") / "library", index_workers=1)
    with serve(settings, pipeline) as served:
        accounts = served.facefind.accounts
        served.named_keys = {name: accounts.create_key(user, scopes, None, SETUP)[0]
                             for name, (user, scopes) in KEYS.items()}
        month_ago = Accounts(settings.library, clock=lambda: time.time() - 31 * 86400)
        served.named_keys["expired"] = month_ago.create_key("ivy", ["search", "index"], timedelta(days=30), SETUP)[0]
        revoked, key = accounts.create_key("ivy", ["search", "index"], None, SETUP)
        accounts.revoke_key(key.key_id, SETUP)
        served.named_keys["revoked"] = revoked
        yield served


def send(client: httpx.Client, method: str, path: str, arguments: dict, **extra) -> httpx.Response:
    return client.request(method, path, **arguments, **extra)


def assert_let_through(response: httpx.Response) -> None:
    """Past authentication and permission (the request may still fail for what it asks: 404, 422...)."""
    assert response.status_code != 401, response.text
    if response.status_code == 403:
        assert problem_of(response)["reason"] not in ("forbidden", "csrf"), response.text


@pytest.mark.parametrize(("method", "path", "arguments", "operation"), API_ROUTES)
@pytest.mark.parametrize("credentials", [None, "Bearer", "Basic cm9vdDpyb290", "expired", "revoked", "ffk_guessed"])
def test_api_routes_without_valid_credentials_are_401(server, method, path, arguments, operation, credentials):
    headers = {}
    if credentials is not None:
        token = server.named_keys.get(credentials, credentials)
        headers["Authorization"] = token if " " in token or token == "Bearer" else f"Bearer {token}"
    with server.client(key=None) as client:
        response = send(client, method, path, arguments, headers=headers)
    assert response.status_code == 401, response.text
    assert problem_of(response)["reason"] == "unauthenticated"
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path", "arguments", "operation"), API_ROUTES)
@pytest.mark.parametrize("key", sorted(KEYS))
def test_api_routes_obey_the_keys_role_and_scope(server, method, path, arguments, operation, key):
    owner, scopes = KEYS[key]
    allowed = Actor(owner, ROLE_OF[owner], key_scopes=frozenset(scopes)).may(operation)
    with server.client(key=server.named_keys[key]) as client:
        response = send(client, method, path, arguments)
    if allowed:
        assert_let_through(response)
    else:
        assert response.status_code == 403, response.text
        assert problem_of(response)["reason"] == "forbidden"


@pytest.mark.parametrize(("method", "path", "arguments", "operation"), UI_PAGES)
def test_ui_pages_without_a_session_go_to_the_login_page(server, method, path, arguments, operation):
    with server.client(key=None) as client:
        response = send(client, method, path, arguments)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/login?next=%2F")


@pytest.fixture(scope="module")
def sessions(server) -> dict[str, httpx.Client]:
    clients = {name: server.login(name) for name in ("root", "ivy", "vera", "otto")}
    yield clients
    for client in clients.values():
        client.close()


@pytest.mark.parametrize(("method", "path", "arguments", "operation"), UI_PAGES + API_ROUTES)
@pytest.mark.parametrize("user", ["root", "ivy", "vera", "otto"])
def test_pages_and_routes_obey_the_session_users_role(server, sessions, method, path, arguments, operation, user):
    client = sessions[user]
    response = send(client, method, path, arguments, headers={"X-CSRF-Token": client.csrf, "Accept": "text/html"})
    if Actor(user, ROLE_OF[user]).may(operation):
        assert_let_through(response)
    else:
        assert response.status_code == 403, response.text
        if not path.startswith("/api/"):
            assert "forbidden" in response.text  # the HTML problem page


@pytest.mark.parametrize(
    ("method", "path", "arguments"),
    [("POST", "/api/v1/jobs", {"json": {"paths": ["/nowhere"]}}), ("POST", "/api/v1/jobs/1/cancel", {}),
     ("POST", "/ui/results", {"files": {"file": ("p.png", IMAGE)}}), ("POST", "/purpose", {"data": PURPOSE}),
     ("POST", "/logout", {}), ("POST", "/api/v1/search", {"files": {"file": ("p.png", IMAGE)}, "data": PURPOSE}),
     ("POST", "/history/1/share", {"data": {"user": "vera"}}),
     ("POST", "/api/v1/searches/1/share", {"json": {"user": "vera"}}),
     ("POST", "/people/1/name", {"data": {"name": "x"}}), ("POST", "/api/v1/people/1/hide", {"json": {}}),
     ("POST", "/watch/hits/1/dismiss", {}), ("POST", "/api/v1/watchlists/hits/1/acknowledge", {}),
     ("POST", "/watch/lists/1/remove", {}), ("DELETE", "/api/v1/watchlists/1", {})],
)
@pytest.mark.parametrize("token", [None, "forged-token"])
def test_state_changing_requests_with_a_session_need_its_csrf_token(server, method, path, arguments, token):
    client = server.login("ivy")
    headers = {} if token is None else {"X-CSRF-Token": token}
    refused = send(client, method, path, arguments, headers=headers)
    assert refused.status_code == 403 and problem_of(refused)["reason"] == "csrf"
    assert_let_through(send(client, method, path, arguments, headers={"X-CSRF-Token": client.csrf}))
    client.close()


def test_the_csrf_token_may_come_as_a_form_field(server):
    client = server.login("ivy")
    stated = client.post("/purpose", data={**PURPOSE, "csrf_token": client.csrf})
    assert stated.status_code == 303 and stated.headers["location"] == "/search"
    assert PURPOSE["case"] in client.get("/search").text
    client.close()


def test_a_login_form_post_without_its_login_token_is_refused(server):
    with server.client(key=None) as client:
        response = client.post("/login", data={"name": "ivy", "password": PASSWORDS["ivy"]})
        assert response.status_code == 403 and "facefind_session" not in response.cookies


@pytest.mark.parametrize(("forwarded", "secure"), [(None, False), ("https", True)])
def test_the_session_cookie_is_httponly_samesite_strict_and_secure_over_https(server, forwarded, secure):
    """Behind an https reverse proxy on this machine (X-Forwarded-Proto) the cookie is Secure; on loopback http not."""
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    with server.client(key=None, headers=headers) as client:
        login_csrf = client.get("/login").text.split('name="login_csrf" value="', 1)[1].split('"', 1)[0]
        client.cookies.clear()  # a Secure cookie would not travel back over this test's plain http: send it by hand
        response = client.post("/login", data={"name": "vera", "password": PASSWORDS["vera"],
                                               "login_csrf": login_csrf, "next": "//evil.example/"},
                               headers={"Cookie": f"facefind_login_csrf={login_csrf}"})
    assert response.status_code == 303 and response.headers["location"] == "/search", "no open redirect"
    cookie = next(value for value in response.headers.get_list("set-cookie") if value.startswith("facefind_session="))
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path", "max-age"} <= flags and "samesite=strict" in cookie.lower()
    assert ("secure" in flags) is secure


def test_logging_out_ends_the_session_on_the_server(server):
    client = server.login("vera")
    cookie = client.cookies["facefind_session"]
    assert client.post("/logout", headers={"X-CSRF-Token": client.csrf}).status_code == 303
    with server.client(key=None) as replay:
        replay.cookies.set("facefind_session", cookie)
        assert replay.get("/api/v1/stats").status_code == 401


@pytest.fixture
def strict_server(tmp_path, pipeline):
    """A server of its own (lockout and quotas count per address and user): 3 failures, 2 searches an hour."""
    settings = ServiceSettings(library=tmp_path / "library", login_max_failures=3, lockout_s=30,
                               searches_per_hour=2, index_workers=1)
    with serve(settings, pipeline) as served:
        yield served


def test_lockout_after_n_failed_logins_with_retry_after(strict_server):
    with strict_server.client(key=None) as client:
        def attempt(password: str) -> httpx.Response:
            token = client.get("/login").text.split('name="login_csrf" value="', 1)[1].split('"', 1)[0]
            return client.post("/login", data={"name": "ivy", "password": password, "login_csrf": token})

        assert [attempt("wrong password").status_code for _ in range(3)] == [401, 401, 401]
        locked = attempt(PASSWORDS["ivy"])
        assert locked.status_code == 429 and 0 < int(locked.headers["retry-after"]) <= 31
        assert "too many failed logins" in locked.text and "facefind_session" not in locked.cookies


def test_searches_beyond_the_hourly_limit_are_429_per_key(strict_server):
    with strict_server.client() as client:
        answers = [client.post("/api/v1/search", files={"file": ("p.png", IMAGE)}, data=PURPOSE) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [422, 422]  # counted, whatever the answer
    assert answers[2].status_code == 429 and problem_of(answers[2])["reason"] == "rate_limited"
    assert 3500 < int(answers[2].headers["retry-after"]) <= 3601
    with strict_server.client(key=strict_server.keys["root"]) as other:
        response = other.post("/api/v1/search", files={"file": ("p.png", IMAGE)}, data=PURPOSE)
        assert response.status_code == 422, "another key has its own allowance"


def test_the_admin_page_adds_a_user_and_shows_a_new_key_once(server):
    admin = server.login("root")
    form = {"csrf_token": admin.csrf}
    added = admin.post("/admin/users", data={**form, "name": "nina", "role": "investigator",
                                             "password": "nina's long password"})
    assert added.status_code == 303 and "<td>nina</td><td>investigator</td>" in admin.get("/admin/accounts").text
    broader = admin.post("/admin/keys", data={**form, "user": "nina", "scope": ["search", "admin"]})
    assert broader.status_code == 400 and "may not have scope admin" in broader.text
    made = admin.post("/admin/keys", data={**form, "user": "nina", "scope": ["search"], "expires": "1d"})
    token = made.text.split('<code id="new-token">', 1)[1].split("<", 1)[0]
    assert token.startswith("ffk_") and token not in admin.get("/admin/accounts").text, "shown once"
    with server.client(key=token) as nina:
        assert nina.get("/api/v1/stats").status_code == 200
        key_id = max(key.key_id for key in server.facefind.accounts.keys("nina"))
        assert admin.post(f"/admin/keys/{key_id}/revoke", data=form).status_code == 303
        assert nina.get("/api/v1/stats").status_code == 401
    admin.close()


@pytest.mark.parametrize(("user", "status", "where"), [("ivy", 307, "/search"), ("vera", 307, "/history"),
                                                       ("root", 307, "/search"), ("otto", 307, "/audit")])
def test_the_home_page_leads_each_role_to_a_page_it_may_see(server, sessions, user, status, where):
    response = sessions[user].get("/")
    assert response.status_code == status and response.headers.get("location") == where
    if where:
        assert sessions[user].get(where).status_code == 200


# -- collections: a search, a listing, a file or a crop never reaches past the actor's collections --

COLLECTION_USERS = {"amy": ("investigator", ["case-a"]), "bob": ("investigator", ["case-b"]),
                    "nick": ("investigator", []), "val": ("viewer", ["case-a"])}


@pytest.fixture(scope="module")
def collected(tmp_path_factory, pipeline):
    """Two collections: case-a (the team photos, where the probe's person is one face of many) and case-b (his
    portrait alone); amy reads case-a, bob case-b, nick none; root (admin) reads everything."""
    root = tmp_path_factory.mktemp("collections")
    folders = {"case-a": root / "case_a", "case-b": root / "case_b"}
    for folder in folders.values():
        folder.mkdir()
    for sample in gallery_samples():
        shutil.copy(sample, folders["case-a"] / sample.name)
    shutil.copy(probe_sample(), folders["case-b"] / "portrait.jpg")
    settings = ServiceSettings(library=root / "library", allow_roots=(root,), index_workers=1)
    with serve(settings, pipeline) as served:
        facefind = served.facefind
        assert facefind.index(list(folders.values()), workers=1, actor=SETUP).failed == 0
        for name, folder in folders.items():
            facefind.set_collection(name, [folder], actor=SETUP)
        served.folders, served.user_keys = folders, {}
        for user, (role, granted) in COLLECTION_USERS.items():
            facefind.accounts.add_user(user, role, PASSWORDS["root"], SETUP)
            for collection in granted:
                facefind.grant_collection(user, collection, actor=SETUP)
            served.user_keys[user] = facefind.accounts.create_key(user, ["search"] + (["index"] if role ==
                                                                  "investigator" else []), None, SETUP)[0]
        served.user_keys["root"] = served.keys["root"]
        with facefind._library() as library:
            served.faces_in = {name: len(library.catalog.face_ids_under(str(folder)))
                               for name, folder in folders.items()}
        yield served


def collection_search(server, user: str, **form) -> httpx.Response:
    with server.client(key=server.user_keys[user]) as client:
        return client.post("/api/v1/search", files={"file": ("probe.jpg", probe_sample().read_bytes())},
                           data={**PURPOSE, "show_all": "true", "top_k": "50", **form})


@pytest.mark.parametrize(("user", "readable"), [("amy", ["case-a"]), ("bob", ["case-b"]), ("nick", []),
                                                ("root", ["case-a", "case-b"])])
def test_a_search_never_returns_or_counts_a_face_outside_the_actors_collections(collected, user, readable):
    response = collection_search(collected, user)
    assert response.status_code == 200, response.text
    result = response.json()
    gallery = sum(collected.faces_in[name] for name in readable)
    assert result["gallery_size"] == gallery, "the expected false matches are counted over the readable faces only"
    roots = [str(collected.folders[name]) + "/" for name in readable]
    assert all(match["source"]["path"].startswith(tuple(roots)) for match in result["matches"])
    assert len(result["matches"]) == min(gallery, 50), "show_all lists every readable face, and only those"
    for match in result["matches"]:
        assert match["expected_false_matches"] == pytest.approx(match["fmr"] * gallery, rel=1e-2, abs=1e-12)
    logged = [e for e in collected.facefind.audit_entries(who=user, action="search", actor=SETUP)][0]
    assert logged["details"]["gallery_size"] == gallery
    assert {r["path"] for r in logged["details"]["results"]} == {m["source"]["path"] for m in result["matches"]}


def test_a_restricted_search_within_another_collections_folder_finds_nothing_there(collected):
    response = collection_search(collected, "bob", **{"in": str(collected.folders["case-a"])})
    assert response.status_code == 404 and problem_of(response)["reason"] == "not_found"


def face_id_search(server, user: str, face_id: int, **form) -> httpx.Response:
    """POST /api/v1/search with a stored face's id instead of an image: where else does it appear?"""
    with server.client(key=server.user_keys[user]) as client:
        return client.post("/api/v1/search", data={**PURPOSE, "face_id": str(face_id), "show_all": "true",
                                                   "top_k": "50", **form})


def portrait_face_id(server) -> int:
    return server.facefind.faces(server.folders["case-b"] / "portrait.jpg", actor=SETUP).faces[0].face_id


def test_a_search_by_stored_face_id_finds_the_person_elsewhere_and_is_audited(collected):
    portrait = portrait_face_id(collected)
    response = face_id_search(collected, "root", portrait)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["searched_face"]["face_id"] == portrait
    assert result["matches"][0]["source"]["path"] == str(collected.folders["case-a"] / "players.jpg")
    assert result["matches"][0]["verdict"] == "strong"
    assert portrait not in [match["face"]["face_id"] for match in result["matches"]], "the face itself is no match"
    entry = collected.facefind.audit_entries(who="root", action="search", actor=SETUP)[0]
    assert entry["details"]["search_id"] == result["search_id"] and entry["details"]["probe"]["face_id"] == portrait
    assert entry["purpose"] == PURPOSE


@pytest.mark.parametrize(("user", "status", "reason"), [("amy", 404, "not_found"), ("val", 403, "forbidden")])
def test_a_face_id_outside_ones_collections_or_role_is_refused(collected, user, status, reason):
    """amy may not read case-b: its face ids are as unknown to her as ids that do not exist (nothing leaks)."""
    response = face_id_search(collected, user, portrait_face_id(collected))
    assert response.status_code == status and problem_of(response)["reason"] == reason
    unknown = face_id_search(collected, "root", 10**9)
    assert unknown.status_code == 404 and problem_of(unknown)["reason"] == "not_found"


def test_a_face_id_search_compares_only_the_actors_collections(collected):
    """bob reads case-b only: the portrait is all he may compare with, and it is the probe itself."""
    response = face_id_search(collected, "bob", portrait_face_id(collected))
    assert response.status_code == 200, response.text
    assert response.json()["matches"] == [] and response.json()["gallery_size"] == collected.faces_in["case-b"]


def test_a_face_id_and_an_image_together_are_a_bad_argument(collected):
    with collected.client(key=collected.user_keys["root"]) as client:
        response = client.post("/api/v1/search", files={"file": ("probe.jpg", probe_sample().read_bytes())},
                               data={**PURPOSE, "face_id": str(portrait_face_id(collected))})
    assert response.status_code == 400 and problem_of(response)["reason"] == "bad_argument"


def admins_match_in(server, collection: str) -> dict:
    """A match (from the admin's search) whose face lies in ``collection``."""
    result = collection_search(server, "root").json()
    return next(m for m in result["matches"] if m["source"]["path"].startswith(str(server.folders[collection])))


def thumb_name(server, match: dict) -> str:
    return str(Path(match["face"]["thumbnail"]).relative_to(server.facefind.library_path / "thumbs"))


@pytest.mark.parametrize("what", ["evidence", "evidence_html", "media_item", "media_file", "media_faces",
                                  "thumbnail"])
def test_another_collections_evidence_media_and_crops_are_not_found(collected, what):
    match = admins_match_in(collected, "case-a")
    own = collection_search(collected, "amy").json()["matches"][0]  # amy's own search, in her collection
    paths = {
        "evidence": "/api/v1/evidence/{match_id}", "evidence_html": "/api/v1/evidence/{match_id}/html",
        "media_item": "/api/v1/media/item?path={path}", "media_file": "/api/v1/media/file?path={path}",
        "media_faces": "/api/v1/media/faces?path={path}", "thumbnail": "/api/v1/thumbnails/{thumb}",
    }

    def url(m: dict) -> str:
        return paths[what].format(match_id=m["match_id"], path=quote(m["source"]["path"], safe=""),
                                  thumb=thumb_name(collected, m))

    with collected.client(key=collected.user_keys["bob"]) as bob:
        refused = bob.get(url(match))
        assert refused.status_code == 404 and problem_of(refused)["reason"] == "not_found"
    with collected.client(key=collected.user_keys["amy"]) as amy:
        assert amy.get(url(own)).status_code == 200, "her own collection's face is hers to see"


@pytest.mark.parametrize(("user", "files"), [("amy", 2), ("bob", 1), ("nick", 0), ("root", 3)])
def test_the_media_listing_holds_only_the_actors_collections(collected, user, files):
    with collected.client(key=collected.user_keys[user]) as client:
        page = client.get("/api/v1/media", params={"limit": 1}).json()
        every = client.get("/api/v1/media").json()
    assert page["total"] == files and len(every["items"]) == files
    assert len(page["items"]) == min(files, 1)


@pytest.mark.parametrize(("user", "collection", "status"), [("amy", "case-a", 202), ("amy", "case-b", 403),
                                                            ("nick", "case-a", 403), ("root", "case-b", 202)])
def test_indexing_outside_the_actors_collections_is_refused(collected, user, collection, status):
    with collected.client(key=collected.user_keys[user]) as client:
        response = client.post("/api/v1/jobs", json={"paths": [str(collected.folders[collection])]})
        assert response.status_code == status, response.text
        if status == 403:
            assert problem_of(response)["reason"] == "forbidden_path"
        else:
            assert collected.wait_for_job(client, response.json()["job_id"])["status"] == "finished"


def test_index_jobs_of_another_collection_are_not_listed_read_or_cancelled(collected):
    with collected.client(key=collected.user_keys["amy"]) as amy:
        started = amy.post("/api/v1/jobs", json={"paths": [str(collected.folders["case-a"])]})
        assert started.status_code == 202, started.text
        job_id = collected.wait_for_job(amy, started.json()["job_id"])["job_id"]
        assert job_id in [job["job_id"] for job in amy.get("/api/v1/jobs").json()]
    with collected.client(key=collected.user_keys["bob"]) as bob:
        assert job_id not in [job["job_id"] for job in bob.get("/api/v1/jobs").json()]
        for answer in (bob.get(f"/api/v1/jobs/{job_id}"), bob.post(f"/api/v1/jobs/{job_id}/cancel")):
            assert answer.status_code == 404 and problem_of(answer)["reason"] == "not_found"
    with collected.client(key=collected.user_keys["root"]) as root:
        assert root.get(f"/api/v1/jobs/{job_id}").status_code == 200


def test_a_viewer_sees_only_the_results_shared_with_them(collected):
    searched = collection_search(collected, "amy").json()
    with collected.client(key=collected.user_keys["val"]) as val, \
            collected.client(key=collected.user_keys["amy"]) as amy:
        assert searched["search_id"] not in [e["search_id"] for e in val.get("/api/v1/searches").json()["items"]]
        assert val.get(f"/api/v1/searches/{searched['search_id']}").status_code == 404
        assert collection_search(collected, "val").status_code == 403, "a viewer runs no searches"
        shared = amy.post(f"/api/v1/searches/{searched['search_id']}/share", json={"user": "val"})
        assert shared.status_code == 204, shared.text
        listed = val.get("/api/v1/searches").json()
        assert [e["search_id"] for e in listed["items"]] == [searched["search_id"]], "that search, nothing else"
        reopened = val.get(f"/api/v1/searches/{searched['search_id']}").json()
        assert [m["match_id"] for m in reopened["matches"]] == [m["match_id"] for m in searched["matches"]]
        assert val.get("/api/v1/thumbnails/" + thumb_name(collected, searched["matches"][0])).status_code == 200
    entries = collected.facefind.audit_entries(who="amy", action="share", actor=SETUP)
    assert [(e["details"]["search_id"], e["details"]["user"]) for e in entries] == [(searched["search_id"], "val")]


def test_one_cannot_share_a_search_one_may_not_read(collected):
    others = collection_search(collected, "bob").json()
    with collected.client(key=collected.user_keys["amy"]) as amy:
        response = amy.post(f"/api/v1/searches/{others['search_id']}/share", json={"user": "val"})
    assert response.status_code == 404


# -- account changes and the auditor's page --

def test_an_admin_changes_a_role_and_removes_a_user_whose_keys_and_sessions_die(server, sessions):
    facefind, admin = server.facefind, sessions["root"]
    facefind.accounts.add_user("temp", "investigator", "temp's long password", SETUP)
    key = facefind.accounts.create_key("temp", ["search"], None, SETUP)[0]
    session_token, _ = facefind.accounts.login("temp", "temp's long password", None)
    changed = admin.post("/admin/users/temp/role", data={"role": "viewer", "csrf_token": admin.csrf})
    assert changed.status_code == 303 and "<td>temp</td><td>viewer</td>" in admin.get("/admin/accounts").text
    with server.client(key=key) as temp:
        refused = temp.post("/api/v1/search", files={"file": ("p.png", IMAGE)}, data=PURPOSE)
        assert refused.status_code == 403, "a viewer's key searches no more"
        with server.client(key=server.keys["root"]) as root_key:
            assert root_key.delete("/api/v1/users/temp").status_code == 204
        assert temp.get("/api/v1/stats").status_code == 401
    with server.client(key=None) as browser:
        browser.cookies.set("facefind_session", session_token)
        assert browser.get("/history").status_code == 303, "the session ended with the account"
    last = admin.post("/admin/users/root/role", data={"role": "viewer", "csrf_token": admin.csrf})
    assert last.status_code == 400 and "last admin" in last.text
    changes = [(e["action"], e["details"]["user"]) for e in facefind.audit_entries(who="root", actor=SETUP)
               if e["action"] in ("user_role", "user_remove")]
    assert changes == [("user_remove", "temp"), ("user_role", "temp")]  # newest first


def test_the_auditor_filters_the_log_opens_a_search_as_seen_and_exports_it(collected):
    case = {"case": "CASE-AUDIT-9", "reason": "checking the auditor's view of a search"}
    searched = collection_search(collected, "amy", **case).json()
    assert searched["matches"]
    auditor = collected.login("otto")
    page = auditor.get("/audit", params={"action": "search", "case": case["case"]})
    assert page.status_code == 200
    rows = page.text.count('class="audit-entry"')
    assert rows == 1 and 'data-actor="amy"' in page.text and "CASE-AUDIT-9" in page.text
    assert "No entries match." in auditor.get("/audit", params={"since": "2999-01-01"}).text
    entry = collected.facefind.audit_entries(action="search", case=case["case"], actor=SETUP)[0]
    shown = auditor.get(f"/audit/entries/{entry['id']}").text
    assert 'id="probe-crop"' in shown and "data:image/jpeg;base64," + entry["details"]["probe"]["crop_jpeg_base64"] \
        in shown
    assert f'<td id="entry-gallery">{searched["gallery_size"]}</td>' in shown
    assert shown.count('class="entry-result"') == len(searched["matches"])
    for match in searched["matches"]:
        assert f"<td>{match['match_id']}</td><td>{match['fmr']}</td>" in shown
    exported = auditor.get("/audit/export", params={"format": "jsonl", "case": case["case"]})
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert [json.loads(line)["details"]["search_id"] for line in exported.text.splitlines()] == [searched["search_id"]]
    as_csv = auditor.get("/audit/export", params={"format": "csv", "who": "amy", "action": "search"})
    assert as_csv.headers["content-type"].startswith("text/csv") and as_csv.text.startswith("id,time,actor")
    assert len(list(csv.DictReader(io.StringIO(as_csv.text)))) == len(
        collected.facefind.audit_entries(who="amy", action="search", actor=SETUP))
    exports = collected.facefind.audit_entries(who="otto", action="audit_export", actor=SETUP)
    assert [e["details"]["format"] for e in exports] == ["csv", "jsonl"]
    with collected.client(key=collected.user_keys["amy"]) as amy:
        assert amy.get("/api/v1/audit").status_code == 403
    auditor.close()
