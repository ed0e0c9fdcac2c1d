"""/api/v1: the library API over HTTP. Handlers only translate HTTP to :class:`FaceFind` calls and back."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from facefind.api import FaceFind
from facefind.errors import FaceFindError
from facefind.schema import (
    EvidenceResponse,
    FacesResponse,
    IndexJob,
    MediaItem,
    MediaPage,
    SearchLogPage,
    SearchResponse,
    VerifyResponse,
)
from facefind.search import DEFAULT_MAX_FMR
from facefind.service.actor import ActingFor, Quota, current_actor, requires, stated_purpose
from facefind.service.problems import PROBLEM_RESPONSES
from facefind.service.settings import ServiceSettings
from facefind.service.uploads import probe_from, read_image_upload
from facefind.watchlists.models import WatchHit, WatchHitPage, WatchlistInfo

router = APIRouter(prefix="/api/v1", dependencies=[Depends(current_actor)], responses=PROBLEM_RESPONSES)


def library_api(request: Request) -> FaceFind:
    return request.app.state.facefind


def settings_of(request: Request) -> ServiceSettings:
    return request.app.state.settings


Library = Annotated[FaceFind, Depends(library_api)]
Settings = Annotated[ServiceSettings, Depends(settings_of)]
PageOffset = Annotated[int, Query(ge=0)]
PageLimit = Annotated[int, Query(ge=1, le=500)]
UploadedImage = Annotated[UploadFile | None, File(description="The image, uploaded")]
ServerPath = Annotated[str | None, Form(description="Or: an image on the server, inside an allowed root")]
Case = Annotated[str | None, Form(description="Purpose: the case reference this search is for (required)")]
Reason = Annotated[str | None, Form(description="Purpose: why, in words (required; a minimum length applies)")]


class IndexJobRequest(BaseModel):
    paths: list[str] = Field(min_length=1, description="Folders or files on the server, inside the allowed roots")
    video_fps: float = Field(5.0, gt=0, description="Video frames analysed per second of footage")


class RemoveRequest(BaseModel):
    path: str | None = Field(None, description="A file, or a folder whose files are all removed")
    face_ids: list[int] | None = Field(None, description="Or: single faces by id")


class Removed(BaseModel):
    removed: int = Field(description="Faces removed from catalog and index")


@router.post("/search", response_model=SearchResponse, summary="Search the library for one face of a probe")
def search(
    request: Request,
    facefind: Library,
    settings: Settings,
    actor: ActingFor,
    quota: Quota,
    case: Case = None,
    reason: Reason = None,
    file: UploadedImage = None,
    path: ServerPath = None,
    face: Annotated[int | None, Form(description="Which face of the probe (0 = largest)")] = None,
    top_k: Annotated[int, Form()] = 10,
    max_fmr: Annotated[float, Form(description="Hide matches with a higher false match rate")] = DEFAULT_MAX_FMR,
    show_all: Annotated[bool, Form(description="Show the top-k candidates even beyond the limits, marked")] = False,
    within: Annotated[str | None, Form(alias="in", description="Only faces of this indexed file or folder")] = None,
    face_id: Annotated[int | None, Form(description="Or: a stored face (its id in search results): where else"
                                        " does it appear? It and its video track are not listed")] = None,
) -> SearchResponse:
    """Every search states its purpose (``case`` and ``reason``) and is written to the audit log."""
    if face_id is not None:
        if file is not None or path or face is not None:
            raise FaceFindError("give a stored face_id or a probe image (file or path, and face), not both",
                                reason="bad_argument")
        return facefind.search_face(face_id, top_k=top_k, max_fmr=max_fmr, show_all=show_all,
                                    within=Path(within) if within else None,
                                    purpose=stated_purpose(request, case, reason), actor=actor)
    probe = probe_from(file, path, facefind, settings)
    return facefind.search(probe, face=face, top_k=top_k, max_fmr=max_fmr, show_all=show_all,
                           within=Path(within) if within else None,
                           purpose=stated_purpose(request, case, reason), actor=actor)


@router.post("/verify", response_model=VerifyResponse, summary="Compare one face of image A with one of image B")
def verify(
    request: Request,
    facefind: Library,
    settings: Settings,
    actor: ActingFor,
    quota: Quota,
    case: Case = None,
    reason: Reason = None,
    a: UploadedImage = None,
    b: UploadedImage = None,
    a_path: ServerPath = None,
    b_path: ServerPath = None,
    face_a: Annotated[int | None, Form()] = None,
    face_b: Annotated[int | None, Form()] = None,
    max_fmr: Annotated[float, Form()] = DEFAULT_MAX_FMR,
) -> VerifyResponse:
    first = probe_from(a, a_path, facefind, settings, "first image")
    second = probe_from(b, b_path, facefind, settings, "second image")
    return facefind.verify(first, second, face_a, face_b, max_fmr, purpose=stated_purpose(request, case, reason),
                           actor=actor)


@router.post("/faces", response_model=FacesResponse, summary="Detect the faces of an image (not stored)")
def detect_faces(facefind: Library, settings: Settings, actor: ActingFor, file: UploadedImage = None,
                 path: ServerPath = None) -> FacesResponse:
    actor.require("faces")  # before the probe is read
    probe = probe_from(file, path, facefind, settings, "image")
    if isinstance(probe, Path):
        return facefind.faces(probe, actor=actor)
    return facefind.faces_in_upload(probe, actor=actor)


@router.get("/media", response_model=MediaPage, summary="The library's files, a page at a time",
            dependencies=[requires("faces")])
def media(facefind: Library, actor: ActingFor, status: str | None = None, offset: PageOffset = 0,
          limit: PageLimit = 50) -> MediaPage:
    return facefind.media_page(status, offset, limit, actor=actor)


@router.get("/media/item", response_model=MediaItem, summary="One catalogued file", dependencies=[requires("faces")])
def media_item(facefind: Library, actor: ActingFor, path: str) -> MediaItem:
    return facefind.media_item(path, actor=actor)


@router.get("/media/faces", response_model=FacesResponse, summary="The stored faces of one catalogued file")
def media_faces(facefind: Library, actor: ActingFor, path: str) -> FacesResponse:
    actor.require("faces")
    return facefind.faces(facefind.media_file(path, actor=actor), actor=actor)


@router.get("/media/file", response_class=FileResponse, summary="A catalogued image or video (range requests)",
            dependencies=[requires("read_results")])
def media_file(facefind: Library, actor: ActingFor, path: str) -> FileResponse:
    return FileResponse(facefind.media_file(path, actor=actor))


@router.get("/thumbnails/{name:path}", response_class=FileResponse, summary="A stored face crop or video frame",
            dependencies=[requires("read_results")])
def thumbnail(facefind: Library, actor: ActingFor, name: str) -> FileResponse:
    return FileResponse(facefind.thumbnail_file(name, actor=actor), media_type="image/jpeg")


@router.post("/jobs", response_model=IndexJob, status_code=202, summary="Start indexing server folders")
def start_job(facefind: Library, settings: Settings, actor: ActingFor, request: IndexJobRequest) -> IndexJob:
    return facefind.start_index_job(request.paths, settings.allow_roots, actor.name, settings.index_workers,
                                    request.video_fps, actor=actor)


@router.get("/jobs", response_model=list[IndexJob], summary="Index jobs of this server, newest first",
            dependencies=[requires("index")])
def jobs(facefind: Library, actor: ActingFor) -> list[IndexJob]:
    return facefind.index_jobs(actor=actor)


@router.get("/jobs/{job_id}", response_model=IndexJob, summary="An index job's progress or report",
            dependencies=[requires("index")])
def job(facefind: Library, actor: ActingFor, job_id: int) -> IndexJob:
    return facefind.index_job(job_id, actor=actor)


@router.post("/jobs/{job_id}/cancel", response_model=IndexJob, summary="Stop a job after the file in hand",
             dependencies=[requires("index")])
def cancel_job(facefind: Library, actor: ActingFor, job_id: int) -> IndexJob:
    return facefind.cancel_index_job(job_id, actor=actor)


@router.get("/stats", summary="Files by status, unindexed files by reason, faces by quality, searches")
def stats(facefind: Library, actor: ActingFor) -> dict:
    return facefind.stats(actor=actor)


@router.post("/remove", response_model=Removed, summary="Forget a file, a folder's files, or single faces")
def remove(facefind: Library, actor: ActingFor, request: RemoveRequest) -> Removed:
    return Removed(removed=facefind.remove(Path(request.path) if request.path else None, request.face_ids,
                                           actor=actor))


@router.get("/evidence/{match_id}", response_model=EvidenceResponse, summary="Evidence for one match, as JSON")
def evidence(facefind: Library, actor: ActingFor, match_id: str) -> EvidenceResponse:
    return facefind.evidence(match_id, actor=actor)


@router.get("/evidence/{match_id}/html", response_class=HTMLResponse, summary="The printable evidence page")
def evidence_page(facefind: Library, actor: ActingFor, match_id: str) -> HTMLResponse:
    return HTMLResponse(facefind.evidence_html(match_id, actor=actor))


@router.get("/searches", response_model=SearchLogPage, summary="The search log, newest first")
def searches(facefind: Library, actor: ActingFor, offset: PageOffset = 0, limit: PageLimit = 50) -> SearchLogPage:
    return facefind.search_log(offset, limit, actor=actor)


@router.get("/searches/{search_id}", response_model=SearchResponse, summary="A past search's results again")
def past_search(facefind: Library, actor: ActingFor, search_id: int) -> SearchResponse:
    return facefind.reopen_search(search_id, actor=actor)


# -- accountability: shares, account changes, the audit log --

class ShareRequest(BaseModel):
    user: str = Field(description="Who may read this search's results from now on (a viewer, typically)")


class RoleRequest(BaseModel):
    role: str = Field(description="admin, investigator, viewer or auditor")


class GrantRequest(BaseModel):
    collection: str = Field(description="A collection of the library's access config")
    revoke: bool = Field(False, description="Take it away instead")


@router.post("/searches/{search_id}/share", status_code=204, summary="Share a past search's results with a user")
def share_search(facefind: Library, actor: ActingFor, search_id: int, request: ShareRequest) -> None:
    facefind.share_search(search_id, request.user, actor=actor)


@router.post("/users/{name}/role", status_code=204, summary="Change a user's role (admin)")
def change_role(facefind: Library, actor: ActingFor, name: str, request: RoleRequest) -> None:
    facefind.change_role(name, request.role, actor=actor)


@router.delete("/users/{name}", status_code=204, summary="Remove a user: keys and sessions die with them (admin)")
def remove_user(facefind: Library, actor: ActingFor, name: str) -> None:
    facefind.remove_user(name, actor=actor)


@router.post("/users/{name}/grants", summary="Grant (or revoke) a collection to a user (admin)")
def grant(facefind: Library, actor: ActingFor, name: str, request: GrantRequest) -> dict[str, list[str]]:
    return facefind.grant_collection(name, request.collection, request.revoke, actor=actor)


@router.get("/audit", summary="Audit log entries, newest first, filtered (auditor)")
def audit_entries(facefind: Library, actor: ActingFor, actor_name: Annotated[str | None, Query(alias="actor")] = None,
                  action: str | None = None, case: str | None = None, since: datetime | None = None,
                  until: datetime | None = None) -> list[dict]:
    return facefind.audit_entries(since, until, actor_name, action, case, actor=actor)


# -- watchlists --

@router.get("/watchlists", response_model=list[WatchlistInfo], summary="The watchlists you may see")
def watchlists(facefind: Library, actor: ActingFor) -> list[WatchlistInfo]:
    return facefind.watch_list(actor=actor)


@router.post("/watchlists", response_model=WatchlistInfo, status_code=201,
             summary="Watch for people or reference photos in everything indexed from now on")
def add_watchlist(
    facefind: Library, settings: Settings, actor: ActingFor,
    name: Annotated[str, Form(description="The watchlist's name (unique)")],
    photo: Annotated[list[UploadFile] | None, File(description="Reference photos (largest face; no image kept)")]
    = None,
    photo_path: Annotated[list[str] | None, Form(description="Or: reference photos on the server")] = None,
    person: Annotated[list[int] | None, Form(description="People (ids of /people) to watch for")] = None,
    max_fmr: Annotated[float, Form(description="Raise a hit only at or below this false match rate")]
    = DEFAULT_MAX_FMR,
    visible_user: Annotated[list[str] | None, Form(description="Users who see its hits (you always do)")] = None,
    visible_role: Annotated[list[str] | None, Form(description="Roles whose members see its hits")] = None,
    webhook_url: Annotated[str | None, Form(description="POST each hit as JSON here")] = None,
    webhook_secret: Annotated[str | None, Form(description="Signs each body: header X-Facefind-Signature "
                                                           "= sha256=HMAC-SHA256(secret, body)")] = None,
) -> WatchlistInfo:
    actor.require("watch_manage")  # before any upload is read
    photos: list[Path | bytes] = [read_image_upload(upload, settings) for upload in photo or []]
    photos += [facefind.allowed_path(path, settings.allow_roots) for path in photo_path or []]
    return facefind.watch_add(name, person or [], photos, max_fmr, visible_user or [], visible_role or [],
                              webhook_url or None, webhook_secret or None, actor=actor)


@router.post("/watchlists/{watchlist_id}/pause", response_model=WatchlistInfo,
             summary="Pause a watchlist: later ingests raise no hits on it; its hits stay (audited)")
def pause_watchlist(facefind: Library, actor: ActingFor, watchlist_id: int) -> WatchlistInfo:
    return facefind.watch_pause(watchlist_id, actor=actor)


@router.post("/watchlists/{watchlist_id}/resume", response_model=WatchlistInfo,
             summary="Resume a paused watchlist (audited)")
def resume_watchlist(facefind: Library, actor: ActingFor, watchlist_id: int) -> WatchlistInfo:
    return facefind.watch_pause(watchlist_id, paused=False, actor=actor)


@router.delete("/watchlists/{watchlist_id}", status_code=204,
               summary="Delete a watchlist with its reference templates and hits (audited)")
def remove_watchlist(facefind: Library, actor: ActingFor, watchlist_id: int) -> None:
    facefind.watch_remove(watchlist_id, actor=actor)


@router.get("/watchlists/hits", response_model=WatchHitPage, summary="The hit feed: hits you may see, newest first")
def watch_hits(facefind: Library, actor: ActingFor, state: str | None = None, watchlist: int | None = None,
               offset: PageOffset = 0, limit: PageLimit = 50) -> WatchHitPage:
    return facefind.watch_hits(state, watchlist, offset, limit, actor=actor)


@router.post("/watchlists/hits/{hit_id}/acknowledge", response_model=WatchHit, summary="Acknowledge a hit (audited)")
def acknowledge_hit(facefind: Library, actor: ActingFor, hit_id: int) -> WatchHit:
    return facefind.hit_acknowledge(hit_id, actor=actor)


@router.post("/watchlists/hits/{hit_id}/dismiss", response_model=WatchHit,
             summary="Dismiss a hit as a wrong match (audited)")
def dismiss_hit(facefind: Library, actor: ActingFor, hit_id: int) -> WatchHit:
    return facefind.hit_dismiss(hit_id, actor=actor)
