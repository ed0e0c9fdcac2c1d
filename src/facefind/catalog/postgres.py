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

import hashlib
import threading
from contextlib import contextmanager
from typing import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import psycopg.errors
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from facefind.catalog.base import FaceRecord
from facefind.catalog.sql import FACE_COLUMNS, FACE_FROM, SqlCatalog, face_record, guard_errors, now
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


class PostgresCatalog(SqlCatalog):
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
                                       (version, now()))

    # -- dialect hooks (catalog/sql.py holds the shared queries) ---------------------------------

    ERASE_PROBE_SET = ("embedding = ''::BYTEA,"
                       """ probe = ((probe::JSONB) || '{"path": null, "sha256": null, "erased": true}'::JSONB)::TEXT""")
    HAS_MASKED_TEMPLATE = "masked_embedding IS NOT NULL"
    CHUNK_SIZE = 100_000  # one array parameter per query, bounded only to keep a statement's size sane

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        """One write transaction, serialised with every other writer of this library on any machine."""
        with self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
            yield connection

    def _reading(self):
        return self._pool.connection()

    def _execute(self, db: psycopg.Connection, query: str, args: tuple | list = ()) -> psycopg.Cursor:
        return db.execute(query.replace("?", "%s"), args)

    def _execute_many(self, db: psycopg.Connection, query: str, rows: list[tuple]) -> None:
        with db.cursor() as cursor:
            cursor.executemany(query.replace("?", "%s"), rows)

    def _next_ids(self, db: psycopg.Connection, table: str, count: int) -> list[int]:
        if not count:
            return []
        rows = db.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                          (table, count)).fetchall()
        return sorted(int(row[0]) for row in rows)

    def _in(self, column: str, values: list) -> tuple[str, list]:
        return f"{column} = ANY(?)", [list(values)]

    def _json_field(self, column: str, field: str) -> str:
        return f"(({column})::JSONB) ->> '{field}'"

    @staticmethod
    def _file_or_folder(path: str) -> tuple[str, tuple]:
        folder = path.rstrip("/") + "/"
        return "(media.path = ? OR starts_with(media.path, ?))", (path, folder)

    # -- backend's own: VACUUM, integrity, the ingest lock, paged reads -------------------------

    def checkpoint(self) -> bool:
        """VACUUM the catalog tables, so removed rows are pruned from their pages rather than kept as dead tuples
        (PostgreSQL's WAL and backups are the operator's to manage: docs/DEPLOY.md)."""
        with self._pool.connection() as connection:
            connection.execute("VACUUM " + ", ".join(CATALOG_TABLES))
        return True

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
        """Mark ingests logged ``running`` as died, unless another replica's ingest holds the ingest lock (alive):
        a killed process's connection is gone and its lock with it. This catalog's own running ingests are kept,
        so an ingest that took the lock can mark the run of a replica that died after this one opened."""
        with self._ingest_lock:
            with self._transaction() as db:
                if self._ingest_connection is None and not db.execute(
                        "SELECT pg_try_advisory_xact_lock(%s)", (self._ingest_key,)).fetchone()[0]:
                    return 0
                return db.execute("UPDATE ingest_log SET status = 'died' WHERE status = 'running'"
                                  " AND NOT (id = ANY(%s))", (sorted(self._running_ingests),)).rowcount

    def iter_faces(self) -> Iterator[FaceRecord]:
        """Every stored face, grouped by file, a page at a time (no connection is held between pages)."""
        after: tuple[str, int] = ("", 0)
        while True:
            rows = self._query(
                f"SELECT {FACE_COLUMNS} FROM {FACE_FROM} WHERE (media.path, faces.id) > (?, ?)"
                " ORDER BY media.path, faces.id LIMIT 1000", after)
            if not rows:
                return
            yield from (face_record(row) for row in rows)
            after = (rows[-1][2], rows[-1][0])

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
            ingest_id = super().start_ingest(roots)
            self._running_ingests.add(ingest_id)
            return ingest_id

    def finish_ingest(self, ingest_id: int, counts: dict, status: str) -> None:
        try:
            super().finish_ingest(ingest_id, counts, status)
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

    def close(self) -> None:
        with self._ingest_lock:
            self._release_ingest_lock()
        self._pool.close()


PostgresCatalog = guard_errors(
    PostgresCatalog, (psycopg.Error, PoolTimeout),
    lambda catalog, error: server_error(error, getattr(catalog, "display_name", "(PostgreSQL)")),
)
