"""PostgreSQL catalog: the same tables and guarantees as the SQLite one, on a server several replicas can share.

Why a server: a team runs one catalog behind several service replicas (and backs up one system).
Each library lives in its own PostgreSQL schema (``?schema=NAME`` on the URL, default ``facefind``).

Guarantees, as in catalog/sqlite.py:

* a batch commits whole (one transaction per call);
* writes are serialised across processes and machines by a transaction-scoped advisory lock (what
  SQLite's ``BEGIN IMMEDIATE`` gives on one machine);
* one ingest at a time per library: ``start_ingest`` takes a session advisory lock that ``finish_ingest``
  (or the death of the process: its connection closes) releases, so a second replica's ingest is
  refused as busy and a new writer only marks ingests ``died`` when nobody holds that lock;
* removals are followed by ``VACUUM`` (``checkpoint``), so erased rows are pruned, not left as dead tuples.

Migrations are versioned SQL in a ``schema_migrations`` table, applied under an advisory lock (two replicas
starting at once do not race). Not Alembic: the catalog is plain SQL without ORM models, and a short list
of numbered statements needs no second tool, configuration folder or command for operators to learn.
Every psycopg error leaves as a FaceFindError (``catalog_unavailable``, ``disk_full``, ``busy``...).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from facefind.catalog.base import CommitResult, FaceRecord, MediaOutcome, MediaRecord, TrackRecord
from facefind.catalog.sqlite import DAMAGED_IN_CATALOG, _now, _vectors
from facefind.errors import DamagedLibraryError, DiskFullError, FaceFindError, LibraryBusyError

DEFAULT_SCHEMA = "facefind"
POOL_SIZE = 8  # the service searches from many threads; each call holds a connection only while it runs
CONNECT_TIMEOUT_S = 10.0

MIGRATIONS: list[tuple[int, str]] = [
    (1, """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE media (
    id BIGSERIAL PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    sha256 TEXT,
    size BIGINT,
    mtime_ns BIGINT,
    width INTEGER,
    height INTEGER,
    format TEXT,
    exif_time TEXT,
    reason TEXT,
    message TEXT,
    face_count INTEGER NOT NULL DEFAULT 0,
    ingested_at TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'image',
    duration_s DOUBLE PRECISION
);
CREATE INDEX media_sha256 ON media(sha256);
CREATE TABLE tracks (
    id BIGSERIAL PRIMARY KEY,
    media_id BIGINT NOT NULL REFERENCES media(id) ON DELETE CASCADE,
    track_index INTEGER NOT NULL,
    time_ranges TEXT NOT NULL,
    best_time_s DOUBLE PRECISION NOT NULL,
    observations INTEGER NOT NULL,
    frame_thumbnail TEXT
);
CREATE INDEX tracks_media ON tracks(media_id);
CREATE INDEX tracks_frame ON tracks(frame_thumbnail);
CREATE TABLE faces (
    id BIGSERIAL PRIMARY KEY,
    media_id BIGINT NOT NULL REFERENCES media(id) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    box TEXT NOT NULL,
    landmarks TEXT NOT NULL,
    detection_score DOUBLE PRECISION NOT NULL,
    quality TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embedding BYTEA NOT NULL,
    thumbnail TEXT,
    track_id BIGINT REFERENCES tracks(id) ON DELETE CASCADE,
    frame_time_s DOUBLE PRECISION,
    masked_embedding BYTEA
);
CREATE INDEX faces_media ON faces(media_id);
CREATE INDEX faces_track ON faces(track_id);
CREATE INDEX faces_thumbnail ON faces(thumbnail);
CREATE INDEX faces_templates ON faces(model_id, (masked_embedding IS NOT NULL));
CREATE TABLE ingest_log (
    id BIGSERIAL PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    roots TEXT NOT NULL,
    counts TEXT,
    status TEXT NOT NULL
);
CREATE TABLE searches (
    id BIGSERIAL PRIMARY KEY,
    created_at TEXT NOT NULL,
    probe TEXT NOT NULL,
    embedding BYTEA NOT NULL,
    params TEXT NOT NULL
);
CREATE TABLE search_results (
    search_id BIGINT NOT NULL REFERENCES searches(id) ON DELETE CASCADE,
    rank INTEGER NOT NULL,
    face_id BIGINT NOT NULL,
    score DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (search_id, rank)
);
CREATE INDEX search_results_face ON search_results(face_id);
CREATE TABLE pending_deletions (name TEXT PRIMARY KEY);
CREATE TABLE blocked_templates (
    id BIGSERIAL PRIMARY KEY,
    created_at TEXT NOT NULL,
    model_id TEXT NOT NULL,
    embedding BYTEA NOT NULL,
    threshold DOUBLE PRECISION NOT NULL
);
INSERT INTO meta(key, value) VALUES ('revision', '0');
"""),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]
CATALOG_TABLES = ("meta", "media", "tracks", "faces", "ingest_log", "searches", "search_results",
                  "pending_deletions", "blocked_templates")

_FACE_COLUMNS = """
    faces.id, faces.media_id, media.path, media.sha256, media.width, media.height, faces.face_index,
    faces.box, faces.landmarks, faces.detection_score, faces.quality, faces.model_id, faces.thumbnail,
    faces.frame_time_s, tracks.id, tracks.track_index, tracks.time_ranges, tracks.best_time_s,
    tracks.observations, tracks.frame_thumbnail
"""
_FACE_FROM = "faces JOIN media ON media.id = faces.media_id LEFT JOIN tracks ON tracks.id = faces.track_id"
_MEDIA_COLUMNS = """id, path, status, sha256, size, mtime_ns, width, height, format, exif_time, reason, message,
    face_count, ingested_at, kind, duration_s"""
_ERASED_PROBE = json.dumps({"path": None, "sha256": None, "erased": True})


def split_catalog_url(url: str) -> tuple[str, str]:
    """(libpq URL, schema): facefind's own ``schema=`` query parameter is taken off before psycopg sees it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), DEFAULT_SCHEMA)
    if not schema.replace("_", "").isalnum() or not schema[0].isalpha() or len(schema) > 63:
        raise FaceFindError(f"schema={schema!r} is not a usable PostgreSQL schema name (letters, digits, _)",
                            reason="bad_argument")
    kept = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=kept)), schema.lower()


def redacted_url(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def advisory_key(schema: str, purpose: str) -> int:
    """A stable signed 64-bit advisory-lock key for one library (schema) and one purpose."""
    digest = hashlib.sha256(f"facefind:{schema}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def server_error(error: Exception, where: str) -> FaceFindError:
    """The FaceFindError a user can act on for a psycopg (or pool) error on the catalog at ``where``."""
    if isinstance(error, psycopg.errors.DiskFull):
        return DiskFullError(f"the PostgreSQL server of {where} is out of disk space ({error}); nothing committed"
                             " was lost")
    if isinstance(error, (psycopg.errors.LockNotAvailable, psycopg.errors.SerializationFailure,
                          psycopg.errors.DeadlockDetected)):
        return LibraryBusyError(f"the catalog {where} stayed locked by another writer: {error}")
    if isinstance(error, (psycopg.OperationalError, PoolTimeout)):
        return FaceFindError(f"cannot reach the catalog server {where}: {str(error).strip()}",
                             reason="catalog_unavailable")
    if isinstance(error, psycopg.errors.InsufficientPrivilege):
        return FaceFindError(f"the catalog {where} refused: {error} (grant the facefind role its rights)",
                             reason="library_access")
    if isinstance(error, psycopg.errors.DataCorrupted):
        return DamagedLibraryError(f"the catalog {where} is damaged ({error}); run `facefind check --repair`")
    return FaceFindError(f"the catalog {where} failed: {str(error).strip()}", reason="catalog_error")


def _guard_server_errors(cls: type) -> type:
    """Wrap every public method so a psycopg error leaves the catalog as a FaceFindError (generators too)."""

    def guard(method):
        if inspect.isgeneratorfunction(method):
            @functools.wraps(method)
            def generator(self, *args, **kwargs):
                try:
                    yield from method(self, *args, **kwargs)
                except (psycopg.Error, PoolTimeout) as error:
                    raise server_error(error, self.display_name) from None
            return generator

        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except (psycopg.Error, PoolTimeout) as error:
                raise server_error(error, getattr(self, "display_name", "(PostgreSQL)")) from None
        return call

    for name, member in list(vars(cls).items()):
        if inspect.isfunction(member) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, guard(member))
    return cls


@_guard_server_errors
class PostgresCatalog:
    """A :class:`~facefind.catalog.base.Catalog` in one schema of a PostgreSQL database.

    ``writable`` is accepted for symmetry with SQLite: the schema is created or migrated on any open (under
    a lock), and writers are told apart by the locks they take, not by how the catalog was opened.
    """

    def __init__(self, url: str, writable: bool = True, pool_size: int = POOL_SIZE) -> None:
        self.url = url
        self.conninfo, self.schema = split_catalog_url(url)
        self.display_name = f"{redacted_url(self.conninfo)} (schema {self.schema})"
        self._write_key = advisory_key(self.schema, "write")
        self._ingest_key = advisory_key(self.schema, "ingest")
        self._ingest_lock = threading.Lock()
        self._ingest_connection: psycopg.Connection | None = None
        self._running_ingests: set[int] = set()
        self._pool = ConnectionPool(
            self.conninfo, min_size=1, max_size=pool_size, open=False, timeout=CONNECT_TIMEOUT_S,
            kwargs={"autocommit": True, "connect_timeout": int(CONNECT_TIMEOUT_S)}, configure=self._configure,
            name=f"facefind-catalog-{self.schema}",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    def _configure(self, connection: psycopg.Connection) -> None:
        """Every pooled connection looks in the library's schema first (``public`` holds the vector type)."""
        connection.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))

    def _migrate(self) -> None:
        """Create the schema and apply the migrations it has not seen yet, one transaction, one migrator at a time.

        A schema already current is only read, so a read-only database role can search.
        """
        with self._pool.connection() as connection:
            if connection.execute("SELECT to_regclass(%s)", (f'"{self.schema}".schema_migrations',)).fetchone()[0]:
                if connection.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION:
                    return
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(self.schema, "migrate"),))
            connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version not in applied:
                    connection.execute(statements)
                    connection.execute("INSERT INTO schema_migrations(version, applied_at) VALUES (%s, %s)",
                                       (version, _now()))

    # -- helpers -------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """One write transaction, serialised with every other writer of this library on any machine."""
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
            yield connection

    def _query(self, query: str, args: tuple | list = ()) -> list[tuple]:
        with self._pool.connection() as connection:
            return connection.execute(query, args).fetchall()

    def _bump_revision(self, db: psycopg.Connection) -> int:
        row = db.execute(
            "UPDATE meta SET value = (value::BIGINT + 1)::TEXT WHERE key = 'revision' RETURNING value"
        ).fetchone()
        return int(row[0])

    # -- meta ----------------------------------------------------------------------------------

    def revision(self) -> int:
        return int(self.get_meta("revision") or 0)

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = %s", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT INTO meta(key, value) VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                       (key, value))

    # -- media ---------------------------------------------------------------------------------

    def media_by_path(self, path: str) -> MediaRecord | None:
        rows = self._query(f"SELECT {_MEDIA_COLUMNS} FROM media WHERE path = %s", (path,))
        return MediaRecord(*rows[0]) if rows else None

    def commit_outcomes(self, outcomes: list[MediaOutcome]) -> CommitResult:
        added_ids: list[int] = []
        added_vectors: list[np.ndarray] = []
        masked_ids: list[int] = []
        masked_vectors: list[np.ndarray] = []
        removed_ids: list[int] = []
        replaced_thumbnails: list[str] = []
        with self._transaction() as db:
            for outcome in outcomes:
                removed = self._delete_media_rows(db, "media.path = %s", (outcome.path,))
                removed_ids += removed.face_ids
                replaced_thumbnails += removed.thumbnails
                media_id = db.execute(
                    "INSERT INTO media(path, status, sha256, size, mtime_ns, width, height, format, exif_time,"
                    " reason, message, face_count, ingested_at, kind, duration_s)"
                    " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (
                        outcome.path, outcome.status, outcome.sha256, outcome.size, outcome.mtime_ns,
                        outcome.width, outcome.height, outcome.format, outcome.exif_time, outcome.reason,
                        outcome.message, len(outcome.faces), _now(), outcome.kind, outcome.duration_s,
                    ),
                ).fetchone()[0]
                track_ids = {}
                for track in outcome.tracks:
                    track_ids[track.track_index] = db.execute(
                        "INSERT INTO tracks(media_id, track_index, time_ranges, best_time_s, observations,"
                        " frame_thumbnail) VALUES (%s,%s,%s,%s,%s,%s) RETURNING id",
                        (media_id, track.track_index, json.dumps(track.time_ranges), track.best_time_s,
                         track.observations, track.frame_thumbnail),
                    ).fetchone()[0]
                for face in outcome.faces:
                    vector = np.ascontiguousarray(face.embedding, dtype=np.float32)
                    masked = None if face.masked_embedding is None else np.ascontiguousarray(face.masked_embedding, np.float32)
                    face_id = int(db.execute(
                        "INSERT INTO faces(media_id, face_index, box, landmarks, detection_score, quality, model_id,"
                        " embedding, thumbnail, track_id, frame_time_s, masked_embedding)"
                        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                        (
                            media_id, face.face_index, json.dumps(face.box), json.dumps(face.landmarks),
                            float(face.detection_score), json.dumps(face.quality), face.model_id, vector.tobytes(),
                            face.thumbnail, track_ids.get(face.track_index), face.frame_time_s,
                            None if masked is None else masked.tobytes(),
                        ),
                    ).fetchone()[0])
                    added_ids.append(face_id)
                    added_vectors.append(vector)
                    if masked is not None:
                        masked_ids.append(face_id)
                        masked_vectors.append(masked)
            released = self._release_thumbnails(db, replaced_thumbnails)  # after the inserts: a new face may share a name
            revision = self._bump_revision(db) if (added_ids or removed_ids) else self._revision_in(db)

        def stacked(rows: list[np.ndarray]) -> np.ndarray:
            return np.vstack(rows) if rows else np.empty((0, 0), dtype=np.float32)

        return CommitResult(
            added_ids, stacked(added_vectors), removed_ids, revision, masked_ids, stacked(masked_vectors), released
        )

    @staticmethod
    def _revision_in(db: psycopg.Connection) -> int:
        return int(db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    def touch_media(self, path: str, size: int, mtime_ns: int) -> None:
        with self._transaction() as db:
            db.execute("UPDATE media SET size = %s, mtime_ns = %s WHERE path = %s", (size, mtime_ns, path))

    def _delete_media_rows(self, db: psycopg.Connection, where: str, args: tuple) -> "_Deleted":
        """Delete media matching ``where`` (tracks and faces cascade) and the search results of their faces."""
        rows = db.execute(
            f"SELECT faces.id, faces.thumbnail FROM faces JOIN media ON media.id = faces.media_id WHERE {where}", args
        ).fetchall()
        frames = db.execute(
            f"SELECT tracks.frame_thumbnail FROM tracks JOIN media ON media.id = tracks.media_id WHERE {where}", args
        ).fetchall()
        media = db.execute(f"DELETE FROM media WHERE {where} RETURNING path, sha256", args).fetchall()
        face_ids = [int(r[0]) for r in rows]
        self._delete_search_results_of(db, face_ids)
        return _Deleted(
            face_ids, [r[1] for r in rows if r[1]] + [r[0] for r in frames if r[0]], [m[0] for m in media],
            [m[1] for m in media if m[1]],
        )

    @staticmethod
    def _delete_search_results_of(db: psycopg.Connection, face_ids: list[int]) -> None:
        """Search results pointing at erased faces go too: the log must not keep what was removed."""
        if face_ids:
            db.execute("DELETE FROM search_results WHERE face_id = ANY(%s)", (face_ids,))

    @staticmethod
    def _release_thumbnails(db: psycopg.Connection, names: list[str]) -> list[str]:
        """Of ``names``, those no face or track refers to any more: queued for deletion in this transaction."""
        names = sorted(set(names))
        if not names:
            return []
        used = {r[0] for r in db.execute(
            "SELECT thumbnail FROM faces WHERE thumbnail = ANY(%s)"
            " UNION SELECT frame_thumbnail FROM tracks WHERE frame_thumbnail = ANY(%s)", (names, names))}
        released = [name for name in names if name not in used]
        if released:
            db.execute("INSERT INTO pending_deletions(name) SELECT unnest(%s::TEXT[]) ON CONFLICT DO NOTHING",
                       (released,))
        return released

    @staticmethod
    def _scrub_search_log(db: psycopg.Connection, paths: list[str], sha256s: list[str]) -> None:
        """Forget the probe photo (path, SHA-256, embedding) of every search whose probe was an erased file."""
        for field, values in (("path", paths), ("sha256", sha256s)):
            if values:
                db.execute(
                    "UPDATE searches SET embedding = ''::BYTEA, probe = ((probe::JSONB) || %s::JSONB)::TEXT"
                    " WHERE (probe::JSONB) ->> %s = ANY(%s)",
                    (_ERASED_PROBE, field, values),
                )

    @staticmethod
    def _file_or_folder(path: str) -> tuple[str, tuple]:
        """SQL condition (and its arguments) for the file ``path`` or any file under the folder ``path``."""
        folder = path.rstrip("/") + "/"
        return "(media.path = %s OR starts_with(media.path, %s))", (path, folder)

    def remove_media(self, path: str) -> tuple[list[int], list[str], int]:
        with self._transaction() as db:
            deleted = self._delete_media_rows(db, *self._file_or_folder(path))
            self._scrub_search_log(db, deleted.paths, deleted.sha256s)
            self._scrub_ingest_log(db, deleted.paths)
            released = self._release_thumbnails(db, deleted.thumbnails)
            if deleted.face_ids:
                self._bump_revision(db)
        return deleted.face_ids, released, len(deleted.paths)

    @staticmethod
    def _scrub_ingest_log(db: psycopg.Connection, paths: list[str]) -> None:
        """An erased file named explicitly to `index` leaves its name in the ingest log's roots: drop it."""
        erased = set(paths)
        for row_id, roots in db.execute("SELECT id, roots FROM ingest_log").fetchall():
            kept = [root for root in json.loads(roots) if root not in erased]
            if len(kept) != len(json.loads(roots)):
                db.execute("UPDATE ingest_log SET roots = %s WHERE id = %s", (json.dumps(kept), row_id))

    def remove_faces(self, face_ids: list[int]) -> tuple[list[int], list[str]]:
        """Forget single faces; a video face takes its whole track (the same person) and the track's frame."""
        if not face_ids:
            return [], []
        ids = [int(i) for i in face_ids]
        with self._transaction() as db:
            rows = db.execute(
                "SELECT id, media_id, thumbnail, track_id FROM faces WHERE id = ANY(%s)"
                " OR track_id IN (SELECT track_id FROM faces WHERE id = ANY(%s) AND track_id IS NOT NULL)",
                (ids, ids),
            ).fetchall()
            removed = sorted({int(r[0]) for r in rows})
            track_ids = sorted({int(r[3]) for r in rows if r[3] is not None})
            thumbnails = [r[2] for r in rows if r[2]]
            if track_ids:
                thumbnails += [r[0] for r in db.execute(
                    "DELETE FROM tracks WHERE id = ANY(%s) RETURNING frame_thumbnail", (track_ids,)) if r[0]]
            db.execute("DELETE FROM faces WHERE id = ANY(%s)", (removed,))
            db.execute(
                "UPDATE media SET face_count = (SELECT COUNT(*) FROM faces WHERE faces.media_id = media.id)"
                " WHERE id = ANY(%s)", (sorted({int(r[1]) for r in rows}),),
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
            media_ids = sorted({int(r[0]) for r in db.execute(
                "SELECT media_id FROM faces WHERE id = ANY(%s)", ([int(i) for i in face_ids],))})
            rows = db.execute(
                "DELETE FROM faces WHERE media_id = ANY(%s) RETURNING id, thumbnail", (media_ids,)).fetchall()
            removed = sorted(int(r[0]) for r in rows)
            thumbnails = [r[1] for r in rows if r[1]]
            thumbnails += [r[0] for r in db.execute(
                "DELETE FROM tracks WHERE media_id = ANY(%s) RETURNING frame_thumbnail", (media_ids,)) if r[0]]
            db.execute(
                "UPDATE media SET status = 'failed', reason = %s, face_count = 0,"
                " message = 'a stored face embedding was damaged; the next `facefind index` re-analyses the file'"
                " WHERE id = ANY(%s)", (DAMAGED_IN_CATALOG, media_ids),
            )
            self._delete_search_results_of(db, removed)
            released = self._release_thumbnails(db, thumbnails)
            if removed:
                self._bump_revision(db)
        return removed, released

    def checkpoint(self) -> bool:
        """VACUUM the catalog tables, so removed rows are pruned from their pages rather than kept as dead tuples
        (PostgreSQL's WAL and backups are the operator's to manage: docs/DEPLOY.md)."""
        with self._pool.connection() as connection:
            connection.execute("VACUUM " + ", ".join(CATALOG_TABLES))
        return True

    # -- files to delete, and which thumbnails are in use ---------------------------------------

    def pending_deletions(self) -> list[str]:
        """Released thumbnails not yet deleted; a name a later commit uses again is dropped from the queue here."""
        with self._transaction() as db:
            names = [r[0] for r in db.execute("DELETE FROM pending_deletions RETURNING name")]
            return self._release_thumbnails(db, names)

    def deletions_done(self, names: list[str]) -> None:
        with self._transaction() as db:
            db.execute("DELETE FROM pending_deletions WHERE name = ANY(%s)", (list(names),))

    def referenced_thumbnails(self) -> set[str]:
        """Every thumbnail name a face or a track refers to."""
        return {r[0] for r in self._query(
            "SELECT thumbnail FROM faces WHERE thumbnail IS NOT NULL"
            " UNION SELECT frame_thumbnail FROM tracks WHERE frame_thumbnail IS NOT NULL")}

    # -- integrity -----------------------------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """B-tree checks (``amcheck``, when the extension is installed) and the catalog's own invariants."""
        problems = []
        with self._pool.connection() as connection:
            if connection.execute("SELECT 1 FROM pg_extension WHERE extname = 'amcheck'").fetchone():
                indexes = connection.execute(
                    "SELECT c.oid, c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                    " JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam"
                    " WHERE n.nspname = %s AND a.amname = 'btree'", (self.schema,)).fetchall()
                for oid, name in indexes:
                    try:
                        connection.execute("SELECT bt_index_check(%s, true)", (oid,))
                    except psycopg.Error as error:
                        problems.append(f"index {name}: {str(error).strip()}")
            problems += [f"media {path}: face_count {stored} but {actual} faces" for path, stored, actual in connection.execute(
                "SELECT path, face_count, (SELECT COUNT(*) FROM faces WHERE media_id = media.id) AS actual FROM media"
                " WHERE face_count <> (SELECT COUNT(*) FROM faces WHERE media_id = media.id)")]
            problems += [f"face {face_id} belongs to a track of another file" for (face_id,) in connection.execute(
                "SELECT faces.id FROM faces JOIN tracks ON tracks.id = faces.track_id WHERE tracks.media_id <> faces.media_id")]
            if connection.execute("SELECT 1 FROM meta WHERE key = 'revision'").fetchone() is None:
                problems.append("the catalog revision is missing")
        return problems

    def rebuild_sql_indexes(self) -> None:
        """REINDEX the library's schema: rebuilds every SQL index from its table."""
        with self._pool.connection() as connection:
            connection.execute(sql.SQL("REINDEX SCHEMA {}").format(sql.Identifier(self.schema)))

    def mark_abandoned_ingests(self) -> int:
        """Mark ingests logged ``running`` as died, unless an ingest holds the ingest lock (another replica's,
        alive, or this catalog's own): a killed process's connection is gone and its lock with it."""
        with self._ingest_lock:
            if self._running_ingests:
                return 0
            with self._transaction() as db:
                if not db.execute("SELECT pg_try_advisory_xact_lock(%s)", (self._ingest_key,)).fetchone()[0]:
                    return 0
                return db.execute("UPDATE ingest_log SET status = 'died' WHERE status = 'running'").rowcount

    def fingerprint(self, model_id: str, masked: bool = False, excluding: list[int] = ()) -> tuple[int, int]:
        """(count, sum of ids) of the stored faces (or masked templates) of ``model_id``, less ``excluding``."""
        rows = self._query(
            "SELECT COUNT(*), COALESCE(SUM(id), 0) FROM faces WHERE model_id = %s"
            + (" AND masked_embedding IS NOT NULL" if masked else "")
            + " AND NOT (id = ANY(%s))",
            (model_id, [int(i) for i in excluding]),
        )
        return int(rows[0][0]), int(rows[0][1])

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
        rows = self._query(f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE faces.id = ANY(%s)",
                           ([int(i) for i in face_ids],))
        return {row[0]: self._face(row) for row in rows}

    def faces_of_media(self, path: str) -> list[FaceRecord]:
        rows = self._query(f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE media.path = %s ORDER BY faces.face_index",
                           (path,))
        return [self._face(row) for row in rows]

    def face_ids_under(self, path: str) -> list[int]:
        where, args = self._file_or_folder(path)
        return [r[0] for r in self._query(f"SELECT faces.id FROM faces JOIN media ON media.id = faces.media_id WHERE {where}", args)]

    def iter_faces(self) -> Iterator[FaceRecord]:
        """Every stored face, grouped by file, a page at a time (no connection is held between pages)."""
        after: tuple[str, int] = ("", 0)
        while True:
            rows = self._query(
                f"SELECT {_FACE_COLUMNS} FROM {_FACE_FROM} WHERE (media.path, faces.id) > (%s, %s)"
                " ORDER BY media.path, faces.id LIMIT 1000", after)
            if not rows:
                return
            yield from (self._face(row) for row in rows)
            after = (rows[-1][2], rows[-1][0])

    def iter_embeddings(
        self, model_id: str, batch: int = 10_000, masked: bool = False, dim: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        column = "masked_embedding" if masked else "embedding"
        last_id = 0
        while True:
            rows = self._query(
                f"SELECT id, {column} FROM faces WHERE model_id = %s AND id > %s AND {column} IS NOT NULL"
                " ORDER BY id LIMIT %s",
                (model_id, last_id, batch),
            )
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
        ids = [int(i) for i in face_ids]
        found = {r[0]: r[1] for r in self._query(
            f"SELECT id, {column} FROM faces WHERE id = ANY(%s) AND {column} IS NOT NULL", (ids,))}
        present = [i for i in ids if i in found]
        if not present:
            return np.empty(0, np.int64), np.empty((0, dim or 0), np.float32)
        return np.asarray(present, np.int64), _vectors([found[i] for i in present], dim)

    def stats(self) -> dict:
        with self._pool.connection() as db:
            by_status = dict(db.execute("SELECT status, COUNT(*) FROM media GROUP BY status").fetchall())
            by_reason = dict(db.execute(
                "SELECT reason, COUNT(*) FROM media WHERE reason IS NOT NULL GROUP BY reason ORDER BY 2 DESC"
            ).fetchall())
            by_quality = dict(db.execute(
                "SELECT (quality::JSONB) ->> 'verdict', COUNT(*) FROM faces GROUP BY 1").fetchall())
            faces, models = db.execute("SELECT COUNT(*), COUNT(DISTINCT model_id) FROM faces").fetchone()
            last = db.execute(
                "SELECT started_at, finished_at, status, counts FROM ingest_log ORDER BY id DESC LIMIT 1"
            ).fetchone()
            searches = db.execute("SELECT COUNT(*) FROM searches").fetchone()[0]
        return {
            "files": sum(by_status.values()),
            "files_by_status": by_status,
            "unindexed_by_reason": by_reason,
            "faces": faces,
            "faces_by_quality": by_quality,
            "models": models,
            "searches": searches,
            "last_ingest": None
            if last is None
            else {"started_at": last[0], "finished_at": last[1], "status": last[2], "counts": json.loads(last[3] or "{}")},
        }

    # -- logs ----------------------------------------------------------------------------------

    def start_ingest(self, roots: list[str]) -> int:
        """Log an ingest as running, holding the library's ingest lock until it finishes (or its process dies);
        another process's ingest of the same library is refused as busy."""
        with self._ingest_lock:
            if self._ingest_connection is None:
                connection = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=int(CONNECT_TIMEOUT_S))
                if not connection.execute("SELECT pg_try_advisory_lock(%s)", (self._ingest_key,)).fetchone()[0]:
                    connection.close()
                    raise LibraryBusyError(
                        f"another facefind process (maybe another service replica) is ingesting into {self.display_name};"
                        " wait for it to finish (searches can run meanwhile)"
                    )
                self._ingest_connection = connection
            with self._transaction() as db:
                ingest_id = int(db.execute(
                    "INSERT INTO ingest_log(started_at, roots, status) VALUES (%s, %s, 'running') RETURNING id",
                    (_now(), json.dumps(roots)),
                ).fetchone()[0])
            self._running_ingests.add(ingest_id)
            return ingest_id

    def finish_ingest(self, ingest_id: int, counts: dict, status: str) -> None:
        try:
            with self._transaction() as db:
                db.execute(
                    "UPDATE ingest_log SET finished_at = %s, counts = %s, status = %s WHERE id = %s",
                    (_now(), json.dumps(counts), status, ingest_id),
                )
        finally:
            with self._ingest_lock:
                self._running_ingests.discard(ingest_id)
                if not self._running_ingests:
                    self._release_ingest_lock()

    def _release_ingest_lock(self) -> None:
        """Closing the session releases its advisory lock (also what happens when a process dies)."""
        if self._ingest_connection is not None:
            self._ingest_connection.close()
            self._ingest_connection = None

    def record_search(self, probe: dict, embedding: np.ndarray, params: dict, results: list[tuple[int, float]]) -> int:
        with self._transaction() as db:
            search_id = int(db.execute(
                "INSERT INTO searches(created_at, probe, embedding, params) VALUES (%s, %s, %s, %s) RETURNING id",
                (_now(), json.dumps(probe), np.asarray(embedding, np.float32).tobytes(), json.dumps(params)),
            ).fetchone()[0])
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO search_results(search_id, rank, face_id, score) VALUES (%s, %s, %s, %s)",
                    [(search_id, rank, int(face_id), float(score))
                     for rank, (face_id, score) in enumerate(results, start=1)],
                )
        return search_id

    def probe_embeddings(self) -> tuple[list[int], np.ndarray]:
        """Search ids and probe vectors of the search log (erased probes left out), to find a person's probes."""
        rows = self._query("SELECT id, embedding FROM searches WHERE octet_length(embedding) > 0 ORDER BY id")
        return [r[0] for r in rows], _vectors([r[1] for r in rows], None)

    def forget_search_probes(self, search_ids: list[int]) -> None:
        """Erase the probe (vector, path, hash) and results of these searches: the searched-for person was erased."""
        ids = [int(i) for i in search_ids]
        with self._transaction() as db:
            db.execute("UPDATE searches SET embedding = ''::BYTEA, probe = ((probe::JSONB) || %s::JSONB)::TEXT"
                       " WHERE id = ANY(%s)", (_ERASED_PROBE, ids))
            db.execute("DELETE FROM search_results WHERE search_id = ANY(%s)", (ids,))

    def block_template(self, model_id: str, embedding: np.ndarray, threshold: float) -> int:
        """Keep one template of a person who opted out (no image): later ingests skip faces scoring >= threshold."""
        with self._transaction() as db:
            return int(db.execute(
                "INSERT INTO blocked_templates(created_at, model_id, embedding, threshold) VALUES (%s, %s, %s, %s)"
                " RETURNING id", (_now(), model_id, np.asarray(embedding, np.float32).tobytes(), float(threshold))
            ).fetchone()[0])

    def blocked_templates(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        rows = self._query("SELECT embedding, threshold FROM blocked_templates WHERE model_id = %s ORDER BY id",
                           (model_id,))
        return _vectors([r[0] for r in rows], None), np.asarray([r[1] for r in rows], dtype=np.float32)

    def search_result(self, search_id: int, rank: int) -> tuple[dict, np.ndarray, int, float] | None:
        rows = self._query(
            "SELECT searches.probe, searches.embedding, search_results.face_id, search_results.score"
            " FROM search_results JOIN searches ON searches.id = search_results.search_id"
            " WHERE search_results.search_id = %s AND search_results.rank = %s",
            (search_id, rank),
        )
        if not rows:
            return None
        row = rows[0]
        return json.loads(row[0]), np.frombuffer(row[1], dtype=np.float32).copy(), row[2], row[3]

    def list_media(self, status: str | None, offset: int, limit: int) -> tuple[list[MediaRecord], int]:
        where, args = ("WHERE status = %s", (status,)) if status else ("", ())
        total = self._query(f"SELECT COUNT(*) FROM media {where}", args)[0][0]
        rows = self._query(f"SELECT {_MEDIA_COLUMNS} FROM media {where} ORDER BY path LIMIT %s OFFSET %s",
                           (*args, limit, offset))
        return [MediaRecord(*row) for row in rows], total

    def list_searches(self, offset: int, limit: int) -> tuple[list[tuple[int, str, dict, dict, int]], int]:
        total = self._query("SELECT COUNT(*) FROM searches")[0][0]
        rows = self._query(
            "SELECT id, created_at, probe, params, (SELECT COUNT(*) FROM search_results WHERE search_id = searches.id)"
            " FROM searches ORDER BY id DESC LIMIT %s OFFSET %s", (limit, offset))
        return [(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4]) for r in rows], total

    def search_log_entry(self, search_id: int) -> tuple[str, dict, dict, list[tuple[int, int, float]]] | None:
        rows = self._query("SELECT created_at, probe, params FROM searches WHERE id = %s", (search_id,))
        if not rows:
            return None
        results = self._query("SELECT rank, face_id, score FROM search_results WHERE search_id = %s ORDER BY rank",
                              (search_id,))
        return rows[0][0], json.loads(rows[0][1]), json.loads(rows[0][2]), [tuple(r) for r in results]

    def close(self) -> None:
        with self._ingest_lock:
            self._release_ingest_lock()
        self._pool.close()


@dataclass(frozen=True)
class _Deleted:
    """What deleting media rows took with it: face ids, their thumbnails, and the files' paths and hashes."""

    face_ids: list[int]
    thumbnails: list[str]
    paths: list[str]
    sha256s: list[str]
