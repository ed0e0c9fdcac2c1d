"""pgvector backend: the vector index in the catalog's own PostgreSQL, so a team server is one system to run and back up.

Vectors are stored as ``halfvec`` (2 bytes a dimension, like the FAISS ANN index's fp16 refine codes) under the
catalog's face ids, in one table per recogniser inside the library's schema, with an HNSW graph over inner
product (``halfvec_ip_ops``). ``hnsw.ef_search`` is set per query from ``k`` (with pgvector's iterative scan,
so a large ``k`` still gets ``k`` results); search.py re-scores the best candidates from the catalog's
float32 embeddings, so the fp16 storage never decides a verdict.

A server index is durable on every add and shared by every replica, so it keeps no files: ``files()`` is
empty and ``save()`` only (re)creates the HNSW graph after a bulk load (building the graph once after
``reset()`` + adds is several times faster than growing it row by row). The state Library verifies (catalog
revision, counts) is kept in the server too (``read_state``/``write_state``), so replicas agree on it.

Adding into a built graph costs the server one graph search and a neighbour update per row, on one core
per connection: an add of many rows is split over several connections (``WRITE_CONNECTIONS``, each part its
own transaction), and an add that is large next to the table drops the graph, copies the rows and builds
it again (``REBUILD_FRACTION``), in memory (``maintenance_work_mem`` raised for that build only).
"""

from __future__ import annotations

import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from facefind.errors import FaceFindError
from facefind.index.base import check_batch, check_vectors

# bench/pgvector_index.py, 100k realistic synthetic faces, 200 probes: pgvector's default graph (m 16,
# ef_construction 64) misses true mates (mate recall 0.984 at ef_search 100, 1.0 only at 400, slower than a flat
# scan); ef_construction 200 builds 2.5x slower (354 s vs 144 s, loaded 2 cores) but reaches mate recall 1.0 at
# ef_search 200 (p50 10 ms incl. exact re-scoring; 0.9988 at 100).
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
EF_SEARCH_MIN = 200  # candidates explored per query at least; raised to k for larger k (pgvector caps it at 1000)
EF_SEARCH_MAX = 1000
POOL_SIZE = 8
# bench/pgvector_index.py --inserts, 100k graph, one run on a loaded 2-core machine: adds into the graph ran at
# 12-15 faces/s on one connection and 43-46 on 4; the graph was built at 132-165 faces/s. Rebuilding for an add
# of B faces into N pays when B / 44 > (N + B) / 132, i.e. B > N / 2 (a 10k add into 100k: 12 faces/s rebuilt).
WRITE_CONNECTIONS = 4  # an add is split over at most this many connections (the server inserts on as many cores)
ROWS_PER_CONNECTION_MIN = 16  # a part costs one more transaction (~1 ms), a row in the graph ~10 ms
REBUILD_FRACTION = 0.5  # an add of at least this fraction of the rows held: drop the graph, copy, build it again
REBUILD_MIN_ROWS = 2_000  # a smaller add always goes into the graph (its build is cheap either way)
BUILD_MEMORY_MAX_MB = 2_048  # maintenance_work_mem a graph build may raise the session to (never lowered)
CONNECT_TIMEOUT_S = 10


def graph_memory_kb(rows: int, dim: int) -> int:
    """What pgvector needs to build an HNSW graph over ``rows`` halfvecs in memory: the vector and m * 2 layer-0
    neighbours (id + distance) a row, with a quarter spare; ~1.8 kB a row at 512 dimensions."""
    return int(rows * (2 * dim + 2 * HNSW_M * 24 + 64) * 1.25 / 1024) + 1024


def index_table_name(model_id: str) -> str:
    """A table name for one recogniser's vectors: readable, and unique even when names differ only in punctuation."""
    readable = re.sub(r"[^a-z0-9]+", "_", model_id.lower()).strip("_")[:32]
    return f"vectors_{readable}_{hashlib.sha256(model_id.encode()).hexdigest()[:8]}"


class PgvectorIndex:
    """HNSW over halfvec in PostgreSQL; ``url`` is the catalog's URL (``?schema=`` names the library's schema)."""

    kind = "pgvector"
    tolerance = 2e-3  # |fp16 copy - stored vector| per component

    def __init__(self, url: str, dim: int, model_id: str, pool_size: int = POOL_SIZE) -> None:
        from facefind.catalog.postgres import redacted_url, split_catalog_url

        self.dim = dim
        self.conninfo, self.schema = split_catalog_url(url)
        self.table = index_table_name(model_id)
        self._where = f"{redacted_url(self.conninfo)} (schema {self.schema}, table {self.table})"
        self._pool: ConnectionPool | None = None
        try:
            self._create()
            self._pool = ConnectionPool(
                self.conninfo, min_size=1, max_size=pool_size, open=False, timeout=CONNECT_TIMEOUT_S,
                kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S}, configure=self._configure,
                name=f"facefind-pgvector-{self.schema}",
            )
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except (psycopg.Error, PoolTimeout) as error:
            self.close()
            raise self._error(error) from None

    def _error(self, error: Exception) -> FaceFindError:
        if isinstance(error, (psycopg.OperationalError, PoolTimeout)):
            return FaceFindError(f"cannot reach the pgvector index {self._where}: {str(error).strip()}",
                                 reason="catalog_unavailable")
        if isinstance(error, psycopg.errors.UndefinedFile) or "vector" in str(error) and "extension" in str(error):
            return FaceFindError(
                f"the PostgreSQL server of {self._where} lacks the pgvector extension: install pgvector and run"
                f" CREATE EXTENSION vector as an administrator ({str(error).strip()})", reason="catalog_error")
        return FaceFindError(f"the pgvector index {self._where} failed: {str(error).strip()}", reason="catalog_error")

    def _names(self) -> dict:
        return {"schema": sql.Identifier(self.schema), "table": sql.Identifier(self.table),
                "graph": sql.Identifier(f"{self.table}_hnsw")}

    def _create(self) -> None:
        """The extension (if we may create it), the schema, the vectors table, its HNSW graph and the state table."""
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as connection:
            if connection.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
                connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
            tables = [f'"{self.schema}"."{name}"' for name in (self.table, "vector_index_state", "vector_index_counts")]
            present = connection.execute("SELECT to_regclass(%s), to_regclass(%s), to_regclass(%s)", tables).fetchone()
            with connection.transaction():
                if None not in present:  # already set up: only read, so a read-only role can search
                    self._check_dim(connection)
                    return
                connection.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"facefind:{self.schema}:pgvector",))
                connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {schema}").format(**self._names()))
                connection.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {schema}.{table} (id BIGINT PRIMARY KEY, embedding halfvec({dim}) NOT NULL)"
                ).format(dim=sql.Literal(self.dim), **self._names()))
                connection.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {schema}.vector_index_state (name TEXT PRIMARY KEY, state TEXT NOT NULL)"
                ).format(**self._names()))
                connection.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {schema}.vector_index_counts (name TEXT PRIMARY KEY, count BIGINT NOT NULL)"
                ).format(**self._names()))
                connection.execute(sql.SQL(
                    "INSERT INTO {schema}.vector_index_counts(name, count) SELECT %s, COUNT(*) FROM {schema}.{table}"
                    " ON CONFLICT (name) DO NOTHING").format(**self._names()), (self.table,))
                self._check_dim(connection)
            self._ensure_graph(connection)

    def _check_dim(self, connection: psycopg.Connection) -> None:
        stored_dim = connection.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
            (f'"{self.schema}"."{self.table}"',)).fetchone()[0]
        if stored_dim != self.dim:
            raise FaceFindError(f"the pgvector index {self._where} holds vectors of size {stored_dim}, not {self.dim}",
                                reason="model_mismatch")

    def _has_graph(self, connection: psycopg.Connection) -> bool:
        graph = f'"{self.schema}"."{self.table}_hnsw"'
        return connection.execute("SELECT to_regclass(%s)", (graph,)).fetchone()[0] is not None

    def _ensure_graph(self, connection: psycopg.Connection) -> None:
        """Build the HNSW graph if it is missing; looked up first, since CREATE INDEX IF NOT EXISTS would still lock
        the table against other replicas' writes on every save. The build gets enough ``maintenance_work_mem`` to
        hold the graph (pgvector builds several times slower once it spills), for this transaction only."""
        if self._has_graph(connection):
            return
        with connection.transaction():
            rows = connection.execute(sql.SQL("SELECT COUNT(*) FROM {schema}.{table}").format(**self._names())
                                      ).fetchone()[0]
            wanted_kb = min(BUILD_MEMORY_MAX_MB * 1024, graph_memory_kb(rows, self.dim))
            connection.execute("SELECT set_config('maintenance_work_mem', %s, true) FROM pg_settings"
                               " WHERE name = 'maintenance_work_mem' AND setting::bigint < %s",
                               (f"{wanted_kb}kB", wanted_kb))
            connection.execute(sql.SQL(
                "CREATE INDEX IF NOT EXISTS {graph} ON {schema}.{table} USING hnsw (embedding halfvec_ip_ops)"
                " WITH (m = {m}, ef_construction = {ef})"
            ).format(m=sql.Literal(HNSW_M), ef=sql.Literal(HNSW_EF_CONSTRUCTION), **self._names()))

    def _configure(self, connection: psycopg.Connection) -> None:
        connection.execute(sql.SQL("SET search_path TO {schema}, public").format(**self._names()))
        register_vector(connection)

    def _connection(self):
        assert self._pool is not None
        return self._pool.connection()

    def _run(self, function):
        """Run ``function(connection)`` with a pooled connection; server errors become FaceFindErrors."""
        try:
            with self._connection() as connection:
                return function(connection)
        except (psycopg.Error, PoolTimeout) as error:
            raise self._error(error) from None

    def __len__(self) -> int:
        """Read from a counter kept in the same transactions as adds and removals (search asks on every query;
        COUNT(*) over a million rows would cost more than the search)."""
        return self._run(lambda c: int(c.execute(
            "SELECT count FROM vector_index_counts WHERE name = %s", (self.table,)).fetchone()[0]))

    def _count_changed(self, connection: psycopg.Connection, change: int) -> None:
        connection.execute("UPDATE vector_index_counts SET count = count + %s WHERE name = %s", (change, self.table))

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """COPY the rows in: a large add next to the table rebuilds the graph around them, another is split over
        several connections. Each part commits whole; a part that fails leaves the index short of the catalog,
        as a process killed mid-add does, which Library's verification finds and repairs."""
        ids, vectors = check_batch(ids, vectors, self.dim)
        if len(ids) == 0:
            return
        if len(ids) >= max(REBUILD_MIN_ROWS, REBUILD_FRACTION * len(self)) and self._run(self._has_graph):
            self._run(lambda connection: self._add_rebuilding_graph(connection, ids, vectors))
            return
        connections = max(1, min(WRITE_CONNECTIONS, len(ids) // ROWS_PER_CONNECTION_MIN))
        parts = np.array_split(np.arange(len(ids)), connections)
        if len(parts) == 1:
            self._run(lambda connection: self._copy(connection, ids, vectors))
            return
        with ThreadPoolExecutor(len(parts), thread_name_prefix="facefind-pgvector-add") as writers:
            done = [writers.submit(self._run, lambda connection, part=part: self._copy(connection, ids[part],
                                                                                       vectors[part]))
                    for part in parts]
        for part in done:
            part.result()  # the first failure, as a FaceFindError

    def _copy(self, connection: psycopg.Connection, ids: np.ndarray, vectors: np.ndarray) -> None:
        """One transaction: the rows (binary COPY) and the counter."""
        with connection.transaction(), connection.cursor() as cursor:
            with cursor.copy(sql.SQL("COPY {table} (id, embedding) FROM STDIN WITH (FORMAT BINARY)")
                             .format(**self._names())) as copy:
                copy.set_types(["int8", "halfvec"])
                for face_id, vector in zip(ids.tolist(), vectors):
                    copy.write_row((face_id, HalfVector(vector)))
            self._count_changed(connection, len(ids))

    def _add_rebuilding_graph(self, connection: psycopg.Connection, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Drop the graph, copy the rows, build the graph again. Meanwhile searches scan the table (exact, slower);
        a process killed before the build leaves no graph, which the writer's next ``save()`` builds."""
        connection.execute(sql.SQL("DROP INDEX IF EXISTS {graph}").format(**self._names()))
        try:
            self._copy(connection, ids, vectors)
        finally:
            self._ensure_graph(connection)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0

        def delete(connection: psycopg.Connection) -> int:
            with connection.transaction():
                removed = connection.execute(
                    sql.SQL("DELETE FROM {table} WHERE id = ANY(%s)").format(**self._names()), (ids.tolist(),)).rowcount
                self._count_changed(connection, -removed)
            return removed

        return self._run(delete)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_vectors(queries, self.dim)
        width = max(int(k), 0)
        scores = np.full((len(queries), width), -np.inf, np.float32)
        found = np.full((len(queries), width), -1, np.int64)
        if width == 0:
            return scores, found
        query = sql.SQL("SELECT id, -(embedding <#> %s) FROM {table} ORDER BY embedding <#> %s LIMIT %s").format(
            **self._names())

        def run(connection: psycopg.Connection) -> None:
            with connection.transaction():  # SET LOCAL lasts for this transaction only
                connection.execute("SELECT set_config('hnsw.ef_search', %s, true),"
                                   " set_config('hnsw.iterative_scan', 'strict_order', true)",
                                   (str(max(EF_SEARCH_MIN, min(EF_SEARCH_MAX, width))),))
                for row, vector in enumerate(queries):
                    probe = HalfVector(vector)
                    results = connection.execute(query, (probe, probe, width)).fetchall()
                    for column, (face_id, score) in enumerate(results):
                        found[row, column], scores[row, column] = face_id, score

        self._run(run)
        held = int((found >= 0).sum(axis=1).max(initial=0))  # as FAISS: no wider than what the index holds
        return scores[:, :held], found[:, :held]

    def ids(self) -> np.ndarray:
        rows = self._run(lambda c: c.execute(sql.SQL("SELECT id FROM {table} ORDER BY id").format(**self._names())).fetchall())
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        wanted = np.ascontiguousarray(ids, dtype=np.int64).tolist()
        if not wanted:
            return np.empty((0, self.dim), np.float32)

        def fetch(connection: psycopg.Connection) -> dict:
            with connection.cursor(binary=True) as cursor:
                cursor.execute(sql.SQL("SELECT id, embedding FROM {table} WHERE id = ANY(%s)").format(**self._names()),
                               (wanted,))
                return {face_id: vector.to_numpy() for face_id, vector in cursor.fetchall()}

        held = self._run(fetch)
        missing = [i for i in wanted if i not in held]
        if missing:
            raise KeyError(missing[0])
        return np.asarray([held[i] for i in wanted], dtype=np.float32)

    @staticmethod
    def files(path: Path) -> list[Path]:
        return []  # kept by the server

    def save(self, path: Path) -> None:
        """Nothing to write (adds are durable); builds the HNSW graph if a ``reset`` dropped it for a bulk load."""
        self._run(self._ensure_graph)

    def reset(self) -> None:
        """Drop every vector, and the graph too: the rebuild that follows loads rows first and builds it once in save()."""
        def drop(connection: psycopg.Connection) -> None:
            with connection.transaction():
                connection.execute(sql.SQL("DROP INDEX IF EXISTS {graph}").format(**self._names()))
                connection.execute(sql.SQL("TRUNCATE {table}").format(**self._names()))
                connection.execute("UPDATE vector_index_counts SET count = 0 WHERE name = %s", (self.table,))

        self._run(drop)

    def params(self) -> dict:
        return {"kind": self.kind, "table": self.table, "m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION}

    def read_state(self) -> dict | None:
        """The state Library recorded for this index (catalog revision, counts...), kept beside it in the server."""
        rows = self._run(lambda c: c.execute("SELECT state FROM vector_index_state WHERE name = %s",
                                             (self.table,)).fetchall())
        return json.loads(rows[0][0]) if rows else None

    def write_state(self, state: dict) -> None:
        self._run(lambda c: c.execute(
            "INSERT INTO vector_index_state(name, state) VALUES (%s, %s)"
            " ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state", (self.table, json.dumps(state))))

    def drop(self) -> None:
        """Delete the table and its state (a library removed for good)."""
        def run(connection: psycopg.Connection) -> None:
            with connection.transaction():
                connection.execute(sql.SQL("DROP TABLE IF EXISTS {table}").format(**self._names()))
                connection.execute("DELETE FROM vector_index_state WHERE name = %s", (self.table,))
                connection.execute("DELETE FROM vector_index_counts WHERE name = %s", (self.table,))

        self._run(run)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
