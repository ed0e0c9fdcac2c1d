"""The one library API: the CLI, the HTTP service and the web UI all call this class.

    from facefind import FaceFind
    ff = FaceFind("/data/my-library")
    ff.index([Path("/photos")])
    result = ff.search(Path("probe.jpg"))
    for match in result.matches:
        print(match.similarity, match.source.path)
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from facefind.calibration import CalibrationSet, default_calibration
from facefind.errors import FaceFindError, NotFoundError
from facefind.evidence import export_evidence
from facefind.ingest import IngestOptions, IngestProgress, IngestReport, ingest
from facefind.library import Library, default_library_path
from facefind.pipeline import FacePipeline, PipelineConfig
from facefind.pipeline.decode import DEFAULT_MAX_PIXELS, decode_image
from facefind.pipeline.embed import Recognizer
from facefind.pipeline.models import ARCFACE_MBF
from facefind.pipeline.video import DEFAULT_SAMPLE_FPS
from facefind.schema import FacesResponse, SearchResponse, VerifyResponse
from facefind.search import (
    DEFAULT_MAX_FMR,
    detected_to_face,
    read_probe,
    record_to_face,
    search_library,
    verify_pair,
)

DEFAULT_EMBEDDING_DIM = 512


class FaceFind:
    """A face library on disk and the pipeline that fills and searches it."""

    def __init__(
        self,
        library: Path | str | None = None,
        pipeline_config: PipelineConfig | None = None,
        recognizer: Recognizer | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        calibration: CalibrationSet | Path | None = None,
    ) -> None:
        self.library_path = (Path(library) if library is not None else default_library_path()).absolute()
        self.pipeline_config = pipeline_config or PipelineConfig()
        self.max_pixels = max_pixels
        self._recognizer = recognizer
        self._pipeline: FacePipeline | None = None
        self._calibration = CalibrationSet.load(calibration) if isinstance(calibration, (str, Path)) else calibration
        self._resident: Library | None = None

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

    def __enter__(self) -> "FaceFind":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def _library(self, writable: bool = False) -> Iterator[Library]:
        """The open library, or one opened for this call only (the CLI)."""
        if self._resident is not None:
            yield self._resident
        else:
            with self.open_library(writable=writable) as library:
                yield library

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def pipeline(self) -> FacePipeline:
        """Models are loaded on first use, so stats/remove stay instant."""
        if self._pipeline is None:
            self._pipeline = FacePipeline(self.pipeline_config, self._recognizer)
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
            self._calibration = default_calibration()
        if self._calibration.model_id != self.model_id:
            raise FaceFindError(
                f"calibration is for {self._calibration.model_id}, not {self.model_id}", reason="no_calibration"
            )
        return self._calibration

    @property
    def model_id(self) -> str:
        return self._recognizer.model_id if self._recognizer else ARCFACE_MBF.model_id

    @property
    def embedding_dim(self) -> int:
        return self._recognizer.dim if self._recognizer else DEFAULT_EMBEDDING_DIM

    def open_library(self, writable: bool = False) -> Library:
        return Library(self.library_path, self.model_id, self.embedding_dim, writable=writable)

    # -- the operations ------------------------------------------------------------------------

    def index(
        self,
        paths: list[Path],
        workers: int = 0,
        progress: IngestProgress | None = None,
        video_fps: float | None = DEFAULT_SAMPLE_FPS,
    ) -> IngestReport:
        """Find and store every face in the images and videos under ``paths``; re-runs only do new or changed files.

        Videos are sampled at ``video_fps`` frames per second of footage (None: every frame) and their
        faces tracked; each track keeps a few best faces as templates.
        """
        if self._recognizer is not None:
            workers = 1  # a plugged-in recogniser lives in this process only
        options = IngestOptions(
            workers=workers, max_pixels=self.max_pixels, pipeline=self.pipeline_config, video_fps=video_fps
        )
        with self._library(writable=True) as library:
            return ingest(library, paths, options, progress, pipeline_factory=lambda: self.pipeline)

    def search(
        self,
        probe: Path | bytes,
        face: int | None = None,
        top_k: int = 10,
        max_fmr: float = DEFAULT_MAX_FMR,
        show_all: bool = False,
        within: Path | None = None,
    ) -> SearchResponse:
        """Calibrated matches for one face of ``probe`` (the largest unless ``face`` is given).

        Only matches with FMR <= ``max_fmr`` and at most one expected false match among the
        faces compared are returned, unless ``show_all``. ``within`` limits the search to the
        faces of one file or folder, e.g. a video: its appearances come back as time ranges.
        """
        with self._library() as library, library.reading():
            return search_library(
                library, self.pipeline, self.calibration, probe, face, top_k, max_fmr, show_all, self.max_pixels,
                within,
            )

    def verify(
        self,
        a: Path | bytes,
        b: Path | bytes,
        face_a: int | None = None,
        face_b: int | None = None,
        max_fmr: float = DEFAULT_MAX_FMR,
    ) -> VerifyResponse:
        """How likely one face of A and one face of B are the same person, as a calibrated FMR."""
        return verify_pair(self.pipeline, self.calibration, a, b, face_a, face_b, max_fmr, self.max_pixels)

    def faces(self, path: Path) -> FacesResponse:
        """The faces of one file: from the catalog if indexed, else detected now."""
        absolute = str(path.absolute())
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

    def stats(self) -> dict:
        """Counts of files by status, unindexed files by reason, faces by quality, searches."""
        with self._library() as library, library.reading():
            return {"library": str(self.library_path), "index_size": len(library.index), **library.catalog.stats()}

    def remove(self, path: Path | None = None, face_ids: list[int] | None = None) -> int:
        """Remove a file (or a folder's files) or single faces from catalog and index; returns faces removed."""
        if (path is None) == (not face_ids):
            raise FaceFindError("give either a path or face ids to remove", reason="bad_argument")
        with self._library(writable=True) as library:
            with library.writing():
                if path is not None:
                    removed, thumbnails, files = library.catalog.remove_media(str(path.absolute()))
                    if files == 0:
                        raise NotFoundError(f"{path} is not in the library")
                else:
                    known = library.catalog.faces(face_ids or [])
                    missing = sorted(set(face_ids or []) - set(known))
                    if missing:
                        raise NotFoundError(f"no face with id {', '.join(map(str, missing))} in the library")
                    removed, thumbnails = list(known), library.catalog.remove_faces(list(known))
                library.remove_from_indexes(removed)
            library.save_index()
            library.delete_thumbnails(thumbnails)
            return len(removed)

    def calibrate(
        self, lfw_dir: Path, out: Path, cache_dir: Path | None = None, workers: int = 0, progress=None
    ) -> CalibrationSet:
        """Fit calibration tables on an LFW-layout folder (half the people) and check them on the rest."""
        from facefind.calibration.fit import calibrate

        if self._recognizer is not None:
            raise FaceFindError("calibrate runs the bundled recogniser only", reason="bad_argument")
        result = calibrate(lfw_dir, cache_dir, workers, progress)
        result.save(out)
        return result

    def export_evidence(self, match_id: str, out: Path) -> Path:
        """Write a self-contained HTML evidence page for a match id printed by a search."""
        with self._library() as library, library.reading():
            return export_evidence(library, self.calibration, match_id, out, self.max_pixels)
