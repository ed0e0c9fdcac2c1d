"""Erasure of a person: every face of theirs within a strict FMR, everywhere the library keeps it; optionally an opt-out.

Found like a search (every stored face scored against the probe, each with its calibrated FMR),
but nothing is written to the search log: an erasure must not itself leave the person's vector
behind. Deletion goes through the library's removal path (catalog rows with secure delete, index
entries, crops, video tracks and boxed frames, WAL checkpoint); a file left with none of its faces
is forgotten entirely (path, hash, ingest log), and searches whose probe was this person lose
their probe vector, path, hash and results. The report names what went (face ids, forgotten files,
scrubbed searches) so the audit log can redact its own mentions of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facefind.calibration import CalibrationSet
from facefind.library import CHECKPOINT_PATIENCE_S, Library
from facefind.pipeline import DetectedFace, FacePipeline
from facefind.search import QUALITY_RANK, calibrated, pair_table, pick_face, probe_faces, read_probe


PREFILTER_MARGIN = 0.05  # thresholds sit on the calibration grid; FMR is interpolated between grid points


@dataclass(frozen=True)
class ErasureCandidate:
    """One stored face found to be the person: what the confirmation shows."""

    face_id: int
    path: str
    thumbnail: str | None  # crop under the library's thumbs/
    similarity: float
    fmr: float


@dataclass(frozen=True)
class ErasurePlan:
    probe_face: DetectedFace
    max_fmr: float
    candidates: list[ErasureCandidate]
    threshold: float  # the similarity the strict FMR corresponds to for this probe: the opt-out's cut-off


@dataclass(frozen=True)
class ErasureReport:
    faces_removed: int
    files_forgotten: int
    searches_scrubbed: int
    opted_out: bool
    face_ids: tuple[int, ...] = ()
    forgotten_paths: tuple[str, ...] = ()
    forgotten_sha256s: tuple[str, ...] = ()
    search_ids: tuple[int, ...] = ()  # the scrubbed searches: their probe was this person


def plan_erasure(
    library: Library, pipeline: FacePipeline, calibration: CalibrationSet, probe: Path | bytes,
    face_index: int | None, max_fmr: float, max_pixels: int,
) -> ErasurePlan:
    """Every stored face whose pair FMR against the probe face is at most ``max_fmr``, best first."""
    name = str(probe) if isinstance(probe, Path) else "the probe image"
    faces = probe_faces(pipeline, read_probe(probe), name, max_pixels)
    probe_face = faces[pick_face(faces, face_index)]
    covered = bool(probe_face.quality.lower_face_covered)
    threshold = calibration.table_for(probe_face.quality.verdict, covered).threshold_for_fmr(max_fmr)
    # Every stored face is scored exactly (never through an approximate index: a missed face stays).
    # Only scores that could reach max_fmr with some gallery quality are looked up and calibrated.
    lowest = min(pair_table(calibration, probe_face.quality.verdict, verdict, covered).threshold_for_fmr(max_fmr)
                 for verdict in QUALITY_RANK) - PREFILTER_MARGIN
    candidates = []
    for ids, vectors in library.catalog.iter_embeddings(library.model_id, dim=library.dim):
        scores = vectors @ probe_face.embedding
        close = np.nonzero(scores >= lowest)[0]  # a damaged (NaN) row compares False: never erased by accident
        records = library.catalog.faces([int(ids[i]) for i in close])
        for i in close:
            record = records.get(int(ids[i]))
            if record is None:
                continue
            table = pair_table(calibration, probe_face.quality.verdict, record.quality["verdict"], covered)
            fmr = calibrated(table, float(scores[i]))["fmr"]
            if fmr <= max_fmr:
                candidates.append(ErasureCandidate(record.id, record.path, record.thumbnail, float(scores[i]), fmr))
    candidates.sort(key=lambda c: -c.similarity)
    return ErasurePlan(probe_face, max_fmr, candidates, threshold)


def carry_out_erasure(library: Library, plan: ErasurePlan, opt_out: bool) -> ErasureReport:
    """Delete the planned faces everywhere; with ``opt_out``, keep the probe's template on the block list."""
    search_ids, probes = library.catalog.probe_embeddings()
    theirs = [sid for sid, score in zip(search_ids, _scores(probes, plan.probe_face.embedding))
              if score >= plan.threshold]
    library.catalog.forget_search_probes(theirs)
    if opt_out:
        library.catalog.block_template(library.model_id, plan.probe_face.embedding, plan.threshold)
    # the removals come last: each ends with the WAL checkpoint that also flushes the changes above
    removed = library.remove_faces([c.face_id for c in plan.candidates]) if plan.candidates else []
    emptied = {c.path: record.sha256 for c in plan.candidates
               if (record := library.catalog.media_by_path(c.path)) is not None and record.face_count == 0}
    for path in sorted(emptied):  # nothing else of the file is kept: forget its path and hash too
        library.remove_media(path)
    if not removed:
        deadline = time.monotonic() + CHECKPOINT_PATIENCE_S
        while not library.catalog.checkpoint() and time.monotonic() < deadline:
            time.sleep(0.05)
    return ErasureReport(len(removed), len(emptied), len(theirs), opt_out, tuple(removed), tuple(sorted(emptied)),
                         tuple(sha for sha in emptied.values() if sha), tuple(theirs))


def file_hashes_under(library: Library, path: str) -> frozenset[str]:
    """SHA-256s of the files a removal of ``path`` (a file or folder) takes, read before it forgets them.

    A file's hash is what names it in the audit log when it was a probe; files without a face never were.
    """
    media = library.catalog.media_by_path(path)
    faces = library.catalog.faces(library.catalog.face_ids_under(path))
    return frozenset({record.sha256 for record in faces.values() if record.sha256}
                     | ({media.sha256} if media is not None and media.sha256 else set()))


def _scores(vectors: np.ndarray, embedding: np.ndarray) -> list[float]:
    if not len(vectors):
        return []
    scores = np.nan_to_num(vectors @ embedding, nan=-1.0)  # a damaged stored probe is no match
    return scores.tolist()
