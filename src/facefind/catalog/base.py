"""The catalog interface and the records that cross it.

A catalog stores media (files and their content hash), faces (box, landmarks,
quality, model id, and the embedding itself, so the vector index can always be
rebuilt), an ingest log and a log of searches. SQLite is the embedded backend;
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
    """Face ids added and removed by one committed batch, and the catalog revision after it."""

    added_ids: list[int]
    added_vectors: np.ndarray
    removed_ids: list[int]
    revision: int
    added_masked_ids: list[int] = field(default_factory=list)
    added_masked_vectors: np.ndarray | None = None


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
        """Forget a file (or every file under a folder); returns removed face ids, thumbnails (faces' and
        tracks' frames), file count."""
        ...

    def remove_faces(self, face_ids: list[int]) -> list[str]:
        """Forget single faces; returns their thumbnails."""
        ...

    def faces(self, face_ids: list[int]) -> dict[int, FaceRecord]: ...

    def faces_of_media(self, path: str) -> list[FaceRecord]: ...

    def face_ids_under(self, path: str) -> list[int]:
        """Ids of every face in the file ``path`` or in files under the folder ``path``."""
        ...

    def iter_embeddings(
        self, model_id: str, batch: int = 10_000, masked: bool = False
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(ids, vectors) chunks of every stored face of ``model_id`` (or of its masked templates), for rebuilds."""
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

    def close(self) -> None: ...
