"""People over HTTP: /api/v1/people (JSON) and the /people pages of the web UI.

Handlers only translate HTTP to :class:`FaceFind` people calls, which check access and audit.
The pages' forms carry the session's CSRF token (checked in actor.py) and answer with a redirect
back to the page (post/redirect/get), or the page again with the refusal shown.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from facefind.errors import FaceFindError
from facefind.people.models import BuildReport, CoAppearance, PersonDetail, PersonSummary
from facefind.people.models import DEFAULT_PEOPLE_FMR
from facefind.service.actor import ActingFor, current_actor, page_actor, requires
from facefind.service.api_routes import Library
from facefind.service.problems import PROBLEM_RESPONSES

api = APIRouter(prefix="/api/v1/people", dependencies=[Depends(current_actor)], responses=PROBLEM_RESPONSES,
                tags=["people"])
pages = APIRouter(prefix="/people", dependencies=[Depends(page_actor)], include_in_schema=False)


class BuildRequest(BaseModel):
    max_fmr: float = Field(DEFAULT_PEOPLE_FMR, gt=0, le=1, description="Links only at this false match rate or lower")


class RenameRequest(BaseModel):
    name: str | None = Field(description="The person's name; null clears it")


class MergeRequest(BaseModel):
    others: list[int] = Field(min_length=1, description="People whose faces all move into this one")


class SplitRequest(BaseModel):
    face_ids: list[int] | None = Field(None, description="Faces to take out; none: re-cluster the person strictly")


class FaceRequest(BaseModel):
    face_id: int


class HideRequest(BaseModel):
    hidden: bool = True


class SplitResult(BaseModel):
    people: list[int] = Field(description="The people the faces are in now, the original first")


@api.post("/build", response_model=BuildReport, summary="Group every face into people (manual decisions stay)")
def build(facefind: Library, actor: ActingFor, body: BuildRequest | None = None) -> BuildReport:
    return facefind.people_build((body or BuildRequest()).max_fmr, actor=actor)


@api.get("", response_model=list[PersonSummary], summary="People, most faces first")
def list_people(facefind: Library, actor: ActingFor, hidden: bool = Query(False)) -> list[PersonSummary]:
    return facefind.people_list(hidden, actor=actor)


@api.get("/export", response_class=PlainTextResponse, summary="The co-appearance graph as JSON or GraphML")
def export(facefind: Library, actor: ActingFor, format: str = Query("json", pattern="^(json|graphml)$")) -> Response:
    media_type = "application/json" if format == "json" else "application/graphml+xml"
    return Response(facefind.people_export(format, actor=actor), media_type=media_type)


@api.get("/{person_id}", response_model=PersonDetail, summary="One person and every face")
def person(facefind: Library, actor: ActingFor, person_id: int) -> PersonDetail:
    return facefind.person(person_id, actor=actor)


@api.post("/{person_id}/name", response_model=PersonDetail, summary="Name a person")
def rename(facefind: Library, actor: ActingFor, person_id: int, body: RenameRequest) -> PersonDetail:
    return facefind.person_rename(person_id, body.name, actor=actor)


@api.post("/{person_id}/merge", response_model=PersonDetail, summary="Merge other people into this one")
def merge(facefind: Library, actor: ActingFor, person_id: int, body: MergeRequest) -> PersonDetail:
    return facefind.person_merge(person_id, body.others, actor=actor)


@api.post("/{person_id}/split", response_model=SplitResult, summary="Split faces off into a new person")
def split(facefind: Library, actor: ActingFor, person_id: int, body: SplitRequest) -> SplitResult:
    return SplitResult(people=facefind.person_split(person_id, body.face_ids, actor=actor))


@api.post("/{person_id}/faces", response_model=PersonDetail, summary="Move a face into this person")
def move(facefind: Library, actor: ActingFor, person_id: int, body: FaceRequest) -> PersonDetail:
    return facefind.face_move(body.face_id, person_id, actor=actor)


@api.post("/{person_id}/not", status_code=204, summary="Not this person: the face leaves and never comes back")
def not_person(facefind: Library, actor: ActingFor, person_id: int, body: FaceRequest) -> Response:
    facefind.face_not_person(body.face_id, person_id, actor=actor)
    return Response(status_code=204)


@api.post("/{person_id}/hide", status_code=204, summary="Hide a person (or show them again)")
def hide(facefind: Library, actor: ActingFor, person_id: int, body: HideRequest) -> Response:
    facefind.person_hide(person_id, body.hidden, actor=actor)
    return Response(status_code=204)


@api.get("/{person_id}/with", response_model=list[CoAppearance], summary="Who appears with this person")
def coappearance(facefind: Library, actor: ActingFor, person_id: int) -> list[CoAppearance]:
    return facefind.person_coappearance(person_id, actor=actor)


# -- the web UI's pages ------------------------------------------------------------------------------


EDITS = requires("people_edit")  # checked before a form's decision, whose refusal would re-render the page


def _page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, name, {"active": "people", **context},
                                                        status_code=status)


@pages.get("")
def people_page(request: Request, facefind: Library, actor: ActingFor, hidden: bool = False) -> HTMLResponse:
    return _page(request, "people.html", people=facefind.people_list(hidden, actor=actor), hidden=hidden)


@pages.post("/build", dependencies=[EDITS])
def build_form(request: Request, facefind: Library, actor: ActingFor) -> Response:
    try:
        facefind.people_build(actor=actor)
    except FaceFindError as error:
        return _page(request, "people.html", 400, people=facefind.people_list(actor=actor), error=str(error))
    return RedirectResponse("/people", status_code=303)


def _person_page(request: Request, facefind, actor, person_id: int, status: int = 200,
                 error: str | None = None) -> HTMLResponse:
    return _page(request, "person.html", status, person=facefind.person(person_id, actor=actor),
                 together=facefind.person_coappearance(person_id, actor=actor), error=error)


@pages.get("/{person_id}")
def person_page(request: Request, facefind: Library, actor: ActingFor, person_id: int) -> HTMLResponse:
    return _person_page(request, facefind, actor, person_id)


def _decided(request: Request, facefind, actor, person_id: int, decide) -> Response:
    """Carry out one form's decision; back to the person (or to the list, if the person is gone)."""
    try:
        target = decide()
    except FaceFindError as error:
        return _person_page(request, facefind, actor, person_id, 409 if error.reason == "people_conflict" else 400,
                            str(error))
    return RedirectResponse(f"/people/{target if isinstance(target, int) else person_id}", status_code=303)


@pages.post("/{person_id}/name", dependencies=[EDITS])
def rename_form(request: Request, facefind: Library, actor: ActingFor, person_id: int,
                name: Annotated[str, Form()] = "") -> Response:
    return _decided(request, facefind, actor, person_id,
                    lambda: facefind.person_rename(person_id, name.strip() or None, actor=actor))


@pages.post("/{person_id}/merge", dependencies=[EDITS])
def merge_form(request: Request, facefind: Library, actor: ActingFor, person_id: int,
               other: Annotated[int, Form()]) -> Response:
    return _decided(request, facefind, actor, person_id,
                    lambda: facefind.person_merge(person_id, [other], actor=actor))


@pages.post("/{person_id}/split", dependencies=[EDITS])
def split_form(request: Request, facefind: Library, actor: ActingFor, person_id: int,
               face_id: Annotated[list[int] | None, Form()] = None) -> Response:
    return _decided(request, facefind, actor, person_id,
                    lambda: facefind.person_split(person_id, face_id or None, actor=actor)[-1])


@pages.post("/{person_id}/not", dependencies=[EDITS])
def not_person_form(request: Request, facefind: Library, actor: ActingFor, person_id: int,
                    face_id: Annotated[int, Form()]) -> Response:
    return _decided(request, facefind, actor, person_id,
                    lambda: facefind.face_not_person(face_id, person_id, actor=actor))


@pages.post("/{person_id}/hide", dependencies=[EDITS])
def hide_form(request: Request, facefind: Library, actor: ActingFor, person_id: int,
              hidden: Annotated[bool, Form()] = True) -> Response:
    return _decided(request, facefind, actor, person_id,
                    lambda: facefind.person_hide(person_id, hidden, actor=actor))
