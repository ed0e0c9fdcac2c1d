"""Errors as RFC 9457 problem details (application/problem+json), with the CLI's reason codes.

Every FaceFindError carries a short ``reason``; the HTTP status follows from it. Pages of the
web UI get the same information as an HTML page instead of JSON.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from facefind.errors import FaceFindError
from facefind.service.actor import LoginRequired

PROBLEM_TYPE = "application/problem+json"
STATUS_BY_REASON = {
    "bad_argument": 400,
    "bad_face_index": 422,
    "no_face": 422,
    "empty": 422,
    "corrupt": 422,
    "unreadable": 422,
    "not_an_image": 415,
    "unsupported_format": 415,
    "not_a_file": 422,
    "too_large": 413,
    "forbidden_path": 403,
    "forbidden": 403,
    "csrf": 403,
    "unauthenticated": 401,
    "purpose_required": 422,
    "poor_reference": 422,
    "rate_limited": 429,
    "locked_out": 429,
    "exists": 409,
    "permission_denied": 403,
    "not_found": 404,
    "busy": 409,
    "model_mismatch": 409,
    "disk_full": 507,
    "catalog_unavailable": 503,  # the PostgreSQL / index server cannot be reached: try again later
    "index_unavailable": 503,  # the Milvus server cannot be reached or failed
    "cluster_unavailable": 503,  # the Dask scheduler cannot be reached or has no workers
    "people_conflict": 409,
}
REASON_BY_STATUS = {400: "bad_argument", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                    422: "bad_argument"}
log = logging.getLogger("facefind.service")


class Problem(BaseModel):
    """RFC 9457 problem details, plus facefind's machine-readable ``reason`` code."""

    type: str = Field(description="urn:facefind:problem:REASON")
    title: str
    status: int
    detail: str = Field(description="What went wrong, for a person")
    reason: str = Field(description="The same reason code the CLI and `facefind stats` use")
    instance: str = Field(description="The request path")


PROBLEM_RESPONSES = {
    status: {"model": Problem, "content": {PROBLEM_TYPE: {}}, "description": description}
    for status, description in (
        (400, "bad_argument"), (401, "unauthenticated: no, unknown, expired or revoked key; no session"),
        (403, "forbidden (role or key scope), forbidden_path, csrf"), (404, "not_found"), (409, "busy"),
        (413, "too_large"), (415, "not_an_image"),
        (422, "no_face, bad_face_index, corrupt, purpose_required, invalid fields"),
        (429, "rate_limited (Retry-After says when to try again)"),
    )
}


def status_for(reason: str) -> int:
    """The HTTP status for a reason code; unknown ones are server-side faults (500)."""
    return STATUS_BY_REASON.get(reason, 500)


def problem_body(status: int, reason: str, detail: str, instance: str, **extra) -> dict:
    return {
        "type": f"urn:facefind:problem:{reason}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "reason": reason,
        "instance": instance,
        **extra,
    }


def problem_response(request: Request, status: int, reason: str, detail: str, **extra) -> Response:
    """JSON problem details for the API; the same facts as an HTML page for the web UI."""
    body = problem_body(status, reason, detail, request.url.path, **extra)
    if request.url.path.startswith("/api/") or "text/html" not in request.headers.get("accept", ""):
        return JSONResponse(body, status_code=status, media_type=PROBLEM_TYPE)
    templates = request.app.state.templates
    return templates.TemplateResponse(request, "error.html", {"problem": body}, status_code=status)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem response (never a traceback)."""

    @app.exception_handler(FaceFindError)
    async def facefind_error(request: Request, error: FaceFindError) -> Response:
        response = problem_response(request, status_for(error.reason), error.reason, str(error))
        if getattr(error, "retry_after", None) is not None:
            response.headers["Retry-After"] = str(error.retry_after)
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="facefind"'
        return response

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, error: LoginRequired) -> Response:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?next=" + quote(back, safe=""), status_code=303)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        fields = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in error.errors()]
        detail = "; ".join(f"{f['where']}: {f['problem']}" for f in fields)
        return problem_response(request, 422, "bad_argument", detail, errors=fields)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> Response:
        reason = REASON_BY_STATUS.get(error.status_code, "error")
        return problem_response(request, error.status_code, reason, str(error.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return problem_response(request, 500, "internal", "an unexpected error occurred; the server log has details")

