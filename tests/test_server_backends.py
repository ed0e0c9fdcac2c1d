"""A library whose catalog and vector index live in PostgreSQL (pgvector): the same facefind, shared by replicas."""

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from facefind.api import Backends, FaceFind
from facefind.catalog.postgres import split_catalog_url
from facefind.cli import app
from facefind.errors import FaceFindError
from facefind.index.pgvector_index import index_table_name
from facefind.library import Library
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def _rows(url: str, query: str) -> list[tuple]:
    conninfo, schema = split_catalog_url(url)
    with psycopg.connect(conninfo) as connection:
        connection.execute(f'SET search_path TO "{schema}", public')
        return connection.execute(query).fetchall()


def _everything_stored(url: str) -> str:
    """Every row of every table of the library's schema, as text (catalog, vectors, index state)."""
    conninfo, schema = split_catalog_url(url)
    tables = [r[0] for r in _rows(url, f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{schema}'")]
    return "\n".join(str(row) for table in tables for row in _rows(url, f'SELECT t::TEXT FROM "{table}" t'))


@pytest.fixture
def server_facefind(tmp_path, pipeline, postgres_schema_url) -> FaceFind:
    instance = FaceFind(tmp_path / "library", backends=Backends(postgres_schema_url, "pgvector"))
    instance._pipeline = pipeline
    return instance


def _replica(folder: Path, pipeline) -> FaceFind:
    """Another service replica: its own folder, holding only the recorded backends."""
    instance = FaceFind(folder)
    instance._pipeline = pipeline
    return instance


def test_index_and_search_with_catalog_and_index_in_postgres(server_facefind, photo_folder, postgres_schema_url,
                                                            tmp_path, pipeline):
    report = server_facefind.index([photo_folder], workers=1)
    assert report.faces_added > 0
    library_folder = server_facefind.library_path
    assert json.loads((library_folder / "backends.json").read_text()) == {"catalog": postgres_schema_url, "index": "pgvector"}
    assert not (library_folder / "catalog.sqlite3").exists() and not (library_folder / "index").exists()
    vectors = _rows(postgres_schema_url, f"SELECT COUNT(*) FROM {index_table_name(server_facefind.model_id)}")[0][0]
    assert vectors == report.faces_added == server_facefind.stats()["faces"]
    assert server_facefind.check().healthy  # catalog B-trees (amcheck), embeddings, index, thumbnails

    result = server_facefind.search(probe_sample(), purpose=PURPOSE)
    assert Path(result.matches[0].source.path).name == "players.jpg" and result.matches[0].similarity > 0.5

    replica_folder = tmp_path / "replica"
    replica_folder.mkdir()
    (replica_folder / "backends.json").write_bytes((library_folder / "backends.json").read_bytes())
    replica = _replica(replica_folder, pipeline)
    seen = replica.search(probe_sample(), purpose=PURPOSE)
    assert [m.face.face_id for m in seen.matches] == [m.face.face_id for m in result.matches]


def test_erasure_leaves_nothing_in_the_database(server_facefind, photo_folder, postgres_schema_url):
    server_facefind.index([photo_folder], workers=1)
    players = str(photo_folder / "players.jpg")
    server_facefind.search(probe_sample(), purpose=PURPOSE)
    assert players in _everything_stored(postgres_schema_url)
    plan = server_facefind.erasure_plan(probe_sample())
    report = server_facefind.erase_person(plan)
    assert report.faces_removed >= 1
    server_facefind.remove(path=Path(players))
    stored = _everything_stored(postgres_schema_url)
    assert players not in stored
    table = index_table_name(server_facefind.model_id)
    left = {r[0] for r in _rows(postgres_schema_url, f"SELECT id FROM {table}")}
    assert left.isdisjoint(report.face_ids)
    after = server_facefind.search(probe_sample(), purpose=PURPOSE)
    assert all(m.face.face_id not in report.face_ids for m in after.matches)


def test_a_damaged_shared_index_is_rebuilt_by_a_writer_and_never_by_a_reader(server_facefind, photo_folder,
                                                                            postgres_schema_url):
    server_facefind.index([photo_folder], workers=1)
    table = index_table_name(server_facefind.model_id)
    count = _rows(postgres_schema_url, f"SELECT COUNT(*) FROM {table}")[0][0]
    conninfo, schema = split_catalog_url(postgres_schema_url)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'DELETE FROM "{schema}"."{table}" WHERE id = (SELECT MIN(id) FROM "{schema}"."{table}")')
    root, model, dim = server_facefind.library_path, server_facefind.model_id, server_facefind.embedding_dim
    with Library(root, model, dim, writable=False) as reader:
        assert reader.index_problem and len(reader.index) == count  # rebuilt in memory for this reader only
    assert _rows(postgres_schema_url, f"SELECT COUNT(*) FROM {table}")[0][0] == count - 1
    with Library(root, model, dim, writable=True) as writer:
        assert writer.index_problem and writer.rebuilt_index
    assert _rows(postgres_schema_url, f"SELECT COUNT(*) FROM {table}")[0][0] == count
    with Library(root, model, dim, writable=False) as reader:
        assert reader.index_problem is None and reader.index_problems() == []
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'DELETE FROM "{schema}"."{table}" WHERE id = (SELECT MAX(id) FROM "{schema}"."{table}")')
    assert not server_facefind.check().healthy
    assert server_facefind.check(repair=True).healthy and server_facefind.check().healthy


def test_cli_records_the_backends_once_and_then_needs_only_the_library(tmp_path, photo_folder, postgres_schema_url):
    library = tmp_path / "library"
    runner = CliRunner()
    created = runner.invoke(app, ["--library", str(library), "index", str(photo_folder), "--workers", "1",
                                  "--catalog", postgres_schema_url, "--index", "pgvector"])
    assert created.exit_code == 0, created.output
    stats = runner.invoke(app, ["--library", str(library), "stats", "--json"])
    assert stats.exit_code == 0 and json.loads(stats.output)["faces"] > 0
    other = runner.invoke(app, ["--library", str(library), "index", str(photo_folder), "--index", "faiss"])
    assert other.exit_code != 0 and "already keeps its catalog" in other.output


@pytest.mark.parametrize("catalog, index, message", [
    ("catalog.sqlite3", "pgvector", "--catalog postgresql://"),
    ("mysql://x", "faiss", "must be a postgresql:// URL"),
    ("catalog.sqlite3", "annoy", "unknown index 'annoy'"),
])
def test_backends_that_cannot_work_together_are_refused(tmp_path, catalog, index, message):
    with pytest.raises(FaceFindError, match=message):
        Library(tmp_path / "library", "m:1", 8, writable=True, backends=Backends(catalog, index))
    assert not (tmp_path / "library" / "backends.json").exists()
