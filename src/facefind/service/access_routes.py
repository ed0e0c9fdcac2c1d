"""Accountability pages: the auditor's view of the audit log, sharing a past search, account changes.

The same library calls as the CLI and /api/v1 (``FaceFind.audit_entries``, ``share_search``,
``change_role``, ``remove_user``, ``grant_collection``), with the logged-in user as the actor, so
the permission table and the audit log apply unchanged. Every form carries the session's CSRF token.
"""

from __future__ import annotations

from datetime import datetime, time, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from facefind.errors import FaceFindError, NotFoundError
from facefind.service.actor import ActingFor, page_actor
from facefind.service.admin_routes import _accounts_page
from facefind.service.api_routes import Library

router = APIRouter(dependencies=[Depends(page_actor)], include_in_schema=False)
ACTIONS = ("search", "verify", "evidence_export", "share", "index", "remove", "erase", "login", "logout", "denied",
           "user_add", "user_role", "user_remove", "grant", "revoke", "key_create", "key_revoke", "settings",
           "collection_set", "collection_remove", "audit_export")


def _day(text: str | None, end: bool = False) -> datetime | None:
    """A date (or date and time) from the filter form: a whole day is meant inclusively, in UTC."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise FaceFindError(f"{text!r} is not a date like 2026-01-31", reason="bad_argument") from None
    if len(text) == 10:  # a date alone: from its first to its last moment
        moment = datetime.combine(moment.date(), time.max if end else time.min)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _filters(actor: str | None, action: str | None, case: str | None, since: str | None,
             until: str | None) -> dict:
    return {"who": actor or None, "action": action or None, "case": case or None,
            "since": _day(since), "until": _day(until, end=True)}


@router.get("/audit")
def audit_page(request: Request, facefind: Library, actor: ActingFor, who: str | None = None,
               action: str | None = None, case: str | None = None, since: str | None = None,
               until: str | None = None) -> HTMLResponse:
    """The audit log, newest first, filtered by actor, action, purpose case and date."""
    chosen = _filters(who, action, case, since, until)
    entries = facefind.audit_entries(chosen["since"], chosen["until"], chosen["who"], chosen["action"],
                                     chosen["case"], actor=actor)
    form = {"who": who or "", "action": action or "", "case": case or "", "since": since or "", "until": until or ""}
    return request.app.state.templates.TemplateResponse(
        request, "audit.html", {"active": "audit", "entries": entries[:500], "total": len(entries), "form": form,
                                "actions": ACTIONS, "query": request.url.query})


@router.get("/audit/entries/{entry_id}")
def audit_entry_page(request: Request, facefind: Library, actor: ActingFor, entry_id: int) -> HTMLResponse:
    """One entry as it was seen: for a search, the probe crop, the parameters and the results with their FMR."""
    entry = next((e for e in facefind.audit_entries(actor=actor) if e["id"] == entry_id), None)
    if entry is None:
        raise NotFoundError(f"no audit entry {entry_id}")
    return request.app.state.templates.TemplateResponse(request, "audit_entry.html",
                                                        {"active": "audit", "entry": entry})


@router.get("/audit/export")
def audit_export(facefind: Library, actor: ActingFor, format: str = "jsonl", who: str | None = None,
                 action: str | None = None, case: str | None = None, since: str | None = None,
                 until: str | None = None) -> Response:
    """The filtered entries as a JSON Lines or CSV download (the export is itself audited)."""
    chosen = _filters(who, action, case, since, until)
    text = facefind.audit_export(None, format, chosen["since"], chosen["until"], chosen["who"], chosen["action"],
                                 chosen["case"], actor=actor)
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return Response(text, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="facefind-audit.{format}"'})


@router.post("/history/{search_id}/share")
def share_search(request: Request, facefind: Library, actor: ActingFor, search_id: int,
                 user: Annotated[str, Form()]) -> Response:
    facefind.share_search(search_id, user.strip(), actor=actor)
    return RedirectResponse(f"/history/{search_id}?shared={user.strip()}", status_code=303)


def _account_change(request: Request, change) -> Response:
    """Do an admin's account change; its refusal is shown on the accounts page (400)."""
    try:
        change()
    except FaceFindError as error:
        if error.reason == "forbidden":
            raise
        return _accounts_page(request, 400, error=str(error))
    return RedirectResponse("/admin/accounts", status_code=303)


@router.post("/admin/users/{name}/role")
def change_role(request: Request, facefind: Library, actor: ActingFor, name: str,
                role: Annotated[str, Form()]) -> Response:
    return _account_change(request, lambda: facefind.change_role(name, role, actor=actor))


@router.post("/admin/users/{name}/remove")
def remove_user(request: Request, facefind: Library, actor: ActingFor, name: str) -> Response:
    return _account_change(request, lambda: facefind.remove_user(name, actor=actor))


@router.post("/admin/users/{name}/grants")
def grant(request: Request, facefind: Library, actor: ActingFor, name: str, collection: Annotated[str, Form()],
          revoke: Annotated[bool, Form()] = False) -> Response:
    return _account_change(request, lambda: facefind.grant_collection(name, collection, revoke, actor=actor))
