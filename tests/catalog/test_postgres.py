"""What only the PostgreSQL catalog does: locks shared by replicas, migrations, server errors, no trace of erased rows."""

import socket
import threading
import time

import numpy as np
import psycopg
import pytest

from facefind.catalog import open_catalog
from facefind.catalog.postgres import SCHEMA_VERSION, PostgresCatalog, split_catalog_url
from facefind.errors import FaceFindError, LibraryBusyError
from tests.catalog.conftest import outcome as _outcome


@pytest.fixture
def catalog(postgres_schema_url):
    instance = open_catalog(postgres_schema_url)
    yield instance
    instance.close()


def _schema_text(url: str) -> str:
    """Every row of every table in the catalog's schema, as text."""
    conninfo, schema = split_catalog_url(url)
    with psycopg.connect(conninfo) as connection:
        tables = [r[0] for r in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))]
        return "\n".join(
            str(row) for table in tables for row in connection.execute(f'SELECT t::TEXT FROM "{schema}"."{table}" t'))


def test_one_ingest_at_a_time_across_processes_until_it_finishes_or_dies(catalog, postgres_schema_url):
    replica = open_catalog(postgres_schema_url)
    running = catalog.start_ingest(["/a"])
    with pytest.raises(LibraryBusyError, match="another facefind process"):
        replica.start_ingest(["/b"])
    assert replica.mark_abandoned_ingests() == 0  # the running ingest is alive: not marked died
    catalog.finish_ingest(running, {}, "finished")
    second = replica.start_ingest(["/b"])
    replica.close()  # its process dies mid-ingest: the server drops its session and the lock
    catalog.start_ingest(["/c"])  # so a new ingest may start
    assert catalog.stats()["last_ingest"]["status"] == "running"
    assert second


def test_writers_on_two_connections_serialise_and_lose_nothing(catalog, postgres_schema_url):
    other = open_catalog(postgres_schema_url)
    errors = []

    def write(instance, prefix):
        try:
            for i in range(10):
                instance.commit_outcomes([_outcome(f"/{prefix}/{i}.jpg", 1, seed=i)])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(c, p)) for c, p in ((catalog, "x"), (other, "y"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert errors == []
    assert catalog.stats()["faces"] == 20 and catalog.revision() == 20


def test_erased_rows_leave_nothing_in_any_table(catalog, postgres_schema_url):
    secret = _outcome("/secret/photo.jpg", 2, seed=7)
    catalog.commit_outcomes([secret, _outcome("/kept.jpg", 1, seed=8)])
    catalog.record_search({"path": "/secret/photo.jpg", "sha256": "hash7"}, secret.faces[0].embedding, {}, [])
    stored = secret.faces[1].embedding.astype(np.float16).tobytes()[:16].hex()  # as the faces table keeps it
    assert "/secret/photo.jpg" in _schema_text(postgres_schema_url) and stored in _schema_text(postgres_schema_url)
    catalog.remove_media("/secret/photo.jpg")
    assert catalog.checkpoint()
    text = _schema_text(postgres_schema_url)
    assert "/secret/photo.jpg" not in text and "hash7" not in text and "/kept.jpg" in text
    assert secret.faces[0].embedding.tobytes()[:16].hex() not in text and stored not in text


def test_migrations_are_recorded_and_applied_once(catalog, postgres_schema_url):
    catalog.commit_outcomes([_outcome("/a.jpg", 1)])
    again = PostgresCatalog(postgres_schema_url)  # a second replica starting on the same schema
    assert again.stats()["faces"] == 1
    again.close()
    conninfo, schema = split_catalog_url(postgres_schema_url)
    with psycopg.connect(conninfo) as connection:
        versions = [r[0] for r in connection.execute(f'SELECT version FROM "{schema}".schema_migrations')]
    assert versions == list(range(1, SCHEMA_VERSION + 1))


def test_libraries_in_other_schemas_do_not_see_each_other(catalog, postgres_url):
    catalog.commit_outcomes([_outcome("/a.jpg", 1)])
    neighbour = PostgresCatalog(f"{postgres_url}?schema=neighbour_library")
    try:
        assert neighbour.stats()["faces"] == 0 and neighbour.media_by_path("/a.jpg") is None
    finally:
        neighbour.close()
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute("DROP SCHEMA neighbour_library CASCADE")


def test_integrity_check_finds_a_broken_invariant(catalog, postgres_schema_url):
    catalog.commit_outcomes([_outcome("/a.jpg", 2)])
    conninfo, schema = split_catalog_url(postgres_schema_url)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f'UPDATE "{schema}".media SET face_count = 5')
    assert any("face_count 5 but 2 faces" in problem for problem in catalog.integrity_problems())


@pytest.mark.parametrize("url, reason", [
    ("postgresql://postgres@127.0.0.1:{port}/facefind", "catalog_unavailable"),
    ("postgresql://postgres@127.0.0.1:1/facefind?schema=1bad", "bad_argument"),
])
def test_an_unusable_url_is_a_clear_error_not_a_hang(url, reason):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    started = time.monotonic()
    with pytest.raises(FaceFindError) as raised:
        open_catalog(url.format(port=port))
    assert raised.value.reason == reason and time.monotonic() - started < 15


def test_a_read_only_role_can_read_a_current_catalog(catalog, postgres_schema_url):
    catalog.commit_outcomes([_outcome("/a.jpg", 2)])
    conninfo, schema = split_catalog_url(postgres_schema_url)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_roles WHERE rolname = 'facefind_reader'").fetchone():
            connection.execute("CREATE ROLE facefind_reader LOGIN")
        connection.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO facefind_reader')
        connection.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{schema}" TO facefind_reader')
    reader = PostgresCatalog(postgres_schema_url.replace("postgres@", "facefind_reader@"), writable=False)
    try:
        assert reader.stats()["faces"] == 2 and len(next(reader.iter_embeddings("m:1"))[0]) == 2
        with pytest.raises(FaceFindError) as refused:
            reader.set_meta("x", "y")
        assert refused.value.reason == "library_access"
    finally:
        reader.close()
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM facefind_reader')
            connection.execute(f'REVOKE ALL ON SCHEMA "{schema}" FROM facefind_reader')
