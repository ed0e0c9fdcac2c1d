"""Where watchlists, their entries, their hits and webhook deliveries are kept: SQLAlchemy Core tables.

They live in the same database as the people store (``FaceFind.people_url``: people.sqlite3 by default, the
catalog's PostgreSQL schema for a server library) so a watchlist can name a person by id, but in their own
MetaData: either store can change its tables without the other. Plain Core types only, so a PostgreSQL URL works with the same code.
A reference photo is kept as its embedding and SHA-256, never as an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
import numpy as np
import sqlalchemy as sa
from sqlalchemy import event

from facefind.errors import FaceFindError, NotFoundError
from facefind.people.store import create_tables, server_engine

metadata = sa.MetaData()

watchlists = sa.Table(
    "watchlists", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("max_fmr", sa.Float, nullable=False),
    sa.Column("visible_users", sa.JSON, nullable=False),  # names of users who see its hits
    sa.Column("visible_roles", sa.JSON, nullable=False),  # roles whose members all see them
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("webhook_url", sa.String(2000)),
    sa.Column("webhook_secret", sa.String(500)),  # kept as given: the HMAC needs it; never shown back
)

entries = sa.Table(
    "watch_entries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("watchlist_id", sa.Integer, sa.ForeignKey("watchlists.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("person_id", sa.Integer),  # a person of the people view, or:
    sa.Column("embedding", sa.LargeBinary),  # a reference photo's face template (float32), no image
    sa.Column("probe_sha256", sa.String(64)),
    sa.Column("quality", sa.String(10)),  # the reference face's quality verdict (good / fair)
    sa.Column("label", sa.String(500), nullable=False),
)

hits = sa.Table(
    "watch_hits", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("watchlist_id", sa.Integer, sa.ForeignKey("watchlists.id", ondelete="CASCADE"), nullable=False),
    sa.Column("entry_id", sa.Integer, sa.ForeignKey("watch_entries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("face_id", sa.Integer, nullable=False, index=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("fmr", sa.Float, nullable=False),
    sa.Column("fmr_is_bound", sa.Boolean, nullable=False),
    sa.Column("expected_false_matches", sa.Float, nullable=False),
    sa.Column("verdict", sa.String(20), nullable=False),
    sa.Column("quality", sa.String(10), nullable=False),
    sa.Column("media_path", sa.Text, nullable=False),
    sa.Column("media_sha256", sa.String(64)),
    sa.Column("time_s", sa.Float),  # video faces: when the face was shown
    sa.Column("track_id", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("state", sa.String(20), nullable=False, default="new"),
    sa.Column("decided_by", sa.String(200)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.UniqueConstraint("watchlist_id", "face_id", name="one_hit_per_face"),
    sa.Index("watch_hits_by_state", "watchlist_id", "state"),
)

deliveries = sa.Table(
    "watch_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("hit_id", sa.Integer, sa.ForeignKey("watch_hits.id", ondelete="CASCADE"), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # the exact JSON signed and sent, so every retry is identical
    sa.Column("status", sa.String(20), nullable=False),  # pending | delivered | failed (gave up)
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Index("watch_deliveries_due", "status", "next_attempt_at"),
)


def now() -> datetime:
    return datetime.now(timezone.utc)


def aware(moment: datetime | None) -> datetime | None:
    """SQLite hands times back without their zone; they were written in UTC."""
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Template:
    """What a watchlist entry is compared by: a person (face ids resolved at check time) or a stored embedding."""

    entry_id: int
    label: str
    person_id: int | None
    embedding: np.ndarray | None
    quality: str | None
    probe_sha256: str | None


@dataclass(frozen=True)
class Watchlist:
    id: int
    name: str
    max_fmr: float
    visible_users: tuple[str, ...]
    visible_roles: tuple[str, ...]
    active: bool
    created_by: str
    created_at: datetime
    webhook_url: str | None
    webhook_secret: str | None
    entries: tuple[Template, ...]

    def visible_to(self, user: str, role: str) -> bool:
        return user in self.visible_users or role in self.visible_roles


class WatchStore:
    """The watchlist tables in one database (created on first use)."""

    def __init__(self, url: str) -> None:
        schema = None
        if not url.startswith("sqlite"):  # a server: the people store's engine (psycopg 3, the URL's schema=)
            self.engine, schema = server_engine(url)
        else:
            self.engine = sa.create_engine(url, connect_args={"timeout": 30})

            @event.listens_for(self.engine, "connect")
            def _pragmas(connection, _record) -> None:  # noqa: ANN001 - DB-API connection
                cursor = connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")  # readers (the service) never wait for ingest's writes
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()
        create_tables(self.engine, schema, metadata)

    def close(self) -> None:
        self.engine.dispose()

    # -- watchlists ------------------------------------------------------------------------------

    def add_watchlist(self, name: str, max_fmr: float, visible_users: list[str], visible_roles: list[str],
                      created_by: str, webhook_url: str | None, webhook_secret: str | None,
                      templates: list[dict]) -> int:
        """A new active watchlist with its entries, in one transaction; ``exists`` if the name is taken."""
        with self.engine.begin() as db:
            if db.execute(sa.select(watchlists.c.id).where(watchlists.c.name == name)).first():
                raise FaceFindError(f"a watchlist named {name!r} exists already", reason="exists")
            watchlist_id = db.execute(watchlists.insert().values(
                name=name, max_fmr=max_fmr, visible_users=sorted(set(visible_users)),
                visible_roles=sorted(set(visible_roles)), active=True, created_by=created_by, created_at=now(),
                webhook_url=webhook_url, webhook_secret=webhook_secret)).inserted_primary_key[0]
            for template in templates:
                embedding = template.get("embedding")
                db.execute(entries.insert().values(
                    watchlist_id=watchlist_id, person_id=template.get("person_id"),
                    embedding=None if embedding is None else np.asarray(embedding, np.float32).tobytes(),
                    probe_sha256=template.get("probe_sha256"), quality=template.get("quality"),
                    label=template["label"]))
        return int(watchlist_id)

    def watchlists(self, active_only: bool = False) -> list[Watchlist]:
        with self.engine.connect() as db:
            query = sa.select(watchlists).order_by(watchlists.c.id)
            if active_only:
                query = query.where(watchlists.c.active.is_(True))
            rows = db.execute(query).mappings().all()
            found = db.execute(sa.select(entries).order_by(entries.c.id)).mappings().all()
        by_list: dict[int, list[Template]] = {}
        for entry in found:
            vector = None if entry["embedding"] is None else np.frombuffer(entry["embedding"], np.float32)
            by_list.setdefault(entry["watchlist_id"], []).append(
                Template(entry["id"], entry["label"], entry["person_id"], vector, entry["quality"],
                         entry["probe_sha256"]))
        return [Watchlist(
            id=row["id"], name=row["name"], max_fmr=row["max_fmr"], visible_users=tuple(row["visible_users"]),
            visible_roles=tuple(row["visible_roles"]), active=row["active"], created_by=row["created_by"],
            created_at=aware(row["created_at"]), webhook_url=row["webhook_url"],
            webhook_secret=row["webhook_secret"], entries=tuple(by_list.get(row["id"], ())),
        ) for row in rows]

    def any_active(self) -> bool:
        """Whether any watchlist is active: an ingest without one skips the check (and its calibration)."""
        with self.engine.connect() as db:
            found = db.execute(sa.select(watchlists.c.id).where(watchlists.c.active.is_(True)).limit(1)).first()
        return found is not None

    def watchlist(self, watchlist_id: int) -> Watchlist:
        found = [w for w in self.watchlists() if w.id == watchlist_id]
        if not found:
            raise NotFoundError(f"no watchlist {watchlist_id}")
        return found[0]

    def set_active(self, watchlist_id: int, active: bool) -> None:
        """Pause (no new hits; its hits stay) or resume a watchlist."""
        with self.engine.begin() as db:
            if not db.execute(watchlists.update().where(watchlists.c.id == watchlist_id)
                              .values(active=active)).rowcount:
                raise NotFoundError(f"no watchlist {watchlist_id}")

    def remove_watchlist(self, watchlist_id: int) -> int:
        """Delete a watchlist with its entries, hits and queued deliveries (explicitly: no backend's cascade is
        relied on); returns how many hits went."""
        with self.engine.begin() as db:
            hit_ids = [row[0] for row in db.execute(sa.select(hits.c.id).where(hits.c.watchlist_id == watchlist_id))]
            for start in range(0, len(hit_ids), 500):
                db.execute(deliveries.delete().where(deliveries.c.hit_id.in_(hit_ids[start:start + 500])))
            db.execute(hits.delete().where(hits.c.watchlist_id == watchlist_id))
            db.execute(entries.delete().where(entries.c.watchlist_id == watchlist_id))
            if not db.execute(watchlists.delete().where(watchlists.c.id == watchlist_id)).rowcount:
                raise NotFoundError(f"no watchlist {watchlist_id}")
        return len(hit_ids)

    # -- hits ------------------------------------------------------------------------------------

    def record_hits(self, found: list[dict], webhook_urls: dict[int, str]) -> list[int]:
        """Store new hits and queue a webhook delivery for each hit of a watchlist in ``webhook_urls``.

        A face already hit on the same watchlist is skipped (a re-run never doubles a hit). Each hit's
        ``payload`` is a callable giving the delivery body once the hit's id is known.
        """
        added: list[int] = []
        with self.engine.begin() as db:
            for hit in found:
                exists = db.execute(sa.select(hits.c.id).where(
                    hits.c.watchlist_id == hit["watchlist_id"], hits.c.face_id == hit["face_id"])).first()
                if exists:
                    continue
                row = {key: value for key, value in hit.items() if key != "payload"}
                hit_id = db.execute(hits.insert().values(**row, created_at=now(), state="new")
                                    ).inserted_primary_key[0]
                added.append(int(hit_id))
                if hit["watchlist_id"] in webhook_urls:
                    db.execute(deliveries.insert().values(
                        hit_id=hit_id, url=webhook_urls[hit["watchlist_id"]], body=hit["payload"](int(hit_id)),
                        status="pending", attempts=0, next_attempt_at=now()))
        return added

    def hits(self, watchlist_ids: list[int], state: str | None = None, offset: int = 0,
             limit: int = 50) -> tuple[list[dict], int]:
        """One page of hits of these watchlists, newest first, and how many there are."""
        where = [hits.c.watchlist_id.in_(watchlist_ids)]
        if state is not None:
            where.append(hits.c.state == state)
        with self.engine.connect() as db:
            total = db.execute(sa.select(sa.func.count()).select_from(hits).where(*where)).scalar_one()
            rows = db.execute(
                sa.select(hits, entries.c.label.label("entry_label"), watchlists.c.name.label("watchlist_name"))
                .join(entries, entries.c.id == hits.c.entry_id).join(watchlists, watchlists.c.id == hits.c.watchlist_id)
                .where(*where).order_by(hits.c.id.desc()).offset(offset).limit(limit)).mappings().all()
        return [_aware_row(row) for row in rows], int(total)

    def hit(self, hit_id: int) -> dict:
        with self.engine.connect() as db:
            row = db.execute(sa.select(hits).where(hits.c.id == hit_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no watchlist hit {hit_id}")
        return _aware_row(row)

    def decide(self, hit_id: int, state: str, by: str) -> None:
        with self.engine.begin() as db:
            db.execute(hits.update().where(hits.c.id == hit_id).values(state=state, decided_by=by, decided_at=now()))

    def forget_faces(self, face_ids: list[int]) -> int:
        """Drop the hits (and their queued deliveries) of removed or erased faces; returns how many."""
        if not face_ids:
            return 0
        with self.engine.begin() as db:
            ids = [row[0] for row in db.execute(sa.select(hits.c.id).where(hits.c.face_id.in_(face_ids)))]
            if ids:
                db.execute(deliveries.delete().where(deliveries.c.hit_id.in_(ids)))
                db.execute(hits.delete().where(hits.c.id.in_(ids)))
        return len(ids)

    # -- webhook deliveries ---------------------------------------------------------------------

    def due_deliveries(self, at: datetime) -> list[dict]:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(deliveries, watchlists.c.webhook_secret)
                              .join(hits, hits.c.id == deliveries.c.hit_id)
                              .join(watchlists, watchlists.c.id == hits.c.watchlist_id)
                              .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= at)
                              .order_by(deliveries.c.id)).mappings().all()
        return [_aware_row(row) for row in rows]

    def next_due(self) -> datetime | None:
        """When the earliest pending delivery is due; None when nothing is pending."""
        with self.engine.connect() as db:
            moment = db.execute(sa.select(sa.func.min(deliveries.c.next_attempt_at))
                                .where(deliveries.c.status == "pending")).scalar()
        return aware(moment)

    def retry_now(self) -> int:
        """Make every undelivered delivery (also one given up on) due now; returns how many."""
        with self.engine.begin() as db:
            return db.execute(deliveries.update().where(deliveries.c.status.in_(("pending", "failed")))
                              .values(status="pending", next_attempt_at=now())).rowcount

    def delivery_attempted(self, delivery_id: int, status: str, attempts: int, next_attempt_at: datetime,
                           error: str | None) -> None:
        with self.engine.begin() as db:
            db.execute(deliveries.update().where(deliveries.c.id == delivery_id).values(
                status=status, attempts=attempts, next_attempt_at=next_attempt_at, last_error=error,
                delivered_at=now() if status == "delivered" else None))

    def deliveries_of(self, hit_ids: list[int]) -> dict[int, dict]:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(deliveries).where(deliveries.c.hit_id.in_(hit_ids))).mappings().all()
        return {row["hit_id"]: _aware_row(row) for row in rows}


def _aware_row(row) -> dict:
    return {key: aware(value) if isinstance(value, datetime) else value for key, value in dict(row).items()}
