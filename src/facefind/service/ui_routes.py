"""The web UI's pages: server-rendered Jinja2 templates over the same library API calls as /api/v1."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from facefind.api import FaceFind
from facefind.access import ForbiddenError
from facefind.errors import FaceFindError
from facefind.schema import SearchResponse
from facefind.service.actor import ActingFor, page_actor, requires
from facefind.service.api_routes import Library, Settings, search
from facefind.watchlists.models import HIT_STATES

router = APIRouter(dependencies=[Depends(page_actor)], include_in_schema=False)


def add_template_helpers(templates: Jinja2Templates, facefind: FaceFind) -> None:
    """URLs for stored files and crops, and numbers in words, for every template."""
    thumbs = facefind.library_path / "thumbs"

    def thumb_url(stored: str | None) -> str | None:
        if not stored:
            return None
        return "/api/v1/thumbnails/" + quote(Path(stored).relative_to(thumbs).as_posix())

    def media_url(path: str) -> str:
        return "/api/v1/media/file?path=" + quote(path, safe="")

    def clock(seconds: float) -> str:
        minutes, rest = divmod(seconds, 60)
        return f"{int(minutes)}:{rest:04.1f}"

    templates.env.globals.update(thumb_url=thumb_url, media_url=media_url, clock=clock, quote=quote)


def _page(request: Request, name: str, **context) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, name, context)


def _results(request: Request, facefind: FaceFind, result: SearchResponse, reopened: bool = False) -> HTMLResponse:
    """The result cards; videos carry their length so the timeline can be drawn to scale."""
    durations = {}
    for path in {m.source.path for m in result.matches if m.video} | {a.path for a in result.appearances}:
        try:
            durations[path] = facefind.media_item(path, actor=request.state.actor).duration_s
        except FaceFindError:
            durations[path] = None
    boxes = [{"face_index": f.face_index, **f.box.model_dump()} for f in result.faces_in_probe]
    return _page(request, "_results.html", result=result, durations=durations, reopened=reopened, probe_boxes=boxes)


HOME_PAGES = (("search", "/search"), ("read_results", "/history"), ("settings", "/admin/accounts"),
              ("audit_read", "/audit"))


@router.get("/")
def home(actor: ActingFor) -> RedirectResponse:
    """The first page this actor's role may see: an investigator searches, a viewer reads past results."""
    for operation, page in HOME_PAGES:
        if actor.may(operation):
            return RedirectResponse(page)
    raise ForbiddenError(f"{actor.name} ({actor.role}) has no web pages yet: the audit log is read with"
                         " `facefind audit verify` and `facefind audit export`")


@router.get("/search", dependencies=[requires("search")])
def search_page(request: Request, purpose: str | None = None) -> HTMLResponse:
    """The search form, once this session has stated its purpose; the purpose form until then (or to change it)."""
    stated = request.state.session.purpose if hasattr(request.state, "session") else None
    if purpose == "change" and stated is not None:
        return _page(request, "search.html", active="search", purpose=None, case=stated.case, reason=stated.reason)
    return _page(request, "search.html", active="search", purpose=stated)


@router.post("/ui/results")
def results_fragment(request: Request, facefind: Library, response: SearchResponse = Depends(search)) -> HTMLResponse:
    """The search form's answer as HTML (the page's script puts it in place): same inputs as /api/v1/search."""
    return _results(request, facefind, response)


@router.get("/evidence/{match_id}")
def evidence_page(facefind: Library, actor: ActingFor, match_id: str) -> HTMLResponse:
    return HTMLResponse(facefind.evidence_html(match_id, actor=actor))


@router.get("/video", dependencies=[requires("read_results")])
def video_page(request: Request, facefind: Library, actor: ActingFor, path: str, t: float = 0.0) -> HTMLResponse:
    return _page(request, "video.html", active="search", media=facefind.media_item(path, actor=actor),
                 start=max(0.0, t))


@router.get("/library", dependencies=[requires("faces")])
def library_page(request: Request, facefind: Library, settings: Settings, actor: ActingFor, status: str | None = None,
                 offset: int = 0) -> HTMLResponse:
    return _page(request, "library.html", active="library", stats=facefind.stats(actor=actor),
                 page=facefind.media_page(status, offset, 50, actor=actor), status=status, jobs=facefind.index_jobs(actor=actor),
                 roots=[str(root) for root in settings.allow_roots])


@router.get("/library/file", dependencies=[requires("faces")])
def file_page(request: Request, facefind: Library, actor: ActingFor, path: str) -> HTMLResponse:
    media = facefind.media_item(path, actor=actor)
    indexed_image = media.kind == "image" and media.status == "indexed"
    faces = facefind.faces(Path(media.path), actor=actor) if indexed_image else None
    return _page(request, "file.html", active="library", media=media, faces=faces)


@router.get("/history")
def history_page(request: Request, facefind: Library, actor: ActingFor, offset: int = 0) -> HTMLResponse:
    return _page(request, "history.html", active="history", log=facefind.search_log(offset, 50, actor=actor))


@router.get("/history/{search_id}")
def past_search_page(request: Request, facefind: Library, actor: ActingFor, search_id: int) -> HTMLResponse:
    result = facefind.reopen_search(search_id, actor=actor)
    return _page(request, "past_search.html", active="history", result=result,
                 results_html=_results(request, facefind, result, reopened=True).body.decode())


# -- watchlists --

@router.get("/watch", dependencies=[requires("watch_read")])
def watch_page(request: Request, facefind: Library, actor: ActingFor, state: str | None = None,
               offset: int = 0) -> HTMLResponse:
    """The hit feed of the watchlists naming this user, with acknowledge / dismiss forms."""
    return _page(request, "watch.html", active="watch", hits=facefind.watch_hits(state, None, offset, 50, actor=actor),
                 watchlists=facefind.watch_list(actor=actor), state=state, states=HIT_STATES,
                 may_review=actor.may("watch_review"), may_manage=actor.may("watch_manage"))


@router.post("/watch/lists/{watchlist_id}/{change}")
def change_watchlist(facefind: Library, actor: ActingFor, watchlist_id: int,
                     change: Literal["pause", "resume", "remove"]) -> RedirectResponse:
    if change == "remove":
        facefind.watch_remove(watchlist_id, actor=actor)
    else:
        facefind.watch_pause(watchlist_id, paused=change == "pause", actor=actor)
    return RedirectResponse("/watch", status_code=303)


@router.post("/watch/hits/{hit_id}/{decision}")
def decide_hit(facefind: Library, actor: ActingFor, hit_id: int,
               decision: Literal["acknowledge", "dismiss"]) -> RedirectResponse:
    decide = facefind.hit_acknowledge if decision == "acknowledge" else facefind.hit_dismiss
    decide(hit_id, actor=actor)
    return RedirectResponse("/watch", status_code=303)
