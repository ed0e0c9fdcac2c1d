"""Ingest: walk folders, run the pipeline on new or changed files, commit in small atomic batches.

Work is split so that a crash, a Ctrl-C or a second process cannot damage the
library: worker processes only compute; the parent alone writes, committing a
batch of files to the catalog in one transaction before mirroring it in the
index. Whatever was committed survives; the next run skips it (same size and
mtime, or same content hash) and resumes with the rest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import signal
import stat
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator, Protocol

import numpy as np
from PIL import Image, ImageDraw

from facefind.catalog import MediaOutcome, NewFace, NewTrack
from facefind.errors import FaceFindError, UnreadableMediaError
from facefind.files import file_sha256
from facefind.library import Library
from facefind.pipeline import DetectedFace, FacePipeline, PipelineConfig
from facefind.pipeline.decode import DEFAULT_MAX_PIXELS, decode_image, encode_jpeg, is_image_path
from facefind.pipeline.track import FaceTracker
from facefind.pipeline.video import (
    DEFAULT_SAMPLE_FPS,
    is_video_path,
    sample_frames,
    video_info,
)

COMMIT_EVERY_FILES = 32
COMMIT_EVERY_SECONDS = 2.0
SAVE_INDEX_EVERY_SECONDS = 60.0
UNCHANGED = "unchanged"
MAX_POOL_RESTARTS = 3


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest; the defaults use every core."""

    workers: int = 0  # 0 = one per CPU core
    max_pixels: int = DEFAULT_MAX_PIXELS
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    video_fps: float | None = DEFAULT_SAMPLE_FPS  # None = every frame

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else max(1, os.cpu_count() or 1)


@dataclass
class IngestReport:
    """What one ingest run did; ``failed`` > 0 means the exit code should say so."""

    discovered: int = 0
    indexed: int = 0
    no_face: int = 0
    failed: int = 0
    unchanged: int = 0
    faces_added: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, message)

    @property
    def processed(self) -> int:
        return self.indexed + self.no_face + self.failed

    def as_counts(self) -> dict:
        return {
            "discovered": self.discovered, "indexed": self.indexed, "no_face": self.no_face,
            "failed": self.failed, "unchanged": self.unchanged, "faces_added": self.faces_added,
        }


class IngestProgress(Protocol):
    """Receives progress so a face (CLI bar, HTTP job status) can show it."""

    def started(self, total_files: int) -> None: ...

    def file_done(self, path: str, status: str, faces: int) -> None: ...

    def footage(self, path: str, frames: int, seconds_done: float, seconds_total: float) -> None:
        """Within one video: sampled frames analysed and seconds of footage covered so far."""
        ...


class _NoProgress:
    def started(self, total_files: int) -> None:
        pass

    def file_done(self, path: str, status: str, faces: int) -> None:
        pass

    def footage(self, path: str, frames: int, seconds_done: float, seconds_total: float) -> None:
        pass


# -- discovery -------------------------------------------------------------------------------------


def discover(paths: Iterable[Path]) -> Iterator[tuple[str, MediaOutcome | None]]:
    """Yield (absolute path, None) for each candidate image, or (path, failure) for what cannot be walked.

    Folders are walked following symlinks, but each real directory is entered
    once, so symlink loops end instead of recursing forever. Files named
    explicitly are tried whatever their extension; inside folders, only image
    extensions are considered.
    """
    seen_dirs: set[tuple[int, int]] = set()
    for given in paths:
        path = Path(os.path.abspath(given))
        if path.is_dir():
            yield from _walk(path, seen_dirs)
        elif path.exists() or path.is_symlink():
            if path.is_symlink() and not path.exists():
                yield str(path), _failure(str(path), "broken_link", "symbolic link points nowhere")
            else:
                yield str(path), None
        else:
            yield str(path), _failure(str(path), "missing", "no such file or folder")


def _walk(root: Path, seen_dirs: set[tuple[int, int]]) -> Iterator[tuple[str, MediaOutcome | None]]:
    try:
        info = root.stat()
    except OSError as error:
        yield str(root), _failure(str(root), "unreadable_folder", str(error))
        return
    key = (info.st_dev, info.st_ino)
    if key in seen_dirs:
        if root.is_symlink():
            yield str(root), _failure(str(root), "symlink_loop", "folder link leads back to a folder already walked")
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as error:
        yield str(root), _failure(str(root), "unreadable_folder", str(error))
        return
    for entry in entries:
        full = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=True):
                yield from _walk(full, seen_dirs)
            elif is_image_path(full) or is_video_path(full):
                if entry.is_symlink() and not full.exists():
                    yield str(full), _failure(str(full), "broken_link", "symbolic link points nowhere")
                else:
                    yield str(full), None
        except OSError as error:  # e.g. ELOOP on a self-referencing link
            reason = "symlink_loop" if entry.is_symlink() else "unreadable"
            yield str(full), _failure(str(full), reason, str(error))


def _failure(path: str, reason: str, message: str, **known) -> MediaOutcome:
    return MediaOutcome(path=path, status="failed", reason=reason, message=message, **known)


# -- the work done per file (in a worker process) --------------------------------------------------

_worker_pipeline: FacePipeline | None = None


def init_worker(config: PipelineConfig) -> None:
    """Load models once per worker; leave Ctrl-C to the parent, which commits before exiting."""
    global _worker_pipeline
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_pipeline = FacePipeline(config)


def analyze_file(
    pipeline: FacePipeline, path: str, previous_sha256: str | None, max_pixels: int
) -> tuple[MediaOutcome, dict[str, bytes]]:
    """Hash, decode and analyse one file; returns the outcome and the thumbnails to write."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            return _failure(path, "not_a_file", "not a regular file"), {}
        with open(path, "rb") as handle:
            data = handle.read()
    except PermissionError as error:
        return _failure(path, "permission_denied", str(error)), {}
    except OSError as error:
        return _failure(path, "unreadable", str(error)), {}
    sha256 = hashlib.sha256(data).hexdigest()
    known = {"sha256": sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns}
    if sha256 == previous_sha256:
        return MediaOutcome(path=path, status=UNCHANGED, **known), {}
    if not data:
        return _failure(path, "empty", "file is empty", **known), {}
    try:
        image = decode_image(data, max_pixels=max_pixels)
    except UnreadableMediaError as error:
        return _failure(path, error.reason, str(error), **known), {}
    image_info = {"width": image.width, "height": image.height, "format": image.format, "exif_time": image.exif_time}
    try:
        faces = pipeline.analyze(image.pixels)
    except Exception as error:  # a model failure on one odd image must not end the run
        return _failure(path, "analysis_failed", f"{type(error).__name__}: {error}", **known, **image_info), {}
    thumbnails: dict[str, bytes] = {}
    new_faces = []
    for face_index, face in enumerate(faces):
        name = f"{sha256[:2]}/{sha256}_{face_index}.jpg"
        thumbnails[name] = encode_jpeg(face.aligned)
        new_faces.append(_new_face(face, face_index, pipeline.model_id, name))
    status = "indexed" if new_faces else "no_face"
    reason = None if new_faces else "no_face"
    return MediaOutcome(path=path, status=status, reason=reason, faces=new_faces, **known, **image_info), thumbnails


def worker_pipeline() -> FacePipeline:
    """The pipeline :func:`init_worker` loaded in this worker process."""
    assert _worker_pipeline is not None, "worker not initialised"
    return _worker_pipeline


def _new_face(face: DetectedFace, face_index: int, model_id: str, thumbnail: str, **video) -> NewFace:
    return NewFace(
        face_index=face_index,
        box=[round(float(v), 2) for v in face.box],
        landmarks=[[round(float(x), 2), round(float(y), 2)] for x, y in face.landmarks],
        detection_score=round(face.detection_score, 4),
        quality=face.quality.to_dict(),
        model_id=model_id,
        embedding=face.embedding,
        thumbnail=thumbnail,
        masked_embedding=face.masked_embedding,
        **video,
    )


def analyze_video(
    pipeline: FacePipeline,
    path: str,
    previous_sha256: str | None,
    options: IngestOptions,
    progress: IngestProgress,
) -> tuple[MediaOutcome, dict[str, bytes]]:
    """Sample, detect, track; keep each track's best faces as templates and its best frame as thumbnail."""
    try:
        info = os.stat(path)
        sha256 = file_sha256(path)
    except PermissionError as error:
        return _failure(path, "permission_denied", str(error)), {}
    except OSError as error:
        return _failure(path, "unreadable", str(error)), {}
    known = {"sha256": sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns, "kind": "video"}
    if sha256 == previous_sha256:
        return MediaOutcome(path=path, status=UNCHANGED, **known), {}
    if info.st_size == 0:
        return _failure(path, "empty", "file is empty", **known), {}
    frames = 0
    try:
        meta = video_info(Path(path))
        tracker = FaceTracker(1.0 / (options.video_fps or meta.average_fps or 25.0))
        for frame in sample_frames(Path(path), options.video_fps, options.max_pixels):
            tracker.update(frame.time_s, pipeline.analyze(frame.pixels, masked_templates=False), frame.pixels)
            frames += 1
            progress.footage(path, frames, frame.time_s, meta.duration_s)
    except UnreadableMediaError as error:
        return _failure(path, error.reason, str(error), **known), {}
    known.update(width=meta.width, height=meta.height, format=meta.codec, duration_s=round(meta.duration_s, 3))
    thumbnails: dict[str, bytes] = {}
    faces, tracks = [], []
    for track_index, track in enumerate(tracker.finish()):
        templates = track.templates()
        best = templates[0]
        frame_name = f"{sha256[:2]}/{sha256}_t{track_index}.jpg"
        thumbnails[frame_name] = _frame_with_box(best)
        tracks.append(NewTrack(
            track_index=track_index,
            time_ranges=[[round(start, 3), round(end, 3)] for start, end in track.segments],
            best_time_s=best.time_s,
            observations=track.observations,
            frame_thumbnail=frame_name,
        ))
        masked = pipeline.masked_embeddings(np.stack([t.face.aligned for t in templates])) \
            if pipeline.config.masked_templates else [None] * len(templates)
        for template, masked_embedding in zip(templates, masked):
            name = f"{sha256[:2]}/{sha256}_{len(faces)}.jpg"
            thumbnails[name] = encode_jpeg(template.face.aligned)
            face = dataclasses.replace(template.face, masked_embedding=masked_embedding)
            faces.append(_new_face(face, len(faces), pipeline.model_id, name,
                                   track_index=track_index, frame_time_s=template.time_s))
    status, reason = ("indexed", None) if faces else ("no_face", "no_face")
    return MediaOutcome(path=path, status=status, reason=reason, faces=faces, tracks=tracks, **known), thumbnails


def _frame_with_box(candidate) -> bytes:
    """The best frame's stored thumbnail with the face boxed, for a glance at a search result."""
    frame = Image.open(io.BytesIO(candidate.frame_jpeg)).convert("RGB")
    box = [v * candidate.frame_scale for v in candidate.face.box]
    ImageDraw.Draw(frame).rectangle(box, outline=(255, 200, 0), width=3)
    return encode_jpeg(frame, quality=85)


def _analyze_in_worker(path: str, previous_sha256: str | None, max_pixels: int):
    return analyze_file(worker_pipeline(), path, previous_sha256, max_pixels)


# -- the parent: schedule, commit, checkpoint ------------------------------------------------------


class _Committer:
    """Buffers outcomes and commits them to catalog, thumbnails and index in small atomic batches."""

    def __init__(self, library: Library, report: IngestReport, progress: IngestProgress) -> None:
        self.library = library
        self.report = report
        self.progress = progress
        self.pending: list[MediaOutcome] = []
        self.last_commit = time.monotonic()
        self.last_save = time.monotonic()

    def accept(self, outcome: MediaOutcome, thumbnails: dict[str, bytes]) -> None:
        if outcome.status == UNCHANGED:
            self.library.catalog.touch_media(outcome.path, outcome.size or 0, outcome.mtime_ns or 0)
            self.report.unchanged += 1
        else:
            for name, data in thumbnails.items():  # written before the catalog refers to them
                target = self.library.thumbs_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
            self.pending.append(outcome)
            if outcome.status == "failed":
                self.report.failed += 1
                self.report.failures.append((outcome.path, outcome.reason or "error", outcome.message or ""))
            elif outcome.status == "no_face":
                self.report.no_face += 1
            else:
                self.report.indexed += 1
                self.report.faces_added += len(outcome.faces)
        self.progress.file_done(outcome.path, outcome.status, len(outcome.faces))
        if len(self.pending) >= COMMIT_EVERY_FILES or time.monotonic() - self.last_commit > COMMIT_EVERY_SECONDS:
            self.commit()

    def commit(self) -> None:
        if self.pending:
            self.library.commit_outcomes(self.pending)
            self.pending = []
        self.last_commit = time.monotonic()
        if time.monotonic() - self.last_save > SAVE_INDEX_EVERY_SECONDS:
            self.library.save_index()
            self.last_save = time.monotonic()


def ingest(
    library: Library,
    paths: list[Path],
    options: IngestOptions | None = None,
    progress: IngestProgress | None = None,
    pipeline_factory: Callable[[], FacePipeline] | None = None,
) -> IngestReport:
    """Index every image under ``paths`` into ``library``; safe to interrupt and re-run."""
    options = options or IngestOptions()
    progress = progress or _NoProgress()
    report = IngestReport()
    started = time.monotonic()
    committer = _Committer(library, report, progress)
    ingest_id = library.catalog.start_ingest([str(p) for p in paths])

    tasks: list[tuple[str, str | None]] = []
    walk_failures: list[MediaOutcome] = []
    for path, failure in discover(paths):
        if failure is not None:
            walk_failures.append(failure)
            continue
        previous = library.catalog.media_by_path(path)
        if previous is not None and previous.status != "failed":
            try:
                info = os.stat(path)
            except OSError:
                info = None
            if info is not None and (info.st_size, info.st_mtime_ns) == (previous.size, previous.mtime_ns):
                report.unchanged += 1
                continue
        retry_failed = previous is None or previous.status == "failed"  # failures are retried in full
        tasks.append((path, None if retry_failed else previous.sha256))
    report.discovered = len(tasks) + report.unchanged + len(walk_failures)
    progress.started(len(tasks) + len(walk_failures))
    status = "finished"
    video_tasks = [task for task in tasks if is_video_path(Path(task[0]))]
    image_tasks = [task for task in tasks if not is_video_path(Path(task[0]))]
    loaded: list[FacePipeline] = []

    def shared_pipeline() -> FacePipeline:
        """The in-process pipeline, loaded on first need."""
        if not loaded:
            loaded.append(pipeline_factory() if pipeline_factory else FacePipeline(options.pipeline))
        return loaded[0]

    try:
        for failure in walk_failures:
            committer.accept(failure, {})
        workers = min(options.worker_count(), max(1, len(image_tasks)))
        if workers == 1 or len(image_tasks) < 2:
            for path, previous_sha in image_tasks:
                committer.accept(*analyze_file(shared_pipeline(), path, previous_sha, options.max_pixels))
        else:
            _run_pool(image_tasks, workers, options, committer)
        # Videos run here, one at a time, with every core: frames of one file must be tracked in order.
        for path, previous_sha in video_tasks:
            committer.accept(*analyze_video(shared_pipeline(), path, previous_sha, options, progress))
    except KeyboardInterrupt:
        report.interrupted = True
        status = "interrupted"
    finally:
        committer.commit()
        library.save_index()
        report.seconds = time.monotonic() - started
        library.catalog.finish_ingest(ingest_id, report.as_counts(), status)
    return report


def _run_pool(tasks: list[tuple[str, str | None]], workers: int, options: IngestOptions, committer: _Committer) -> None:
    """Fan files out to ``workers`` processes, each with its share of CPU threads.

    If a worker dies (out of memory, a crash in native code), the files it had in
    flight are recorded as ``worker_crashed`` (and retried by the next run), a new
    pool is started, and the run goes on.
    """
    threads = max(1, (os.cpu_count() or 1) // workers)
    config = PipelineConfig(**{**options.pipeline.__dict__, "threads": threads})
    queue = iter(tasks)
    for _attempt in range(MAX_POOL_RESTARTS + 1):
        executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=init_worker, initargs=(config,)
        )
        in_flight: dict[Future, str] = {}
        try:
            while True:
                while len(in_flight) < workers * 4:
                    task = next(queue, None)
                    if task is None:
                        break
                    in_flight[executor.submit(_analyze_in_worker, task[0], task[1], options.max_pixels)] = task[0]
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()  # raises BrokenProcessPool if a worker died
                    del in_flight[future]
                    committer.accept(*outcome)
        except BrokenProcessPool as error:
            for path in in_flight.values():
                committer.accept(_failure(path, "worker_crashed", f"a worker process died: {error}"), {})
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
    raise FaceFindError(f"worker processes kept dying ({MAX_POOL_RESTARTS + 1} times); try --workers 1", reason="worker_crashed")
