"""A library on disk: catalog + vector index + thumbnails, kept in agreement.

Layout of a library folder::

    catalog.sqlite3     media, faces (with embeddings), ingest and search logs, pending deletions
    index/faiss.index   the vector index of the plain embeddings, a cache derived from the catalog:
                        exact (flat) below IndexPolicy.ann_threshold faces, else PQ fast-scan
                        proposals with faiss-refine.index (fp16 codes) re-ranking them
    index/state.json    the catalog revision, counts, SHA-256 the index files match, the index kind
                        and its parameters (how many faces its codebook was trained on)
    backends.json       only for a library kept on servers: {"catalog": "postgresql://...?schema=NAME",
                        "index": "pgvector" | "milvus://host:port" | "faiss"}; a server index keeps its
                        state (revision, counts) in the server, so every replica verifies the same one
    thumbs/             aligned 112x112 crops of every face, boxed best frames of video tracks
    write.lock          held by the one process allowed to change the library

The catalog is the source of truth. The index is verified against it on every
open (count, id sum, a sample of vectors; a writer also checks the files'
SHA-256) and rebuilt from the stored embeddings when it does not verify, so a
search never sees an index and a catalog that disagree. Masked templates are not
indexed: a covered probe re-scores the plain index's candidates with them (search). Stored embeddings that
are not unit vectors are damage: refused, never indexed or scored.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from filelock import FileLock, Timeout

from facefind.catalog import Catalog, is_server_catalog, open_catalog
from facefind.catalog.base import CommitResult, MediaOutcome
from facefind.errors import DamagedLibraryError, DiskFullError, FaceFindError, LibraryBusyError, NotFoundError
from facefind.files import file_sha256
from facefind.index import (
    FaissAnnIndex,
    FaissFlatIndex,
    IndexPolicy,
    VectorIndex,
    check_index_spec,
    is_server_index,
    keeps_state_in_server,
    open_index,
)
from facefind.index.ann import TRAIN_SAMPLE

INDEX_SAMPLE = 256  # vectors compared with the catalog on every open (``check`` compares them all)
NORM_TOLERANCE = 1e-3
COPY_CHUNK = 50_000  # vectors copied into a new index per read lock, so commits wait at most one chunk
log = logging.getLogger("facefind.library")
CHECKPOINT_PATIENCE_S = 2.0  # how long a removal retries truncating the WAL while searches read  # stored embeddings are unit vectors; float32 rounding is far below this


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


SQLITE_CATALOG = "catalog.sqlite3"
BACKENDS_FILE = "backends.json"
SERVER_INDEX_PATIENCE_S = 1.0  # how long a server index that disagrees is checked again (another replica mid-commit)


@dataclass(frozen=True)
class Backends:
    """Where a library keeps its catalog (an SQLite file in its folder, or a ``postgresql://`` URL) and its
    vector index (``faiss`` files in its folder, or a server: ``pgvector``, ``milvus://host:port``)."""

    catalog: str = SQLITE_CATALOG
    index: str = "faiss"

    def checked(self) -> "Backends":
        """These backends if they can work together, else a FaceFindError saying why."""
        check_index_spec(self.index)
        if self.catalog != SQLITE_CATALOG and not is_server_catalog(self.catalog):
            raise FaceFindError(f"--catalog must be a postgresql:// URL, not {self.catalog!r}", reason="bad_argument")
        if self.index == "pgvector" and not is_server_catalog(self.catalog):
            raise FaceFindError("--index pgvector keeps the index in the catalog's PostgreSQL: give --catalog"
                                " postgresql://...", reason="bad_argument")
        return self


def library_exists(root: Path) -> bool:
    return (root / SQLITE_CATALOG).is_file() or (root / BACKENDS_FILE).is_file()


def read_backends(root: Path) -> Backends:
    """The backends recorded in the library folder (none recorded: SQLite and FAISS in the folder)."""
    path = root / BACKENDS_FILE
    if not path.is_file():
        return Backends()
    try:
        recorded = json.loads(path.read_text())
        return Backends(str(recorded.get("catalog") or SQLITE_CATALOG), str(recorded.get("index") or "faiss"))
    except (OSError, ValueError, AttributeError) as error:
        raise DamagedLibraryError(f"{path} is unreadable ({error}); it names the library's catalog and index servers:"
                                  ' restore it, or write {"catalog": "postgresql://...", "index": "pgvector"}') from None


def write_backends(root: Path, backends: Backends) -> None:
    temporary = root / (BACKENDS_FILE + ".tmp")
    try:
        temporary.write_text(json.dumps({"catalog": backends.catalog, "index": backends.index}, indent=2) + "\n")
        os.replace(temporary, root / BACKENDS_FILE)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise write_error(error, str(root / BACKENDS_FILE)) from None


def catalog_location(root: Path, backends: Backends) -> str | Path:
    """What open_catalog opens: the server URL, or the SQLite file in the library folder."""
    return backends.catalog if is_server_catalog(backends.catalog) else root / backends.catalog


def recorded_model_id(root: Path) -> str | None:
    """The recogniser a library was built with, read without opening it (None: no library there yet)."""
    if not library_exists(root):
        return None
    catalog = open_catalog(catalog_location(root, read_backends(root)), writable=False)
    try:
        return catalog.get_meta("model_id")
    finally:
        catalog.close()


class IndexMismatch(Exception):
    """Why the index files on disk cannot be trusted (the index is then rebuilt from the catalog)."""


def damaged_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """Which rows cannot be a stored face embedding: the wrong size, not finite, or not of unit length.

    Embeddings are stored L2-normalised; anything else is damage (a flipped bit once scored 1.1e26,
    "strong"), and must be refused, never scored.
    """
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        return np.ones(len(vectors), dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):  # float32 sums err ~1e-7, far inside the tolerance, and
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # 25x faster: a rebuild checks every row
    return ~np.isfinite(vectors).all(axis=1) | ~(np.abs(norms - 1.0) <= NORM_TOLERANCE)


def damaged_face_error(face_id: int) -> DamagedLibraryError:
    return DamagedLibraryError(
        f"the stored embedding of face {face_id} is damaged (not a unit vector); refusing to score it."
        " Run `facefind check --repair` to drop it and re-analyse its file on the next `facefind index`"
    )


def write_error(error: OSError, what: str) -> FaceFindError:
    """A failed write as the error a user can act on: ``disk_full`` for ENOSPC."""
    if error.errno == errno.ENOSPC or "No space left" in str(error):
        return DiskFullError(
            f"the disk is full: cannot write {what}. Nothing committed was lost; free some space and run the command"
            " again"
        )
    return FaceFindError(f"cannot write {what}: {error}", reason="write_failed")


class Library:
    """Opens (and if needed repairs) a library folder; writers hold an exclusive lock.

    ``create`` (default: ``writable``) allows starting a new library; otherwise a folder without a
    catalog is refused, so a mistyped ``--library`` is an error rather than an empty answer.
    ``backends`` (a new library only) puts its catalog and index on servers (recorded in backends.json).
    """

    def __init__(
        self, root: Path, model_id: str, dim: int, writable: bool = False, create: bool | None = None,
        index_policy: IndexPolicy | None = None, backends: Backends | None = None,
    ) -> None:
        self.root = root
        self.index_policy = index_policy or IndexPolicy()
        self.model_id = model_id
        self.dim = dim
        self.writable = writable
        exists = library_exists(root)
        if not (writable if create is None else create) and not exists:
            raise NotFoundError(
                f"there is no facefind library at {root}: check --library (or $FACEFIND_LIBRARY), or create one"
                " with `facefind index FOLDER`",
                reason="no_library",
            )
        recorded = read_backends(root) if exists else None
        if recorded is not None and backends is not None and backends != recorded:
            raise FaceFindError(
                f"the library at {root} already keeps its catalog in {recorded.catalog} and its index in"
                f" {recorded.index}; leave out --catalog/--index (they are recorded in {BACKENDS_FILE})",
                reason="exists",
            )
        self.backends = recorded or (backends or Backends()).checked()
        root.mkdir(parents=True, exist_ok=True)
        self._server_index: VectorIndex | None = None  # a server index (pgvector, Milvus), shared by every replica
        self.thumbs_dir = root / "thumbs"
        self._index_dir = root / "index"
        self._index_path = self._index_dir / "faiss.index"
        self._state_path = self._index_dir / "state.json"
        self._lock: FileLock | None = None
        self.access = ReadWriteLock()  # readers: searches; writer: a committed batch or a removal
        self._save_lock = threading.Lock()  # one index save at a time (ingest thread vs. a removal)
        self._files_lock = threading.Lock()
        self._uncommitted_thumbnails: set[str] = set()  # written, not yet referred to by the catalog
        self.index_problem: str | None = None  # why the index files were not used on open, if they were not
        self.skipped_face_ids: set[int] = set()  # faces whose stored embedding is damaged: kept out of the index
        self.died_ingests = 0
        self.rebuilt_index = False
        self.index: VectorIndex  # plain embeddings only; covered probes re-score its candidates (search)
        # the service: a new ANN index (threshold crossed, codebook outgrown) is built in a thread while the
        # current one serves, then swapped in; changes committed meanwhile are logged and replayed into it
        self.build_in_background = False
        self._index_build: threading.Thread | None = None
        self._changes_during_build: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._stop_build = threading.Event()
        if writable:
            self._lock = FileLock(str(root / "write.lock"))
            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                raise LibraryBusyError(
                    f"another facefind process is changing the library at {root}; wait for it to finish"
                    " (searches can run meanwhile)"
                ) from None
        catalog: Catalog | None = None
        try:
            catalog = open_catalog(catalog_location(root, self.backends), writable=writable)
            self.catalog: Catalog = catalog
            self._check_model()
            if writable:
                self._clean_up_after_crash()
            if is_server_index(self.backends.index):
                self._server_index = open_index(self.backends.index, dim, model_id=model_id,
                                                catalog_url=self.backends.catalog)
            self._load_or_rebuild_indexes()
            if recorded is None and self.backends != Backends():
                write_backends(root, self.backends)  # only once both servers answered
        except BaseException:
            if self._server_index is not None:
                self._server_index.close()
            if catalog is not None:
                catalog.close()
            if self._lock is not None:
                self._lock.release()
            raise

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

    def _clean_up_after_crash(self) -> None:
        """What a killed (or disk-full) writer leaves: index temporaries, an ingest logged as running,
        crops of files never committed, and thumbnail deletions committed but not done. We hold the
        write lock, so nothing else can be writing any of these."""
        for leftover in self._index_dir.glob("*.tmp*"):
            leftover.unlink(missing_ok=True)
        self.died_ingests = self.catalog.mark_abandoned_ingests()
        if self.died_ingests:
            self.delete_orphans([p for p in self.orphan_files() if self.thumbs_dir in p.parents])
        self.finish_deletions()

    def take_over_died_ingests(self) -> None:
        """Called by an ingest that holds a shared catalog's ingest lock: another replica killed mid-ingest after
        this library opened left its run logged ``running`` and crops of files it never committed. No other
        ingest can be writing crops now, so the run is marked died and its crops deleted."""
        if is_server_catalog(self.backends.catalog) and self.catalog.mark_abandoned_ingests():
            self.delete_orphans([p for p in self.orphan_files() if self.thumbs_dir in p.parents])

    # -- the vector indexes ------------------------------------------------------------------------

    def _load_or_rebuild_indexes(self) -> None:
        """Use the index files if they verify against the catalog, else rebuild from the catalog.

        Every open compares counts and id sums with the catalog and a random sample of vectors with
        the stored embeddings; a writer also checks the files' SHA-256 (``check`` compares every vector).
        """
        try:
            self.index, self.skipped_face_ids = self._verified_indexes(checksum=self.writable, full=False)
        except IndexMismatch as problem:
            self.index_problem = str(problem)
            self.rebuild_index()  # a reader of a server index rebuilds in memory, never the shared index
            return
        if self.writable and self._index_outgrown():
            self.rebuild_index()  # the codebook was trained on a much smaller library: train it again

    def _index_outgrown(self) -> bool:
        """True when the library should have another index: it crossed the ANN threshold, or grew
        ``retrain_growth`` times past the size the ANN codebook was trained on."""
        policy, count = self.index_policy, len(self.index)
        if keeps_state_in_server(self.index):
            return False  # the server's own index (HNSW...) grows in place
        if isinstance(self.index, FaissAnnIndex):
            return count >= policy.retrain_growth * max(self.index.trained_on, 1)
        return policy.kind_for(count) != "flat"

    def index_problems(self) -> list[str]:
        """Every way the index files on disk disagree with the catalog (checksums, ids, each vector)."""
        try:
            self._verified_indexes(checksum=True, full=True)
        except IndexMismatch as problem:
            return [str(problem)]
        return []

    def _verified_indexes(self, checksum: bool, full: bool) -> tuple[VectorIndex, set[int]]:
        """The index, loaded, if its files match the catalog; raises IndexMismatch saying why not.

        A reader maps the big codes read-only (a one-off CLI search must not read a GB); a library
        saved before the ANN index existed has no "index" entry in its state: it is a flat index.
        """
        if self._server_index is not None:
            return self._verified_server_index(full)
        try:
            state = json.loads(self._state_path.read_text())
        except FileNotFoundError:
            raise IndexMismatch("the index files are missing") from None
        except (OSError, ValueError) as error:
            raise IndexMismatch(f"index/state.json is unreadable ({error})") from None
        if not isinstance(state, dict) or state.get("model_id") != self.model_id:
            raise IndexMismatch("index/state.json is damaged or names another model")
        revision = self.catalog.revision()
        if state.get("revision") != revision:
            raise IndexMismatch(
                f"the index reflects catalog revision {state.get('revision')}, the catalog is at {revision}"
                " (a writer stopped before saving it)"
            )
        params = state.get("index") or {"kind": "flat"}
        kind = params.get("kind")
        if kind not in ("flat", FaissAnnIndex.kind):
            raise IndexMismatch(f"index/state.json names an unknown index kind {kind!r}")
        index_class = FaissFlatIndex if kind == "flat" else FaissAnnIndex
        if checksum:
            for path in index_class.files(self._index_path):
                try:
                    actual = file_sha256(path)
                except OSError as error:
                    raise IndexMismatch(f"index/{path.name} is unreadable ({error})") from None
                if actual != (state.get("sha256") or {}).get(path.name):
                    raise IndexMismatch(f"index/{path.name} does not match its recorded SHA-256 (damaged on disk)")
        try:
            if kind == "flat":
                index: VectorIndex = FaissFlatIndex.load(self._index_path, mmap=not self.writable)
            else:
                index = FaissAnnIndex.load(self._index_path, int(params.get("trained_on", 0)), self.index_policy,
                                           mmap=not self.writable)
        except (OSError, ValueError, RuntimeError) as error:
            raise IndexMismatch(f"the index files cannot be read ({error})") from None
        if index.dim != self.dim:
            raise IndexMismatch(f"the index holds vectors of size {index.dim}, the model makes {self.dim}")
        skipped = {int(i) for i in state.get("skipped", [])}
        self._compare_with_catalog(index, skipped, full, recorded=None if checksum or full else state)
        return index, skipped

    def _verified_server_index(self, full: bool) -> tuple[VectorIndex, set[int]]:
        """The server index if the state recorded in the server and its contents match the catalog.

        Another replica may be between its catalog commit and its index add: a disagreement is checked again
        for SERVER_INDEX_PATIENCE_S before it counts (then a writer rebuilds the shared index). A replica killed
        after its index add but before recording the state leaves an older revision over the right contents:
        then every vector is compared, and if all agree the index is sound (a writer records the state again).
        """
        index = self._server_index
        assert index is not None
        deadline = time.monotonic() + SERVER_INDEX_PATIENCE_S
        while True:
            state = index.read_state()  # type: ignore[attr-defined]
            if not isinstance(state, dict) or state.get("model_id") != self.model_id:
                raise IndexMismatch(f"the {self.backends.index} index has no state recorded for {self.model_id}")
            try:
                if index.dim != self.dim:
                    raise IndexMismatch(f"the index holds vectors of size {index.dim}, the model makes {self.dim}")
                stale = state.get("revision") != self.catalog.revision()
                skipped = {int(i) for i in state.get("skipped", [])}
                self._compare_with_catalog(index, skipped, full or stale)
                if stale and self.writable:
                    self.skipped_face_ids = skipped
                    self._record_server_state(index)
                return index, skipped
            except IndexMismatch:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _compare_with_catalog(self, index: VectorIndex, skipped: set[int], full: bool,
                              recorded: dict | None = None) -> None:
        """Raise IndexMismatch unless the index holds the catalog's face ids once each, with its vectors.

        A reader of index files saved at the catalog's current revision passes their state (``recorded``): the
        id map is compared with the count and id sum saved with it, not with a count of the catalog (at 1M
        faces ~0.2 s of every one-off search); writers and ``check`` count the catalog. Both compare a sample
        (``full``: all) of the vectors with the stored embeddings, which also finds ids the catalog lacks.
        """
        name = "index/faiss.index" if self._server_index is None else f"the {self.backends.index} index"
        ids = index.ids()
        if recorded is not None and "id_sum" in recorded:
            count, id_sum, repeated = int(recorded.get("count", -1)), int(recorded["id_sum"]), False
        else:
            count, id_sum = self.catalog.fingerprint(self.model_id, False, sorted(skipped))
            ordered = np.sort(ids)  # a sort finds repeated ids ~10x faster than np.unique's hashing at 1M
            repeated = bool((ordered[1:] == ordered[:-1]).any())
        if len(ids) != count or int(ids.sum()) != id_sum or repeated:
            raise IndexMismatch(f"{name} holds {len(ids)} face ids, not the catalog's {count}")
        if not full and len(ids) > INDEX_SAMPLE:
            ids = np.random.default_rng().choice(ids, INDEX_SAMPLE, replace=False)
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            found, stored = self.catalog.stored_embeddings(chunk.tolist(), False, self.dim)
            if len(found) != len(chunk):
                raise IndexMismatch(f"{name} holds face ids the catalog does not have (damaged id map)")
            if not np.allclose(index.vectors(found), stored, rtol=0, atol=index.tolerance):
                raise IndexMismatch(f"{name} holds vectors that differ from the catalog's (damaged)")

    def rebuild_index(self) -> None:
        """Rebuild the vector index from the catalog's stored embeddings (and save it when writable),
        streaming them in batches; the index kind follows the library's size (``IndexPolicy``).

        Damaged stored embeddings (a face's or its masked template's) are left out (``skipped_face_ids``):
        they are refused, never indexed.
        """
        skipped: set[int] = set()
        for ids, vectors in self.catalog.iter_embeddings(self.model_id, masked=True, dim=self.dim):
            skipped.update(int(i) for i in ids[damaged_rows(vectors, self.dim)])
        count, _ = self.catalog.fingerprint(self.model_id)
        if self._server_index is not None and self.writable:
            self.index = self._server_index
            self.index.reset()
        elif self.index_policy.kind_for(count) == "flat":
            self.index = FaissFlatIndex(self.dim)
        else:
            self.index = FaissAnnIndex.trained(self.dim, self._catalog_sample(count), count, self.index_policy)
        for ids, vectors in self.catalog.iter_embeddings(self.model_id, dim=self.dim):
            keep = ~damaged_rows(vectors, self.dim) & ~np.isin(ids, list(skipped))
            skipped.update(int(i) for i in ids[~keep])
            self.index.add(ids[keep], vectors[keep])
        self.skipped_face_ids = skipped
        self.rebuilt_index = True
        if self.writable:
            self.save_index()

    def _catalog_sample(self, count: int) -> np.ndarray:
        """A random sample of the stored embeddings (about TRAIN_SAMPLE), read in one bounded pass."""
        rng, keep_fraction, sample = np.random.default_rng(0), TRAIN_SAMPLE / max(count, 1), []
        for _, vectors in self.catalog.iter_embeddings(self.model_id, dim=self.dim):
            vectors = vectors[~damaged_rows(vectors, self.dim)]
            sample.append(vectors[rng.random(len(vectors)) < keep_fraction])
        return np.concatenate(sample) if sample else np.empty((0, self.dim), np.float32)

    def _switch_to_ann(self) -> None:
        """Replace a flat index that crossed the ANN threshold: train on a sample of it, copy it over."""
        flat, ids = self.index, self.index.ids()
        sample = flat.vectors(np.random.default_rng(0).permutation(ids)[:TRAIN_SAMPLE])
        ann = FaissAnnIndex.trained(self.dim, sample, len(ids), self.index_policy)
        for start in range(0, len(ids), 50_000):
            ann.add(ids[start : start + 50_000], flat.vectors(ids[start : start + 50_000]))
        self.index = ann

    def save_index(self) -> None:
        """Write the index, then the state naming the revision, counts, checksums and index parameters they
        match (each atomically); then delete index files of another kind (an index that was switched)."""
        with self._save_lock, self.reading():
            if keeps_state_in_server(self.index):
                self.index.save(self._index_path)
                self._record_server_state(self.index)
                return
            try:
                files = self.index.files(self._index_path)
                self.index.save(self._index_path)
                checksums = {path.name: file_sha256(path) for path in files}
                temporary = self._state_path.with_suffix(".tmp")
                try:
                    temporary.write_text(json.dumps({
                        "revision": self.catalog.revision(), "model_id": self.model_id,
                        "count": len(self.index), "id_sum": int(self.index.ids().sum()),
                        "index": self.index.params(),
                        "skipped": sorted(self.skipped_face_ids), "sha256": checksums,
                    }))
                    os.replace(temporary, self._state_path)
                finally:
                    temporary.unlink(missing_ok=True)
                for stale in set(self._index_dir.glob("*.index")) - set(files):
                    stale.unlink(missing_ok=True)  # e.g. faiss-masked.index of an older facefind
            except OSError as error:  # the old files (or none) stay; the next open rebuilds from the catalog
                raise write_error(error, f"the index in {self._index_dir}") from None

    def _record_server_state(self, index: VectorIndex) -> None:
        """Record in the server which catalog revision the shared index reflects, so replicas verify it cheaply."""
        index.write_state({  # type: ignore[attr-defined]
            "revision": self.catalog.revision(), "model_id": self.model_id, "count": len(index),
            "index": index.params(), "skipped": sorted(self.skipped_face_ids),
        })

    def embeddings(self, face_ids: list[int], masked: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(ids, stored embeddings) of the faces still in the catalog, in the order given.

        A face removed since an index lookup is simply left out (a search racing a removal); a damaged
        stored embedding raises DamagedLibraryError naming the face.
        """
        ids, vectors = self.catalog.stored_embeddings(face_ids, masked, self.dim)
        bad = damaged_rows(vectors, self.dim)
        if bad.any():
            raise damaged_face_error(int(ids[np.argmax(bad)]))
        return ids, vectors

    # -- changes -----------------------------------------------------------------------------------

    def reading(self):
        """Hold while reading catalog and index together (a search), so no batch lands half-way through."""
        return self.access.reading()

    def writing(self):
        """Hold while changing catalog and index together; readers wait until both agree again."""
        return self.access.writing()

    def write_thumbnails(self, thumbnails: dict[str, bytes], referenced: bool = False) -> None:
        """Write face crops (atomically each), normally before the catalog refers to them: until committed
        they count as in use, so no deletion or orphan sweep of this process takes them. ``referenced``:
        the catalog already names them (a repair)."""
        for name, data in thumbnails.items():
            target = self.thumbs_dir / name
            temporary = target.with_name(target.name + ".tmp")
            if not referenced:
                with self._files_lock:
                    self._uncommitted_thumbnails.add(name)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                temporary.write_bytes(data)
                os.replace(temporary, target)
            except OSError as error:
                temporary.unlink(missing_ok=True)
                raise write_error(error, f"thumbnail {target}") from None

    def commit_outcomes(self, outcomes: list[MediaOutcome]) -> CommitResult:
        """Commit a batch of ingest outcomes to the catalog and mirror it in the indexes, atomically for readers;
        then delete the crops of replaced faces that nothing refers to any more."""
        with self.writing():
            result = self.catalog.commit_outcomes(outcomes)
            self.apply_commit(result)
        if keeps_state_in_server(self.index):  # other replicas verify the shared index against the catalog:
            with self._save_lock, self.reading():  # keep its state current (the periodic save_index flushes it)
                self._record_server_state(self.index)
        with self._files_lock:
            for outcome in outcomes:
                self._uncommitted_thumbnails.difference_update(
                    [face.thumbnail for face in outcome.faces] + [track.frame_thumbnail for track in outcome.tracks]
                )
        if result.released_thumbnails:
            self.finish_deletions()
        return result

    def apply_commit(self, result: CommitResult) -> None:
        """Mirror a committed catalog change in the in-memory index (damaged new vectors, plain or masked,
        are refused); a flat index that crosses the ANN threshold is switched once, never rebuilt per batch."""
        self.remove_from_indexes(result.removed_ids)
        added = [
            (np.asarray(result.added_ids, dtype=np.int64), result.added_vectors),
            (np.asarray(result.added_masked_ids, dtype=np.int64), result.added_masked_vectors),
        ]
        bad = [int(i) for ids, vectors in added if len(ids) for i in ids[damaged_rows(vectors, self.dim)]]
        self.skipped_face_ids.update(bad)
        ids, vectors = added[0]
        if len(ids):
            keep = ~np.isin(ids, bad)
            self.index.add(ids[keep], vectors[keep])
            if self._changes_during_build is not None:
                self._changes_during_build.append((ids[keep], vectors[keep]))
        if self.build_in_background:
            if self._index_build is None and self._index_outgrown():
                self._start_index_build()
        elif isinstance(self.index, FaissFlatIndex) and self.index_policy.kind_for(len(self.index)) != "flat":
            self._switch_to_ann()

    def _start_index_build(self) -> None:
        """Build the ANN index the library has outgrown its current one for, in a thread (called by a writer)."""
        self._changes_during_build = []
        self._stop_build.clear()
        self._index_build = threading.Thread(target=self._build_and_swap, name="facefind-index-build", daemon=True)
        self._index_build.start()

    def _build_and_swap(self) -> None:
        """Train on a sample, copy the current index chunk by chunk (a read lock each: searches go on, a
        commit waits at most one chunk), then under the write lock replay what was committed meanwhile and
        swap. A failure or a rebuild meanwhile discards the new index: the current one stays exact and whole."""
        source = self.index
        try:
            with self.reading():
                ids = source.ids()
                sample = source.vectors(np.random.default_rng(0).permutation(ids)[:TRAIN_SAMPLE])
            ann = FaissAnnIndex.trained(self.dim, sample, len(ids), self.index_policy)
            for start in range(0, len(ids), COPY_CHUNK):
                if self._stop_build.is_set():
                    return
                with self.reading():  # faces removed since the snapshot are not copied
                    removed = [i for changed, vectors in self._changes_during_build if vectors is None for i in changed]
                    chunk = ids[start : start + COPY_CHUNK]
                    chunk = chunk[~np.isin(chunk, removed)]
                    ann.add(chunk, source.vectors(chunk))
            with self.writing():
                if self.index is not source:
                    return  # rebuilt from the catalog meanwhile (a repair): that one stands
                for changed, vectors in self._changes_during_build:
                    if vectors is None:
                        ann.remove(changed)
                    else:
                        ann.add(changed, vectors)
                self.index = ann
        except Exception:  # noqa: BLE001 - a background build must never take the service down
            log.exception("building the new vector index failed; the current one keeps serving")
            return
        finally:
            with self.writing():
                self._changes_during_build, self._index_build = None, None
        if self.writable:
            try:
                self.save_index()
            except FaceFindError:
                log.exception("saving the new vector index failed; the next open rebuilds it from the catalog")

    def wait_for_index_build(self) -> None:
        """Until a background index build (if any) has swapped in or given up."""
        build = self._index_build
        if build is not None:
            build.join()

    def remove_from_indexes(self, face_ids: list[int]) -> None:
        if face_ids:
            ids = np.asarray(face_ids, dtype=np.int64)
            self.index.remove(ids)
            if self._changes_during_build is not None:
                self._changes_during_build.append((ids, None))
            self.skipped_face_ids.difference_update(int(i) for i in face_ids)

    def remove_media(self, path: str) -> tuple[list[int], int]:
        """Erase a file (or a folder's files): catalog rows, search-log traces, index entries, thumbnails.

        Returns (face ids removed, files removed). The thumbnails to delete are queued in the same
        catalog transaction, so a crash before they are gone is finished by the next writable open.
        """
        with self.writing():
            removed, _, files = self.catalog.remove_media(path)
            self.remove_from_indexes(removed)
        self._after_removal()
        return removed, files

    def remove_faces(self, face_ids: list[int]) -> list[int]:
        """Erase single faces (a video face takes its whole track); returns the face ids removed."""
        with self.writing():
            removed, _ = self.catalog.remove_faces(face_ids)
            self.remove_from_indexes(removed)
        self._after_removal()
        return removed

    def drop_damaged_faces(self, face_ids: list[int]) -> list[int]:
        """Drop the faces of files holding damaged embeddings and mark those files for re-analysis."""
        with self.writing():
            removed, _ = self.catalog.mark_damaged(face_ids)
            self.remove_from_indexes(removed)
        self._after_removal()
        return removed

    def _after_removal(self) -> None:
        """Save the index, delete released thumbnails, then truncate the catalog's WAL: the log still holds
        the erased rows' old pages (and the deletion queue's names) until then. A search reading at that
        moment can hold the checkpoint back, so it is retried for a while."""
        self.save_index()
        self.finish_deletions()
        deadline = time.monotonic() + CHECKPOINT_PATIENCE_S
        while not self.catalog.checkpoint() and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- files nothing refers to -------------------------------------------------------------------

    def finish_deletions(self) -> None:
        """Delete the released thumbnails the catalog has queued (none in use by an uncommitted batch)."""
        pending = self.catalog.pending_deletions()
        with self._files_lock:
            names = [name for name in pending if name not in self._uncommitted_thumbnails]
        for name in names:
            (self.thumbs_dir / name).unlink(missing_ok=True)
        self.catalog.deletions_done(names)

    def orphan_files(self) -> list[Path]:
        """Files in the library folder nothing refers to: thumbnails of no face or track, index temporaries."""
        used = self.catalog.referenced_thumbnails()
        with self._files_lock:
            used |= self._uncommitted_thumbnails
        orphans = []
        if self.thumbs_dir.is_dir():
            for path in sorted(self.thumbs_dir.rglob("*")):
                if path.is_file() and path.relative_to(self.thumbs_dir).as_posix() not in used:
                    orphans.append(path)
        return orphans + sorted(self._index_dir.glob("*.tmp*"))

    def delete_orphans(self, paths: list[Path]) -> None:
        for path in paths:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close; a writer first deletes crops it wrote for files it never committed (a failed ingest)."""
        self._stop_build.set()  # an unfinished index build is dropped: the next writable open builds it
        self.wait_for_index_build()
        try:
            with self._files_lock:
                leftovers = self._uncommitted_thumbnails - self.catalog.referenced_thumbnails() \
                    if self._uncommitted_thumbnails else set()
                self._uncommitted_thumbnails.clear()
            for name in leftovers:
                (self.thumbs_dir / name).unlink(missing_ok=True)
        finally:
            self.catalog.close()
            if self._server_index is not None:
                self._server_index.close()
            if self._lock is not None:
                self._lock.release()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
