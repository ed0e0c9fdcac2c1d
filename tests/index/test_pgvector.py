"""What only the pgvector index does: an HNSW graph in the server, state shared by replicas, k beyond ef_search."""

import numpy as np
import psycopg
import pytest

from facefind.catalog.postgres import split_catalog_url
from facefind.errors import FaceFindError
from facefind.index import FaissFlatIndex, open_index
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
