"""Where people are kept: SQLAlchemy Core tables in their own database, keyed by catalog face ids.

Default ``sqlite:///<library>/people.sqlite3``; a library whose catalog is on PostgreSQL keeps them in the
catalog's server and schema instead (``library_url``), so every replica of the library sees the same people.
The same code runs on both (plain Core types, no backend-specific SQL; a ``?schema=NAME`` in a PostgreSQL URL
puts the tables in that schema, as it does for the catalog). The catalog stays the one source of faces: this store only
says which face belongs to which person, how that was decided (``auto`` by clustering, ``manual``
by a person's decision, which every later run keeps), and which faces may never join whom.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import sqlalchemy as sa
from sqlalchemy import event

from facefind.errors import NotFoundError
from facefind.people.location import default_url

SOURCES = ("auto", "manual")

metadata = sa.MetaData()

persons = sa.Table(
    "persons", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200)),
    sa.Column("hidden", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # how the faces hang together and the nearest other person, refreshed whenever its faces change
    sa.Column("cohesion_score", sa.Float),
    sa.Column("nearest_person_id", sa.Integer),
    sa.Column("nearest_score", sa.Float),
)

person_faces = sa.Table(
    "person_faces", metadata,
    sa.Column("face_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("person_id", sa.Integer, sa.ForeignKey("persons.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("source", sa.String(10), nullable=False),
    sa.Column("media_id", sa.Integer, nullable=False, index=True),  # co-appearance without a catalog join
    sa.Column("in_video", sa.Boolean, nullable=False),  # photos / videos counts without a catalog join
)

cannot_links = sa.Table(
    "cannot_links", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("face_id", sa.Integer, nullable=False, index=True),
    sa.Column("other_face_id", sa.Integer),  # a face this face is never grouped with, or:
    sa.Column("person_id", sa.Integer),  # a person this face never joins ("not this person")
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

clustering_runs = sa.Table(
    "clustering_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),  # build / incremental
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("faces", sa.Integer, nullable=False),
    sa.Column("people", sa.Integer, nullable=False),
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def server_engine(url: str) -> tuple[sa.Engine, str | None]:
    """(engine, schema) for a PostgreSQL URL: psycopg 3 (installed; SQLAlchemy's default driver is not), and the
    tables in the URL's ``schema=`` (as for the catalog) or, without one, in the database's search path."""
    from facefind.catalog.postgres import split_catalog_url

    parts = sa.engine.make_url(url.replace("postgres://", "postgresql://", 1))
    schema = split_catalog_url(url)[1] if "schema" in parts.query else None  # checked as the catalog checks it
    parts = parts.difference_update_query(["schema"])
    if parts.drivername == "postgresql":
        parts = parts.set(drivername="postgresql+psycopg")
    engine = sa.create_engine(parts, pool_pre_ping=True)  # a restarted server: reconnect, do not fail once
    if schema:
        engine = engine.execution_options(schema_translate_map={None: schema})
    return engine, schema


def create_tables(engine: sa.Engine, schema: str | None, tables: sa.MetaData) -> None:
    """Create what is missing; on a server under an advisory lock, since replicas starting together would race."""
    with engine.begin() as db:
        if db.dialect.name == "postgresql":
            db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"facefind:{schema}:stores"})
            if schema:
                db.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        tables.create_all(db)


@dataclass(frozen=True)
class FacePlace:
    """A face and where it is: what the store keeps beside the assignment."""

    face_id: int
    media_id: int
    in_video: bool


@dataclass(frozen=True)
class PersonRow:
    id: int
    name: str | None
    hidden: bool
    created_at: datetime
    cohesion_score: float | None
    nearest_person_id: int | None
    nearest_score: float | None


class PeopleStore:
    """The people tables of one library; every method is one transaction."""

    def __init__(self, url: str) -> None:
        schema = None
        if url.startswith("sqlite"):
            self.engine = sa.create_engine(url)
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine, schema = server_engine(url)
        create_tables(self.engine, schema, metadata)

    @classmethod
    def for_library(cls, library: Path, url: str | None = None) -> "PeopleStore":
        return cls(url or default_url(library))

    def close(self) -> None:
        self.engine.dispose()

    # -- reading ------------------------------------------------------------------------------

    def person(self, person_id: int) -> PersonRow:
        with self.engine.connect() as db:
            row = db.execute(sa.select(persons).where(persons.c.id == person_id)).first()
        if row is None:
            raise NotFoundError(f"no person {person_id}")
        return PersonRow(*row)

    def persons(self, include_hidden: bool = False) -> list[PersonRow]:
        query = sa.select(persons).order_by(persons.c.id)
        if not include_hidden:
            query = query.where(persons.c.hidden.is_(False))
        with self.engine.connect() as db:
            return [PersonRow(*row) for row in db.execute(query)]

    def assignments(self, face_ids: Iterable[int] | None = None) -> dict[int, tuple[int, str]]:
        """face id -> (person id, source), of the given faces or of every assigned face."""
        query = sa.select(person_faces.c.face_id, person_faces.c.person_id, person_faces.c.source)
        with self.engine.connect() as db:
            if face_ids is None:
                return {f: (p, s) for f, p, s in db.execute(query)}
            found: dict[int, tuple[int, str]] = {}
            for chunk in _chunks(list(face_ids)):
                found.update({f: (p, s) for f, p, s in db.execute(query.where(person_faces.c.face_id.in_(chunk)))})
            return found

    def faces_of(self, person_id: int) -> list[tuple[int, str, int, bool]]:
        """(face id, source, media id, in video) of one person, by face id."""
        with self.engine.connect() as db:
            return [tuple(row) for row in db.execute(
                sa.select(person_faces.c.face_id, person_faces.c.source, person_faces.c.media_id,
                          person_faces.c.in_video)
                .where(person_faces.c.person_id == person_id).order_by(person_faces.c.face_id))]

    def face_counts(self) -> dict[int, int]:
        with self.engine.connect() as db:
            return dict(db.execute(sa.select(person_faces.c.person_id, sa.func.count())
                                   .group_by(person_faces.c.person_id)).all())

    def media_counts(self, person_ids: list[int]) -> dict[int, tuple[int, int]]:
        """person id -> (photos, videos) they appear in."""
        query = (sa.select(person_faces.c.person_id, person_faces.c.in_video,
                           sa.func.count(sa.distinct(person_faces.c.media_id)))
                 .where(person_faces.c.person_id.in_(person_ids))
                 .group_by(person_faces.c.person_id, person_faces.c.in_video))
        counts: dict[int, list[int]] = {p: [0, 0] for p in person_ids}
        with self.engine.connect() as db:
            for person_id, in_video, count in db.execute(query):
                counts[person_id][1 if in_video else 0] = int(count)
        return {p: (c[0], c[1]) for p, c in counts.items()}

    def people_in_media(self, media_ids: list[int]) -> list[tuple[int, int, int]]:
        """(media id, person id, face id) of every assigned face in these files."""
        with self.engine.connect() as db:
            rows: list[tuple[int, int, int]] = []
            for chunk in _chunks(media_ids):
                rows += [tuple(r) for r in db.execute(
                    sa.select(person_faces.c.media_id, person_faces.c.person_id, person_faces.c.face_id)
                    .where(person_faces.c.media_id.in_(chunk)))]
            return rows

    def cannot_links(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(face, face) pairs and (face, person) pairs that must never be grouped."""
        with self.engine.connect() as db:
            rows = db.execute(sa.select(cannot_links.c.face_id, cannot_links.c.other_face_id,
                                        cannot_links.c.person_id)).all()
        return ([(f, o) for f, o, _ in rows if o is not None], [(f, p) for f, _, p in rows if p is not None])

    def runs(self) -> Iterator[dict]:
        with self.engine.connect() as db:
            for row in db.execute(sa.select(clustering_runs).order_by(clustering_runs.c.id)):
                yield dict(row._mapping)

    # -- writing ------------------------------------------------------------------------------

    def new_person(self, db: sa.Connection, name: str | None = None) -> int:
        return int(db.execute(sa.insert(persons).values(name=name, hidden=False, created_at=now())).inserted_primary_key[0])

    def assign(self, db: sa.Connection, person_id: int, faces: Iterable[FacePlace], source: str) -> None:
        """Put faces into a person, replacing any earlier assignment of those faces."""
        rows = [{"face_id": f.face_id, "person_id": person_id, "source": source, "media_id": f.media_id,
                 "in_video": f.in_video} for f in faces]
        for chunk in _chunks(rows):
            db.execute(sa.delete(person_faces).where(person_faces.c.face_id.in_([r["face_id"] for r in chunk])))
            db.execute(sa.insert(person_faces), chunk)

    def confirm(self, db: sa.Connection, person_ids: Iterable[int]) -> None:
        """A person someone acted on keeps its faces: they become manual, fixed for every later run."""
        db.execute(sa.update(person_faces).where(person_faces.c.person_id.in_(list(person_ids)))
                   .values(source="manual"))

    def drop_empty_persons(self, db: sa.Connection) -> list[int]:
        empty = [r for (r,) in db.execute(sa.select(persons.c.id).where(
            ~sa.exists().where(person_faces.c.person_id == persons.c.id)))]
        if empty:
            db.execute(sa.delete(persons).where(persons.c.id.in_(empty)))
            db.execute(sa.update(persons).where(persons.c.nearest_person_id.in_(empty))
                       .values(nearest_person_id=None, nearest_score=None))
            db.execute(sa.delete(cannot_links).where(cannot_links.c.person_id.in_(empty)))
        return empty

    def set_summary(self, db: sa.Connection, person_id: int, cohesion: float | None, nearest: int | None,
                    nearest_score: float | None) -> None:
        db.execute(sa.update(persons).where(persons.c.id == person_id).values(
            cohesion_score=cohesion, nearest_person_id=nearest, nearest_score=nearest_score))

    def add_cannot_link(self, db: sa.Connection, face_id: int, other_face_id: int | None = None,
                        person_id: int | None = None) -> None:
        db.execute(sa.insert(cannot_links).values(face_id=face_id, other_face_id=other_face_id,
                                                  person_id=person_id, created_at=now()))

    def record_run(self, db: sa.Connection, kind: str, params: dict, faces: int, people: int,
                   seconds: float) -> None:
        db.execute(sa.insert(clustering_runs).values(kind=kind, params=json.loads(json.dumps(params)), faces=faces,
                                                     people=people, seconds=seconds, finished_at=now()))

    def forget_faces(self, face_ids: Iterable[int]) -> list[int]:
        """Drop removed or erased faces everywhere here (assignments, cannot-links); returns the people emptied.

        An erasure must leave nothing behind, so a person left without faces goes too, name and all.
        """
        face_ids = list(face_ids)
        with self.engine.begin() as db:
            for chunk in _chunks(face_ids):
                db.execute(sa.delete(person_faces).where(person_faces.c.face_id.in_(chunk)))
                db.execute(sa.delete(cannot_links).where(cannot_links.c.face_id.in_(chunk)
                                                         | cannot_links.c.other_face_id.in_(chunk)))
            return self.drop_empty_persons(db)


def person_face_ids(store: PeopleStore, person_id: int) -> list[int]:
    """The catalog face ids of one person (NotFoundError if there is no such person): what a watchlist checks."""
    store.person(person_id)
    return [face_id for face_id, *_ in store.faces_of(person_id)]


def _chunks(values: list, size: int = 500) -> Iterator[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
