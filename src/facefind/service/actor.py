"""Who is making a request: the API's routes depend on :func:`current_actor`, the UI's on :func:`page_actor`.

A request carries an API key (``Authorization: Bearer ffk_...``) or a login session cookie; either
way it becomes the library's own :class:`facefind.access.Actor`, which every library call is given,
so HTTP requests obey the same rules as the command line. A state-changing request made with a
session cookie must also carry that session's CSRF token (header ``X-CSRF-Token`` or form field
``csrf_token``); a key request need not, as a browser never adds an Authorization header by itself.
Routes whose library calls check no permission of their own declare one with :func:`requires`.
"""

from __future__ import annotations

import hmac
import time
from collections import defaultdict, deque
from threading import Lock
from typing import Annotated

from fastapi import Depends, Request

from facefind.access import Actor, ForbiddenError, Purpose
from facefind.accounts import Accounts, AuthenticationError, Session
from facefind.errors import FaceFindError

SESSION_COOKIE = "facefind_session"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class LoginRequired(Exception):
    """A UI page was asked for without a valid session: the answer is the login page."""


class RateLimitedError(FaceFindError):
    """More searches this hour than the server allows one user or key; retry after ``retry_after`` s."""

    reason = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SlidingWindow:
    """At most ``limit`` events per subject in any ``window_s``: an in-memory count, as the server is one process."""

    def __init__(self, limit: int, window_s: float = 3600.0) -> None:
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = Lock()

    def take(self, subject: str) -> None:
        now = time.monotonic()
        with self._lock:
            events = self._events[subject]
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                wait = int(events[0] + self.window_s - now) + 1
                raise RateLimitedError(f"{self.limit} searches per hour reached for {subject}; retry in {wait} s",
                                       wait)
            events.append(now)


def accounts_of(request: Request) -> Accounts:
    return request.app.state.accounts


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def authenticate(request: Request) -> Actor:
    """The request's actor from its API key or session cookie (and CSRF token); AuthenticationError if none."""
    accounts = accounts_of(request)
    client = client_address(request)
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("send an API key as: Authorization: Bearer <key>")
        actor, key_id = accounts.key_actor(token.strip(), client)
        request.state.quota_subject = f"key {key_id}"
    else:
        token = request.cookies.get(SESSION_COOKIE)
        session = accounts.session(token) if token else None
        if session is None:
            raise AuthenticationError("log in, or send an API key (Authorization: Bearer <key>)")
        if request.method not in SAFE_METHODS:
            await _check_csrf(request, session)
        actor = session.actor(client)
        request.state.session = session
        request.state.quota_subject = f"user {session.user}"
    request.state.actor = actor
    return actor


async def _check_csrf(request: Request, session: Session) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        sent = (await request.form()).get(CSRF_FIELD)
    if not isinstance(sent, str) or not hmac.compare_digest(sent, session.csrf_token):
        raise ForbiddenError("this form is missing its CSRF token: reload the page and try again", reason="csrf")


async def current_actor(request: Request) -> Actor:
    """The API's actor: authenticated (once per request), or 401."""
    known = getattr(request.state, "actor", None)
    return known if known is not None else await authenticate(request)


async def page_actor(request: Request) -> Actor:
    """The UI's actor: authenticated, or off to the login page."""
    try:
        return await authenticate(request)
    except AuthenticationError:
        raise LoginRequired() from None


ActingFor = Annotated[Actor, Depends(current_actor)]


def requires(operation: str):
    """A route's permission (access.PERMISSIONS) for routes whose library calls check none themselves."""

    def check(actor: ActingFor) -> Actor:
        actor.require(operation)
        return actor

    return Depends(check)


def search_quota(request: Request, actor: ActingFor) -> None:
    """Count a search or verify against its user's or key's hourly allowance (429 beyond it)."""
    request.app.state.search_quota.take(request.state.quota_subject)


Quota = Annotated[None, Depends(search_quota)]


def stated_purpose(request: Request, case: str | None, reason: str | None) -> Purpose:
    """The purpose sent with the request, else the one stated for this login session.

    With neither, an empty purpose goes to the library, which refuses it (``purpose_required``):
    there is no default purpose anywhere.
    """
    if case is None and reason is None:
        session: Session | None = getattr(request.state, "session", None)
        if session is not None and session.purpose is not None:
            return session.purpose
    return Purpose(case or "", reason or "")
