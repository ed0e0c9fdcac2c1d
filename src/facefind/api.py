"""The one library API: the CLI, the HTTP service and the web UI all call this class.

    from facefind import FaceFind
    ff = FaceFind("/data/my-library")
    ff.index([Path("/photos")])
    result = ff.search(Path("probe.jpg"))
    for match in result.matches:
        print(match.similarity, match.source.path)
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import tempfile
import threading
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from PIL import Image as PILImage

from facefind.accounts import Accounts
from facefind.access import (
    ACCESS_FILE,
    AccessConfig,
    Actor,
    ForbiddenError,
    ROLES,
    Purpose,
    check_collection_name,
    os_user,
    require_purpose,
    under_any,
)
from facefind.audit import AuditLog, AuditVerdict, Redaction
from facefind.calibration import CalibrationSet, default_calibration
from facefind.catalog import MediaRecord
from facefind.catalog.base import CommitResult
from facefind.errors import DamagedLibraryError, FaceFindError, NotFoundError
from facefind.erase import ErasurePlan, ErasureReport, carry_out_erasure, file_hashes_under, plan_erasure
from facefind.evidence import export_evidence, parse_match_id
from facefind.files import file_sha256, path_from_text, path_to_text
from facefind.ingest import IngestOptions, IngestProgress, IngestReport, ingest
from facefind.jobs import IndexJobs
from facefind.library import (Backends, Library, default_library_path, library_exists, read_backends,
                              recorded_model_id)
from facefind.people.location import PEOPLE_DB
from facefind.people.location import default_url as people_store_url
from facefind.people.location import library_url as people_library_url
from facefind.people.models import DEFAULT_PEOPLE_FMR, BuildReport, CoAppearance, PersonDetail, PersonSummary
from facefind.pipeline import FacePipeline, PipelineConfig
from facefind.pipeline.decode import DEFAULT_MAX_PIXELS, decode_image, encode_jpeg
from facefind.pipeline.embed import Recognizer
from facefind.pipeline.models import ModelStack, stack_for_model_id, stack_named
from facefind.pipeline.video import DEFAULT_SAMPLE_FPS
from facefind.schema import (
    EvidenceResponse,
    Face,
    FacesResponse,
    IndexJob,
    MediaItem,
    MediaPage,
    SearchLogEntry,
    SearchLogPage,
    SearchResponse,
    Source,
    VerifyResponse,
)
from facefind.search import (
    DEFAULT_MAX_FMR,
    ProbeSeen,
    appearances,
    assess_probe,
    calibrated,
    detected_to_face,
    face_match,
    pair_table,
    probe_faces,
    read_probe,
    record_to_face,
    rank_and_log,
    search_library,
    stored_face_probe,
    verify_pair,
    video_hit,
)
from facefind.watchlists.models import (HIT_STATES, WEBHOOK_WAIT_S, WatchDelivery, WatchEntry, WatchHit,
                                        WatchHitPage, WatchlistInfo)

if TYPE_CHECKING:  # people, watchlists and check are imported where used: SQLAlchemy, networkx and httpx would
    # add ~0.5 s to every one-off CLI search, which needs none of them
    from facefind.check import CheckReport
    from facefind.people.store import PeopleStore
    from facefind.watchlists.ops import WebhookDeliverer
    from facefind.watchlists.store import Watchlist, WatchStore


# option -> (whole numbers only, test, what is allowed): the rules every face of the API gets.
_NUMBER_RULES: dict[str, tuple[bool, Callable[[float], bool], str]] = {
    "max_pixels": (True, lambda v: v >= 1, "a whole number of pixels, at least 1"),
    "detection_size": (True, lambda v: v >= 32, "a whole number of pixels, at least 32"),
    "detection_threshold": (False, lambda v: 0 <= v <= 1, "between 0 and 1"),
    "min_face_px": (False, lambda v: v >= 0, "at least 0"),
    "threads": (True, lambda v: v >= 1, "a whole number, at least 1"),
    "workers": (True, lambda v: v >= 0, "a whole number, 0 (one per core) or more"),
    "video_fps": (False, lambda v: v > 0, "more than 0 frames per second"),
    "top_k": (True, lambda v: v >= 1, "a whole number, at least 1"),
    "face": (True, lambda v: v >= 0, "a face number, 0 or more"),
    "face_a": (True, lambda v: v >= 0, "a face number, 0 or more"),
    "face_b": (True, lambda v: v >= 0, "a face number, 0 or more"),
    "face_id": (True, lambda v: v >= 0, "a face id: a whole number, as search results and `facefind faces` list"),
    "max_fmr": (False, lambda v: 0 < v <= 1, "a false match rate above 0 and at most 1, e.g. 1e-5"),
}


def _check_numbers(**values: float | None) -> None:
    """Refuse a numeric option that would give wrong answers or never end, before any work starts.

    Checked here, at the one door, so the CLI and the HTTP service refuse alike: a detection size
    of 0 made every file `no_face` (never retried), a video fps of 0 looped forever, and a max-fmr
    of NaN called identical faces different people. ``None`` means "the default" and passes.
    """
    for name, value in values.items():
        if value is None:
            continue
        whole, allowed, wanted = _NUMBER_RULES[name]
        right_kind = isinstance(value, Integral) if whole else isinstance(value, Real)
        if (
            isinstance(value, bool)
            or not right_kind
            or not (isinstance(value, Integral) or math.isfinite(value))
            or not allowed(value)
        ):
            raise FaceFindError(f"{name} must be {wanted}, not {value}", reason="bad_argument")


class FaceFind:
    """A face library on disk and the pipeline that fills and searches it."""

    def __init__(
        self,
        library: Path | str | None = None,
        pipeline_config: PipelineConfig | None = None,
        recognizer: Recognizer | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        calibration: CalibrationSet | Path | None = None,
        model: str | None = None,
        backends: Backends | None = None,
    ) -> None:
        """``model`` picks the model stack (``models.STACKS``) of a new library; left out, an existing
        library uses the one it was built with. ``backends`` puts a new library's catalog and index on
        servers (PostgreSQL, pgvector, Milvus); an existing library uses the ones it recorded."""
        self.library_path = (Path(library) if library is not None else default_library_path()).absolute()
        self.backends = backends
        self._stack = stack_named(model) if model is not None else None
        self.pipeline_config = pipeline_config or PipelineConfig()
        config = self.pipeline_config
        _check_numbers(max_pixels=max_pixels, detection_size=config.detection_size,
                       detection_threshold=config.detection_threshold, min_face_px=config.min_face_px,
                       threads=config.threads)
        self.max_pixels = max_pixels
        self._recognizer = recognizer
        self._pipeline: FacePipeline | None = None
        self._calibration = CalibrationSet.load(calibration) if isinstance(calibration, (str, Path)) else calibration
        self._resident: Library | None = None
        self._jobs: IndexJobs | None = None  # the service's background index jobs
        self._watch: tuple[WatchStore, WebhookDeliverer] | None = None  # watchlists: opened on first use
        self._watch_lock = threading.Lock()
        self._people: PeopleStore | None = None  # people: opened on first use
        self._people_lock = threading.Lock()

    # -- a long-lived library (the HTTP service) -------------------------------------------------

    def open(self) -> "FaceFind":
        """Keep the library open: models loaded once, the index in memory, this process the one writer.

        Every operation then uses the open library instead of reopening it, so a search costs only
        the search. Operations may run from many threads; ingest batches become visible atomically.
        """
        if self._resident is None:
            self._resident = self.open_library(writable=True)
            self._resident.build_in_background = True  # a new ANN index never blocks the searches it serves
            self.pipeline  # load the models now, not on the first request
            if self._watch_kept():
                self._watch_store()[1].kick()  # webhooks a previous run could not deliver
        return self

    def close(self) -> None:
        self._watch_close()
        if self._resident is not None:
            self._resident.close()
            self._resident = None
            self.audit_log.anchor()

    def __enter__(self) -> "FaceFind":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _library(self, writable: bool = False, create: bool | None = None) -> Iterator[Library]:
        """The open library, or one opened for this call only (the CLI); only ``create`` starts a new one."""
        if self._resident is not None:
            yield self._resident
        else:
            with self.open_library(writable=writable, create=create) as library:
                yield library

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def pipeline(self) -> FacePipeline:
        """Models are loaded on first use, so stats/remove stay instant."""
        if self._pipeline is None:
            self._pipeline = FacePipeline(self.resolved_config, self._recognizer)
        return self._pipeline

    @property
    def calibration(self) -> CalibrationSet:
        """The calibration tables scores are reported with (shipped ones for the bundled model)."""
        if self._calibration is None:
            if self._recognizer is not None:
                raise FaceFindError(
                    "a plugged-in recogniser needs its own calibration: run `facefind calibrate` and pass calibration=",
                    reason="no_calibration",
                )
            self._calibration = default_calibration(self.model_id)
        if self._calibration.model_id != self.model_id:
            raise FaceFindError(
                f"calibration is for {self._calibration.model_id}, not {self.model_id}", reason="no_calibration"
            )
        return self._calibration

    @property
    def stack(self) -> ModelStack:
        """The detector + recogniser: as asked, else the one the library was built with, else the config's."""
        if self._stack is None:
            recorded = stack_for_model_id(recorded_model_id(self.library_path) or "")
            self._stack = recorded or stack_named(self.pipeline_config.model)
        return self._stack

    @property
    def resolved_config(self) -> PipelineConfig:
        """The pipeline settings with the model stack this library uses."""
        return replace(self.pipeline_config, model=self.stack.name)

    @property
    def model_id(self) -> str:
        return self._recognizer.model_id if self._recognizer else self.stack.model_id

    @property
    def embedding_dim(self) -> int:
        return self._recognizer.dim if self._recognizer else self.stack.dim

    def open_library(self, writable: bool = False, create: bool | None = None) -> Library:
        """The library; a missing one is created only when ``create`` (default: ``writable``), else NotFoundError.

        A new library's access.json names its creator (the local OS user) its admin.
        """
        new = not library_exists(self.library_path)
        library = Library(self.library_path, self.model_id, self.embedding_dim, writable=writable, create=create,
                          backends=self.backends)
        if new and not (self.library_path / ACCESS_FILE).exists():
            AccessConfig(local_roles={os_user(): "admin"}).save(self.library_path)
        return library

    # -- accountability: who acts, may they, and the audit log -------------------------------------

    @property
    def audit_log(self) -> AuditLog:
        return AuditLog(self.library_path)

    def access_config(self) -> AccessConfig:
        return AccessConfig.load(self.library_path)

    @property
    def accounts(self) -> Accounts:
        """The library's users, API keys and login sessions (who may log in to its service)."""
        return Accounts(self.library_path)

    def local_actor(self) -> Actor:
        """The OS user at this machine, with the role the library's access.json gives them."""
        return self.access_config().local_actor()

    def _allowed(self, actor: Actor | None, operation: str) -> Actor:
        """The acting actor (default: the local OS user) if they may do ``operation``; a refusal is audited."""
        actor = actor or self.local_actor()
        try:
            actor.require(operation)
        except ForbiddenError as error:
            if library_exists(self.library_path):
                self._audit(actor, "denied", {"operation": operation, "message": str(error)})
            raise
        return actor

    def _readable_roots(self, actor: Actor) -> list[str] | None:
        """The root folders of the collections ``actor`` may read; None: the whole library."""
        return self.access_config().readable_roots(actor)

    def _check_in_collections(self, actor: Actor, paths: Sequence[Path | str]) -> None:
        """Refuse to index (or read) a path outside the actor's collections: a collection's faces are its own."""
        roots = self._readable_roots(actor)
        outside = [text for text in (path_to_text(Path(path).absolute()) for path in paths)
                   if roots is not None and not under_any(text, roots)]
        if outside:
            raise FaceFindError(f"{outside[0]} is outside the collections {actor.name} may use"
                                f" ({', '.join(sorted(actor.collections or [])) or 'none granted'})",
                                reason="forbidden_path")

    def _purpose(self, purpose: Purpose | None) -> Purpose:
        """The stated purpose, checked against the library's shortest reason; there is no default purpose."""
        return require_purpose(purpose, self.access_config().min_reason_length)

    def _audit(self, actor: Actor, action: str, details: dict, purpose: Purpose | None = None,
               redact: Redaction | None = None) -> None:
        """One audit entry, committed before the operation's result is handed back.

        An open (service) library anchors the chain head every ANCHOR_EVERY entries and at close;
        a one-shot call (the CLI) anchors at once, its "close". A removal or erasure passes what it
        took as ``redact``: earlier entries' personal payloads that mention it are deleted.
        """
        self.audit_log.append(actor.name, action, details, purpose.as_dict() if purpose else None,
                              actor.client_address, anchor=self._resident is None, redact=redact)

    # -- the operations ------------------------------------------------------------------------

    def index(
        self,
        paths: list[Path],
        workers: int = 0,
        progress: IngestProgress | None = None,
        video_fps: float | None = DEFAULT_SAMPLE_FPS,
        cancel: threading.Event | None = None,
        actor: Actor | None = None,
        cluster: str | None = None,
    ) -> IngestReport:
        """Find and store every face in the images and videos under ``paths``; re-runs only do new or changed files.

        ``cluster`` (a Dask scheduler address, tcp://host:8786) analyses the images on its workers instead of
        local processes; this process still commits everything (ingest_dask).

        Setting ``cancel`` stops the run between files; what is done stays committed (report.cancelled).

        Videos are sampled at ``video_fps`` frames per second of footage (None: every frame) and their
        faces tracked; each track keeps a few best faces as templates.
        """
        _check_numbers(workers=workers, video_fps=video_fps)
        actor = self._allowed(actor, "index")
        self._check_in_collections(actor, paths)
        if self._recognizer is not None:
            workers = 1  # a plugged-in recogniser lives in this process only
            if cluster:
                raise FaceFindError("a plugged-in recogniser runs in this process only: index without --cluster",
                                    reason="bad_argument")
        options = IngestOptions(
            workers=workers, max_pixels=self.max_pixels, pipeline=self.resolved_config, video_fps=video_fps,
            cluster=cluster,
        )
        with self._library(writable=True) as library:
            report = ingest(library, paths, options, progress, pipeline_factory=lambda: self.pipeline, cancel=cancel,
                            on_commit=lambda result: self._after_commit(library, result, actor))
            self._audit(actor, "index", {
                "paths": [path_to_text(Path(path).absolute()) for path in paths], "video_fps": video_fps,
                **report.as_counts()})
            self._watch_settle()
            return report

    def search(
        self,
        probe: Path | bytes,
        face: int | None = None,
        top_k: int = 10,
        max_fmr: float = DEFAULT_MAX_FMR,
        show_all: bool = False,
        within: Path | None = None,
        *,
        purpose: Purpose | None = None,
        actor: Actor | None = None,
    ) -> SearchResponse:
        """Calibrated matches for one face of ``probe`` (the largest unless ``face`` is given).

        Only matches with FMR <= ``max_fmr`` and at most one expected false match among the
        faces compared are returned, unless ``show_all``. ``within`` limits the search to the
        faces of one file or folder, e.g. a video: its appearances come back as time ranges.
        Every search states its ``purpose`` and is written to the audit log before it returns.
        """
        _check_numbers(face=face, top_k=top_k, max_fmr=max_fmr)
        actor = self._allowed(actor, "search")
        purpose = self._purpose(purpose)
        readable = self._readable_roots(actor)
        with self._library() as library, library.reading():
            result, seen = search_library(
                library, self.pipeline, self.calibration, probe, face, top_k, max_fmr, show_all, self.max_pixels,
                within, requested_by=_requested_by(actor, purpose), readable=readable,
            )
        self._audit_search(actor, purpose, result, self._probe_record(probe, result.searched_face, seen),
                           {"face": face, "top_k": top_k, "max_fmr": max_fmr, "show_all": show_all}, readable)
        return self._with_people(result, readable)

    def _audit_search(self, actor: Actor, purpose: Purpose, result: SearchResponse, probe: dict,
                      parameters: dict, readable: list[str] | None) -> None:
        """One audit entry per search, photo or stored face: what was asked, over which gallery, what came back."""
        self._audit(actor, "search", {
            "search_id": result.search_id, "probe": probe,
            "parameters": {**parameters, "within": result.searched_in,
                           "collections": None if readable is None else sorted(actor.collections or [])},
            "gallery_size": result.gallery_size,
            "results": [{"match_id": m.match_id, "face_id": m.face.face_id, "path": m.source.path, "fmr": m.fmr,
                         "verdict": m.verdict} for m in result.matches],
        }, purpose)

    def verify(
        self,
        a: Path | bytes,
        b: Path | bytes,
        face_a: int | None = None,
        face_b: int | None = None,
        max_fmr: float = DEFAULT_MAX_FMR,
        *,
        purpose: Purpose | None = None,
        actor: Actor | None = None,
    ) -> VerifyResponse:
        """How likely one face of A and one face of B are the same person, as a calibrated FMR (audited)."""
        _check_numbers(face_a=face_a, face_b=face_b, max_fmr=max_fmr)
        actor = self._allowed(actor, "verify")
        purpose = self._purpose(purpose)
        result, seen_a, seen_b = verify_pair(self.pipeline, self.calibration, a, b, face_a, face_b, max_fmr,
                                             self.max_pixels)
        self._audit(actor, "verify", {
            "probe_a": self._probe_record(a, result.face_a, seen_a), "probe_b": self._probe_record(b, result.face_b, seen_b),
            "parameters": {"face_a": face_a, "face_b": face_b, "max_fmr": max_fmr},
            "result": {"fmr": result.fmr, "verdict": result.verdict, "same_person": result.same_person},
        }, purpose)
        return result

    def _probe_record(self, probe: Path | bytes, face: Face, seen: ProbeSeen) -> dict:
        """What the audit log keeps of a probe: its SHA-256, its name, and a 48x48 crop of the searched face,
        from what the search itself saw (the probe is not read or decoded again)."""
        thumb = PILImage.fromarray(seen.aligned).resize((PROBE_CROP_PX, PROBE_CROP_PX))
        return {"sha256": seen.sha256,
                "path": None if isinstance(probe, bytes) else path_to_text(Path(probe).absolute()),
                "face_index": face.face_index, "crop_jpeg_base64": base64.b64encode(encode_jpeg(thumb, 80)).decode()}

    def faces(self, path: Path, *, actor: Actor | None = None) -> FacesResponse:
        """The faces of one file: from the catalog if indexed, else detected now."""
        actor = self._allowed(actor, "faces")
        absolute = path_to_text(path.absolute())  # as the catalog stores it: valid UTF-8
        roots = self._readable_roots(actor)
        if roots is not None and not under_any(absolute, roots):
            raise NotFoundError(f"{absolute} is not in the collections {actor.name} may read")
        with self._library() as library, library.reading():
            media = library.catalog.media_by_path(absolute)
            if media is not None and media.status != "failed":
                return FacesResponse(
                    path=absolute, indexed=True, width=media.width, height=media.height,
                    faces=[record_to_face(r, library.thumbs_dir) for r in library.catalog.faces_of_media(absolute)],
                )
        image = decode_image(read_probe(path), max_pixels=self.max_pixels)
        detected = self.pipeline.analyze(image.pixels)
        return FacesResponse(
            path=absolute, indexed=False, width=image.width, height=image.height,
            faces=[detected_to_face(f, i) for i, f in enumerate(detected)],
        )

    def stats(self, *, actor: Actor | None = None) -> dict:
        """Counts of files by status, unindexed files by reason, faces by quality, searches; an actor limited
        to collections gets them counted over those collections' files and faces only."""
        actor = self._allowed(actor, "stats")
        roots = self._readable_roots(actor)
        with self._library() as library, library.reading():
            if roots is None:
                return {"library": str(self.library_path), "index_size": len(library.index),
                        **library.catalog.stats()}
            within = _stats_within(library, roots)
        return {"library": str(self.library_path), **within, "searches": self.search_log(0, 1, actor=actor).total}

    def remove(
        self, path: Path | None = None, face_ids: list[int] | None = None, *, actor: Actor | None = None
    ) -> int:
        """Remove a file (or a folder's files) or single faces from catalog and index; returns faces removed."""
        if (path is None) == (not face_ids):
            raise FaceFindError("give either a path or face ids to remove", reason="bad_argument")
        actor = self._allowed(actor, "remove")
        with self._library(writable=True, create=False) as library:
            if path is not None:
                target = path_to_text(path.absolute())
                hashes = file_hashes_under(library, target)  # read before the removal forgets them
                removed, files = library.remove_media(target)
                if files == 0:
                    raise NotFoundError(f"{path} is not in the library")
            else:
                missing = sorted(set(face_ids or []) - set(library.catalog.faces(face_ids or [])))
                if missing:
                    raise NotFoundError(f"no face with id {', '.join(map(str, missing))} in the library")
                removed = library.remove_faces(face_ids or [])  # a video face takes its whole track
            self._forget_people_faces(removed)
            self._watch_forget(removed)
            # the scope only: naming the removed file here would keep what removal is meant to forget
            gone = Redaction(frozenset(removed), frozenset({target}) if path is not None else frozenset(),
                             hashes if path is not None else frozenset())
            self._audit(actor, "remove", {"by": "path" if path is not None else "face_ids",
                                          "files": files if path is not None else None, "faces": len(removed)},
                        redact=gone)
            return len(removed)

    def check(self, repair: bool = False, *, actor: Actor | None = None) -> CheckReport:
        """Check catalog, index, thumbnails and stored embeddings; with ``repair``, rebuild what can be rebuilt.

        The index is rebuilt from the catalog, thumbnails from the source files (stored landmarks, no
        re-detection), damaged embeddings are dropped and their files re-analysed by the next `index`.
        """
        from facefind.check import check_library, unopenable_report

        actor = self._allowed(actor, "check")
        try:
            with self._library(writable=repair, create=False) as library:
                report = check_library(library, repair, self.max_pixels)
                if repair:
                    self._audit(actor, "repair", {"problems": len(report.problems), "healthy": report.healthy})
                return report
        except DamagedLibraryError as error:  # the catalog cannot even be opened
            return unopenable_report(self.library_path, repair, error)

    def calibrate(
        self, lfw_dir: Path, out: Path, cache_dir: Path | None = None, workers: int = 0, progress=None,
        *, actor: Actor | None = None,
    ) -> CalibrationSet:
        """Fit calibration tables on an LFW-layout folder (half the people) and check them on the rest."""
        _check_numbers(workers=workers)
        self._allowed(actor, "calibrate")
        from facefind.calibration.fit import calibrate

        if self._recognizer is not None:
            raise FaceFindError("calibrate runs the bundled recogniser only", reason="bad_argument")
        result = calibrate(lfw_dir, cache_dir, workers, progress, model=self.stack.name)
        result.save(out)
        return result

    def export_evidence(self, match_id: str, out: Path, *, actor: Actor | None = None) -> Path:
        """Write a self-contained HTML evidence page for a match id printed by a search (audited)."""
        actor = self._allowed(actor, "evidence")
        with self._library() as library, library.reading():
            self._check_match_readable(library, actor, match_id)
            written = export_evidence(library, self.calibration, match_id, out, self.max_pixels)
        self._audit(actor, "evidence_export", {"match_id": match_id})
        return written

    def change_access(
        self, user: str | None = None, role: str | None = None, min_reason_length: int | None = None,
        *, actor: Actor | None = None,
    ) -> AccessConfig:
        """Give a local OS user a role (``role`` "none" takes it away) and/or set the shortest search reason.

        Audited as a settings change. The last local admin cannot be removed or demoted: no one
        could change the settings back except by editing access.json by hand.
        """
        actor = self._allowed(actor, "settings")
        config = self.access_config()
        roles = dict(config.local_roles)
        if user is not None:
            if role == "none":
                roles.pop(user, None)
            else:
                Actor(user, role or "")  # the role must exist
                roles[user] = role
            if "admin" not in roles.values():
                raise FaceFindError("that would leave no local admin; make someone else admin first",
                                    reason="bad_argument")
        if min_reason_length is not None and not 1 <= min_reason_length <= 1000:
            raise FaceFindError("the shortest reason must be 1..1000 characters", reason="bad_argument")
        changed = replace(config, local_roles=roles, min_reason_length=config.min_reason_length
                          if min_reason_length is None else min_reason_length)
        changed.save(self.library_path)
        self._audit(actor, "settings", {"local_roles": {"before": config.local_roles, "after": changed.local_roles},
                                        "min_reason_length": {"before": config.min_reason_length,
                                                              "after": changed.min_reason_length}})
        return changed

    def erasure_plan(
        self, probe: Path | bytes, face: int | None = None, max_fmr: float = DEFAULT_MAX_FMR, *,
        actor: Actor | None = None,
    ) -> ErasurePlan:
        """Every stored face of the person in ``probe`` within ``max_fmr``, to confirm before :meth:`erase_person`.

        Nothing is written: not the search log, not the audit log (the erasure itself is audited).
        """
        _check_numbers(face=face, max_fmr=max_fmr)
        self._allowed(actor, "erase")
        with self._library(writable=False, create=False) as library, library.reading():
            return plan_erasure(library, self.pipeline, self.calibration, probe, face, max_fmr, self.max_pixels)

    def erase_person(
        self, plan: ErasurePlan, opt_out: bool = False, *, actor: Actor | None = None,
    ) -> ErasureReport:
        """Delete every face of a confirmed :meth:`erasure_plan` everywhere the library keeps it.

        With ``opt_out`` one template of the person (no image) is kept on the block list, so later
        ingests never store their face. The audit log records that an erasure happened and its
        scope (counts), never the face, and redacts every earlier entry's payload that mentions it.
        """
        actor = self._allowed(actor, "erase")
        with self._library(writable=True, create=False) as library:
            report = carry_out_erasure(library, plan, opt_out)
            self._forget_people_faces(report.face_ids)
            self._watch_forget(report.face_ids)
            self._audit(actor, "erase", {
                "max_fmr": plan.max_fmr, "faces_removed": report.faces_removed,
                "files_forgotten": report.files_forgotten, "searches_scrubbed": report.searches_scrubbed,
                "opted_out": report.opted_out}, redact=Redaction(
                    frozenset(report.face_ids), frozenset(report.forgotten_paths),
                    frozenset(report.forgotten_sha256s), frozenset(report.search_ids)))
        return report

    def audit_verify(self, *, actor: Actor | None = None) -> AuditVerdict:
        """Check the audit log's hash chain and anchors: the first edited, deleted or moved entry, if any."""
        self._allowed(actor, "audit_read")
        return self.audit_log.verify()

    def audit_export(
        self, out: Path | None, fmt: str = "jsonl", since: datetime | None = None, until: datetime | None = None,
        who: str | None = None, action: str | None = None, case: str | None = None, *, actor: Actor | None = None,
    ) -> int | str:
        """Write audit entries (a time range, one actor's, action's, case's) as JSON Lines or CSV to ``out``
        (returns the count), or with ``out`` None return the text; the export is itself audited."""
        actor = self._allowed(actor, "audit_read")
        text, count = self.audit_log.export_text(fmt, since, until, who, action, case)
        if out is not None:
            try:
                out.write_text(text, encoding="utf-8", newline="")
            except OSError as error:
                raise FaceFindError(f"cannot write {out}: {error}", reason="unwritable") from None
        self._audit(actor, "audit_export", {"format": fmt, "since": since, "until": until, "actor": who,
                                            "action": action, "case": case, "entries": count})
        return count if out is not None else text

    # -- for the service (HTTP API, web UI): access rules, listings, the search log, evidence, jobs --

    def allowed_path(self, path: Path | str, roots: Sequence[Path]) -> Path:
        """``path`` with links resolved, if it lies inside one of ``roots``; else a ``forbidden_path`` error.

        A server reads and indexes only under the folders it was started with (``--allow-root``);
        resolving first means neither ``..`` nor a symbolic link leads out of them.
        """
        if not Path(path).is_absolute():
            raise FaceFindError(f"{path} is not an absolute path", reason="bad_argument")
        real = Path(os.path.realpath(path))
        if any(real.is_relative_to(os.path.realpath(root)) for root in roots):
            return real
        raise FaceFindError(f"{path} is outside the folders this server may read", reason="forbidden_path")

    def media_page(self, status: str | None = None, offset: int = 0, limit: int = 50, *,
                   actor: Actor | None = None) -> MediaPage:
        """One page of the library's files (of the actor's collections), by path, optionally of one status."""
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise FaceFindError(f"offset must be >= 0 and limit 1..{MAX_PAGE}", reason="bad_argument")
        roots = self._readable_roots(actor or self.local_actor())
        with self._library() as library, library.reading():
            if roots is None:
                records, total = library.catalog.list_media(status, offset, limit)
            else:  # the catalog pages over every file: keep the actor's, then page
                readable = [record for record in _all_media(library, status) if under_any(record.path, roots)]
                records, total = readable[offset:offset + limit], len(readable)
        return MediaPage(total=total, offset=offset, limit=limit, items=[_media_item(r) for r in records])

    def media_item(self, path: Path | str, *, actor: Actor | None = None) -> MediaItem:
        """What the catalog knows of one file (its path as stored), if the actor may see it."""
        with self._library() as library, library.reading():
            record = library.catalog.media_by_path(str(path))
            visible = record is not None and self._may_see_path(library, actor or self.local_actor(), record.path)
        if not visible:
            raise NotFoundError(f"{path} is not in the library")
        return _media_item(record)

    def media_file(self, path: Path | str, *, actor: Actor | None = None) -> Path:
        """The file on disk of a catalogued image or video: the service streams only files it has indexed."""
        stored = Path(self.media_item(path, actor=actor).path)
        if not stored.is_file():
            raise NotFoundError(f"{stored} is in the library but no longer on disk")
        return stored

    def thumbnail_file(self, name: str, *, actor: Actor | None = None) -> Path:
        """A stored crop or video frame by its name under thumbs/ (of a face the actor may see); nothing else."""
        thumbs = (self.library_path / "thumbs").resolve()
        target = (thumbs / name).resolve()
        if not target.is_relative_to(thumbs) or not target.is_file():
            raise NotFoundError(f"no thumbnail {name}")
        actor = actor or self.local_actor()
        if self._readable_roots(actor) is not None:
            with self._library() as library, library.reading():
                if target.relative_to(thumbs).as_posix() not in self._visible_thumbnails(library, actor):
                    raise NotFoundError(f"no thumbnail {name}")
        return target

    def search_log(self, offset: int = 0, limit: int = 50, *, actor: Actor | None = None) -> SearchLogPage:
        """The search log, newest first: who was searched for, how, and how many results came back."""
        actor = self._allowed(actor, "read_results")
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise FaceFindError(f"offset must be >= 0 and limit 1..{MAX_PAGE}", reason="bad_argument")
        with self._library() as library, library.reading():
            if self._sees_every_search(actor):
                rows, total = library.catalog.list_searches(offset, limit)
            else:
                shared = self.accounts.shared_with(actor.name)
                rows = [row for row in library.catalog.list_searches(0, 2**62)[0]
                        if self._may_read_search(actor, row[0], row[3], shared)]
                rows, total = rows[offset:offset + limit], len(rows)
        items = [
            SearchLogEntry(
                search_id=search_id, created_at=created_at, probe_path=probe.get("path"), probe_sha256=probe["sha256"],
                face_index=probe["face"]["face_index"], top_k=params["top_k"], max_fmr=params["max_fmr"],
                show_all=params["show_all"], gallery_size=params["gallery_size"], searched_in=params.get("within"),
                results=results,
            )
            for search_id, created_at, probe, params, results in rows
        ]
        return SearchLogPage(total=total, offset=offset, limit=limit, items=items)

    def reopen_search(self, search_id: int, *, actor: Actor | None = None) -> SearchResponse:
        """A past search's results as they were ranked, scored again with the calibration now in use.

        The probe is not analysed again (an uploaded probe is not kept): its stored face, score
        per result and parameters are enough. Faces removed since are left out.
        """
        actor = self._allowed(actor, "read_results")
        with self._library() as library, library.reading():
            entry = library.catalog.search_log_entry(search_id)
            shared = self.accounts.shared_with(actor.name)
            if entry is None or not self._may_read_search(actor, search_id, entry[2], shared):
                raise NotFoundError(f"no search {search_id} in the log")
            _, probe, params, results = entry
            probe_face = Face.model_validate(probe["face"])
            records = library.catalog.faces([face_id for _, face_id, _ in results])
            roots = None if search_id in shared else self._readable_roots(actor)
            matches = []
            for rank, face_id, score in results:
                if face_id not in records or (roots is not None and not under_any(records[face_id].path, roots)):
                    continue
                record = records[face_id]
                fields = self._stored_score(probe_face, record.quality["verdict"], score)
                matches.append(face_match(search_id, rank, record, fields, params["gallery_size"],
                                          params["max_fmr"], library.thumbs_dir))
        covered = bool(probe_face.quality.lower_face_covered)
        table = self.calibration.table_for(probe_face.quality.verdict, covered)
        return SearchResponse(
            search_id=search_id, probe_path=probe.get("path"), searched_face=probe_face, faces_in_probe=[probe_face],
            gallery_size=params["gallery_size"], model_id=self.model_id, top_k=params["top_k"],
            max_fmr=params["max_fmr"], show_all=params["show_all"],
            probe_assessment=assess_probe(probe_face, table),  # reads only .quality, which Face carries too
            searched_in=params.get("within"), matches=matches, appearances=appearances(matches),
        )

    def _stored_score(self, probe_face: Face, match_verdict: str, score: float) -> dict:
        """Calibrated fields of a logged score, with the table the search itself would pick."""
        covered = bool(probe_face.quality.lower_face_covered)
        return calibrated(pair_table(self.calibration, probe_face.quality.verdict, match_verdict, covered), score)

    def evidence(self, match_id: str, *, actor: Actor | None = None) -> EvidenceResponse:
        """The evidence page's content as JSON: probe and match faces, score, provenance."""
        actor = self._allowed(actor, "evidence")
        search_id, rank = parse_match_id(match_id)
        with self._library() as library, library.reading():
            self._check_match_readable(library, actor, match_id)
            entry = library.catalog.search_log_entry(search_id)
            found = library.catalog.search_result(search_id, rank)
            if entry is None or found is None:
                raise NotFoundError(f"no match {match_id}: search {search_id} has no rank {rank}")
            probe, _, face_id, score = found
            record = library.catalog.faces([face_id]).get(face_id)
            if record is None:
                raise NotFoundError(f"match {match_id} refers to face {face_id}, which has since been removed")
            probe_face = Face.model_validate(probe["face"])
            match_face, video = record_to_face(record, library.thumbs_dir), video_hit(record, library.thumbs_dir)
        try:
            changed = None if record.sha256 is None else file_sha256(path_from_text(record.path)) != record.sha256
        except OSError:
            changed = None
        return EvidenceResponse(
            **self._stored_score(probe_face, record.quality["verdict"], score),
            match_id=match_id, search_id=search_id, rank=rank, searched_at=entry[0],
            probe_path=probe.get("path"), probe_sha256=probe["sha256"], probe_face=probe_face, face=match_face,
            source=Source(path=record.path, sha256=record.sha256, width=record.media_width, height=record.media_height),
            video=video, source_changed=changed,
        )

    def evidence_html(self, match_id: str, *, actor: Actor | None = None) -> str:
        """The self-contained evidence page (as `export_evidence` writes it, and audited as an export), as text."""
        with tempfile.TemporaryDirectory(prefix="facefind-evidence-") as folder:
            page = self.export_evidence(match_id, Path(folder) / "evidence.html", actor=actor)
            return page.read_text(encoding="utf-8")

    def start_index_job(
        self, paths: list[Path | str], roots: Sequence[Path], started_by: str, workers: int = 0,
        video_fps: float | None = DEFAULT_SAMPLE_FPS, *, actor: Actor | None = None,
    ) -> IndexJob:
        """Index ``paths`` (each inside ``roots``) in a background thread; progress via :meth:`index_job`."""
        if not paths:
            raise FaceFindError("give at least one folder or file to index", reason="bad_argument")
        _check_numbers(workers=workers, video_fps=video_fps)
        actor = self._allowed(actor, "index")
        allowed = [self.allowed_path(path, roots) for path in paths]
        self._check_in_collections(actor, allowed)
        if self._jobs is None:
            self._jobs = IndexJobs()

        def run(progress: IngestProgress, cancel: threading.Event) -> IngestReport:
            return self.index(allowed, workers=workers, progress=progress, video_fps=video_fps, cancel=cancel,
                              actor=actor)

        return self._jobs.start(allowed, started_by, run)

    def _job_visible(self, job: IndexJob, actor: Actor | None) -> bool:
        """A job (its paths, files and counts) is seen by whoever may read every folder it indexes."""
        roots = None if actor is None else self._readable_roots(actor)
        return roots is None or all(under_any(path, roots) for path in job.paths)

    def index_job(self, job_id: int, *, actor: Actor | None = None) -> IndexJob:
        job = None if self._jobs is None else self._jobs.get(job_id)
        if job is None or not self._job_visible(job, actor):
            raise NotFoundError(f"no index job {job_id}")
        return job

    def index_jobs(self, *, actor: Actor | None = None) -> list[IndexJob]:
        """Jobs of this process (of the actor's collections), newest first."""
        return [] if self._jobs is None else [job for job in self._jobs.all() if self._job_visible(job, actor)]

    def cancel_index_job(self, job_id: int, *, actor: Actor | None = None) -> IndexJob:
        """Stop a job between files; what it committed stays searchable."""
        self.index_job(job_id, actor=actor)
        return self._jobs.cancel(job_id)

    def faces_in_upload(self, data: bytes, *, actor: Actor | None = None) -> FacesResponse:
        """The faces detected in uploaded image bytes; nothing is stored."""
        self._allowed(actor, "faces")
        image = decode_image(data, max_pixels=self.max_pixels)
        detected = self.pipeline.analyze(image.pixels)
        return FacesResponse(
            path="(uploaded image)", indexed=False, width=image.width, height=image.height,
            faces=[detected_to_face(f, i) for i, f in enumerate(detected)],
        )

    def stop_index_jobs(self) -> None:
        """Cancel running jobs and wait until they have committed (before :meth:`close`)."""
        if self._jobs is not None:
            self._jobs.shutdown()

    # -- accountability: collections, account changes, shared results, the audit log's pages --

    def _sees_every_search(self, actor: Actor) -> bool:
        return actor.role != "viewer" and self._readable_roots(actor) is None

    def _may_read_search(self, actor: Actor, search_id: int, params: dict, shared: set[int]) -> bool:
        """A viewer reads what was shared with them; someone limited to collections, their own searches too."""
        if search_id in shared:
            return True
        if actor.role == "viewer":
            return False
        return self._readable_roots(actor) is None or (params.get("requested_by") or {}).get("actor") == actor.name

    def _shared_faces(self, library: Library, actor: Actor) -> dict:
        """The faces in the results of searches shared with ``actor`` (id -> record): theirs to see."""
        face_ids = []
        for search_id in self.accounts.shared_with(actor.name):
            entry = library.catalog.search_log_entry(search_id)
            face_ids += [face_id for _, face_id, _ in entry[3]] if entry else []
        return library.catalog.faces(face_ids)

    def _may_see_path(self, library: Library, actor: Actor, path: str) -> bool:
        roots = self._readable_roots(actor)
        if roots is None or under_any(path, roots):
            return True
        return any(record.path == path for record in self._shared_faces(library, actor).values())

    def _visible_thumbnails(self, library: Library, actor: Actor) -> set[str]:
        """Names under thumbs/ of the faces (and video frames) in the actor's collections and shared results."""
        face_ids = [face_id for root in self._readable_roots(actor) or [] for face_id in
                    library.catalog.face_ids_under(root)]
        records = [*library.catalog.faces(face_ids).values(), *self._shared_faces(library, actor).values()]
        names = {record.thumbnail for record in records if record.thumbnail}
        return names | {record.track.frame_thumbnail for record in records
                        if record.track is not None and record.track.frame_thumbnail}

    def _check_match_readable(self, library: Library, actor: Actor, match_id: str) -> None:
        """A match of a search the actor may not read, or of a face outside their collections, is not there."""
        roots = self._readable_roots(actor)
        if roots is None:
            return
        search_id, rank = parse_match_id(match_id)
        entry, found = library.catalog.search_log_entry(search_id), library.catalog.search_result(search_id, rank)
        record = None if found is None else library.catalog.faces([found[2]]).get(found[2])
        shared = self.accounts.shared_with(actor.name)
        if (entry is None or record is None or not self._may_read_search(actor, search_id, entry[2], shared)
                or not (search_id in shared or under_any(record.path, roots))):
            raise NotFoundError(f"no match {match_id}")

    def collections(self, *, actor: Actor | None = None) -> dict[str, list[str]]:
        """The library's collections: name -> root folders."""
        self._allowed(actor, "settings")
        return self.access_config().collections

    def set_collection(self, name: str, roots: list[Path] | None, *, actor: Actor | None = None) -> dict[str, list[str]]:
        """Define a collection (a case, an archive) as root folders, or with ``roots`` None remove it; audited.

        Once any collection exists, users other than admins read only the collections granted to them.
        """
        actor = self._allowed(actor, "settings")
        check_collection_name(name)
        config = self.access_config()
        collections = dict(config.collections)
        if roots is None:
            if collections.pop(name, None) is None:
                raise NotFoundError(f"no collection {name}")
        else:
            if not roots:
                raise FaceFindError("a collection needs at least one root folder", reason="bad_argument")
            collections[name] = sorted({path_to_text(Path(os.path.abspath(root))) for root in roots})
        replace(config, collections=collections).save(self.library_path)
        self._audit(actor, "collection_remove" if roots is None else "collection_set",
                    {"collection": name, "roots": collections.get(name)})
        return collections

    def grant_collection(self, user: str, collection: str, revoke: bool = False, *,
                         actor: Actor | None = None) -> dict[str, list[str]]:
        """Let a user (and their keys) read a collection, or stop them; returns every user's grants."""
        actor = self._allowed(actor, "settings")
        if not revoke and collection not in self.access_config().collections:
            raise NotFoundError(f"no collection {collection}: define it first (`facefind access collection add`)")
        self.accounts.grant(user, collection, actor, revoke)
        return self.accounts.grants()

    def change_role(self, user: str, role: str, *, actor: Actor | None = None):
        """Give a service user another role (audited); the last admin cannot be demoted."""
        return self.accounts.set_role(user, role, self._allowed(actor, "settings"))

    def remove_user(self, user: str, *, actor: Actor | None = None) -> None:
        """Remove a service user: their keys stop working and their sessions end at once (audited)."""
        self.accounts.remove_user(user, self._allowed(actor, "settings"))

    def share_search(self, search_id: int, user: str, *, actor: Actor | None = None) -> None:
        """Let ``user`` (a viewer, typically) read one past search of the actor's; audited as a share."""
        actor = self._allowed(actor, "share")
        with self._library() as library, library.reading():
            entry = library.catalog.search_log_entry(search_id)
        shared = self.accounts.shared_with(actor.name)
        if entry is None or not self._may_read_search(actor, search_id, entry[2], shared):
            raise NotFoundError(f"no search {search_id} in the log")
        self.accounts.share(search_id, user, actor)

    def audit_entries(self, since: datetime | None = None, until: datetime | None = None, who: str | None = None,
                      action: str | None = None, case: str | None = None, *, actor: Actor | None = None) -> list[dict]:
        """Audit entries, newest first, filtered by time, actor, action and purpose case (reading is not audited)."""
        self._allowed(actor, "audit_read")
        return self.audit_log.select(since, until, who, action, case)[::-1]

    # -- watchlists --------------------------------------------------------------------------------

    def _watch_store(self) -> tuple[WatchStore, WebhookDeliverer]:
        """The watchlist tables (in the people store's database) and their webhook sender, opened once."""
        from facefind.watchlists.ops import WebhookDeliverer
        from facefind.watchlists.store import WatchStore

        with self._watch_lock:
            if self._watch is None:
                store = WatchStore(self.people_url)  # the people store's database: entries name its people
                self._watch = (store, WebhookDeliverer(store))
            return self._watch

    def _after_commit(self, library: Library, result: CommitResult, actor: Actor) -> None:
        """Runs after every committed ingest batch, while the ingest goes on: new faces meet the watchlists."""
        self._people_after_commit(library, result)
        if not self._watch_kept():  # no watchlist was ever added here
            return
        from facefind.watchlists.ops import check_new_faces

        store, webhooks = self._watch_store()
        store.forget_faces(result.removed_ids)  # a changed file's old faces: their hits go with them
        if not result.added_ids or not store.any_active():
            return
        with library.reading():
            hit_ids = check_new_faces(store, library, self.calibration, result, self._person_faces)
        if hit_ids:
            self._audit(actor, "watch_hits", {"hit_ids": hit_ids, "faces_checked": len(result.added_ids)})
            webhooks.kick()

    def _person_faces(self, person_id: int) -> list[int]:
        """A listed person's faces now (people view), so a watchlist follows merges, splits and new photos."""
        from facefind.people.store import person_face_ids

        return person_face_ids(self._people_store(), person_id)

    def watch_deliver(self, wait_s: float = WEBHOOK_WAIT_S, *, actor: Actor | None = None) -> bool:
        """Send now every webhook delivery not yet delivered (also one given up on); True when all went."""
        self._allowed(actor, "watch_manage")
        if not self._watch_kept():
            return True
        store, webhooks = self._watch_store()
        store.retry_now()
        webhooks.kick()
        return webhooks.wait(wait_s)

    def _watch_settle(self) -> None:
        """A one-shot run (the CLI) waits briefly for its webhooks; what is left is retried by the next run."""
        if self._resident is None and self._watch is not None:
            self._watch[1].wait(WEBHOOK_WAIT_S)
            self._watch[1].stop()

    def _watch_kept(self) -> bool:
        """Whether watchlists may exist (their database does): nothing is created only to look."""
        return self.people_url != people_store_url(self.library_path) or (self.library_path / PEOPLE_DB).is_file()

    def _watch_forget(self, face_ids: Sequence[int]) -> None:
        """Removed or erased faces take their hits (and queued webhooks) with them."""
        if face_ids and self._watch_kept():
            self._watch_store()[0].forget_faces(list(face_ids))

    def _watch_close(self) -> None:
        if self._watch is not None:
            self._watch[1].stop()
            self._watch[0].close()
            self._watch = None

    def _visible_watchlists(self, actor: Actor) -> list[Watchlist]:
        """Watchlists whose hits ``actor`` may see: those naming them or their role."""
        if not self._watch_kept():
            return []
        return [w for w in self._watch_store()[0].watchlists() if w.visible_to(actor.name, actor.role)]

    def watch_add(
        self, name: str, people: Sequence[int] = (), photos: Sequence[Path | bytes] = (),
        max_fmr: float = DEFAULT_MAX_FMR, visible_users: Sequence[str] = (), visible_roles: Sequence[str] = (),
        webhook_url: str | None = None, webhook_secret: str | None = None, *, actor: Actor | None = None,
    ) -> WatchlistInfo:
        """A new active watchlist of people (by id) and/or reference photos; every later ingest is checked.

        Only its creator, ``visible_users`` and members of ``visible_roles`` see its hits. A reference
        photo keeps its largest face's embedding and SHA-256, never the image; a poor one is refused,
        as it could not support a hit. Hits go to ``webhook_url`` too, signed with ``webhook_secret``.
        """
        from facefind.people import ops as people_ops

        _check_numbers(max_fmr=max_fmr)
        actor = self._allowed(actor, "watch_manage")
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise FaceFindError("a watchlist needs a name of 1..200 characters", reason="bad_argument")
        if not people and not photos:
            raise FaceFindError("give at least one person or reference photo to watch for", reason="bad_argument")
        unknown = sorted(set(visible_roles) - set(ROLES))
        if unknown:
            raise FaceFindError(f"unknown role {unknown[0]!r}; roles are {', '.join(ROLES)}", reason="bad_argument")
        _check_webhook(webhook_url, webhook_secret)
        roots = self._readable_roots(actor)
        if people and roots is not None:  # a person with no face in the actor's collections is not theirs to watch
            with self._library() as library, library.reading():
                visible = people_ops.visible_people(library, self._people_store(), roots)
            unseen = [p for p in people if p not in visible]
            if unseen:
                raise NotFoundError(f"no person {unseen[0]}")
        templates = []
        for person_id in people:
            self._person_faces(person_id)  # NotFoundError for a person that does not exist
            templates.append({"person_id": int(person_id), "label": f"person {person_id}"})
        for number, photo in enumerate(photos, start=1):
            templates.append(self._reference_template(photo, number))
        if not library_exists(self.library_path):  # a watchlist may come first: create the library as `index` would
            self.open_library(writable=True).close()
        store, _ = self._watch_store()
        watchlist_id = store.add_watchlist(name, max_fmr, [actor.name, *visible_users], list(visible_roles),
                                           actor.name, webhook_url, webhook_secret, templates)
        info = _watchlist_info(store.watchlist(watchlist_id))
        self._audit(actor, "watch_add", {
            "watchlist_id": watchlist_id, "name": name, "max_fmr": max_fmr, "people": [int(p) for p in people],
            "reference_photos": [t["probe_sha256"] for t in templates if "probe_sha256" in t],
            "visible_users": info.visible_users, "visible_roles": info.visible_roles, "webhook_url": webhook_url})
        return info

    def _reference_template(self, photo: Path | bytes, number: int) -> dict:
        """A reference photo's largest face as a template: embedding, SHA-256 and quality, no pixels."""
        data = read_probe(photo)
        label = path_to_text(Path(photo).name) if isinstance(photo, Path) else f"uploaded photo {number}"
        face = probe_faces(self.pipeline, data, label, self.max_pixels)[0]
        if face.quality.verdict == "poor":
            raise FaceFindError(f"{label}: the face is of poor quality ({'; '.join(face.quality.reasons)}) and could"
                                " not support a hit: use a clearer photo", reason="poor_reference")
        return {"embedding": face.embedding, "probe_sha256": hashlib.sha256(data).hexdigest(),
                "quality": face.quality.verdict, "label": label}

    def watch_list(self, *, actor: Actor | None = None) -> list[WatchlistInfo]:
        """The watchlists this actor may see (never a webhook secret)."""
        actor = self._allowed(actor, "watch_read")
        return [_watchlist_info(w) for w in self._visible_watchlists(actor)]

    def watch_hits(
        self, state: str | None = None, watchlist_id: int | None = None, offset: int = 0, limit: int = 50,
        *, actor: Actor | None = None,
    ) -> WatchHitPage:
        """Hits of the watchlists this actor may see (in their collections), newest first; ``state`` filters."""
        actor = self._allowed(actor, "watch_read")
        if state is not None and state not in HIT_STATES:
            raise FaceFindError(f"state must be one of {', '.join(HIT_STATES)}", reason="bad_argument")
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise FaceFindError(f"offset must be >= 0 and limit 1..{MAX_PAGE}", reason="bad_argument")
        visible = [w.id for w in self._visible_watchlists(actor)]
        if watchlist_id is not None:
            if watchlist_id not in visible:
                raise NotFoundError(f"no watchlist {watchlist_id}")
            visible = [watchlist_id]
        if not visible:
            return WatchHitPage(total=0, offset=offset, limit=limit, items=[])
        store, _ = self._watch_store()
        roots = self._readable_roots(actor)
        if roots is None:
            rows, total = store.hits(visible, state, offset, limit)
        else:  # hits on faces outside the actor's collections are not theirs to see
            rows = [row for row in store.hits(visible, state, 0, 2**62)[0] if under_any(row["media_path"], roots)]
            rows, total = rows[offset:offset + limit], len(rows)
        deliveries = store.deliveries_of([row["id"] for row in rows])
        with self._library() as library, library.reading():
            records = library.catalog.faces([row["face_id"] for row in rows])
            thumbs = library.thumbs_dir
        items = [_watch_hit(row, records.get(row["face_id"]), thumbs, deliveries.get(row["id"])) for row in rows]
        return WatchHitPage(total=total, offset=offset, limit=limit, items=items)

    def hit_acknowledge(self, hit_id: int, *, actor: Actor | None = None) -> WatchHit:
        """Mark a hit seen and accepted (audited)."""
        return self._decide_hit(hit_id, "acknowledged", actor)

    def hit_dismiss(self, hit_id: int, *, actor: Actor | None = None) -> WatchHit:
        """Mark a hit a wrong match (audited); it stays listed as dismissed."""
        return self._decide_hit(hit_id, "dismissed", actor)

    def _managed_watchlist(self, watchlist_id: int, actor: Actor | None) -> tuple[Actor, WatchStore, Watchlist]:
        """A watchlist this actor may change: one they see (else not found) and made, or any, for an admin."""
        actor = self._allowed(actor, "watch_manage")
        found = [w for w in self._visible_watchlists(actor) if w.id == watchlist_id]
        if not found:
            raise NotFoundError(f"no watchlist {watchlist_id}")
        if actor.role != "admin" and found[0].created_by != actor.name:
            raise ForbiddenError(f"{actor.name} may not change watchlist {watchlist_id}: {found[0].created_by}"
                                 " made it (or an admin may)")
        return actor, self._watch_store()[0], found[0]

    def watch_pause(self, watchlist_id: int, paused: bool = True, *, actor: Actor | None = None) -> WatchlistInfo:
        """Pause a watchlist (later ingests raise no hits on it; its hits stay) or resume it; audited."""
        actor, store, watchlist = self._managed_watchlist(watchlist_id, actor)
        store.set_active(watchlist_id, not paused)
        self._audit(actor, "watch_pause" if paused else "watch_resume",
                    {"watchlist_id": watchlist_id, "name": watchlist.name})
        return _watchlist_info(store.watchlist(watchlist_id))

    def watch_remove(self, watchlist_id: int, *, actor: Actor | None = None) -> int:
        """Delete a watchlist with its entries (reference templates), hits and queued webhooks; audited.
        Returns how many hits went with it."""
        actor, store, watchlist = self._managed_watchlist(watchlist_id, actor)
        removed = store.remove_watchlist(watchlist_id)
        self._audit(actor, "watch_remove", {"watchlist_id": watchlist_id, "name": watchlist.name,
                                            "hits_removed": removed})
        return removed

    def _decide_hit(self, hit_id: int, state: str, actor: Actor | None) -> WatchHit:
        actor = self._allowed(actor, "watch_review")
        if not self._watch_kept():
            raise NotFoundError(f"no watchlist hit {hit_id}")
        store, _ = self._watch_store()
        hit = store.hit(hit_id)
        roots = self._readable_roots(actor)
        if hit["watchlist_id"] not in {w.id for w in self._visible_watchlists(actor)} or (
                roots is not None and not under_any(hit["media_path"], roots)):
            raise NotFoundError(f"no watchlist hit {hit_id}")  # not theirs: not even its existence is told
        store.decide(hit_id, state, actor.name)
        self._audit(actor, "watch_hit_" + ("acknowledge" if state == "acknowledged" else "dismiss"), {
            "hit_id": hit_id, "watchlist_id": hit["watchlist_id"], "face_id": hit["face_id"],
            "before": hit["state"], "after": state})
        found = [item for item in self.watch_hits(watchlist_id=hit["watchlist_id"], limit=MAX_PAGE, actor=actor).items
                 if item.hit_id == hit_id]
        return found[0]

    # -- people ------------------------------------------------------------------------------------

    @property
    def people_url(self) -> str:
        """Where people (and watchlists) are kept: FACEFIND_PEOPLE_DB_URL if set, else beside the catalog: in its
        PostgreSQL schema for a server library (so every replica sees them), else people.sqlite3 here."""
        recorded = self._resident.backends if self._resident is not None else read_backends(self.library_path)
        return os.environ.get("FACEFIND_PEOPLE_DB_URL") or people_library_url(self.library_path, recorded.catalog)

    def _people_store(self, create: bool = True) -> PeopleStore | None:
        """The people store, opened once; None when ``create`` is off and people were never built here."""
        with self._people_lock:
            if self._people is None:
                if not create and self.people_url == people_store_url(self.library_path) and not (
                        self.library_path / PEOPLE_DB).is_file():
                    return None
                from facefind.people.store import PeopleStore

                self._people = PeopleStore(self.people_url)
            return self._people

    def _people_after_commit(self, library: Library, result: CommitResult) -> None:
        """An ingest batch is committed: replaced faces leave their people, new faces join (existing or new) ones."""
        store = self._people_store(create=False)
        if store is not None:
            from facefind.people import ops as people_ops

            with self._people_lock:
                people_ops.assign_new(library, store, self.calibration, result.added_ids, result.removed_ids)

    def _forget_people_faces(self, face_ids: Sequence[int]) -> None:
        """Removed or erased faces leave the people view too (a person left with none goes, name and all)."""
        store = self._people_store(create=False)
        if store is not None and face_ids:
            with self._people_lock:
                store.forget_faces(face_ids)

    def _people_change(self, actor: Actor | None, action: str, details: dict,
                       change: Callable[[Library, PeopleStore], object]) -> object:
        """Run one manual people decision under the people lock, then audit it; an actor limited to
        collections may only change people they can see (``details["person_id"]`` and ``["merged"]``)."""
        from facefind.people import ops as people_ops

        actor = self._allowed(actor, "people_edit")
        store = self._people_store()
        with self._library() as library, library.reading(), self._people_lock:
            visible = people_ops.visible_people(library, store, self._readable_roots(actor))
            hidden = [p for p in [details["person_id"], *details.get("merged", [])]
                      if visible is not None and p not in visible]
            if hidden:
                raise NotFoundError(f"no person {hidden[0]}")
            named = [details["face_id"]] if "face_id" in details else details.get("face_ids") or []
            roots = self._readable_roots(actor)
            unseen = [f for f, record in library.catalog.faces(named).items()
                      if roots is not None and not under_any(record.path, roots)]
            if unseen:
                raise NotFoundError(f"no face with id {unseen[0]} in the library")
            outcome = change(library, store)
        self._audit(actor, action, details)
        return outcome

    def people_build(self, max_fmr: float = DEFAULT_PEOPLE_FMR, *, actor: Actor | None = None) -> BuildReport:
        """Group every face into people at ``max_fmr``; manual decisions stay, automatic faces are regrouped."""
        from facefind.people import ops as people_ops

        _check_numbers(max_fmr=max_fmr)
        actor = self._allowed(actor, "people_edit")
        if self._readable_roots(actor) is not None:  # it regroups (and reports on) faces of every collection
            raise ForbiddenError(f"{actor.name} reads only some collections; building people groups every face"
                                 " of the library: an admin (or a user of every collection) runs it")
        store = self._people_store()
        with self._library() as library, library.reading(), self._people_lock:
            report = people_ops.build(library, store, self.calibration, max_fmr)
        self._audit(actor, "people_build", report.model_dump())
        return report

    def people_list(self, include_hidden: bool = False, *, actor: Actor | None = None) -> list[PersonSummary]:
        """Every person (hidden ones too if asked), most faces first, with cohesion and nearest other person;
        an actor limited to collections sees only people with a face there, and only those faces."""
        from facefind.people import ops as people_ops

        actor = self._allowed(actor, "people_read")
        store = self._people_store(create=False)
        if store is None:
            return []
        with self._library() as library, library.reading():
            return people_ops.summaries(library, store, self.calibration, include_hidden,
                                        self._readable_roots(actor))

    def person(self, person_id: int, *, actor: Actor | None = None) -> PersonDetail:
        """One person with each face, its file and whether clustering or a person put it there."""
        from facefind.people import ops as people_ops

        actor = self._allowed(actor, "people_read")
        store = self._people_store()
        with self._library() as library, library.reading():
            return people_ops.detail(library, store, self.calibration, person_id, self._readable_roots(actor))

    def person_rename(self, person_id: int, name: str | None, *, actor: Actor | None = None) -> PersonDetail:
        """Name a person (None clears the name); naming confirms its faces for later runs."""
        from facefind.people import ops as people_ops

        self._people_change(actor, "person_rename", {"person_id": person_id, "name": name},
                            lambda library, store: people_ops.rename(store, person_id, name))
        return self.person(person_id, actor=actor)

    def person_merge(self, person_id: int, others: list[int], *, actor: Actor | None = None) -> PersonDetail:
        """Move every face of ``others`` into ``person_id``; refused if two faces of one photo would meet."""
        from facefind.people import ops as people_ops

        self._people_change(actor, "person_merge", {"person_id": person_id, "merged": others},
                            lambda library, store: people_ops.merge(library, store, self.calibration, person_id,
                                                                    others))
        return self.person(person_id, actor=actor)

    def person_split(self, person_id: int, face_ids: list[int] | None = None, *,
                     actor: Actor | None = None) -> list[int]:
        """Take ``face_ids`` out into a new person, or with none re-cluster the person more strictly; the people
        its faces are in afterwards, the original first."""
        from facefind.people import ops as people_ops

        return self._people_change(actor, "person_split", {"person_id": person_id, "face_ids": face_ids},
                                   lambda library, store: people_ops.split(library, store, self.calibration,
                                                                           person_id, face_ids))

    def face_move(self, face_id: int, person_id: int, *, actor: Actor | None = None) -> PersonDetail:
        """Put one face into ``person_id``."""
        from facefind.people import ops as people_ops

        self._people_change(actor, "face_move", {"face_id": face_id, "person_id": person_id},
                            lambda library, store: people_ops.move(library, store, self.calibration, face_id,
                                                                   person_id))
        return self.person(person_id, actor=actor)

    def face_not_person(self, face_id: int, person_id: int, *, actor: Actor | None = None) -> None:
        """"Not this person": the face leaves ``person_id`` and never joins it again."""
        from facefind.people import ops as people_ops

        self._people_change(actor, "face_not_person", {"face_id": face_id, "person_id": person_id},
                            lambda library, store: people_ops.not_person(library, store, self.calibration,
                                                                         face_id, person_id))

    def person_hide(self, person_id: int, hidden: bool = True, *, actor: Actor | None = None) -> None:
        """Hide a person from listings and search results (or show them again)."""
        from facefind.people import ops as people_ops

        self._people_change(actor, "person_hide", {"person_id": person_id, "hidden": hidden},
                            lambda library, store: people_ops.hide(store, person_id, hidden))

    def person_coappearance(self, person_id: int, *, actor: Actor | None = None) -> list[CoAppearance]:
        """Who appears with this person: same photos, or on screen together in the same videos."""
        from facefind.people import ops as people_ops

        actor = self._allowed(actor, "people_read")
        store = self._people_store()
        with self._library() as library, library.reading():
            return people_ops.coappearance(library, store, person_id, self._readable_roots(actor))

    def people_export(self, fmt: str = "json", *, actor: Actor | None = None) -> str:
        """The co-appearance graph (people as nodes, shared photos / video time as edges), JSON or GraphML; audited."""
        from facefind.people import ops as people_ops

        actor = self._allowed(actor, "people_read")
        store = self._people_store()
        with self._library() as library, library.reading():
            text = people_ops.export_graph(library, store, fmt, self._readable_roots(actor))
        self._audit(actor, "people_export", {"format": fmt})
        return text

    def _with_people(self, result: SearchResponse, roots: list[str] | None = None) -> SearchResponse:
        """Each match with the person its face is grouped into (when people were built); a searcher limited
        to collections (``roots``) sees the person's photos and videos counted there only."""
        store = self._people_store(create=False)
        if store is not None and result.matches:
            from facefind.people import ops as people_ops

            with self._library() as library, library.reading():
                readable = people_ops.readable_faces(library, store, roots)
            refs = people_ops.person_refs(store, [m.face.face_id for m in result.matches if m.face.face_id],
                                          readable)
            for match in result.matches:
                match.person = refs.get(match.face.face_id)
        return result

    # -- search from a stored face -----------------------------------------------------------------

    def search_face(
        self,
        face_id: int,
        top_k: int = 10,
        max_fmr: float = DEFAULT_MAX_FMR,
        show_all: bool = False,
        within: Path | None = None,
        *,
        purpose: Purpose | None = None,
        actor: Actor | None = None,
    ) -> SearchResponse:
        """Where else does stored face ``face_id`` appear? A search like :meth:`search` (same permission, purpose,
        limits, search log and audit entry) whose probe is the face's stored embedding: no pixels are analysed,
        and the face itself (and the rest of its video track) is not listed. A face outside the actor's
        collections is reported as not found."""
        _check_numbers(face_id=face_id, top_k=top_k, max_fmr=max_fmr)
        actor = self._allowed(actor, "search")
        purpose = self._purpose(purpose)
        readable = self._readable_roots(actor)
        with self._library() as library, library.reading():
            probe = stored_face_probe(library, face_id, readable)
            result = rank_and_log(
                library, self.calibration, probe, self.model_id, top_k, max_fmr, show_all, within,
                requested_by=_requested_by(actor, purpose), readable=readable)
            crop = _stored_crop(probe.searched.thumbnail)
        self._audit_search(actor, purpose, result,
                           {"face_id": face_id, "path": probe.path, "sha256": probe.sha256,
                            "face_index": probe.searched.face_index, **crop},
                           {"face_id": face_id, "top_k": top_k, "max_fmr": max_fmr, "show_all": show_all}, readable)
        return self._with_people(result, readable)


def _requested_by(actor: Actor, purpose: Purpose) -> dict:
    """Who asked for a search and why, as the search log keeps it."""
    return {"actor": actor.name, "role": actor.role, "client_address": actor.client_address,
            "purpose": purpose.as_dict()}


def _stored_crop(thumbnail: str | None) -> dict:
    """The audit log's probe crop of a stored face, from its stored thumbnail (none when it has none)."""
    if thumbnail is None:
        return {}
    try:
        with PILImage.open(thumbnail) as image:
            small = image.convert("RGB").resize((PROBE_CROP_PX, PROBE_CROP_PX))
    except (OSError, ValueError):
        return {}  # a missing or damaged crop: the face id and source file still say who was searched for
    return {"crop_jpeg_base64": base64.b64encode(encode_jpeg(small, 80)).decode()}


MAX_PAGE = 500
PROBE_CROP_PX = 48  # the audit log's probe crop: enough to see who was searched for, no more


def _all_media(library: Library, status: str | None, page: int = 1000) -> Iterator[MediaRecord]:
    offset = 0
    while True:
        records, _ = library.catalog.list_media(status, offset, page)
        yield from records
        if len(records) < page:
            return
        offset += page


def _stats_within(library: Library, roots: list[str]) -> dict:
    """catalog.stats() over the files and faces under ``roots`` only (the ingest log is the whole library's)."""
    media = [record for record in _all_media(library, None) if under_any(record.path, roots)]
    faces = library.catalog.faces(sorted({f for root in roots for f in library.catalog.face_ids_under(root)}))
    quality = Counter(record.quality.get("verdict") for record in faces.values())
    return {"index_size": len(faces), "files": len(media),
            "files_by_status": dict(Counter(record.status for record in media)),
            "unindexed_by_reason": dict(Counter(r.reason for r in media if r.reason is not None).most_common()),
            "faces": len(faces), "faces_by_quality": dict(quality),
            "models": len({record.model_id for record in faces.values()}), "last_ingest": None}


def _media_item(record: MediaRecord) -> MediaItem:
    return MediaItem(
        path=record.path, kind=record.kind, status=record.status, reason=record.reason, message=record.message,
        face_count=record.face_count, width=record.width, height=record.height, duration_s=record.duration_s,
        sha256=record.sha256, ingested_at=record.ingested_at,
    )


def _check_webhook(url: str | None, secret: str | None) -> None:
    """A webhook is an http(s) URL with a secret of at least 16 characters to sign its bodies with."""
    if url is None and secret is None:
        return
    if not url or not secret or len(secret) < 16:
        raise FaceFindError("a webhook needs both a URL and a secret of at least 16 characters",
                            reason="bad_argument")
    if not re.fullmatch(r"https?://[^\s/?#]+(/\S*)?", url):
        raise FaceFindError(f"the webhook URL must be http:// or https://, not {url!r}", reason="bad_argument")


def _watchlist_info(watchlist: Watchlist) -> WatchlistInfo:
    return WatchlistInfo(
        watchlist_id=watchlist.id, name=watchlist.name, max_fmr=watchlist.max_fmr,
        visible_users=list(watchlist.visible_users), visible_roles=list(watchlist.visible_roles),
        active=watchlist.active, created_by=watchlist.created_by, created_at=watchlist.created_at,
        webhook_url=watchlist.webhook_url,
        entries=[WatchEntry(entry_id=e.entry_id, label=e.label, person_id=e.person_id, probe_sha256=e.probe_sha256)
                 for e in watchlist.entries],
    )


def _watch_hit(row: dict, record, thumbs_dir: Path, delivery: dict | None) -> WatchHit:
    return WatchHit(
        hit_id=row["id"], watchlist_id=row["watchlist_id"], watchlist=row["watchlist_name"], entry=row["entry_label"],
        face_id=row["face_id"], similarity=row["score"], fmr=row["fmr"], fmr_is_bound=row["fmr_is_bound"],
        expected_false_matches=row["expected_false_matches"], verdict=row["verdict"], quality=row["quality"],
        media_path=row["media_path"], media_sha256=row["media_sha256"], time_s=row["time_s"],
        track_id=row["track_id"], created_at=row["created_at"], state=row["state"], decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        thumbnail=str(thumbs_dir / record.thumbnail) if record is not None and record.thumbnail else None,
        delivery=None if delivery is None else WatchDelivery(
            status=delivery["status"], attempts=delivery["attempts"], last_error=delivery["last_error"]),
    )
