"""Accounts: no default credentials, Argon2 passwords, scoped expiring revocable keys, sessions, lockout."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from facefind.access import Actor
from facefind.accounts import (
    ACCOUNTS_FILE,
    Accounts,
    AuthenticationError,
    LockedOutError,
    LoginPolicy,
    parse_duration,
    role_scopes,
)
from facefind.audit import AuditLog
from facefind.errors import FaceFindError, NotFoundError

ADMIN = Actor("setup", "admin")
PASSWORD = "a long enough password"


class Clock:
    """A settable clock, so expiry and lockout are tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def accounts(tmp_path, clock) -> Accounts:
    return Accounts(tmp_path, LoginPolicy(max_failures=3, lockout_s=10, max_lockout_s=100), clock)


def stored_bytes(library: Path) -> bytes:
    """Every byte the accounts database keeps (file and write-ahead log)."""
    return b"".join(path.read_bytes() for path in library.glob(ACCOUNTS_FILE + "*"))


@pytest.mark.parametrize(("name", "password"), [("admin", "admin"), ("admin", "password"), ("root", "root"),
                                                ("admin", ""), ("facefind", "facefind")])
def test_a_new_library_has_no_accounts_and_no_default_login_works(accounts, name, password):
    assert accounts.users() == [] and not accounts.has_admin()
    with pytest.raises(AuthenticationError):
        accounts.login(name, password, "127.0.0.1")


def test_passwords_are_stored_as_argon2id_hashes_only(accounts, tmp_path):
    accounts.add_user("root", "admin", PASSWORD, ADMIN)
    assert accounts.has_admin()
    stored = stored_bytes(tmp_path)
    assert PASSWORD.encode() not in stored and b"$argon2id$" in stored
    token, session = accounts.login("root", PASSWORD, "127.0.0.1")
    assert session.role == "admin" and accounts.session(token).user == "root"
    assert token.encode() not in stored_bytes(tmp_path), "a session id is stored hashed"
    assert {oct(path.stat().st_mode & 0o777) for path in tmp_path.glob(ACCOUNTS_FILE + "*")} == {"0o600"}


@pytest.mark.parametrize(
    ("name", "role", "password", "reason"),
    [("root", "admin", PASSWORD, "exists"), ("eve", "superuser", PASSWORD, "bad_argument"),
     ("eve", "viewer", "short", "bad_argument"), ("../eve", "viewer", PASSWORD, "bad_argument"),
     ("", "viewer", PASSWORD, "bad_argument")],
)
def test_bad_new_users_are_refused(accounts, name, role, password, reason):
    accounts.add_user("root", "admin", PASSWORD, ADMIN)
    with pytest.raises(FaceFindError) as refused:
        accounts.add_user(name, role, password, ADMIN)
    assert refused.value.reason == reason


@pytest.mark.parametrize(
    ("role", "scopes"),
    [("admin", {"search", "index", "admin", "audit"}), ("investigator", {"search", "index"}),
     ("viewer", {"search"}), ("auditor", {"audit"})],
)
def test_a_key_is_never_broader_than_its_owners_role(accounts, role, scopes):
    assert role_scopes(role) == scopes
    accounts.add_user("someone", role, PASSWORD, ADMIN)
    for scope in ("search", "index", "admin", "audit"):
        if scope in scopes:
            token, key = accounts.create_key("someone", [scope], None, ADMIN)
            actor, key_id = accounts.key_actor(token, "10.0.0.1")
            assert actor.key_scopes == {scope} and actor.role == role and key_id == key.key_id
            assert actor.client_address == "10.0.0.1"
        else:
            with pytest.raises(FaceFindError, match="may not have scope"):
                accounts.create_key("someone", [scope], None, ADMIN)


def test_a_key_is_shown_once_stored_hashed_and_dies_when_revoked_or_expired(accounts, tmp_path, clock):
    accounts.add_user("ivy", "investigator", PASSWORD, ADMIN)
    token, key = accounts.create_key("ivy", ["search"], parse_duration("30d"), ADMIN)
    stored = stored_bytes(tmp_path)
    assert token.encode() not in stored and hashlib.sha256(token.encode()).hexdigest().encode() in stored
    assert accounts.key_actor(token, None)[0].name == "ivy"
    clock.now += timedelta(days=30).total_seconds()
    with pytest.raises(AuthenticationError, match="expired"):
        accounts.key_actor(token, None)
    assert accounts.keys()[0].expired
    fresh, fresh_key = accounts.create_key("ivy", ["search"], None, ADMIN)
    accounts.revoke_key(fresh_key.key_id, ADMIN)
    with pytest.raises(AuthenticationError, match="revoked"):
        accounts.key_actor(fresh, None)
    with pytest.raises(AuthenticationError, match="unknown"):
        accounts.key_actor("ffk_" + "x" * 43, None)
    with pytest.raises(FaceFindError):
        accounts.revoke_key(fresh_key.key_id, ADMIN)  # not twice


def test_lockout_after_n_failures_doubles_and_a_right_password_waits_too(accounts, clock):
    accounts.add_user("ivy", "investigator", PASSWORD, ADMIN)
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            accounts.login("ivy", "wrong password!", "10.0.0.2")
    with pytest.raises(LockedOutError) as locked:
        accounts.login("ivy", PASSWORD, "10.0.0.3")  # the right password, another address: the user is locked
    assert locked.value.retry_after == 11
    clock.now += 11
    with pytest.raises(AuthenticationError):
        accounts.login("ivy", "wrong again", "10.0.0.3")
    with pytest.raises(LockedOutError) as doubled:
        accounts.login("ivy", PASSWORD, "10.0.0.3")
    assert doubled.value.retry_after == 21
    clock.now += 21
    accounts.login("ivy", PASSWORD, "10.0.0.3")
    accounts.login("ivy", PASSWORD, "10.0.0.3")  # a success clears the count


def test_lockout_counts_per_address_across_user_names(accounts):
    accounts.add_user("ivy", "investigator", PASSWORD, ADMIN)
    for name in ("a", "b", "c"):
        with pytest.raises(AuthenticationError):
            accounts.login(name, "guess one", "10.0.0.9")
    with pytest.raises(LockedOutError):
        accounts.login("ivy", PASSWORD, "10.0.0.9")
    accounts.login("ivy", PASSWORD, "10.0.0.8")


def test_sessions_expire_and_end_at_logout(accounts, clock):
    accounts.add_user("ivy", "investigator", PASSWORD, ADMIN)
    token, session = accounts.login("ivy", PASSWORD, None)
    other, _ = accounts.login("ivy", PASSWORD, None)
    assert session.csrf_token and accounts.session(token).csrf_token == session.csrf_token
    accounts.logout(token, None)
    assert accounts.session(token) is None and accounts.session(other) is not None
    clock.now += accounts.policy.session_ttl_s
    assert accounts.session(other) is None


def test_logins_and_account_changes_are_audited(accounts, tmp_path):
    accounts.add_user("ivy", "investigator", PASSWORD, ADMIN)
    _, key = accounts.create_key("ivy", ["search"], None, ADMIN)
    accounts.revoke_key(key.key_id, ADMIN)
    with pytest.raises(AuthenticationError):
        accounts.login("ivy", "not it at all", "10.1.1.1")
    accounts.login("ivy", PASSWORD, "10.1.1.1")
    entries = list(AuditLog(tmp_path).entries())
    assert [(e["actor"], e["action"]) for e in entries] == [
        ("setup", "user_add"), ("setup", "key_create"), ("setup", "key_revoke"), ("ivy", "login"), ("ivy", "login")]
    assert [json.loads(e["details"]).get("outcome") for e in entries[-2:]] == ["failure", "success"]
    assert entries[-1]["client_address"] == "10.1.1.1"
    assert AuditLog(tmp_path).verify().intact


@pytest.mark.parametrize("text", ["0d", "30", "-1d", "1w", "d"])
def test_bad_durations_are_refused(text):
    with pytest.raises(FaceFindError):
        parse_duration(text)


def facefind(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facefind", *args], input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_makes_users_and_keys_and_never_lists_a_token(tmp_path):
    library = str(tmp_path / "lib")
    first = facefind("-L", library, "users", "add", "--admin", "--password-stdin", "root", stdin=PASSWORD + "\n")
    assert first.returncode == 0, first.stderr
    added = facefind("-L", library, "users", "add", "--role", "auditor", "--password-stdin", "otto", stdin="short\n")
    assert added.returncode == 2 and "at least 12 characters" in added.stderr and "Traceback" not in added.stderr
    made = facefind("-L", library, "keys", "create", "--user", "root", "--scope", "audit", "--expires", "2d")
    token = made.stdout.split()[-1]
    assert made.returncode == 0 and token.startswith("ffk_"), made.stderr
    listed = facefind("-L", library, "keys", "list")
    assert "root" in listed.stdout and "audit" in listed.stdout and token not in listed.stdout
    assert facefind("-L", library, "keys", "revoke", "1").returncode == 0
    assert "revoked" in facefind("-L", library, "keys", "list").stdout
    assert "root  admin" in facefind("-L", library, "users", "list").stdout


def test_a_role_change_narrows_the_users_keys_and_sessions_at_once(accounts):
    accounts.add_user("ivy", "investigator", PASSWORD, ADMIN)
    token, _ = accounts.create_key("ivy", ["search", "index"], None, ADMIN)
    session, _ = accounts.login("ivy", PASSWORD, None)
    assert accounts.set_role("ivy", "viewer", ADMIN).role == "viewer"
    actor, _ = accounts.key_actor(token, None)
    assert actor.role == "viewer" and actor.key_scopes == {"search"} and not actor.may("search")
    assert accounts.session(session).role == "viewer"
    with pytest.raises(FaceFindError, match="unknown role"):
        accounts.set_role("ivy", "boss", ADMIN)


def test_removing_a_user_kills_their_keys_sessions_grants_and_shares(accounts, tmp_path):
    accounts.add_user("ivy", "investigator", PASSWORD, ADMIN)
    token, _ = accounts.create_key("ivy", ["search"], None, ADMIN)
    session, _ = accounts.login("ivy", PASSWORD, None)
    accounts.grant("ivy", "case-a", ADMIN)
    accounts.share(7, "ivy", ADMIN)
    accounts.remove_user("ivy", ADMIN)
    assert accounts.session(session) is None and accounts.users() == []
    with pytest.raises(AuthenticationError):
        accounts.key_actor(token, None)
    assert accounts.grants() == {} and accounts.shared_with("ivy") == set()
    accounts.add_user("ivy", "viewer", PASSWORD, ADMIN)  # the name again: nothing of the old account comes back
    assert accounts.keys("ivy") == [] and accounts.grants("ivy") == {}
    with pytest.raises(NotFoundError):
        accounts.remove_user("nobody", ADMIN)
    removal = [json.loads(e["details"]) for e in AuditLog(tmp_path).entries() if e["action"] == "user_remove"]
    assert removal == [{"user": "ivy", "role": "investigator", "keys_removed": 1, "sessions_ended": 1}]


@pytest.mark.parametrize("change", ["demote", "remove"])
def test_the_last_admin_can_be_neither_demoted_nor_removed(accounts, change):
    accounts.add_user("root", "admin", PASSWORD, ADMIN)
    do = {"demote": lambda name: accounts.set_role(name, "viewer", ADMIN),
          "remove": lambda name: accounts.remove_user(name, ADMIN)}[change]
    with pytest.raises(FaceFindError, match="last admin"):
        do("root")
    accounts.add_user("rita", "admin", PASSWORD, ADMIN)
    do("root")
    assert [(user.name, user.role) for user in accounts.users() if user.role == "admin"] == [("rita", "admin")]


def test_grants_limit_a_users_keys_and_sessions_to_their_collections(accounts):
    for name, role in (("amy", "investigator"), ("root", "admin")):
        accounts.add_user(name, role, PASSWORD, ADMIN)
    accounts.grant("amy", "case-a", ADMIN)
    accounts.grant("amy", "case-b", ADMIN)
    accounts.grant("amy", "case-b", ADMIN, revoke=True)
    key, _ = accounts.create_key("amy", ["search"], None, ADMIN)
    session, _ = accounts.login("amy", PASSWORD, None)
    assert accounts.key_actor(key, None)[0].collections == {"case-a"}
    assert accounts.session(session).actor(None).collections == {"case-a"}
    admin_session, _ = accounts.login("root", PASSWORD, None)
    assert accounts.session(admin_session).actor(None).collections is None, "an admin reads every collection"
    with pytest.raises(NotFoundError):
        accounts.grant("amy", "case-b", ADMIN, revoke=True)


def test_the_cli_changes_roles_grants_collections_and_removes_users(tmp_path):
    library = str(tmp_path / "lib")
    for name, role in (("root", "admin"), ("ivy", "investigator")):
        made = facefind("-L", library, "users", "add", "--role", role, "--password-stdin", name, stdin=PASSWORD + "\n")
        assert made.returncode == 0, made.stderr
    assert "ivy is now viewer" in facefind("-L", library, "users", "role", "ivy", "viewer").stdout
    unknown = facefind("-L", library, "users", "grant", "ivy", "case-a")
    assert unknown.returncode != 0 and "no collection case-a" in unknown.stderr and "Traceback" not in unknown.stderr
    added = facefind("-L", library, "access", "collection", "add", "case-a", str(tmp_path / "a"))
    assert added.returncode == 0 and "case-a" in added.stdout, added.stderr
    assert "ivy reads: case-a" in facefind("-L", library, "users", "grant", "ivy", "case-a").stdout
    assert "reads case-a" in facefind("-L", library, "users", "list").stdout
    last = facefind("-L", library, "users", "remove", "root")
    assert last.returncode != 0 and "last admin" in last.stderr
    assert facefind("-L", library, "users", "remove", "ivy").returncode == 0
    assert "ivy" not in facefind("-L", library, "users", "list").stdout
    actions = [e["action"] for e in AuditLog(Path(library)).entries()]
    assert actions[-4:] == ["user_role", "collection_set", "grant", "user_remove"]
