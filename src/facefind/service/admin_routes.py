"""The admin's accounts page: users and their roles, API keys (created, shown once, revoked).

The same `Accounts` calls as `facefind users` / `facefind keys`, with the logged-in admin as the
actor the audit log names. Every form carries the session's CSRF token (checked in actor.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from facefind.access import ROLES, SCOPES
from facefind.accounts import parse_duration
from facefind.errors import FaceFindError
from facefind.service.actor import ActingFor, accounts_of, page_actor, requires

router = APIRouter(prefix="/admin", dependencies=[Depends(page_actor), requires("settings")],
                   include_in_schema=False)


def _accounts_page(request: Request, status: int = 200, **context) -> HTMLResponse:
    accounts = accounts_of(request)
    return request.app.state.templates.TemplateResponse(
        request, "accounts.html", {"active": "accounts", "users": accounts.users(), "keys": accounts.keys(),
                                   "roles": ROLES, "scopes": SCOPES, "grants": accounts.grants(),
                                   "collections": request.app.state.facefind.access_config().collections,
                                   **context}, status_code=status)


@router.get("/accounts")
def accounts_page(request: Request) -> HTMLResponse:
    return _accounts_page(request)


@router.post("/users")
def add_user(request: Request, actor: ActingFor, name: Annotated[str, Form()], role: Annotated[str, Form()],
             password: Annotated[str, Form()]) -> Response:
    try:
        accounts_of(request).add_user(name.strip(), role, password, actor)
    except FaceFindError as error:
        return _accounts_page(request, 400, error=str(error))
    return RedirectResponse("/admin/accounts", status_code=303)


@router.post("/keys")
def create_key(request: Request, actor: ActingFor, user: Annotated[str, Form()],
               scope: Annotated[list[str] | None, Form()] = None, expires: Annotated[str, Form()] = "30d",
               ) -> HTMLResponse:
    """The new key's token is on this one page and nowhere else, ever."""
    try:
        token, key = accounts_of(request).create_key(user, scope or [], parse_duration(expires), actor)
    except FaceFindError as error:
        return _accounts_page(request, 400, error=str(error))
    return _accounts_page(request, new_token=token, new_key=key)


@router.post("/keys/{key_id}/revoke")
def revoke_key(request: Request, actor: ActingFor, key_id: int) -> Response:
    accounts_of(request).revoke_key(key_id, actor)
    return RedirectResponse("/admin/accounts", status_code=303)
