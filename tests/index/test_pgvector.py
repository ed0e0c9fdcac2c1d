"""What only the pgvector index does: an HNSW graph in the server, state shared by replicas, k beyond ef_search."""

import numpy as np
import psycopg
import pytest

from facefind.catalog.postgres import split_catalog_url
from facefind.errors import FaceFindError
from facefind.index import FaissFlatIndex, open_index, pgvector_index
from facefind.index.pgvector_index import EF_SEARCH_MAX, PgvectorIndex
from tests.index.conftest import unit


@pytest.fixture
def pgvector(postgres_schema_url):
    index = open_index("pgvector", 64, model_id="test:model", catalog_url=postgres_schema_url)
    yield index
    index.close()


def _plan(url: str, index: PgvectorIndex, query: np.ndarray) -> str:
    conninfo, schema = split_catalog_url(url)
    literal = "[" + ",".join(f"{v:.6f}" for v in query) + "]"
    with psycopg.connect(conninfo) as connection:
        connection.execute(f'SET search_path TO "{schema}", public')
        rows = connection.execute(
            f"EXPLAIN SELECT id FROM {index.table} ORDER BY embedding <#> '{literal}'::halfvec LIMIT 10").fetchall()
    return "\n".join(r[0] for r in rows)


def _graph_exists(url: str, index: PgvectorIndex) -> bool:
    conninfo, schema = split_catalog_url(url)
    with psycopg.connect(conninfo) as connection:
        return connection.execute("SELECT to_regclass(%s)", (f'"{schema}"."{index.table}_hnsw"',)).fetchone()[0] is not None


def test_search_uses_the_hnsw_graph_and_finds_what_exact_search_finds(pgvector, postgres_schema_url):
    vectors = unit(5000, dim=64)
    pgvector.add(np.arange(5000), vectors)
    flat = FaissFlatIndex(64)
    flat.add(np.arange(5000), vectors)
    queries = unit(50, seed=1, dim=64) * 0.3 + vectors[:50] * 0.7  # near stored faces, as a probe of a known person
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    assert "hnsw" in _plan(postgres_schema_url, pgvector, queries[0])
    _, found = pgvector.search(queries, 10)
    _, exact = flat.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert recall >= 0.95


def test_a_k_beyond_ef_search_still_gets_k_results(pgvector):
    pgvector.add(np.arange(3000), unit(3000, dim=64))
    _, ids = pgvector.search(unit(1, seed=5, dim=64), EF_SEARCH_MAX + 500)
    assert ids.shape == (1, EF_SEARCH_MAX + 500) and len(set(ids[0].tolist())) == EF_SEARCH_MAX + 500


def test_reset_drops_the_graph_and_save_builds_it_once(pgvector, postgres_schema_url, tmp_path):
    pgvector.add(np.arange(100), unit(100, dim=64))
    pgvector.reset()
    assert not _graph_exists(postgres_schema_url, pgvector)
    pgvector.add(np.arange(100), unit(100, dim=64))
    pgvector.save(tmp_path / "unused")
    assert _graph_exists(postgres_schema_url, pgvector) and list(tmp_path.iterdir()) == []


def test_state_and_vectors_are_shared_by_every_replica(pgvector, postgres_schema_url):
    replica = open_index("pgvector", 64, model_id="test:model", catalog_url=postgres_schema_url)
    try:
        assert replica.read_state() is None
        pgvector.add(np.arange(5), unit(5, dim=64))
        pgvector.write_state({"revision": 7})
        assert replica.read_state() == {"revision": 7} and len(replica) == 5
        assert replica.search(unit(5, dim=64)[2:3], 1)[1][0, 0] == 2
    finally:
        replica.close()


def test_each_model_gets_its_own_table(pgvector, postgres_schema_url):
    other = open_index("pgvector", 64, model_id="other:model", catalog_url=postgres_schema_url)
    try:
        pgvector.add(np.arange(5), unit(5, dim=64))
        assert other.table != pgvector.table and len(other) == 0
    finally:
        other.close()


def test_a_vector_size_other_than_the_tables_is_refused(pgvector, postgres_schema_url):
    with pytest.raises(FaceFindError, match="size 64, not 128") as raised:
        open_index("pgvector", 128, model_id="test:model", catalog_url=postgres_schema_url)
    assert raised.value.reason == "model_mismatch"


def test_pgvector_needs_a_postgresql_catalog():
    with pytest.raises(FaceFindError, match="--catalog postgresql://"):
        open_index("pgvector", 64, model_id="m", catalog_url=None)


def test_a_read_only_role_can_search_an_index_set_up_before(pgvector, postgres_schema_url):
    pgvector.add(np.arange(5), unit(5, dim=64))
    conninfo, schema = split_catalog_url(postgres_schema_url)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_roles WHERE rolname = 'facefind_reader'").fetchone():
            connection.execute("CREATE ROLE facefind_reader LOGIN")
        connection.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO facefind_reader')
        connection.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO facefind_reader')
    reader = open_index("pgvector", 64, model_id="test:model",
                        catalog_url=postgres_schema_url.replace("postgres@", "facefind_reader@"))
    try:
        assert reader.search(unit(5, dim=64)[3:4], 1)[1][0, 0] == 3
        with pytest.raises(FaceFindError):
            reader.add(np.arange(10, 11), unit(1, dim=64))
    finally:
        reader.close()
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM facefind_reader')
            connection.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM facefind_reader')


def _graph_oid(url: str, index: PgvectorIndex) -> int | None:
    conninfo, schema = split_catalog_url(url)
    with psycopg.connect(conninfo) as connection:
        return connection.execute("SELECT to_regclass(%s)::oid", (f'"{schema}"."{index.table}_hnsw"',)).fetchone()[0]


def _transactions_holding_rows(url: str, index: PgvectorIndex, ids: np.ndarray) -> int:
    """How many transactions wrote these rows (their xmin): one per connection an add was split over."""
    conninfo, schema = split_catalog_url(url)
    with psycopg.connect(conninfo) as connection:
        return connection.execute(
            f'SELECT COUNT(DISTINCT xmin::text) FROM "{schema}"."{index.table}" WHERE id = ANY(%s)',
            (ids.tolist(),)).fetchone()[0]


@pytest.mark.parametrize("rows, parts", [(40, 1), (128, 2), (1000, 4)])
def test_an_add_into_the_graph_is_split_over_connections(pgvector, postgres_schema_url, rows, parts, monkeypatch):
    monkeypatch.setattr(pgvector_index, "ROWS_PER_CONNECTION_MIN", 64)
    monkeypatch.setattr(pgvector_index, "WRITE_CONNECTIONS", 4)
    pgvector.add(np.arange(100_000, 103_000), unit(3000, seed=2, dim=64))  # a built graph to grow
    graph = _graph_oid(postgres_schema_url, pgvector)
    ids, vectors = np.arange(rows), unit(rows, dim=64)
    pgvector.add(ids, vectors)
    assert _transactions_holding_rows(postgres_schema_url, pgvector, ids) == parts
    assert _graph_oid(postgres_schema_url, pgvector) == graph  # grown in place, not rebuilt
    assert len(pgvector) == 3000 + rows and sorted(pgvector.ids().tolist())[:rows] == ids.tolist()
    np.testing.assert_allclose(pgvector.vectors(ids), vectors, atol=pgvector.tolerance)
    assert (pgvector.search(vectors[-5:], 1)[1][:, 0] == ids[-5:]).all()


def test_an_add_large_next_to_the_table_rebuilds_the_graph_around_it(pgvector, postgres_schema_url, monkeypatch):
    monkeypatch.setattr(pgvector_index, "REBUILD_MIN_ROWS", 300)
    pgvector.add(np.arange(1000), unit(1000, dim=64))
    graph = _graph_oid(postgres_schema_url, pgvector)
    pgvector.add(np.arange(1000, 1400), unit(400, seed=1, dim=64))  # 40 % of the table: into the graph
    assert _graph_oid(postgres_schema_url, pgvector) == graph
    added = unit(700, seed=3, dim=64)
    pgvector.add(np.arange(5000, 5700), added)  # 50 % of it: drop, copy, build again
    rebuilt = _graph_oid(postgres_schema_url, pgvector)
    assert rebuilt is not None and rebuilt != graph
    assert len(pgvector) == 2100 and "hnsw" in _plan(postgres_schema_url, pgvector, added[0])
    assert (pgvector.search(added[:20], 1)[1][:, 0] == np.arange(5000, 5020)).all()


def test_a_rebuild_whose_copy_fails_keeps_the_graph_and_the_rows(pgvector, postgres_schema_url, monkeypatch):
    monkeypatch.setattr(pgvector_index, "REBUILD_MIN_ROWS", 10)
    pgvector.add(np.arange(100), unit(100, dim=64))
    with pytest.raises(FaceFindError, match="duplicate key"):
        pgvector.add(np.arange(50, 150), unit(100, seed=4, dim=64))  # ids already held: the COPY fails whole
    assert _graph_exists(postgres_schema_url, pgvector) and len(pgvector) == 100


def test_a_graph_build_gets_the_memory_to_stay_in_memory():
    assert pgvector_index.graph_memory_kb(100_000, 512) > 130 * 1024  # the 100k graph measured 130 MB on disk
    assert pgvector_index.graph_memory_kb(0, 512) >= 1024
