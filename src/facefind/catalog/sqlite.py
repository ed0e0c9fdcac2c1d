"""SQLite catalog (WAL mode): the embedded default, one file beside the index."""

from __future__ import annotations

import json
import sqlite3
import threading
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

SCHEMA_VERSION = 2

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


class SqliteCatalog:
    """A :class:`~facefind.catalog.base.Catalog` in one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._migrate()
        if self.get_meta("revision") is None:
            self.set_meta("revision", "0")
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
                    catalog._db.execute("ROLLBACK" if exc_type else "COMMIT")
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
        with self._transaction() as db:
            for outcome in outcomes:
                removed_ids += self._delete_media_rows(db, "media.path = ?", (outcome.path,))[0]
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
            revision = self._bump_revision(db) if (added_ids or removed_ids) else self.revision()
        def stacked(rows: list[np.ndarray]) -> np.ndarray:
            return np.vstack(rows) if rows else np.empty((0, 0), dtype=np.float32)

        return CommitResult(added_ids, stacked(added_vectors), removed_ids, revision, masked_ids, stacked(masked_vectors))

    def touch_media(self, path: str, size: int, mtime_ns: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE media SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def _delete_media_rows(
        self, db: sqlite3.Connection, where: str, args: tuple
    ) -> tuple[list[int], list[str], int]:
        """Delete media matching ``where`` (faces cascade); returns face ids, thumbnails, files deleted."""
        rows = db.execute(
            f"SELECT faces.id, faces.thumbnail FROM faces JOIN media ON media.id = faces.media_id WHERE {where}",
            args,
        ).fetchall()
        frames = db.execute(
            f"SELECT tracks.frame_thumbnail FROM tracks JOIN media ON media.id = tracks.media_id WHERE {where}", args
        ).fetchall()
        files = db.execute(f"DELETE FROM media WHERE {where}", args).rowcount
        return [r[0] for r in rows], [r[1] for r in rows if r[1]] + [r[0] for r in frames if r[0]], files

    @staticmethod
    def _file_or_folder(path: str) -> tuple[str, tuple]:
        """SQL condition (and its arguments) for the file ``path`` or any file under the folder ``path``."""
        folder = path.rstrip("/") + "/"
        return "(media.path = ? OR substr(media.path, 1, ?) = ?)", (path, len(folder), folder)

    def remove_media(self, path: str) -> tuple[list[int], list[str], int]:
        with self._transaction() as db:
            ids, thumbs, files = self._delete_media_rows(db, *self._file_or_folder(path))
            if ids:
                self._bump_revision(db)
        return ids, thumbs, files

    def remove_faces(self, face_ids: list[int]) -> list[str]:
        if not face_ids:
            return []
        marks = ",".join("?" * len(face_ids))
        with self._transaction() as db:
            rows = db.execute(
                f"SELECT id, media_id, thumbnail FROM faces WHERE id IN ({marks})", face_ids
            ).fetchall()
            db.execute(f"DELETE FROM faces WHERE id IN ({marks})", face_ids)
            for media_id in {r[1] for r in rows}:
                db.execute(
                    "UPDATE media SET face_count = (SELECT COUNT(*) FROM faces WHERE media_id = ?) WHERE id = ?",
                    (media_id, media_id),
                )
            if rows:
                self._bump_revision(db)
        return [r[2] for r in rows if r[2]]

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

    def iter_embeddings(
        self, model_id: str, batch: int = 10_000, masked: bool = False
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
            vectors = np.vstack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
            yield ids, vectors
            last_id = int(ids[-1])

    def embeddings(self, face_ids: list[int], masked: bool = False) -> np.ndarray:
        column = "masked_embedding" if masked else "embedding"
        found: dict[int, np.ndarray] = {}
        ids = [int(i) for i in face_ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._db.execute(
                f"SELECT id, {column} FROM faces WHERE id IN ({','.join('?' * len(chunk))}) AND {column} IS NOT NULL",
                chunk,
            ).fetchall()
            found.update({r[0]: np.frombuffer(r[1], dtype=np.float32) for r in rows})
        if not ids:
            return np.empty((0, 0), dtype=np.float32)
        return np.vstack([found[i] for i in ids])

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

    def close(self) -> None:
        self._db.close()
