"""SQLite catalog (WAL mode): the embedded default, one file beside the index.

Every sqlite3 error is turned into a FaceFindError at this boundary (``damaged_library``,
``disk_full``, ``busy``...), so a damaged file or a full disk is reported, never a traceback.
Deleted rows are overwritten (``secure_delete``) and removals truncate the WAL, so erased
faces leave no bytes behind.
"""

from __future__ import annotations

import functools
import inspect
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from facefind.catalog.base import (
    CommitResult,
    FaceRecord,
    MediaOutcome,
    MediaRecord,
    TrackRecord,
)
from facefind.errors import DamagedLibraryError, DiskFullError, FaceFindError, LibraryBusyError

SCHEMA_VERSION = 3
DAMAGED_IN_CATALOG = "damaged_in_catalog"

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

_FACE_COLUMNS = """
    faces.id, faces.media_id, media.path, media.sha256, media.width, media.height, faces.face_index,
    faces.box, faces.landmarks, faces.detection_score, faces.quality, faces.model_id, faces.thumbnail,
    faces.frame_time_s, tracks.id, tracks.track_index, tracks.time_ranges, tracks.best_time_s,
    tracks.observations, tracks.frame_thumbnail
"""
_FACE_FROM = "faces JOIN media ON media.id = faces.media_id LEFT JOIN tracks ON tracks.id = faces.track_id"
_MEDIA_COLUMNS = """id, path, status, sha256, size, mtime_ns, width, height, format, exif_time, reason, message,
    face_count, ingested_at, kind, duration_s"""
# Columns added after schema version 1, for libraries created before them.
_ADDED_COLUMNS = {
    "media": {"kind": "TEXT NOT NULL DEFAULT 'image'", "duration_s": "REAL"},
    "faces": {
        "track_id": "INTEGER REFERENCES tracks(id) ON DELETE CASCADE", "frame_time_s": "REAL", "masked_embedding": "BLOB",
    },
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def _guard_storage_errors(cls: type) -> type:
    """Wrap every public method so an sqlite3 error leaves the catalog as a FaceFindError (generators too)."""

    def guard(method):
        if inspect.isgeneratorfunction(method):
            @functools.wraps(method)
            def generator(self, *args, **kwargs):
                try:
                    yield from method(self, *args, **kwargs)
                except sqlite3.Error as error:
                    raise storage_error(error, self.path) from None
            return generator

        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except sqlite3.Error as error:
                raise storage_error(error, self.path) from None
        return call

    for name, member in list(vars(cls).items()):
        if inspect.isfunction(member) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, guard(member))
    return cls


def _vectors(blobs: list, dim: int | None) -> np.ndarray:
    """float32 rows from stored blobs; a blob of the wrong size becomes a NaN row, which callers treat as damage."""
    if dim is None:
        dim = next((len(b) // 4 for b in blobs if isinstance(b, bytes)), 0)
    rows = np.full((len(blobs), dim), np.nan, dtype=np.float32)
    for i, blob in enumerate(blobs):
        if isinstance(blob, bytes) and len(blob) == dim * 4:
            rows[i] = np.frombuffer(blob, dtype=np.float32)
    return rows


@_guard_storage_errors
class SqliteCatalog:
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

    # -- helpers -------------------------------------------------------------------------------

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

    def _bump_revision(self, db: sqlite3.Connection) -> int:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'revision'")
        return int(db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    # -- meta ----------------------------------------------------------------------------------

    def revision(self) -> int:
        return int(self.get_meta("revision") or 0)

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- media ---------------------------------------------------------------------------------

    def media_by_path(self, path: str) -> MediaRecord | None:
        row = self._db.execute(f"SELECT {_MEDIA_COLUMNS} FROM media WHERE path = ?", (path,)).fetchone()
        return MediaRecord(*row) if row else None

    def commit_outcomes(self, outcomes: list[MediaOutcome]) -> CommitResult:
        added_ids: list[int] = []
        added_vectors: list[np.ndarray] = []
        masked_ids: list[int] = []
        masked_vectors: list[np.ndarray] = []
        removed_ids: list[int] = []
        replaced_thumbnails: list[str] = []
        with self._transaction() as db:
            for outcome in outcomes:
                removed = self._delete_media_rows(db, "media.path = ?", (outcome.path,))
                removed_ids += removed.face_ids
                replaced_thumbnails += removed.thumbnails
                cursor = db.execute(
                    "INSERT INTO media(path, status, sha256, size, mtime_ns, width, height, format, exif_time,"
                    " reason, message, face_count, ingested_at, kind, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        outcome.path, outcome.status, outcome.sha256, outcome.size, outcome.mtime_ns,
                        outcome.width, outcome.height, outcome.format, outcome.exif_time, outcome.reason,
                        outcome.message, len(outcome.faces), _now(), outcome.kind, outcome.duration_s,
                    ),
                )
                media_id = cursor.lastrowid
                track_ids = {}
                for track in outcome.tracks:
                    track_ids[track.track_index] = db.execute(
                        "INSERT INTO tracks(media_id, track_index, time_ranges, best_time_s, observations,"
                        " frame_thumbnail) VALUES (?,?,?,?,?,?)",
                        (media_id, track.track_index, json.dumps(track.time_ranges), track.best_time_s,
                         track.observations, track.frame_thumbnail),
                    ).lastrowid
                for face in outcome.faces:
                    vector = np.ascontiguousarray(face.embedding, dtype=np.float32)
                    masked = None if face.masked_embedding is None else np.ascontiguousarray(face.masked_embedding, np.float32)
                    cursor = db.execute(
                        "INSERT INTO faces(media_id, face_index, box, landmarks, detection_score, quality, model_id,"
                        " embedding, thumbnail, track_id, frame_time_s, masked_embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                        (
                            media_id, face.face_index, json.dumps(face.box), json.dumps(face.landmarks),
                            face.detection_score, json.dumps(face.quality), face.model_id, vector.tobytes(),
                            face.thumbnail, track_ids.get(face.track_index), face.frame_time_s,
                            None if masked is None else masked.tobytes(),
                        ),
                    )
                    added_ids.append(int(cursor.lastrowid))
                    added_vectors.append(vector)
                    if masked is not None:
                        masked_ids.append(int(cursor.lastrowid))
                        masked_vectors.append(masked)
            released = self._release_thumbnails(db, replaced_thumbnails)  # after the inserts: a new face may share a name
            revision = self._bump_revision(db) if (added_ids or removed_ids) else self.revision()

        def stacked(rows: list[np.ndarray]) -> np.ndarray:
            return np.vstack(rows) if rows else np.empty((0, 0), dtype=np.float32)

        return CommitResult(
            added_ids, stacked(added_vectors), removed_ids, revision, masked_ids, stacked(masked_vectors), released
        )

    def touch_media(self, path: str, size: int, mtime_ns: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE media SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def _delete_media_rows(self, db: sqlite3.Connection, where: str, args: tuple) -> "_Deleted":
        """Delete media matching ``where`` (tracks and faces cascade) and the search results of their faces."""
        rows = db.execute(
            f"SELECT faces.id, faces.thumbnail FROM faces JOIN media ON media.id = faces.media_id WHERE {where}",
            args,
        ).fetchall()
        frames = db.execute(
            f"SELECT tracks.frame_thumbnail FROM tracks JOIN media ON media.id = tracks.media_id WHERE {where}", args
        ).fetchall()
        media = db.execute(f"SELECT path, sha256 FROM media WHERE {where}", args).fetchall()
        db.execute(f"DELETE FROM media WHERE {where}", args)
        face_ids = [r[0] for r in rows]
        self._delete_search_results_of(db, face_ids)
        return _Deleted(
            face_ids, [r[1] for r in rows if r[1]] + [r[0] for r in frames if r[0]], [m[0] for m in media],
            [m[1] for m in media if m[1]],
        )

    @staticmethod
    def _chunks(values: list, size: int = 500) -> Iterator[list]:
        for start in range(0, len(values), size):
            yield values[start : start + size]

    def _delete_search_results_of(self, db: sqlite3.Connection, face_ids: list[int]) -> None:
        """Search results pointing at erased faces go too: the log must not keep what was removed."""
        for chunk in self._chunks(face_ids):
            db.execute(f"DELETE FROM search_results WHERE face_id IN ({','.join('?' * len(chunk))})", chunk)

    def _release_thumbnails(self, db: sqlite3.Connection, names: list[str]) -> list[str]:
        """Of ``names``, those no face or track refers to any more: queued for deletion in this transaction.

        Byte-identical files share thumbnail names, so a file is only deleted when its last user goes;
        the queue lets the next writable open finish deletions a crash interrupted.
        """
        released = []
        for chunk in self._chunks(sorted(set(names))):
            marks = ",".join("?" * len(chunk))
            used = {r[0] for r in db.execute(
                f"SELECT thumbnail FROM faces WHERE thumbnail IN ({marks})"
                f" UNION SELECT frame_thumbnail FROM tracks WHERE frame_thumbnail IN ({marks})", chunk + chunk)}
            released += [name for name in chunk if name not in used]
        db.executemany("INSERT OR IGNORE INTO pending_deletions(name) VALUES (?)", [(n,) for n in released])
        return released

    def _scrub_search_log(self, db: sqlite3.Connection, paths: list[str], sha256s: list[str]) -> None:
        """Forget the probe photo (path, SHA-256, embedding) of every search whose probe was an erased file."""
        for column, values in (("$.path", paths), ("$.sha256", sha256s)):
            for chunk in self._chunks(values):
                db.execute(
                    "UPDATE searches SET embedding = X'',"
                    " probe = json_set(probe, '$.path', NULL, '$.sha256', NULL, '$.erased', json('true'))"
                    f" WHERE json_extract(probe, '{column}') IN ({','.join('?' * len(chunk))})",
                    chunk,
                )

    @staticmethod
    def _file_or_folder(path: str) -> tuple[str, tuple]:
        """SQL condition (and its arguments) for the file ``path`` or any file under the folder ``path``."""
        folder = path.rstrip("/") + "/"
        return "(media.path = ? OR substr(media.path, 1, ?) = ?)", (path, len(folder), folder)

    def remove_media(self, path: str) -> tuple[list[int], list[str], int]:
        with self._transaction() as db:
            deleted = self._delete_media_rows(db, *self._file_or_folder(path))
            self._scrub_search_log(db, deleted.paths, deleted.sha256s)
            self._scrub_ingest_log(db, deleted.paths)
            released = self._release_thumbnails(db, deleted.thumbnails)
            if deleted.face_ids:
                self._bump_revision(db)
        return deleted.face_ids, released, len(deleted.paths)

    def _scrub_ingest_log(self, db: sqlite3.Connection, paths: list[str]) -> None:
        """An erased file named explicitly to `index` leaves its name in the ingest log's roots: drop it."""
        erased = set(paths)
        for row_id, roots in db.execute("SELECT id, roots FROM ingest_log").fetchall():
            kept = [root for root in json.loads(roots) if root not in erased]
            if len(kept) != len(json.loads(roots)):
                db.execute("UPDATE ingest_log SET roots = ? WHERE id = ?", (json.dumps(kept), row_id))

    def remove_faces(self, face_ids: list[int]) -> tuple[list[int], list[str]]:
        """Forget single faces; a video face takes its whole track (the same person) and the track's frame."""
        if not face_ids:
            return [], []
        with self._transaction() as db:
            rows = []
            for chunk in self._chunks([int(i) for i in face_ids]):
                marks = ",".join("?" * len(chunk))
                rows += db.execute(
                    f"SELECT id, media_id, thumbnail, track_id FROM faces WHERE id IN ({marks})"
                    f" OR track_id IN (SELECT track_id FROM faces WHERE id IN ({marks}) AND track_id IS NOT NULL)",
                    chunk + chunk,
                ).fetchall()
            removed = sorted({r[0] for r in rows})
            track_ids = sorted({r[3] for r in rows if r[3] is not None})
            thumbnails = [r[2] for r in rows if r[2]]
            for chunk in self._chunks(track_ids):
                marks = ",".join("?" * len(chunk))
                thumbnails += [r[0] for r in db.execute(
                    f"SELECT frame_thumbnail FROM tracks WHERE id IN ({marks}) AND frame_thumbnail IS NOT NULL", chunk)]
                db.execute(f"DELETE FROM tracks WHERE id IN ({marks})", chunk)  # its faces cascade
            for chunk in self._chunks(removed):
                db.execute(f"DELETE FROM faces WHERE id IN ({','.join('?' * len(chunk))})", chunk)
            for media_id in {r[1] for r in rows}:
                db.execute(
                    "UPDATE media SET face_count = (SELECT COUNT(*) FROM faces WHERE media_id = ?) WHERE id = ?",
                    (media_id, media_id),
                )
            self._delete_search_results_of(db, removed)
            released = self._release_thumbnails(db, thumbnails)
            if removed:
                self._bump_revision(db)
        return removed, released

    def mark_damaged(self, face_ids: list[int]) -> tuple[list[int], list[str]]:
        """Drop every face of the files holding ``face_ids`` and mark those files failed, so the next ingest
        re-analyses them; returns the face ids removed and the thumbnails released."""
        with self._transaction() as db:
            media_ids: set[int] = set()
            for chunk in self._chunks([int(i) for i in face_ids]):
                media_ids.update(r[0] for r in db.execute(
                    f"SELECT media_id FROM faces WHERE id IN ({','.join('?' * len(chunk))})", chunk))
            removed, thumbnails = [], []
            for media_id in sorted(media_ids):
                rows = db.execute("SELECT id, thumbnail FROM faces WHERE media_id = ?", (media_id,)).fetchall()
                removed += [r[0] for r in rows]
                thumbnails += [r[1] for r in rows if r[1]]
                thumbnails += [r[0] for r in db.execute(
                    "SELECT frame_thumbnail FROM tracks WHERE media_id = ? AND frame_thumbnail IS NOT NULL", (media_id,))]
                db.execute("DELETE FROM faces WHERE media_id = ?", (media_id,))
                db.execute("DELETE FROM tracks WHERE media_id = ?", (media_id,))
                db.execute(
                    "UPDATE media SET status = 'failed', reason = ?, face_count = 0,"
                    " message = 'a stored face embedding was damaged; the next `facefind index` re-analyses the file'"
                    " WHERE id = ?", (DAMAGED_IN_CATALOG, media_id),
                )
            self._delete_search_results_of(db, removed)
            released = self._release_thumbnails(db, thumbnails)
            if removed:
                self._bump_revision(db)
        return removed, released

    def checkpoint(self) -> bool:
        """Copy the WAL into the database and truncate it, so removed rows do not linger in the log file;
        False when a reader of another connection kept part of it (try again later)."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return not busy

    # -- files to delete, and which thumbnails are in use ---------------------------------------

    def pending_deletions(self) -> list[str]:
        """Released thumbnails not yet deleted (a crash came between the commit and the unlink).

        A name a later commit uses again is no longer pending and is dropped from the queue here.
        """
        with self._transaction() as db:
            names = [r[0] for r in db.execute("SELECT name FROM pending_deletions ORDER BY name")]
            if not names:
                return []
            db.execute("DELETE FROM pending_deletions")
            return self._release_thumbnails(db, names)

    def deletions_done(self, names: list[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM pending_deletions WHERE name = ?", [(n,) for n in names])

    def referenced_thumbnails(self) -> set[str]:
        """Every thumbnail name a face or a track refers to."""
        rows = self._db.execute(
            "SELECT thumbnail FROM faces WHERE thumbnail IS NOT NULL"
            " UNION SELECT frame_thumbnail FROM tracks WHERE frame_thumbnail IS NOT NULL"
        )
        return {r[0] for r in rows}

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

    def fingerprint(self, model_id: str, masked: bool = False, excluding: list[int] = ()) -> tuple[int, int]:
        """(count, sum of ids) of the stored faces (or masked templates) of ``model_id``, less ``excluding``:
        read from an index, so comparing it with the vector index on every open costs milliseconds."""
        excluded = [int(i) for i in excluding]
        count, total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(id), 0) FROM faces WHERE model_id = ?"
            + (" AND (masked_embedding IS NOT NULL) = 1" if masked else "")
            + (f" AND id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""),
            (model_id, *excluded),
        ).fetchone()
        return int(count), int(total)

    # -- faces ---------------------------------------------------------------------------------

    @staticmethod
    def _face(row: tuple) -> FaceRecord:
        track = None
        if row[14] is not None:
            track = TrackRecord(
                id=row[14], track_index=row[15], time_ranges=json.loads(row[16]), best_time_s=row[17],
                observations=row[18], frame_thumbnail=row[19],
            )
        return FaceRecord(
            id=row[0], media_id=row[1], path=row[2], sha256=row[3], media_width=row[4], media_height=row[5],
            face_index=row[6], box=json.loads(row[7]), landmarks=json.loads(row[8]), detection_score=row[9],
            quality=json.loads(row[10]), model_id=row[11], thumbnail=row[12], frame_time_s=row[13], track=track,
        )

    def faces(self, face_ids: list[int]) -> dict[int, FaceRecord]:
        found: dict[int, FaceRecord] = {}
        ids = [int(i) for i in face_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._db.execute(
                f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE faces.id IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found.update({row[0]: self._face(row) for row in rows})
        return found

    def faces_of_media(self, path: str) -> list[FaceRecord]:
        rows = self._db.execute(
            f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE media.path = ? ORDER BY faces.face_index", (path,)
        ).fetchall()
        return [self._face(row) for row in rows]

    def face_ids_under(self, path: str) -> list[int]:
        where, args = self._file_or_folder(path)
        rows = self._db.execute(f"SELECT faces.id FROM faces JOIN media ON media.id = faces.media_id WHERE {where}", args)
        return [r[0] for r in rows.fetchall()]

    def iter_faces(self) -> Iterator[FaceRecord]:
        """Every stored face, grouped by file (for checks that visit each source once)."""
        cursor = self._db.execute(f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} ORDER BY media.path, faces.id")
        while rows := cursor.fetchmany(1000):
            yield from (self._face(row) for row in rows)

    def iter_embeddings(
        self, model_id: str, batch: int = 10_000, masked: bool = False, dim: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        column = "masked_embedding" if masked else "embedding"
        last_id = 0
        while True:
            rows = self._db.execute(
                f"SELECT id, {column} FROM faces WHERE model_id = ? AND id > ? AND {column} IS NOT NULL"
                " ORDER BY id LIMIT ?",
                (model_id, last_id, batch),
            ).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            yield ids, _vectors([r[1] for r in rows], dim)
            last_id = int(ids[-1])

    def embeddings(self, face_ids: list[int], masked: bool = False) -> np.ndarray:
        found, vectors = self.stored_embeddings(face_ids, masked)
        missing = set(int(i) for i in face_ids) - set(found.tolist())
        if missing:
            raise KeyError(sorted(missing)[0])
        return vectors

    def stored_embeddings(
        self, face_ids: list[int], masked: bool = False, dim: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        column = "masked_embedding" if masked else "embedding"
        found: dict[int, bytes] = {}
        ids = [int(i) for i in face_ids]
        for chunk in self._chunks(ids):
            rows = self._db.execute(
                f"SELECT id, {column} FROM faces WHERE id IN ({','.join('?' * len(chunk))}) AND {column} IS NOT NULL",
                chunk,
            ).fetchall()
            found.update({r[0]: r[1] for r in rows})
        present = [i for i in ids if i in found]
        if not present:
            return np.empty(0, np.int64), np.empty((0, dim or 0), np.float32)
        return np.asarray(present, np.int64), _vectors([found[i] for i in present], dim)

    def stats(self) -> dict:
        by_status = dict(self._db.execute("SELECT status, COUNT(*) FROM media GROUP BY status").fetchall())
        by_reason = dict(
            self._db.execute(
                "SELECT reason, COUNT(*) FROM media WHERE reason IS NOT NULL GROUP BY reason ORDER BY 2 DESC"
            ).fetchall()
        )
        by_quality = dict(
            self._db.execute(
                "SELECT json_extract(quality, '$.verdict'), COUNT(*) FROM faces GROUP BY 1"
            ).fetchall()
        )
        faces, models = self._db.execute("SELECT COUNT(*), COUNT(DISTINCT model_id) FROM faces").fetchone()
        last = self._db.execute(
            "SELECT started_at, finished_at, status, counts FROM ingest_log ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return {
            "files": sum(by_status.values()),
            "files_by_status": by_status,
            "unindexed_by_reason": by_reason,
            "faces": faces,
            "faces_by_quality": by_quality,
            "models": models,
            "searches": self._db.execute("SELECT COUNT(*) FROM searches").fetchone()[0],
            "last_ingest": None
            if last is None
            else {"started_at": last[0], "finished_at": last[1], "status": last[2], "counts": json.loads(last[3] or "{}")},
        }

    # -- logs ----------------------------------------------------------------------------------

    def start_ingest(self, roots: list[str]) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO ingest_log(started_at, roots, status) VALUES (?, ?, 'running')",
                (_now(), json.dumps(roots)),
            )
            return int(cursor.lastrowid)

    def finish_ingest(self, ingest_id: int, counts: dict, status: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE ingest_log SET finished_at = ?, counts = ?, status = ? WHERE id = ?",
                (_now(), json.dumps(counts), status, ingest_id),
            )

    def record_search(self, probe: dict, embedding: np.ndarray, params: dict, results: list[tuple[int, float]]) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO searches(created_at, probe, embedding, params) VALUES (?, ?, ?, ?)",
                (_now(), json.dumps(probe), np.asarray(embedding, np.float32).tobytes(), json.dumps(params)),
            )
            search_id = int(cursor.lastrowid)
            db.executemany(
                "INSERT INTO search_results(search_id, rank, face_id, score) VALUES (?, ?, ?, ?)",
                [(search_id, rank, face_id, score) for rank, (face_id, score) in enumerate(results, start=1)],
            )
        return search_id

    def probe_embeddings(self) -> tuple[list[int], np.ndarray]:
        """Search ids and probe vectors of the search log (erased probes left out), to find a person's probes."""
        rows = self._db.execute("SELECT id, embedding FROM searches WHERE length(embedding) > 0 ORDER BY id").fetchall()
        return [r[0] for r in rows], _vectors([r[1] for r in rows], None)

    def forget_search_probes(self, search_ids: list[int]) -> None:
        """Erase the probe (vector, path, hash) and results of these searches: the searched-for person was erased."""
        with self._transaction() as db:
            for chunk in self._chunks(search_ids):
                marks = ",".join("?" * len(chunk))
                db.execute(
                    "UPDATE searches SET embedding = X'',"
                    " probe = json_set(probe, '$.path', NULL, '$.sha256', NULL, '$.erased', json('true'))"
                    f" WHERE id IN ({marks})", chunk)
                db.execute(f"DELETE FROM search_results WHERE search_id IN ({marks})", chunk)

    def block_template(self, model_id: str, embedding: np.ndarray, threshold: float) -> int:
        """Keep one template of a person who opted out (no image): later ingests skip faces scoring >= threshold."""
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO blocked_templates(created_at, model_id, embedding, threshold) VALUES (?, ?, ?, ?)",
                (_now(), model_id, np.asarray(embedding, np.float32).tobytes(), float(threshold)))
        return int(cursor.lastrowid)

    def blocked_templates(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(templates, thresholds) of the opted-out people for this model; empty in a library made before opt-out."""
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = [] if "blocked_templates" not in tables else self._db.execute(
            "SELECT embedding, threshold FROM blocked_templates WHERE model_id = ? ORDER BY id", (model_id,)).fetchall()
        return _vectors([r[0] for r in rows], None), np.asarray([r[1] for r in rows], dtype=np.float32)

    def search_result(self, search_id: int, rank: int) -> tuple[dict, np.ndarray, int, float] | None:
        row = self._db.execute(
            "SELECT searches.probe, searches.embedding, search_results.face_id, search_results.score"
            " FROM search_results JOIN searches ON searches.id = search_results.search_id"
            " WHERE search_results.search_id = ? AND search_results.rank = ?",
            (search_id, rank),
        ).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), np.frombuffer(row[1], dtype=np.float32).copy(), row[2], row[3]

    def list_media(self, status: str | None, offset: int, limit: int) -> tuple[list[MediaRecord], int]:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        total = self._db.execute(f"SELECT COUNT(*) FROM media {where}", args).fetchone()[0]
        rows = self._db.execute(
            f"SELECT {_MEDIA_COLUMNS} FROM media {where} ORDER BY path LIMIT ? OFFSET ?", (*args, limit, offset)
        ).fetchall()
        return [MediaRecord(*row) for row in rows], total

    def list_searches(self, offset: int, limit: int) -> tuple[list[tuple[int, str, dict, dict, int]], int]:
        total = self._db.execute("SELECT COUNT(*) FROM searches").fetchone()[0]
        rows = self._db.execute(
            "SELECT id, created_at, probe, params, (SELECT COUNT(*) FROM search_results WHERE search_id = searches.id)"
            " FROM searches ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
        ).fetchall()
        return [(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4]) for r in rows], total

    def search_log_entry(self, search_id: int) -> tuple[str, dict, dict, list[tuple[int, int, float]]] | None:
        row = self._db.execute("SELECT created_at, probe, params FROM searches WHERE id = ?", (search_id,)).fetchone()
        if row is None:
            return None
        results = self._db.execute(
            "SELECT rank, face_id, score FROM search_results WHERE search_id = ? ORDER BY rank", (search_id,)
        ).fetchall()
        return row[0], json.loads(row[1]), json.loads(row[2]), [tuple(r) for r in results]

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class _Deleted:
    """What deleting media rows took with it: face ids, their thumbnails, and the files' paths and hashes."""

    face_ids: list[int]
    thumbnails: list[str]
    paths: list[str]
    sha256s: list[str]
