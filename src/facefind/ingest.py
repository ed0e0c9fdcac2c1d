"""Ingest: walk folders, run the pipeline on new or changed files, commit in small atomic batches.

Work is split so that a crash, a Ctrl-C or a second process cannot damage the
library: worker processes only compute; the parent alone writes, committing a
batch of files to the catalog in one transaction before mirroring it in the
index. Whatever was committed survives; the next run skips it (same size and
mtime, or same content hash) and resumes with the rest.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import hashlib
import io
import math
import multiprocessing
import os
import signal
import sys
import threading
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
from facefind.catalog.base import CommitResult
from facefind.errors import FaceFindError, UnreadableMediaError
from facefind.files import READ_WHOLE_MAX_BYTES, open_regular, path_to_text, stream_sha256
from facefind.library import Library
from facefind.optout import BlockList
from facefind.pipeline import DetectedFace, FacePipeline, PipelineConfig
from facefind.pipeline.align import CROP_SIZE, align_face
from facefind.pipeline.decode import DEFAULT_MAX_PIXELS, decode_image, encode_jpeg, is_image_path
from facefind.pipeline.detect import Detection
from facefind.pipeline.track import FaceTracker, Sighting
from facefind.pipeline.video import (
    DEFAULT_SAMPLE_FPS,
    Coverage,
    VideoFrame,
    in_halves,
    is_video_path,
    run_ahead,
    sample_frames,
    video_info,
)

COMMIT_EVERY_FILES = 32
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
COMMIT_EVERY_SECONDS = 2.0
SAVE_INDEX_EVERY_SECONDS = 60.0
UNCHANGED = "unchanged"
TRUNCATION_TOLERANCE_S = 0.5  # footage missing beyond this, against the header's duration, is truncation
MAX_POOL_RESTARTS = 3


@dataclass(frozen=True)
class IngestOptions:
    """How to ingest; the defaults use every core."""

    workers: int = 0  # 0 = one per CPU core
    max_pixels: int = DEFAULT_MAX_PIXELS
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    video_fps: float | None = DEFAULT_SAMPLE_FPS  # None = every frame
    cluster: str | None = None  # a Dask scheduler address: images are analysed on its workers (ingest_dask)

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
    opted_out: int = 0  # faces not stored: they match a person on the opt-out block list
    interrupted: bool = False
    cancelled: bool = False  # stopped on request (``cancel`` set): what was done is committed
    seconds: float = 0.0
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # (path, reason, message)

    @property
    def processed(self) -> int:
        return self.indexed + self.no_face + self.failed

    def as_counts(self) -> dict:
        return {
            "discovered": self.discovered, "indexed": self.indexed, "no_face": self.no_face,
            "failed": self.failed, "unchanged": self.unchanged, "faces_added": self.faces_added,
            "opted_out": self.opted_out,
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
    """Depth-first in name order, with an explicit stack of open folders: a tree thousands of
    folders deep must not exhaust Python's recursion limit (it ended the whole run)."""
    open_folders: list[Iterator[os.DirEntry]] = []
    yield from _enter(root, seen_dirs, open_folders)
    while open_folders:
        entry = next(open_folders[-1], None)
        if entry is None:
            open_folders.pop()
            continue
        full = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=True):
                yield from _enter(full, seen_dirs, open_folders)
            elif is_image_path(full) or is_video_path(full):
                if entry.is_symlink() and not full.exists():
                    yield str(full), _failure(str(full), "broken_link", "symbolic link points nowhere")
                else:
                    yield str(full), None
        except OSError as error:  # e.g. ELOOP on a self-referencing link
            reason = "symlink_loop" if entry.is_symlink() else "unreadable"
            yield str(full), _failure(str(full), reason, str(error))


def _enter(
    folder: Path, seen_dirs: set[tuple[int, int]], open_folders: list[Iterator[os.DirEntry]]
) -> Iterator[tuple[str, MediaOutcome | None]]:
    """Push ``folder``'s entries, sorted by name, unless it cannot be read or was walked already."""
    try:
        info = folder.stat()
    except OSError as error:
        yield str(folder), _failure(str(folder), "unreadable_folder", str(error))
        return
    key = (info.st_dev, info.st_ino)
    if key in seen_dirs:
        if folder.is_symlink():
            yield str(folder), _failure(str(folder), "symlink_loop", "folder link leads back to a folder already walked")
        return
    seen_dirs.add(key)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as error:
        yield str(folder), _failure(str(folder), "unreadable_folder", str(error))
        return
    open_folders.append(iter(entries))


def _failure(path: str, reason: str, message: str, **known) -> MediaOutcome:
    return MediaOutcome(path=path, status="failed", reason=reason, message=message, **known)


# -- the work done per file (in a worker process) --------------------------------------------------

_worker_pipeline: FacePipeline | None = None


def init_worker(config: PipelineConfig) -> None:
    """Load models once per worker; leave Ctrl-C to the parent, which commits before exiting.

    A worker must not outlive its parent: killed with -9, the parent cannot stop it, and each
    worker holds a few hundred MB of models.
    """
    global _worker_pipeline
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    _worker_pipeline = FacePipeline(config)


def _die_with_parent() -> None:
    """Have the kernel kill this process when its parent dies (Linux PR_SET_PDEATHSIG), and also
    watch the parent once a second (other systems, or a parent that died before prctl)."""
    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None and spawner.pid else os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the watch below still ends the worker

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch_parent, name="watch-parent", daemon=True).start()


def analyze_file(
    pipeline: FacePipeline, path: str, previous_sha256: str | None, max_pixels: int
) -> tuple[MediaOutcome, dict[str, bytes]]:
    """Hash, decode and analyse one file; returns the outcome and the thumbnails to write.

    Whatever goes wrong with this one file (a decoder bug, a model failure, memory) becomes
    its ``analysis_failed`` outcome: one hostile file must never end the run.
    """
    try:
        return _analyze_file(pipeline, path, previous_sha256, max_pixels)
    except Exception as error:
        return _failure(path, "analysis_failed", f"{type(error).__name__}: {error}"), {}


def _analyze_file(
    pipeline: FacePipeline, path: str, previous_sha256: str | None, max_pixels: int
) -> tuple[MediaOutcome, dict[str, bytes]]:
    """Small files are read once (hash and decode share the bytes); large ones are decoded from the
    path, header first, and hashed in blocks, so no file is ever held in memory whole."""
    try:
        handle, info = open_regular(path)
        with handle:
            data = handle.read(info.st_size) if info.st_size <= READ_WHOLE_MAX_BYTES else None  # bounded if it grows
    except FaceFindError as error:
        return _failure(path, error.reason, str(error)), {}
    except OSError as error:
        return _failure(path, "unreadable", str(error)), {}
    known = {"size": info.st_size, "mtime_ns": info.st_mtime_ns}
    if info.st_size == 0:
        return _failure(path, "empty", "file is empty", **known), {}
    try:
        if data is None:  # large: refuse a non-image or oversized picture from its header before hashing GBs
            image = decode_image(Path(path), max_pixels=max_pixels)
            with open_regular(path)[0] as handle:
                sha256 = stream_sha256(handle)
        else:
            sha256 = hashlib.sha256(data).hexdigest()
        known["sha256"] = sha256
        if sha256 == previous_sha256:
            return MediaOutcome(path=path, status=UNCHANGED, **known), {}
        if data is not None:
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
    cancel: threading.Event | None = None,
) -> tuple[MediaOutcome, dict[str, bytes]] | None:
    """Sample, detect, track; keep each track's best faces as templates and its best frame as thumbnail.

    Returns None when ``cancel`` is set part-way: a half-analysed video is not recorded. Any
    exception while analysing it becomes its ``analysis_failed`` outcome, as for images.
    """
    try:
        return _analyze_video(pipeline, path, previous_sha256, options, progress, cancel)
    except Exception as error:
        return _failure(path, "analysis_failed", f"{type(error).__name__}: {error}", kind="video"), {}


def _analyze_video(
    pipeline: FacePipeline,
    path: str,
    previous_sha256: str | None,
    options: IngestOptions,
    progress: IngestProgress,
    cancel: threading.Event | None,
) -> tuple[MediaOutcome, dict[str, bytes]] | None:
    try:
        handle, info = open_regular(path)  # a FIFO named .mp4 is refused before anything blocks on it
        with handle:
            sha256 = stream_sha256(handle)
    except FaceFindError as error:
        return _failure(path, error.reason, str(error), kind="video"), {}
    except OSError as error:
        return _failure(path, "unreadable", str(error), kind="video"), {}
    known = {"sha256": sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns, "kind": "video"}
    if sha256 == previous_sha256:
        return MediaOutcome(path=path, status=UNCHANGED, **known), {}
    if info.st_size == 0:
        return _failure(path, "empty", "file is empty", **known), {}
    frames = 0
    coverage = Coverage()
    shown = path_to_text(path)
    pipeline = pipeline.single_threaded  # two threads of one-thread sessions: detection ahead, embedding behind
    try:
        meta = video_info(Path(path))
        tracker = FaceTracker(1.0 / (options.video_fps or meta.average_fps or 25.0))
        frames_ahead = _detected(pipeline, sample_frames(Path(path), options.video_fps, options.max_pixels, coverage))
        with contextlib.closing(run_ahead(frames_ahead)) as analysed_frames:  # closing stops the decoding thread
            for frame, detections, crops in analysed_frames:
                if cancel is not None and cancel.is_set():
                    return None
                # Faces that plainly continue a track are not embedded: embedding is most of the cost.
                steady = tracker.steady(frame.time_s, [d.box for d in detections], crops)
                fresh = [d for d in range(len(detections)) if d not in steady]
                faces = pipeline.describe([detections[d] for d in fresh], crops[fresh], masked_templates=False,
                                          upper_face_norms=False)  # read for the kept templates: complete()
                # ...but they still compete to be templates; only the faces chosen are embedded, in finish().
                continued = {t: Sighting(detections[d], crops[d]) for d, t in steady.items()}
                tracker.update(frame.time_s, sorted(faces, key=lambda face: -face.area), frame.pixels, continued)
                frames += 1
                progress.footage(shown, frames, frame.time_s, meta.duration_s)
    except UnreadableMediaError as error:
        return _failure(path, error.reason, str(error), **known), {}
    duration, message = meta.duration_s, None
    if coverage.damage is not None or meta.duration_s - coverage.decoded_until_s > TRUNCATION_TOLERANCE_S:
        duration = coverage.decoded_until_s  # what was analysed, not what the header promised
        message = (f"truncated video: decoded {coverage.decoded_until_s:.1f} s of the {meta.duration_s:.1f} s"
                   " its header gives")
    known.update(width=meta.width, height=meta.height, format=meta.codec, duration_s=round(duration, 3),
                 message=message)
    thumbnails: dict[str, bytes] = {}
    faces, tracks = [], []
    finished = tracker.finish(lambda detections, crops: in_halves(
        lambda d, c: pipeline.describe(d, c, masked_templates=False, upper_face_norms=False), detections, crops))
    chosen = [track.templates() for track in finished]
    completed = iter(in_halves(pipeline.complete, [t.face for templates in chosen for t in templates]))
    for track_index, (track, templates) in enumerate(zip(finished, chosen)):
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
        for template in templates:
            name = f"{sha256[:2]}/{sha256}_{len(faces)}.jpg"
            thumbnails[name] = encode_jpeg(template.face.aligned)
            face = next(completed)
            faces.append(_new_face(face, len(faces), pipeline.model_id, name,
                                   track_index=track_index, frame_time_s=template.time_s))
    status, reason = ("indexed", None) if faces else ("no_face", "no_face")
    return MediaOutcome(path=path, status=status, reason=reason, faces=faces, tracks=tracks, **known), thumbnails


def _detected(
    pipeline: FacePipeline, frames: Iterator[VideoFrame]
) -> Iterator[tuple[VideoFrame, list[Detection], np.ndarray]]:
    """Each frame with its detections and aligned crops: the part of the work that runs ahead."""
    for frame in frames:
        detections = pipeline.detector.detect(frame.pixels)
        crops = np.stack([align_face(frame.pixels, d.landmarks) for d in detections]) if detections else \
            np.empty((0, CROP_SIZE, CROP_SIZE, 3), np.uint8)
        yield frame, detections, crops


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

    def __init__(self, library: Library, report: IngestReport, progress: IngestProgress,
                 on_commit: Callable[[CommitResult], None] | None = None) -> None:
        self.library = library
        self.report = report
        self.progress = progress
        self.on_commit = on_commit
        self.pending: list[MediaOutcome] = []
        self.blocked = BlockList.load(library.catalog, library.model_id)
        self.last_commit = time.monotonic()
        self.last_save = time.monotonic()

    def accept(self, outcome: MediaOutcome, thumbnails: dict[str, bytes]) -> None:
        """Record one file's outcome; its path is stored (and reported) in its valid-UTF-8 text form."""
        outcome = dataclasses.replace(outcome, path=path_to_text(outcome.path))
        if outcome.status == UNCHANGED:
            self.library.catalog.touch_media(outcome.path, outcome.size or 0, outcome.mtime_ns or 0)
            self.report.unchanged += 1
        else:
            outcome, thumbnails, opted_out = self.blocked.screen(outcome, thumbnails)  # never stored, not even a crop
            self.report.opted_out += opted_out
            self.library.write_thumbnails(thumbnails)  # written before the catalog refers to them
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
            result = self.library.commit_outcomes(self.pending)
            self.pending = []
            if self.on_commit is not None:  # e.g. watchlist checks: the batch is committed and searchable now
                self.on_commit(result)
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
    cancel: threading.Event | None = None,
    on_commit: Callable[[CommitResult], None] | None = None,
) -> IngestReport:
    """Index every image under ``paths`` into ``library``; safe to interrupt and re-run.

    ``on_commit`` is called with every committed batch's CommitResult (its new face ids), in this thread.

    Setting ``cancel`` (from another thread, e.g. an HTTP job) stops the run between
    files: no new file is started, what is done is committed and the index saved, and
    the run is logged ``cancelled``. A video being analysed is dropped and retried next run.
    """
    cancel = cancel or threading.Event()
    options = options or IngestOptions()
    if options.video_fps is not None and not (math.isfinite(options.video_fps) and options.video_fps > 0):
        raise FaceFindError(f"video fps must be more than 0, not {options.video_fps}", reason="bad_argument")
    progress = progress or _NoProgress()
    report = IngestReport()
    started = time.monotonic()
    committer = _Committer(library, report, progress, on_commit)
    ingest_id = library.catalog.start_ingest([path_to_text(p) for p in paths])
    status = "finished"
    loaded: list[FacePipeline] = []

    def shared_pipeline() -> FacePipeline:
        """The in-process pipeline, loaded on first need."""
        if not loaded:
            loaded.append(pipeline_factory() if pipeline_factory else FacePipeline(options.pipeline))
        return loaded[0]

    try:
        library.take_over_died_ingests()  # a replica killed mid-ingest since this library opened
        tasks, walk_failures = _plan(library, paths, report)
        progress.started(len(tasks) + len(walk_failures))
        video_tasks = [task for task in tasks if is_video_path(Path(task[0]))]
        image_tasks = [task for task in tasks if not is_video_path(Path(task[0]))]
        for failure in walk_failures:
            committer.accept(failure, {})
        workers = min(options.worker_count(), max(1, len(image_tasks)))
        if options.cluster:
            from facefind.ingest_dask import run_on_cluster  # imports Dask only when a cluster is asked for

            run_on_cluster(image_tasks, options, committer.accept, cancel)
        elif workers == 1 or len(image_tasks) < 2:
            for path, previous_sha in image_tasks:
                if cancel.is_set():
                    break
                committer.accept(*analyze_file(shared_pipeline(), path, previous_sha, options.max_pixels))
        else:
            _run_pool(image_tasks, workers, options, committer, cancel)
        # Videos run here, one at a time, with every core: frames of one file must be tracked in order.
        for path, previous_sha in video_tasks:
            if cancel.is_set():
                break
            analysed = analyze_video(shared_pipeline(), path, previous_sha, options, progress, cancel)
            if analysed is not None:
                committer.accept(*analysed)
        if cancel.is_set():
            report.cancelled = True
            status = "cancelled"
    except KeyboardInterrupt:
        report.interrupted = True
        status = "interrupted"
    except BaseException:
        status = "failed"  # the run is logged as what it was, never `finished`
        raise
    finally:
        try:
            committer.commit()
            library.save_index()
        except BaseException:
            status = "failed"
            raise
        finally:
            report.seconds = time.monotonic() - started
            library.catalog.finish_ingest(ingest_id, report.as_counts(), status)
    return report


def _plan(
    library: Library, paths: list[Path], report: IngestReport
) -> tuple[list[tuple[str, str | None]], list[MediaOutcome]]:
    """The files to analyse (with the hash they had, to spot touched-but-same files) and walk failures.

    Files whose size and mtime match the catalog are counted unchanged and skipped; failures are
    retried in full.
    """
    tasks: list[tuple[str, str | None]] = []
    walk_failures: list[MediaOutcome] = []
    for path, failure in discover(paths):
        if failure is not None:
            walk_failures.append(failure)
            continue
        previous = library.catalog.media_by_path(path_to_text(path))
        if previous is not None and previous.status != "failed":
            try:
                info = os.stat(path)
            except OSError:
                info = None
            if info is not None and (info.st_size, info.st_mtime_ns) == (previous.size, previous.mtime_ns):
                report.unchanged += 1
                continue
        retry_failed = previous is None or previous.status == "failed"
        tasks.append((path, None if retry_failed else previous.sha256))
    report.discovered = len(tasks) + report.unchanged + len(walk_failures)
    return tasks, walk_failures


def _run_pool(
    tasks: list[tuple[str, str | None]],
    workers: int,
    options: IngestOptions,
    committer: _Committer,
    cancel: threading.Event,
) -> None:
    """Fan files out to ``workers`` processes, each with its share of CPU threads.

    Once ``cancel`` is set, no new file is submitted and queued ones are dropped;
    files a worker already started are finished and committed.

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
                if cancel.is_set():
                    for future in [f for f in in_flight if f.cancel()]:
                        del in_flight[future]
                while len(in_flight) < workers * 4 and not cancel.is_set():
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
