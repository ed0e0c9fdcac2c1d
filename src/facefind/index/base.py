"""The small interface every vector index backend implements.

Ids are the catalog's face ids, so a backend never needs to know anything
about files or people; it only has to add, remove, search and persist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


def check_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` as a contiguous float32 (n, dim) array; raises ValueError on a wrong size."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of size {dim}, got array of shape {vectors.shape}")
    return vectors


def check_batch(ids: np.ndarray, vectors: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """An add's ids (int64) and vectors (float32, (n, dim)), checked to pair up; every backend's ``add`` starts here."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vectors = check_vectors(vectors, dim) if len(ids) else np.empty((0, dim), np.float32)
    if len(ids) != len(vectors):
        raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
    return ids, vectors


class VectorIndex(Protocol):
    dim: int
    kind: str  # recorded in index/state.json: which backend reads the files back
    tolerance: float  # how far a held vector may be from the stored embedding (compressed codes)

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add unit vectors under int64 ids; raises ValueError on a wrong vector size."""
        ...

    def remove(self, ids: np.ndarray) -> int:
        """Remove ids (unknown ones are ignored); returns how many were removed."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, ids) per query by inner product; missing slots have id -1."""
        ...

    def ids(self) -> np.ndarray:
        """Every id held (int64), for checking the index against the catalog."""
        ...

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored vectors of ``ids`` (as held, for verification); an id not held raises KeyError."""
        ...

    def files(self, path: Path) -> list[Path]:
        """Every file :meth:`save` writes for ``path`` (each is checksummed in index/state.json)."""
        ...

    def params(self) -> dict:
        """The kind and parameters to record in the library (enough to load the files again)."""
        ...

    def save(self, path: Path) -> None:
        """Persist atomically: a crash leaves either the old file or the new one, never half of one, and a
        failed write (a full disk) leaves no temporary behind (raises OSError)."""
        ...

    def reset(self) -> None:
        """Drop every vector (before a rebuild from the catalog)."""
        ...


class ServerVectorIndex(VectorIndex, Protocol):
    """An index kept by a database server (pgvector, Milvus): durable on every add and shared by every replica,
    so it has no files (``files()`` is empty) and the state Library records with an index (catalog revision,
    counts) lives in the server beside it, where every replica reads the same."""

    def read_state(self) -> dict | None: ...

    def write_state(self, state: dict) -> None: ...

    def close(self) -> None: ...


def keeps_state_in_server(index: VectorIndex) -> bool:
    """True for a :class:`ServerVectorIndex`."""
    return callable(getattr(index, "write_state", None))
