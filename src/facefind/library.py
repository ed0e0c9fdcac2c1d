"""A library on disk: catalog + vector index + thumbnails, kept in agreement.

Layout of a library folder::

    catalog.sqlite3     media, faces (with embeddings), ingest and search logs
    index/faiss.index   the vector index, a cache derived from the catalog
    index/state.json    the catalog revision and model the index file matches
    thumbs/             aligned 112x112 crops of every face
    write.lock          held by the one process allowed to change the library

The catalog is the source of truth. The index file records the catalog
revision it reflects; if a crash left it behind, it is rebuilt from the stored
embeddings when the library is opened, so a search never sees an index and a
catalog that disagree.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from facefind.catalog import Catalog, SqliteCatalog
from facefind.catalog.base import CommitResult
from facefind.errors import FaceFindError, LibraryBusyError
from facefind.index import FaissFlatIndex, VectorIndex


def default_library_path() -> Path:
    """``$FACEFIND_LIBRARY``, else the user's data folder."""
    if "FACEFIND_LIBRARY" in os.environ:
        return Path(os.environ["FACEFIND_LIBRARY"])
    data_home = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return data_home / "facefind" / "library"


class Library:
    """Opens (and if needed repairs) a library folder; writers hold an exclusive lock."""

    def __init__(self, root: Path, model_id: str, dim: int, writable: bool = False) -> None:
        self.root = root
        self.model_id = model_id
        self.dim = dim
        self.writable = writable
        root.mkdir(parents=True, exist_ok=True)
        self.thumbs_dir = root / "thumbs"
        self._index_path = root / "index" / "faiss.index"
        self._masked_index_path = root / "index" / "faiss-masked.index"
        self._state_path = root / "index" / "state.json"
        self._lock: FileLock | None = None
        if writable:
            self._lock = FileLock(str(root / "write.lock"))
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                raise LibraryBusyError(
                    f"another facefind process is changing the library at {root}; wait for it to finish"
                    " (searches can run meanwhile)"
                ) from None
        self.catalog: Catalog = SqliteCatalog(root / "catalog.sqlite3")
        self._check_model()
        self.rebuilt_index = False
        self.index: VectorIndex
        self.masked_index: VectorIndex  # masked templates of the same faces, for covered probes
        self._load_or_rebuild_indexes()

    def _check_model(self) -> None:
        stored = self.catalog.get_meta("model_id")
        if stored is None:
            if self.writable:
                self.catalog.set_meta("model_id", self.model_id)
        elif stored != self.model_id:
            raise FaceFindError(
                f"this library was built with recogniser {stored}, but {self.model_id} is loaded;"
                " faces from different models cannot be compared. Use another --library.",
                reason="model_mismatch",
            )

    def _load_or_rebuild_indexes(self) -> None:
        revision = self.catalog.revision()
        try:
            state = json.loads(self._state_path.read_text())
            if state.get("revision") == revision and state.get("model_id") == self.model_id:
                index, masked = FaissFlatIndex.load(self._index_path), FaissFlatIndex.load(self._masked_index_path)
                if index.dim == masked.dim == self.dim:
                    self.index, self.masked_index = index, masked
                    return
        except (OSError, ValueError, RuntimeError):
            pass  # missing, stale or damaged: the catalog has everything needed to rebuild
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """Rebuild both vector indexes from the catalog's stored embeddings (and save them when writable)."""
        self.index, self.masked_index = FaissFlatIndex(self.dim), FaissFlatIndex(self.dim)
        for target, masked in ((self.index, False), (self.masked_index, True)):
            for ids, vectors in self.catalog.iter_embeddings(self.model_id, masked=masked):
                target.add(ids, vectors)
        self.rebuilt_index = True
        if self.writable:
            self.save_index()

    def save_index(self) -> None:
        """Write the indexes, then the state naming the revision they match (each atomically)."""
        self.index.save(self._index_path)
        self.masked_index.save(self._masked_index_path)
        temporary = self._state_path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"revision": self.catalog.revision(), "model_id": self.model_id}))
        os.replace(temporary, self._state_path)

    def apply_commit(self, result: CommitResult) -> None:
        """Mirror a committed catalog change in the in-memory indexes."""
        self.remove_from_indexes(result.removed_ids)
        if result.added_ids:
            self.index.add(np.asarray(result.added_ids, dtype=np.int64), result.added_vectors)
        if result.added_masked_ids:
            self.masked_index.add(np.asarray(result.added_masked_ids, dtype=np.int64), result.added_masked_vectors)

    def remove_from_indexes(self, face_ids: list[int]) -> None:
        if face_ids:
            ids = np.asarray(face_ids, dtype=np.int64)
            self.index.remove(ids)
            self.masked_index.remove(ids)

    def delete_thumbnails(self, names: list[str]) -> None:
        for name in names:
            (self.thumbs_dir / name).unlink(missing_ok=True)

    def close(self) -> None:
        self.catalog.close()
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
