"""SQLite catalog (WAL mode): the embedded default, one file beside the index.

Every sqlite3 error is turned into a FaceFindError at this boundary (``damaged_library``,
``disk_full``, ``busy``...), so a damaged file or a full disk is reported, never a traceback.
Deleted rows are overwritten (``secure_delete``) and removals truncate the WAL, so erased
faces leave no bytes behind.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np

from facefind.catalog.base import FaceRecord
from facefind.catalog.sql import FACE_COLUMNS, FACE_FROM, SqlCatalog, face_record, guard_errors
from facefind.errors import DamagedLibraryError, DiskFullError, FaceFindError, LibraryBusyError

SCHEMA_VERSION = 3
PAGE_SIZE = 8192

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS media (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    width INTEGER,
    height INTEGER,
    format TEXT,
    exif_time TEXT,
    reason TEXT,
    message TEXT,
    face_count INTEGER NOT NULL DEFAULT 0,
    ingested_at TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'image',
    duration_s REAL
);
CREATE INDEX IF NOT EXISTS media_sha256 ON media(sha256);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    media_id INTEGER NOT NULL REFERENCES media(id) ON DELETE CASCADE,
    track_index INTEGER NOT NULL,
    time_ranges TEXT NOT NULL,
    best_time_s REAL NOT NULL,
    observations INTEGER NOT NULL,
    frame_thumbnail TEXT
);
CREATE INDEX IF NOT EXISTS tracks_media ON tracks(media_id);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    media_id INTEGER NOT NULL REFERENCES media(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    box TEXT NOT NULL,
    landmarks TEXT NOT NULL,
    detection_score REAL NOT NULL,
    quality TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    thumbnail TEXT,
    track_id INTEGER REFERENCES tracks(id) ON DELETE CASCADE,
    frame_time_s REAL,
    masked_embedding BLOB
);
CREATE INDEX IF NOT EXISTS faces_media ON faces(media_id);
CREATE INDEX IF NOT EXISTS faces_thumbnail ON faces(thumbnail);
CREATE INDEX IF NOT EXISTS faces_templates ON faces(model_id, (masked_embedding IS NOT NULL));
CREATE INDEX IF NOT EXISTS tracks_frame ON tracks(frame_thumbnail);
CREATE TABLE IF NOT EXISTS ingest_log (
    id INTEGER PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    roots TEXT NOT NULL,
    counts TEXT,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS searches (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    probe TEXT NOT NULL,
    embedding BLOB NOT NULL,
    params TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS search_results (
    search_id INTEGER NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
    rank INTEGER NOT NULL,
    face_id INTEGER NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (search_id, rank)
);
CREATE INDEX IF NOT EXISTS search_results_face ON search_results(face_id);
CREATE TABLE IF NOT EXISTS pending_deletions (name TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS blocked_templates (
    id INTEGER PRIMARY KEY,
    created_at TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embedding BLOB NOT NULL,
    threshold REAL NOT NULL
);
"""

# Columns added after schema version 1, for libraries created before them.
_ADDED_COLUMNS = {
    "media": {"kind": "TEXT NOT NULL DEFAULT 'image'", "duration_s": "REAL"},
    "faces": {
        "track_id": "INTEGER REFERENCES tracks(id) ON DELETE CASCADE", "frame_time_s": "REAL", "masked_embedding": "BLOB",
    },
}


def storage_error(error: sqlite3.Error, path: Path) -> FaceFindError:
    """The FaceFindError a user can act on for an sqlite3 error on the catalog at ``path``."""
    name = getattr(error, "sqlite_errorname", "") or ""
    if name.startswith("SQLITE_FULL") or "disk is full" in str(error):
        return DiskFullError(
            f"the disk holding {path} is full ({error}); nothing committed was lost. Free some space and run the"
            " command again"
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return LibraryBusyError(f"the catalog {path} stayed locked by another process: {error}")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")):
        return FaceFindError(f"cannot open or write the catalog {path}: {error} (check its permissions)",
                             reason="library_access")
    if name.startswith("SQLITE_IOERR"):
        return FaceFindError(f"the disk failed while reading or writing {path}: {error}", reason="io_error")
    return DamagedLibraryError(
        f"the catalog {path} is damaged ({error}); run `facefind check --repair`, or restore the library from a backup"
    )


class SqliteCatalog(SqlCatalog):
    """A :class:`~facefind.catalog.base.Catalog` in one SQLite file.

    ``writable=False`` (searches, stats) opens without writing anything unless the file needs its
    schema set up, so reads keep working on a full disk and never wait for a writer.
    """

    def __init__(self, path: Path, writable: bool = True) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not just unlinked
            self._db.execute("PRAGMA foreign_keys=ON")
            tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            current = "meta" in tables and self.get_meta("schema_version") == str(SCHEMA_VERSION)
            if writable or not current:
                self._set_up()
            self._db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            self._db.close()
            raise

    def _set_up(self) -> None:
        # A face row (two float16 templates, ~2.4 KB) fits 3 to an 8 KB page but 1 to a 4 KB one: a new catalog is
        # 32% smaller (bench/catalog_write.py). Only a new, empty file takes it; an existing one keeps its size.
        self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._migrate()
        if self.get_meta("revision") is None:
            self.set_meta("revision", "0")
        if self.get_meta("schema_version") != str(SCHEMA_VERSION):
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    def _migrate(self) -> None:
        """Add the columns later schema versions introduced (SQLite adds them in place)."""
        for table, columns in _ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, declaration in columns.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")

    # -- dialect hooks (catalog/sql.py holds the shared queries) ---------------------------------

    ERASE_PROBE_SET = ("embedding = X'',"
                       " probe = json_set(probe, '$.path', NULL, '$.sha256', NULL, '$.erased', json('true'))")
    HAS_MASKED_TEMPLATE = "(masked_embedding IS NOT NULL) = 1"  # the shape of the faces_templates index
    FACES_IN_ID_ORDER = "faces NOT INDEXED"  # the rowid range: pages of iter_embeddings cost their own size

    def _transaction(self):
        catalog = self

        class _Tx:
            def __enter__(self_inner):
                catalog._lock.acquire()
                catalog._db.execute("BEGIN IMMEDIATE")
                return catalog._db

            def __exit__(self_inner, exc_type, exc, tb):
                try:
                    if exc_type is None:
                        catalog._db.execute("COMMIT")
                finally:
                    try:
                        if catalog._db.in_transaction:  # an error, or a COMMIT that failed (a full disk)
                            catalog._db.execute("ROLLBACK")
                    finally:
                        catalog._lock.release()

        return _Tx()

    def _reading(self):
        return nullcontext(self._db)

    def _execute(self, db: sqlite3.Connection, query: str, args: tuple | list = ()) -> sqlite3.Cursor:
        return db.execute(query, args)

    def _execute_many(self, db: sqlite3.Connection, query: str, rows: list[tuple]) -> None:
        db.executemany(query, rows)

    def _next_ids(self, db: sqlite3.Connection, table: str, count: int) -> list[int]:
        if not count:
            return []
        (last,) = db.execute(  # what SQLite itself would use: the largest id, or the largest ever (AUTOINCREMENT)
            f"SELECT MAX(COALESCE((SELECT MAX(id) FROM {table}), 0),"
            " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = ?), 0))", (table,)).fetchone()
        return list(range(last + 1, last + 1 + count))

    def _in(self, column: str, values: list) -> tuple[str, list]:
        return f"{column} IN ({','.join('?' * len(values))})", list(values)

    def _json_field(self, column: str, field: str) -> str:
        return f"json_extract({column}, '$.{field}')"

    @staticmethod
    def _file_or_folder(path: str) -> tuple[str, tuple]:
        folder = path.rstrip("/") + "/"
        return "(media.path = ? OR substr(media.path, 1, ?) = ?)", (path, len(folder), folder)

    # -- backend's own: WAL, integrity, ingest log, paged reads ---------------------------------

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it, so removed rows do not linger in the log file;
        False when a reader of another connection kept part of it (try again later)."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    # -- integrity -----------------------------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """What ``PRAGMA integrity_check`` finds (empty when the file is sound)."""
        rows = [r[0] for r in self._db.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def rebuild_sql_indexes(self) -> None:
        """REINDEX: rebuilds every SQL index from its table, the repair for damaged index b-trees."""
        with self._lock:
            self._db.execute("REINDEX")

    def mark_abandoned_ingests(self) -> int:
        """Ingests still logged ``running`` when a writer opens died (the writer holds the one write lock)."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE ingest_log SET status = 'died' WHERE status = 'running'"
            ).rowcount

    def iter_faces(self) -> Iterator[FaceRecord]:
        """Every stored face, grouped by file (for checks that visit each source once)."""
        cursor = self._db.execute(f"SELECT {FACE_COLUMNS} FROM {FACE_FROM} ORDER BY media.path, faces.id")
        while rows := cursor.fetchmany(1000):
            yield from (face_record(row) for row in rows)

    def blocked_templates(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(templates, thresholds) of the opted-out people for this model; empty in a library made before opt-out."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "blocked_templates" not in tables:
            return np.empty((0, 0), np.float32), np.empty(0, np.float32)
        return super().blocked_templates(model_id)

    def close(self) -> None:
        self._db.close()


SqliteCatalog = guard_errors(SqliteCatalog, (sqlite3.Error,), lambda catalog, error: storage_error(error, catalog.path))
