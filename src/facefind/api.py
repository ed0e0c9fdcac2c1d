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
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from numbers import Integral, Real
from pathlib import Path
from typing import Callable, Iterator, Sequence

from PIL import Image as PILImage

from facefind.accounts import Accounts
from facefind.access import ACCESS_FILE, AccessConfig, Actor, ForbiddenError, Purpose, os_user, require_purpose
from facefind.audit import AuditLog, AuditVerdict, Redaction
from facefind.calibration import CalibrationSet, default_calibration
from facefind.catalog import MediaRecord
from facefind.check import CheckReport, check_library, unopenable_report
from facefind.errors import DamagedLibraryError, FaceFindError, NotFoundError
from facefind.erase import ErasurePlan, ErasureReport, carry_out_erasure, file_hashes_under, plan_erasure
from facefind.evidence import export_evidence, parse_match_id
from facefind.files import file_sha256, path_from_text, path_to_text
from facefind.ingest import IngestOptions, IngestProgress, IngestReport, ingest
from facefind.jobs import IndexJobs
from facefind.library import Library, default_library_path, recorded_model_id
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
    appearances,
    assess_probe,
    calibrated,
    detected_to_face,
    face_match,
    pair_table,
    read_probe,
    record_to_face,
    search_library,
    verify_pair,
    video_hit,
)


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
    ) -> None:
        """``model`` picks the model stack (``models.STACKS``) of a new library; left out, an existing
        library uses the one it was built with."""
        self.library_path = (Path(library) if library is not None else default_library_path()).absolute()
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

    # -- a long-lived library (the HTTP service) -------------------------------------------------

    def open(self) -> "FaceFind":
        """Keep the library open: models loaded once, the index in memory, this process the one writer.

        Every operation then uses the open library instead of reopening it, so a search costs only
        the search. Operations may run from many threads; ingest batches become visible atomically.
        """
        if self._resident is None:
            self._resident = self.open_library(writable=True)
            self.pipeline  # load the models now, not on the first request
        return self

    def close(self) -> None:
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
        new = not (self.library_path / "catalog.sqlite3").is_file()
        library = Library(self.library_path, self.model_id, self.embedding_dim, writable=writable, create=create)
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
            if (self.library_path / "catalog.sqlite3").is_file():
                self._audit(actor, "denied", {"operation": operation, "message": str(error)})
            raise
        return actor

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
    ) -> IngestReport:
        """Find and store every face in the images and videos under ``paths``; re-runs only do new or changed files.

        Setting ``cancel`` stops the run between files; what is done stays committed (report.cancelled).

        Videos are sampled at ``video_fps`` frames per second of footage (None: every frame) and their
        faces tracked; each track keeps a few best faces as templates.
        """
        _check_numbers(workers=workers, video_fps=video_fps)
        actor = self._allowed(actor, "index")
        if self._recognizer is not None:
            workers = 1  # a plugged-in recogniser lives in this process only
        options = IngestOptions(
            workers=workers, max_pixels=self.max_pixels, pipeline=self.resolved_config, video_fps=video_fps
        )
        with self._library(writable=True) as library:
            report = ingest(library, paths, options, progress, pipeline_factory=lambda: self.pipeline, cancel=cancel)
            self._audit(actor, "index", {
                "paths": [path_to_text(Path(path).absolute()) for path in paths], "video_fps": video_fps,
                **report.as_counts()})
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
        with self._library() as library, library.reading():
            result = search_library(
                library, self.pipeline, self.calibration, probe, face, top_k, max_fmr, show_all, self.max_pixels,
                within, requested_by={"actor": actor.name, "role": actor.role, "client_address": actor.client_address,
                                      "purpose": purpose.as_dict()},
            )
        self._audit(actor, "search", {
            "search_id": result.search_id, "probe": self._probe_record(probe, result.searched_face),
            "parameters": {"face": face, "top_k": top_k, "max_fmr": max_fmr, "show_all": show_all,
                           "within": result.searched_in},
            "gallery_size": result.gallery_size,
            "results": [{"match_id": m.match_id, "face_id": m.face.face_id, "path": m.source.path, "fmr": m.fmr,
                         "verdict": m.verdict} for m in result.matches],
        }, purpose)
        return result

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
        result = verify_pair(self.pipeline, self.calibration, a, b, face_a, face_b, max_fmr, self.max_pixels)
        self._audit(actor, "verify", {
            "probe_a": self._probe_record(a, result.face_a), "probe_b": self._probe_record(b, result.face_b),
            "parameters": {"face_a": face_a, "face_b": face_b, "max_fmr": max_fmr},
            "result": {"fmr": result.fmr, "verdict": result.verdict, "same_person": result.same_person},
        }, purpose)
        return result

    def _probe_record(self, probe: Path | bytes, face: Face) -> dict:
        """What the audit log keeps of a probe: its SHA-256, its name, and a 48x48 crop of the searched face."""
        data = read_probe(probe)
        box = face.box
        pixels = decode_image(data, max_pixels=self.max_pixels).pixels
        top, left = max(int(box.y1), 0), max(int(box.x1), 0)
        crop = pixels[top:max(int(box.y2), top + 1), left:max(int(box.x2), left + 1)]
        thumb = PILImage.fromarray(crop).resize((PROBE_CROP_PX, PROBE_CROP_PX))
        return {"sha256": hashlib.sha256(data).hexdigest(),
                "path": None if isinstance(probe, bytes) else path_to_text(Path(probe).absolute()),
                "face_index": face.face_index, "crop_jpeg_base64": base64.b64encode(encode_jpeg(thumb, 80)).decode()}

    def faces(self, path: Path, *, actor: Actor | None = None) -> FacesResponse:
        """The faces of one file: from the catalog if indexed, else detected now."""
        self._allowed(actor, "faces")
        absolute = path_to_text(path.absolute())  # as the catalog stores it: valid UTF-8
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
        """Counts of files by status, unindexed files by reason, faces by quality, searches."""
        self._allowed(actor, "stats")
        with self._library() as library, library.reading():
            return {"library": str(self.library_path), "index_size": len(library.index), **library.catalog.stats()}

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
        changed = AccessConfig(roles, config.min_reason_length if min_reason_length is None else min_reason_length)
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
        self, out: Path, fmt: str = "jsonl", since: datetime | None = None, until: datetime | None = None,
        who: str | None = None, *, actor: Actor | None = None,
    ) -> int:
        """Write audit entries (a time range, one actor's) as JSON Lines or CSV; the export is itself audited."""
        actor = self._allowed(actor, "audit_read")
        count = self.audit_log.export(out, fmt, since, until, who)
        self._audit(actor, "audit_export", {"format": fmt, "since": since, "until": until, "actor": who,
                                            "entries": count})
        return count

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

    def media_page(self, status: str | None = None, offset: int = 0, limit: int = 50) -> MediaPage:
        """One page of the library's files, by path, optionally only those of one status."""
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise FaceFindError(f"offset must be >= 0 and limit 1..{MAX_PAGE}", reason="bad_argument")
        with self._library() as library, library.reading():
            records, total = library.catalog.list_media(status, offset, limit)
        return MediaPage(total=total, offset=offset, limit=limit, items=[_media_item(r) for r in records])

    def media_item(self, path: Path | str) -> MediaItem:
        """What the catalog knows of one file (its path as stored)."""
        with self._library() as library, library.reading():
            record = library.catalog.media_by_path(str(path))
        if record is None:
            raise NotFoundError(f"{path} is not in the library")
        return _media_item(record)

    def media_file(self, path: Path | str) -> Path:
        """The file on disk of a catalogued image or video: the service streams only files it has indexed."""
        stored = Path(self.media_item(path).path)
        if not stored.is_file():
            raise NotFoundError(f"{stored} is in the library but no longer on disk")
        return stored

    def thumbnail_file(self, name: str) -> Path:
        """A stored crop or video frame by its name under thumbs/; nothing outside that folder."""
        thumbs = (self.library_path / "thumbs").resolve()
        target = (thumbs / name).resolve()
        if not target.is_relative_to(thumbs) or not target.is_file():
            raise NotFoundError(f"no thumbnail {name}")
        return target

    def search_log(self, offset: int = 0, limit: int = 50, *, actor: Actor | None = None) -> SearchLogPage:
        """The search log, newest first: who was searched for, how, and how many results came back."""
        self._allowed(actor, "read_results")
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise FaceFindError(f"offset must be >= 0 and limit 1..{MAX_PAGE}", reason="bad_argument")
        with self._library() as library, library.reading():
            rows, total = library.catalog.list_searches(offset, limit)
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
        self._allowed(actor, "read_results")
        with self._library() as library, library.reading():
            entry = library.catalog.search_log_entry(search_id)
            if entry is None:
                raise NotFoundError(f"no search {search_id} in the log")
            _, probe, params, results = entry
            probe_face = Face.model_validate(probe["face"])
            records = library.catalog.faces([face_id for _, face_id, _ in results])
            matches = []
            for rank, face_id, score in results:
                if face_id not in records:
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
        self._allowed(actor, "evidence")
        search_id, rank = parse_match_id(match_id)
        with self._library() as library, library.reading():
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
        if self._jobs is None:
            self._jobs = IndexJobs()

        def run(progress: IngestProgress, cancel: threading.Event) -> IngestReport:
            return self.index(allowed, workers=workers, progress=progress, video_fps=video_fps, cancel=cancel,
                              actor=actor)

        return self._jobs.start(allowed, started_by, run)

    def index_job(self, job_id: int) -> IndexJob:
        if self._jobs is None:
            raise NotFoundError(f"no index job {job_id}")
        return self._jobs.get(job_id)

    def index_jobs(self) -> list[IndexJob]:
        """Jobs of this process, newest first."""
        return [] if self._jobs is None else self._jobs.all()

    def cancel_index_job(self, job_id: int) -> IndexJob:
        """Stop a job between files; what it committed stays searchable."""
        if self._jobs is None:
            raise NotFoundError(f"no index job {job_id}")
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


MAX_PAGE = 500
PROBE_CROP_PX = 48  # the audit log's probe crop: enough to see who was searched for, no more


def _media_item(record: MediaRecord) -> MediaItem:
    return MediaItem(
        path=record.path, kind=record.kind, status=record.status, reason=record.reason, message=record.message,
        face_count=record.face_count, width=record.width, height=record.height, duration_s=record.duration_s,
        sha256=record.sha256, ingested_at=record.ingested_at,
    )
