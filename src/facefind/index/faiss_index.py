"""FAISS backend: exact inner-product search (IndexFlatIP) with the catalog's ids."""

from __future__ import annotations

import os
from pathlib import Path

import faiss
import numpy as np

from facefind.index.base import check_batch, check_vectors


def write_faiss_index(index: faiss.Index, path: Path) -> None:
    """Write atomically (temporary + fsync + rename); a failed write leaves no temporary (OSError)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        try:
            faiss.write_index(index, str(temporary))
        except RuntimeError as error:  # FAISS reports a failed fwrite (e.g. a full disk) this way
            raise OSError(f"cannot write {temporary}: {error}") from None
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # never leave an index-sized temporary behind


def read_faiss_index(path: Path, mmap: bool = False) -> faiss.Index:
    """Read a facefind index file (an ``IndexIDMap2``); ``mmap`` maps its codes read-only instead of
    reading them, so a one-off search touches only the pages it needs (never modify such an index)."""
    flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY if mmap else 0
    index = faiss.read_index(str(path), flags)
    if not isinstance(index, faiss.IndexIDMap2):
        raise ValueError(f"{path} is not a facefind index")
    return index


def id_map_ids(index: faiss.IndexIDMap2) -> np.ndarray:
    """Every id an id-mapped FAISS index holds (for verification against the catalog)."""
    return faiss.vector_to_array(index.id_map).astype(np.int64, copy=False)


def id_map_vectors(index: faiss.IndexIDMap2, ids: np.ndarray) -> np.ndarray:
    """The stored vectors of ``ids``, in order; KeyError names an id the index does not hold."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) == 0:
        return np.empty((0, index.d), np.float32)
    try:
        return index.reconstruct_batch(ids)
    except RuntimeError as error:  # an id not in the index
        raise KeyError(str(error).rsplit(":", 1)[-1].strip()) from None


class FaissFlatIndex:
    """Exact search: the honest baseline, and the fastest choice below ``IndexPolicy.ann_threshold``."""

    kind = "flat"
    tolerance = 1e-5  # vectors are held exactly
    score_slack = 1e-5  # |index score - exact score|: float32 sums in another order

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        return check_vectors(vectors, self.dim)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_batch(ids, vectors, self.dim)
        if len(ids) == 0:
            return
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = self._check(queries)
        if len(self) == 0 or k <= 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        scores, ids = self._index.search(queries, min(k, len(self)))
        return scores, ids

    def ids(self) -> np.ndarray:
        return id_map_ids(self._index)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return id_map_vectors(self._index, ids)

    @staticmethod
    def files(path: Path) -> list[Path]:
        return [path]

    def save(self, path: Path) -> None:
        write_faiss_index(self._index, path)

    def reset(self) -> None:
        self._index.reset()

    def params(self) -> dict:
        return {"kind": self.kind}

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> "FaissFlatIndex":
        index = read_faiss_index(path, mmap=mmap)
        if not isinstance(faiss.downcast_index(index.index), faiss.IndexFlat):
            raise ValueError(f"{path} is not a flat facefind index")
        instance = cls(index.d)
        instance._index = index
        return instance
