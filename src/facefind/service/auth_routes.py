"""Logging in and out of the web UI, and stating the purpose a session's searches are for.

The session cookie is HttpOnly and SameSite=Strict, and Secure whenever the page came over https.
Served on loopback over plain http (the default, this machine only), a Secure cookie would never
be sent back, so there it goes without that flag; anything reachable from elsewhere belongs behind
https. The login form itself carries a double-submit token (a cookie and a field that must agree),
so another site cannot log a browser in under an account of its choosing.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from facefind.access import Actor, Purpose
from facefind.accounts import AuthenticationError, LockedOutError
from facefind.errors import FaceFindError
from facefind.service.actor import SESSION_COOKIE, accounts_of, client_address, page_actor

router = APIRouter(include_in_schema=False)
LOGIN_CSRF_COOKIE = "facefind_login_csrf"


def _safe_next(target: str) -> str:
    """Only a path on this server: never an open redirect to another site."""
    return target if target.startswith("/") and not target.startswith(("//", "/\\")) else "/search"


def _cookie_flags(request: Request) -> dict:
    return {"httponly": True, "samesite": "strict", "secure": request.url.scheme == "https", "path": "/"}


def _login_page(request: Request, next_page: str, error: str | None = None, status: int = 200) -> HTMLResponse:
    token = secrets.token_urlsafe(32)
    response = request.app.state.templates.TemplateResponse(
        request, "login.html", {"next": _safe_next(next_page), "error": error, "login_csrf": token},
        status_code=status)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, max_age=3600, **_cookie_flags(request))
    return response


@router.get("/login")
def login_page(request: Request, next: str = "/search") -> HTMLResponse:
    return _login_page(request, next)


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    login_csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/search",
) -> Response:
    """A session for the right password; a clear page (401, or 429 with Retry-After) otherwise."""
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not hmac.compare_digest(expected, login_csrf):
        return _login_page(request, next, "This login form expired: please try again.", 403)
    try:
        token, _ = accounts_of(request).login(name, password, client_address(request))
    except LockedOutError as error:
        response = _login_page(request, next, str(error), 429)
        response.headers["Retry-After"] = str(error.retry_after)
        return response
    except AuthenticationError as error:
        return _login_page(request, next, str(error), 401)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(accounts_of(request).policy.session_ttl_s),
                        **_cookie_flags(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, actor: Annotated[Actor, Depends(page_actor)]) -> RedirectResponse:
    """End the session on the server too (the cookie alone would still work if copied)."""
    accounts_of(request).logout(request.cookies[SESSION_COOKIE], actor.client_address)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/purpose")
def state_purpose(
    request: Request,
    actor: Annotated[Actor, Depends(page_actor)],
    case: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Keep the case and reason for this session's searches (checked now, as the library will)."""
    actor.require("search")
    try:
        purpose = Purpose(case, reason).checked(request.app.state.facefind.access_config().min_reason_length)
    except FaceFindError as error:
        return request.app.state.templates.TemplateResponse(
            request, "search.html", {"active": "search", "purpose": None, "purpose_error": str(error),
                                     "case": case, "reason": reason}, status_code=422)
    accounts_of(request).state_purpose(request.cookies[SESSION_COOKIE], purpose)
    return RedirectResponse("/search", status_code=303)
