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
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import FileLock, Timeout

from facefind.catalog import Catalog, SqliteCatalog
from facefind.catalog.base import CommitResult, MediaOutcome
from facefind.errors import FaceFindError, LibraryBusyError
from facefind.index import FaissFlatIndex, VectorIndex


class ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before new readers, so ingest is never starved.

    A long-lived library (the HTTP service) searches from many threads while an ingest job commits:
    holding this lock around "commit to the catalog + mirror in the index" means a search sees the
    state before a batch or after it, never half of it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._condition:
            while self._writer or self._writers_waiting:
                self._condition.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._condition:
                self._readers -= 1
                self._condition.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._condition:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._condition.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._condition:
                self._writer = False
                self._condition.notify_all()


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
        self.access = ReadWriteLock()  # readers: searches; writer: a committed batch or a removal
        self._save_lock = threading.Lock()  # one index save at a time (ingest thread vs. a removal)
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
        with self._save_lock, self.reading():
            self.index.save(self._index_path)
            self.masked_index.save(self._masked_index_path)
            temporary = self._state_path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"revision": self.catalog.revision(), "model_id": self.model_id}))
            os.replace(temporary, self._state_path)

    def reading(self):
        """Hold while reading catalog and index together (a search), so no batch lands half-way through."""
        return self.access.reading()

    def writing(self):
        """Hold while changing catalog and index together; readers wait until both agree again."""
        return self.access.writing()

    def commit_outcomes(self, outcomes: list[MediaOutcome]) -> CommitResult:
        """Commit a batch of ingest outcomes to the catalog and mirror it in the indexes, atomically for readers."""
        with self.writing():
            result = self.catalog.commit_outcomes(outcomes)
            self.apply_commit(result)
            return result

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
