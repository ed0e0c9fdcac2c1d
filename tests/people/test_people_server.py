"""People and watchlists of a library whose catalog is on PostgreSQL: kept in the catalog's schema, so replicas on
several machines (each with its own folder holding only backends.json) share them; FACEFIND_PEOPLE_DB_URL overrides."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from facefind.api import Backends, FaceFind
from facefind.catalog.postgres import split_catalog_url
from facefind.people.location import PEOPLE_DB
from facefind.people.store import PeopleStore
from facefind.pipeline import FacePipeline
from facefind.watchlists.store import WatchStore
from tests.people.conftest import write_photos

PEOPLE_TABLES = {"persons", "person_faces", "cannot_links", "clustering_runs"}
WATCH_TABLES = {"watchlists", "watch_entries", "watch_hits", "watch_deliveries"}


def tables_in(url: str, schema: str) -> set[str]:
    with psycopg.connect(split_catalog_url(url)[0]) as connection:
        return {name for (name,) in connection.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))}


def replica_of(library: Path, folder: Path, pipeline: FacePipeline) -> FaceFind:
    """Another machine's facefind on the same library: a folder holding only the recorded backends.json."""
    folder.mkdir()
    (folder / "backends.json").write_bytes((library / "backends.json").read_bytes())
    instance = FaceFind(folder)
    instance._pipeline = pipeline
    return instance


@pytest.fixture
def two_replicas(tmp_path, pipeline, postgres_schema_url, monkeypatch):
    """A served replica (kept open, as `facefind serve`) that indexed the people photos, and a one-shot one."""
    monkeypatch.delenv("FACEFIND_PEOPLE_DB_URL", raising=False)
    served = FaceFind(tmp_path / "library", backends=Backends(postgres_schema_url, "pgvector"))
    served._pipeline = pipeline
    served.index([write_photos(tmp_path / "photos")], workers=1)
    served.open()
    other = replica_of(served.library_path, tmp_path / "replica", pipeline)
    yield served, other
    served.close()


def test_a_person_named_through_one_replica_is_seen_through_the_other(two_replicas, postgres_schema_url):
    served, other = two_replicas
    served.people_build()
    person = served.people_list()[0].person_id
    served.person_rename(person, "Yao Ming")
    assert other.person(person).name == "Yao Ming"
    other.person_hide(person)
    assert person not in {p.person_id for p in served.people_list()}  # and back: a decision is shared both ways
    assert served.people_url == other.people_url == postgres_schema_url
    for replica in two_replicas:
        assert not (replica.library_path / PEOPLE_DB).exists()
    assert PEOPLE_TABLES <= tables_in(postgres_schema_url, split_catalog_url(postgres_schema_url)[1])


def test_a_watchlist_added_through_one_replica_is_listed_by_the_other(two_replicas, postgres_schema_url):
    served, other = two_replicas
    served.people_build()
    person = served.people_list()[0].person_id
    added = served.watch_add("suspects", people=[person])
    assert [w.name for w in other.watch_list()] == ["suspects"]
    assert other.watch_list()[0].watchlist_id == added.watchlist_id
    assert WATCH_TABLES <= tables_in(postgres_schema_url, split_catalog_url(postgres_schema_url)[1])


@pytest.mark.parametrize("override", ["sqlite", "postgresql"])
def test_the_environment_variable_still_overrides_where_people_live(override, tmp_path, postgres_url, monkeypatch):
    """FACEFIND_PEOPLE_DB_URL wins over the library's own place: an SQLite file elsewhere, or another schema."""
    schema = f"people_override_{override}"
    url = f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}" if override == "sqlite" else f"{postgres_url}?schema={schema}"
    monkeypatch.setenv("FACEFIND_PEOPLE_DB_URL", url)
    facefind = FaceFind(tmp_path / "library")
    assert facefind.people_url == url
    store = PeopleStore(facefind.people_url)
    watch = WatchStore(facefind.people_url)
    store.close()
    watch.close()
    if override == "sqlite":
        assert (tmp_path / "elsewhere.sqlite3").is_file()
    else:
        assert PEOPLE_TABLES | WATCH_TABLES <= tables_in(postgres_url, schema)
        with psycopg.connect(postgres_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_replicas_starting_together_create_the_tables_once(postgres_schema_url):
    """Several replicas opening the stores at the same moment: the advisory lock keeps CREATE TABLE from racing."""
    from concurrent.futures import ThreadPoolExecutor

    def open_both(_: int) -> None:
        PeopleStore(postgres_schema_url).close()
        WatchStore(postgres_schema_url).close()

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(open_both, range(6)))
    assert PEOPLE_TABLES | WATCH_TABLES <= tables_in(postgres_schema_url, split_catalog_url(postgres_schema_url)[1])
