"""Who may do what, over real HTTP: every route without credentials, with the wrong role, the wrong key scope,
an expired or revoked key; CSRF; cookie flags; lockout; rate limits. An empty library is enough."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import httpx
import pytest
from PIL import Image

from facefind.access import Actor
from facefind.accounts import Accounts
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
     ("POST", "/logout", {}), ("POST", "/api/v1/search", {"files": {"file": ("p.png", IMAGE)}, "data": PURPOSE})],
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
                                                       ("root", 307, "/search"), ("otto", 403, None)])
def test_the_home_page_leads_each_role_to_a_page_it_may_see(server, sessions, user, status, where):
    response = sessions[user].get("/")
    assert response.status_code == status and response.headers.get("location") == where
    if where:
        assert sessions[user].get(where).status_code == 200
