"""Accounts: users with roles, Argon2 password hashes, scoped API keys, login sessions, login lockout.

They live in their own SQLite file in the library folder (``accounts.sqlite3``, readable by its
owner only), not in the catalog: credentials are not face data, so checking, repairing, exporting
or erasing the catalog never touches them, and erasure's secure delete has no password hash to
carry along. There are no default credentials: the first admin is made with `facefind users add
--admin NAME`, and `facefind serve` refuses to start until one exists.

Secrets are shown once and stored hashed: passwords with Argon2id (slow on purpose), API keys and
session ids with SHA-256 (they are 256-bit random tokens, so a fast hash cannot be brute-forced).
Every change and every login is written to the audit log.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from facefind.access import PERMISSIONS, ROLES, SCOPES, Actor, Purpose
from facefind.audit import AuditLog
from facefind.errors import FaceFindError, NotFoundError

ACCOUNTS_FILE = "accounts.sqlite3"
KEY_PREFIX = "ffk_"
MIN_PASSWORD = 12
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_DURATION = re.compile(r"(\d+)([dhm])")
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify for a name that has no user, so a wrong name takes as long as a wrong password.

    Made on first use, not at import: hashing costs ~0.4 s, which every CLI start would pay.
    """
    return _hasher.hash("no such user: verified anyway, so a wrong name takes as long as a wrong password")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL REFERENCES users(name), scopes TEXT NOT NULL,
    token_sha256 TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, expires_at REAL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name), csrf_token TEXT NOT NULL,
    expires_at REAL NOT NULL, purpose_case TEXT, purpose_reason TEXT);
CREATE TABLE IF NOT EXISTS login_failures (
    subject TEXT PRIMARY KEY, failures INTEGER NOT NULL, locked_until REAL NOT NULL);
CREATE TABLE IF NOT EXISTS grants (
    user TEXT NOT NULL REFERENCES users(name), collection TEXT NOT NULL, PRIMARY KEY (user, collection));
CREATE TABLE IF NOT EXISTS shares (
    search_id INTEGER NOT NULL, user TEXT NOT NULL REFERENCES users(name), shared_by TEXT NOT NULL,
    shared_at TEXT NOT NULL, PRIMARY KEY (search_id, user));
"""


class AuthenticationError(FaceFindError):
    """No valid credentials: a wrong password, an unknown, expired or revoked key, no session."""

    reason = "unauthenticated"


class LockedOutError(FaceFindError):
    """Too many failed logins for this user or from this address: wait ``retry_after`` seconds."""

    reason = "locked_out"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def role_scopes(role: str) -> frozenset[str]:
    """The key scopes a role may hand out: those its own permissions use, so a key is never broader."""
    return frozenset(scope for roles, scope in PERMISSIONS.values() if role in roles)


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h`` or ``90m`` as a timedelta (more than zero)."""
    match = _DURATION.fullmatch(text.strip())
    if not match or int(match[1]) == 0:
        raise FaceFindError(f"bad duration {text!r}: use e.g. 30d, 12h or 90m", reason="bad_argument")
    unit = {"d": "days", "h": "hours", "m": "minutes"}[match[2]]
    return timedelta(**{unit: int(match[1])})


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _iso(moment: float | None) -> str | None:
    return None if moment is None else datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: str


@dataclass(frozen=True)
class ApiKey:
    """What `keys list` shows of a key: never the token, which only its creator saw, once."""

    key_id: int
    user: str
    scopes: tuple[str, ...]
    created_at: str
    expires_at: str | None
    revoked: bool
    expired: bool


@dataclass(frozen=True)
class Session:
    """A logged-in browser: its user, the CSRF token its forms carry, the purpose stated for its searches."""

    user: str
    role: str
    csrf_token: str
    purpose: Purpose | None
    collections: frozenset[str] | None = None  # None: every collection (an admin)

    def actor(self, client: str | None) -> Actor:
        return Actor(self.user, self.role, collections=self.collections, client_address=client)


@dataclass
class LoginPolicy:
    """Lockout: after ``max_failures`` failed logins a user (and an address) waits, doubling each time."""

    max_failures: int = 5
    lockout_s: float = 30.0
    max_lockout_s: float = 3600.0
    session_ttl_s: float = 12 * 3600.0


class Accounts:
    """The accounts of one library folder; opened per call, so the CLI and a running server share it."""

    def __init__(self, library: Path, policy: LoginPolicy | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(library) / ACCOUNTS_FILE
        self.audit_log = AuditLog(Path(library))
        self.policy = policy or LoginPolicy()
        self.clock = clock

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not self.path.exists()
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        if fresh:
            os.chmod(self.path, 0o600)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
        return db

    def _audit(self, actor: str, action: str, details: dict, client: str | None = None) -> None:
        self.audit_log.append(actor, action, details, client_address=client)

    # -- users ---------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str, by: Actor) -> User:
        """A new user; the name is refused if taken, the password if shorter than MIN_PASSWORD."""
        if not _NAME.fullmatch(name):
            raise FaceFindError(f"bad user name {name!r}: letters, digits and . _ @ -, up to 64", reason="bad_argument")
        if role not in ROLES:
            raise FaceFindError(f"unknown role {role!r}; roles are {', '.join(ROLES)}", reason="bad_argument")
        if len(password) < MIN_PASSWORD:
            raise FaceFindError(f"a password needs at least {MIN_PASSWORD} characters", reason="bad_argument")
        created = _iso(self.clock())
        db = self._connect()
        try:
            db.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (name, role, _hasher.hash(password), created))
        except sqlite3.IntegrityError:
            raise FaceFindError(f"user {name} already exists", reason="exists") from None
        finally:
            db.close()
        self._audit(by.name, "user_add", {"user": name, "role": role}, by.client_address)
        return User(name, role, created)

    def users(self) -> list[User]:
        db = self._connect()
        try:
            return [User(*row) for row in db.execute("SELECT name, role, created_at FROM users ORDER BY name")]
        finally:
            db.close()

    def has_admin(self) -> bool:
        return any(user.role == "admin" for user in self.users())

    def set_role(self, name: str, role: str, by: Actor) -> User:
        """Give a user another role; their keys keep working only within the new role's scopes (key_actor)."""
        if role not in ROLES:
            raise FaceFindError(f"unknown role {role!r}; roles are {', '.join(ROLES)}", reason="bad_argument")
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            found = self._existing(db, name)
            if found[0] == "admin" and role != "admin":
                self._keep_an_admin(db, name)
            db.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
        self._audit(by.name, "user_role", {"user": name, "before": found[0], "after": role}, by.client_address)
        return next(user for user in self.users() if user.name == name)

    def remove_user(self, name: str, by: Actor) -> None:
        """Remove a user with everything that lets them in: keys, sessions, collection grants, shares."""
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            role = self._existing(db, name)[0]
            if role == "admin":
                self._keep_an_admin(db, name)
            counts = {table: db.execute(f"DELETE FROM {table} WHERE user = ?", (name,)).rowcount
                      for table in ("api_keys", "sessions", "grants", "shares")}
            db.execute("DELETE FROM users WHERE name = ?", (name,))
            db.execute("COMMIT")
        finally:
            if db.in_transaction:
                db.execute("ROLLBACK")
            db.close()
        self._audit(by.name, "user_remove", {"user": name, "role": role, "keys_removed": counts["api_keys"],
                                             "sessions_ended": counts["sessions"]}, by.client_address)

    def _existing(self, db: sqlite3.Connection, name: str) -> tuple[str, str]:
        found = self._user(db, name)
        if found is None:
            raise NotFoundError(f"no user {name}")
        return found

    @staticmethod
    def _keep_an_admin(db: sqlite3.Connection, leaving: str) -> None:
        others = db.execute("SELECT COUNT(*) FROM users WHERE role = 'admin' AND name != ?", (leaving,)).fetchone()[0]
        if not others:
            raise FaceFindError(f"{leaving} is the last admin: make someone else admin first", reason="bad_argument")

    # -- collections granted, searches shared -----------------------------------------------------

    def grant(self, name: str, collection: str, by: Actor, revoke: bool = False) -> None:
        """Let a user (and their keys) read a collection, or with ``revoke`` stop them; audited."""
        db = self._connect()
        try:
            self._existing(db, name)
            if revoke:
                changed = db.execute("DELETE FROM grants WHERE user = ? AND collection = ?",
                                     (name, collection)).rowcount
            else:
                changed = db.execute("INSERT OR IGNORE INTO grants VALUES (?, ?)", (name, collection)).rowcount
        finally:
            db.close()
        if revoke and not changed:
            raise NotFoundError(f"{name} was not granted collection {collection}")
        self._audit(by.name, "revoke" if revoke else "grant", {"user": name, "collection": collection},
                    by.client_address)

    def grants(self, name: str | None = None) -> dict[str, list[str]]:
        """User -> collections they were granted."""
        db = self._connect()
        try:
            rows = db.execute("SELECT user, collection FROM grants WHERE ? IS NULL OR user = ?"
                              " ORDER BY user, collection", (name, name)).fetchall()
        finally:
            db.close()
        granted: dict[str, list[str]] = {}
        for user, collection in rows:
            granted.setdefault(user, []).append(collection)
        return granted

    def collections_of(self, db: sqlite3.Connection, name: str, role: str) -> frozenset[str] | None:
        """What an actor of this user is limited to: None (everything) for an admin, else their grants."""
        if role == "admin":
            return None
        return frozenset(row[0] for row in db.execute("SELECT collection FROM grants WHERE user = ?", (name,)))

    def share(self, search_id: int, name: str, by: Actor) -> None:
        """Let a viewer (or anyone) read one past search; the caller has checked the search is the sharer's to share."""
        db = self._connect()
        try:
            self._existing(db, name)
            db.execute("INSERT OR REPLACE INTO shares VALUES (?, ?, ?, ?)",
                       (search_id, name, by.name, _iso(self.clock())))
        finally:
            db.close()
        self._audit(by.name, "share", {"search_id": search_id, "user": name}, by.client_address)

    def shared_with(self, name: str) -> set[int]:
        """The ids of the searches shared with a user."""
        db = self._connect()
        try:
            return {row[0] for row in db.execute("SELECT search_id FROM shares WHERE user = ?", (name,))}
        finally:
            db.close()

    def _user(self, db: sqlite3.Connection, name: str) -> tuple[str, str] | None:
        return db.execute("SELECT role, password_hash FROM users WHERE name = ?", (name,)).fetchone()

    # -- logins, lockout and sessions -------------------------------------------------------------

    def login(self, name: str, password: str, client: str | None) -> tuple[str, Session]:
        """A new session token (give it to the browser; only its hash is kept) for the right password.

        Failed logins count against both the name and the address; past the policy's limit both
        wait, doubling each time, so guessing is slow even across many names or many addresses.
        """
        subjects = [f"user:{name}", f"address:{client}"]
        now = self.clock()
        db = self._connect()
        try:
            waits = [row[0] - now for row in db.execute(
                "SELECT locked_until FROM login_failures WHERE subject IN (?, ?)", subjects) if row[0] > now]
            if waits:
                self._audit(name, "login", {"outcome": "locked_out"}, client)
                wait = int(max(waits)) + 1
                raise LockedOutError(f"too many failed logins: try again in {wait} s", wait)
            dummy = _dummy_hash()  # made (once) before the lookup, so even the first login's time tells nothing
            found = self._user(db, name)
            try:
                _hasher.verify(found[1] if found else dummy, password)
                ok = found is not None
            except (VerificationError, InvalidHashError):
                ok = False
            if not ok:
                for subject in subjects:
                    failures = 1 + (db.execute("SELECT failures FROM login_failures WHERE subject = ?",
                                               (subject,)).fetchone() or (0,))[0]
                    over = failures - self.policy.max_failures
                    locked = now + min(self.policy.lockout_s * 2 ** over, self.policy.max_lockout_s) if over >= 0 else 0
                    db.execute("INSERT OR REPLACE INTO login_failures VALUES (?, ?, ?)", (subject, failures, locked))
                self._audit(name, "login", {"outcome": "failure"}, client)
                raise AuthenticationError("wrong user name or password")
            db.execute("DELETE FROM login_failures WHERE subject IN (?, ?)", subjects)
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))
            token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
            db.execute("INSERT INTO sessions (token_sha256, user, csrf_token, expires_at) VALUES (?, ?, ?, ?)",
                       (_sha256(token), name, csrf, now + self.policy.session_ttl_s))
        finally:
            db.close()
        self._audit(name, "login", {"outcome": "success"}, client)
        return token, Session(name, found[0], csrf, None)

    def session(self, token: str) -> Session | None:
        """The live session of a browser's token, or None (unknown or expired)."""
        db = self._connect()
        try:
            row = db.execute(
                "SELECT s.user, u.role, s.csrf_token, s.purpose_case, s.purpose_reason FROM sessions s"
                " JOIN users u ON u.name = s.user WHERE s.token_sha256 = ? AND s.expires_at > ?",
                (_sha256(token), self.clock())).fetchone()
            collections = None if row is None else self.collections_of(db, row[0], row[1])
        finally:
            db.close()
        if row is None:
            return None
        return Session(row[0], row[1], row[2], Purpose(row[3], row[4]) if row[3] is not None else None, collections)

    def state_purpose(self, token: str, purpose: Purpose) -> None:
        """Keep the purpose a browser stated for the searches of its session."""
        db = self._connect()
        try:
            db.execute("UPDATE sessions SET purpose_case = ?, purpose_reason = ? WHERE token_sha256 = ?",
                       (purpose.case, purpose.reason, _sha256(token)))
        finally:
            db.close()

    def logout(self, token: str, client: str | None) -> None:
        session = self.session(token)
        db = self._connect()
        try:
            db.execute("DELETE FROM sessions WHERE token_sha256 = ?", (_sha256(token),))
        finally:
            db.close()
        if session is not None:
            self._audit(session.user, "logout", {}, client)

    # -- API keys ------------------------------------------------------------------------------

    def create_key(self, user: str, scopes: list[str], expires_in: timedelta | None, by: Actor) -> tuple[str, ApiKey]:
        """A new key for ``user``: its token (shown once, never stored) and what `keys list` shows of it."""
        if not scopes or not set(scopes) <= set(SCOPES):
            raise FaceFindError(f"give key scopes among {', '.join(SCOPES)}", reason="bad_argument")
        db = self._connect()
        try:
            found = self._user(db, user)
            if found is None:
                raise NotFoundError(f"no user {user}")
            beyond = set(scopes) - role_scopes(found[0])
            if beyond:
                raise FaceFindError(f"{user} is {found[0]}: a key of theirs may not have scope "
                                    f"{', '.join(sorted(beyond))}", reason="bad_argument")
            now = self.clock()
            token = KEY_PREFIX + secrets.token_urlsafe(32)
            expires = now + expires_in.total_seconds() if expires_in is not None else None
            key_id = db.execute(
                "INSERT INTO api_keys (user, scopes, token_sha256, created_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (user, ",".join(sorted(set(scopes))), _sha256(token), now, expires)).lastrowid
        finally:
            db.close()
        self._audit(by.name, "key_create", {"key_id": key_id, "user": user, "scopes": sorted(set(scopes)),
                                            "expires_at": _iso(expires)}, by.client_address)
        return token, ApiKey(key_id, user, tuple(sorted(set(scopes))), _iso(now), _iso(expires), False, False)

    def keys(self, user: str | None = None) -> list[ApiKey]:
        db = self._connect()
        try:
            rows = db.execute("SELECT id, user, scopes, created_at, expires_at, revoked_at FROM api_keys"
                              " WHERE ? IS NULL OR user = ? ORDER BY id", (user, user)).fetchall()
        finally:
            db.close()
        now = self.clock()
        return [ApiKey(key_id, owner, tuple(scopes.split(",")), _iso(created), _iso(expires), revoked is not None,
                       expires is not None and expires <= now)
                for key_id, owner, scopes, created, expires, revoked in rows]

    def revoke_key(self, key_id: int, by: Actor) -> None:
        db = self._connect()
        try:
            changed = db.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                                 (self.clock(), key_id)).rowcount
        finally:
            db.close()
        if not changed:
            raise NotFoundError(f"no unrevoked key {key_id}")
        self._audit(by.name, "key_revoke", {"key_id": key_id}, by.client_address)

    def key_actor(self, token: str, client: str | None) -> tuple[Actor, int]:
        """The actor a key acts as (its owner's current role, narrowed to the key's scopes) and the key's id."""
        db = self._connect()
        try:
            row = db.execute("SELECT k.id, k.user, u.role, k.scopes, k.expires_at, k.revoked_at FROM api_keys k"
                             " JOIN users u ON u.name = k.user WHERE k.token_sha256 = ?", (_sha256(token),)).fetchone()
            collections = None if row is None else self.collections_of(db, row[1], row[2])
        finally:
            db.close()
        if row is None:
            raise AuthenticationError("unknown API key")
        key_id, user, role, scopes, expires, revoked = row
        if revoked is not None:
            raise AuthenticationError(f"API key {key_id} was revoked")
        if expires is not None and expires <= self.clock():
            raise AuthenticationError(f"API key {key_id} expired at {_iso(expires)}")
        granted = frozenset(scopes.split(",")) & role_scopes(role)
        return Actor(user, role, key_scopes=granted, collections=collections, client_address=client), key_id
