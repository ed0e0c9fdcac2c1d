"""The catalog interface and the records that cross it.

A catalog stores media (files and their content hash), faces (box, landmarks,
quality, model id, and the embedding itself in float16, so the vector index can
always be rebuilt), an ingest log and a log of searches. SQLite is the embedded backend;
a server backend implements the same small protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np


@dataclass(frozen=True)
class NewFace:
    """A face about to be stored."""

    face_index: int
    box: list[float]
    landmarks: list[list[float]]
    detection_score: float
    quality: dict
    model_id: str
    embedding: np.ndarray
    thumbnail: str | None
    track_index: int | None = None  # video faces: the track this template belongs to
    frame_time_s: float | None = None  # video faces: when this template's frame was shown
    masked_embedding: np.ndarray | None = None  # the face wearing the gallery mask, for covered probes


@dataclass(frozen=True)
class NewTrack:
    """A person's appearance in a video: time ranges and the best frame."""

    track_index: int
    time_ranges: list[list[float]]
    best_time_s: float
    observations: int
    frame_thumbnail: str | None


@dataclass(frozen=True)
class MediaOutcome:
    """What happened to one file during ingest, ready to be committed."""

    path: str
    status: str  # "indexed", "no_face" or "failed"
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    exif_time: str | None = None
    reason: str | None = None
    message: str | None = None
    faces: list[NewFace] = field(default_factory=list)
    kind: str = "image"  # "image" or "video"
    duration_s: float | None = None
    tracks: list[NewTrack] = field(default_factory=list)


@dataclass(frozen=True)
class MediaRecord:
    """A file as the catalog remembers it."""

    id: int
    path: str
    status: str
    sha256: str | None
    size: int | None
    mtime_ns: int | None
    width: int | None
    height: int | None
    format: str | None
    exif_time: str | None
    reason: str | None
    message: str | None
    face_count: int
    ingested_at: str
    kind: str
    duration_s: float | None


@dataclass(frozen=True)
class TrackRecord:
    """Where in a video a face's track appears."""

    id: int
    track_index: int
    time_ranges: list[list[float]]
    best_time_s: float
    observations: int
    frame_thumbnail: str | None


@dataclass(frozen=True)
class FaceRecord:
    """A stored face with where it came from."""

    id: int
    media_id: int
    path: str
    sha256: str | None
    media_width: int | None
    media_height: int | None
    face_index: int
    box: list[float]
    landmarks: list[list[float]]
    detection_score: float
    quality: dict
    model_id: str
    thumbnail: str | None
    frame_time_s: float | None = None
    track: TrackRecord | None = None


@dataclass(frozen=True)
class CommitResult:
    """Face ids added and removed by one committed batch, the catalog revision after it, and the thumbnails
    of replaced faces that nothing refers to any more."""

    added_ids: list[int]
    added_vectors: np.ndarray
    removed_ids: list[int]
    revision: int
    added_masked_ids: list[int] = field(default_factory=list)
    added_masked_vectors: np.ndarray | None = None
    released_thumbnails: list[str] = field(default_factory=list)  # no longer used by any face: to delete


class Catalog(Protocol):
    """What facefind needs from a catalog backend."""

    def revision(self) -> int:
        """A counter bumped by every change to the set of faces; the index records the one it matches."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def media_by_path(self, path: str) -> MediaRecord | None: ...

    def commit_outcomes(self, outcomes: list[MediaOutcome]) -> CommitResult:
        """Store a batch of ingest outcomes atomically, replacing older versions of the same paths."""
        ...

    def touch_media(self, path: str, size: int, mtime_ns: int) -> None:
        """Record a new size/mtime for a file whose content hash did not change."""
        ...

    def remove_media(self, path: str) -> tuple[list[int], list[str], int]:
        """Forget a file (or every file under a folder) and scrub it from the search log; returns removed face
        ids, the thumbnails no face refers to any more (queued in ``pending_deletions``), file count."""
        ...

    def remove_faces(self, face_ids: list[int]) -> tuple[list[int], list[str]]:
        """Forget single faces (a video face takes its whole track); returns face ids removed, thumbnails released."""
        ...

    def mark_damaged(self, face_ids: list[int]) -> tuple[list[int], list[str]]:
        """Drop the faces of the files holding ``face_ids`` and mark the files failed (``damaged_in_catalog``)."""
        ...

    def pending_deletions(self) -> list[str]:
        """Released thumbnails whose deletion a crash may have interrupted."""
        ...

    def deletions_done(self, names: list[str]) -> None: ...

    def referenced_thumbnails(self) -> set[str]: ...

    def integrity_problems(self) -> list[str]:
        """The backend's own full consistency check; empty when sound."""
        ...

    def rebuild_sql_indexes(self) -> None: ...

    def checkpoint(self) -> bool:
        """Make removals final on disk (no copy of erased rows left in a log); False if a reader prevented it."""
        ...

    def mark_abandoned_ingests(self) -> int:
        """Mark ingests still logged as running as died; called by a new writer. Returns how many."""
        ...

    def fingerprint(self, model_id: str, masked: bool = False) -> tuple[int, int]:
        """(count, sum of ids) of stored embeddings, to compare with an index cheaply."""
        ...

    def iter_faces(self) -> Iterator[FaceRecord]: ...

    def faces(self, face_ids: list[int]) -> dict[int, FaceRecord]: ...

    def faces_of_media(self, path: str) -> list[FaceRecord]: ...

    def face_ids_under(self, path: str) -> list[int]:
        """Ids of every face in the file ``path`` or in files under the folder ``path``."""
        ...

    def iter_embeddings(
        self, model_id: str, batch: int = 10_000, masked: bool = False, dim: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of every stored face of ``model_id`` (or of its masked templates), for rebuilds.

        Vectors are returned as stored, unchecked; a blob of the wrong size comes back as a NaN row.
        """
        ...

    def stored_embeddings(
        self, face_ids: list[int], masked: bool = False, dim: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids found, their vectors) in the order given; ids no longer stored are left out (no error)."""
        ...

    def embeddings(self, face_ids: list[int], masked: bool = False) -> np.ndarray:
        """(len(face_ids), dim) stored embeddings (or masked templates), in the order given.

        Unknown ids, or faces without a masked template when ``masked``, raise KeyError.
        """
        ...

    def stats(self) -> dict: ...

    def start_ingest(self, roots: list[str]) -> int: ...

    def finish_ingest(self, ingest_id: int, counts: dict, status: str) -> None: ...

    def record_search(self, probe: dict, embedding: np.ndarray, params: dict, results: list[tuple[int, float]]) -> int:
        """Keep every search (the audit trail) with its probe face and ranked results; returns its id."""
        ...

    def search_result(self, search_id: int, rank: int) -> tuple[dict, np.ndarray, int, float] | None:
        """(probe, probe embedding, face id, score) of one ranked result of a past search."""
        ...

    def list_media(self, status: str | None, offset: int, limit: int) -> tuple[list[MediaRecord], int]:
        """One page of files (optionally of one status) ordered by path, and how many there are in all."""
        ...

    def list_searches(self, offset: int, limit: int) -> tuple[list[tuple[int, str, dict, dict, int]], int]:
        """One page of the search log, newest first: (id, time, probe, params, result count); and the total."""
        ...

    def search_log_entry(self, search_id: int) -> tuple[str, dict, dict, list[tuple[int, int, float]]] | None:
        """(time, probe, params, [(rank, face id, score)]) of one past search, to show it again."""
        ...

    def probe_embeddings(self) -> tuple[list[int], np.ndarray]:
        """Search ids and probe vectors of the search log (erased probes left out)."""
        ...

    def forget_search_probes(self, search_ids: list[int]) -> None:
        """Erase the probe and results of these searches (their searched-for person was erased)."""
        ...

    def block_template(self, model_id: str, embedding: np.ndarray, threshold: float) -> int:
        """Add an opted-out person's template (no image) to the block list."""
        ...

    def blocked_templates(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(templates, similarity thresholds) of the block list for this model."""
        ...

    def close(self) -> None: ...
