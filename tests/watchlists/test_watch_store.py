"""The watchlist store's contract, run against SQLite and PostgreSQL (same code, plain Core types)."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from facefind.errors import FaceFindError, NotFoundError
from facefind.watchlists.store import WatchStore, now


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path) -> Iterator[WatchStore]:
    if request.param == "sqlite":
        opened = WatchStore(f"sqlite:///{tmp_path / 'people.sqlite3'}")
        yield opened
        opened.close()
        return
    import psycopg

    server = request.getfixturevalue("postgres_url")
    database = f"watch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{database}"')
    opened = WatchStore(server.rsplit("/", 1)[0] + "/" + database)  # a plain postgresql:// URL, as a user gives it
    yield opened
    opened.close()
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE "{database}" WITH (FORCE)')


def _watchlist(store: WatchStore, name: str = "suspects", url: str | None = "http://127.0.0.1:9/hook") -> int:
    return store.add_watchlist(name, 1e-5, ["ivy", "vera", "ivy"], ["viewer"], "ivy", url, "s" * 20, [
        {"embedding": np.arange(4, dtype=np.float32), "probe_sha256": "ab" * 32, "quality": "good", "label": "a.jpg"},
        {"person_id": 12, "label": "person 12"},
    ])


def _hit(watchlist_id: int, entry_id: int, face_id: int) -> dict:
    return {"watchlist_id": watchlist_id, "entry_id": entry_id, "face_id": face_id, "score": 0.7, "fmr": 1e-6,
            "fmr_is_bound": False, "expected_false_matches": 2e-6, "verdict": "strong", "quality": "good",
            "media_path": f"/photos/{face_id}.jpg", "media_sha256": None, "time_s": None, "track_id": None,
            "payload": lambda hit_id: json.dumps({"hit_id": hit_id})}


def test_a_watchlist_round_trips_with_its_templates(store):
    watchlist_id = _watchlist(store)
    (watchlist,) = store.watchlists(active_only=True)
    assert watchlist.id == watchlist_id and watchlist.visible_users == ("ivy", "vera")
    assert watchlist.visible_to("vera", "investigator") and watchlist.visible_to("x", "viewer")
    assert not watchlist.visible_to("x", "investigator") and watchlist.created_at.tzinfo is not None
    photo, person = watchlist.entries
    assert np.array_equal(photo.embedding, np.arange(4, dtype=np.float32)) and photo.probe_sha256 == "ab" * 32
    assert person.person_id == 12 and person.embedding is None and store.any_active()
    with pytest.raises(FaceFindError, match="exists"):
        _watchlist(store)
    with pytest.raises(NotFoundError):
        store.watchlist(watchlist_id + 1)


def test_hits_are_recorded_once_per_face_paged_filtered_and_decided(store):
    watchlist_id = _watchlist(store)
    entry_id = store.watchlist(watchlist_id).entries[0].entry_id
    first = store.record_hits([_hit(watchlist_id, entry_id, face) for face in (5, 6, 7)], {})
    assert len(first) == 3 and store.record_hits([_hit(watchlist_id, entry_id, 6)], {}) == []
    page, total = store.hits([watchlist_id], offset=1, limit=1)
    assert total == 3 and [row["face_id"] for row in page] == [6]  # newest first
    store.decide(first[0], "dismissed", "ivy")
    dismissed, count = store.hits([watchlist_id], state="dismissed")
    assert count == 1 and dismissed[0]["decided_by"] == "ivy" and dismissed[0]["decided_at"].tzinfo is not None
    assert dismissed[0]["watchlist_name"] == "suspects" and dismissed[0]["entry_label"] == "a.jpg"
    assert store.forget_faces([5, 7]) == 2 and store.hits([watchlist_id])[1] == 1
    with pytest.raises(NotFoundError):
        store.hit(first[0])


def test_deliveries_are_queued_with_their_hit_and_rescheduled(store):
    watchlist_id = _watchlist(store)
    entry_id = store.watchlist(watchlist_id).entries[0].entry_id
    (hit_id,) = store.record_hits([_hit(watchlist_id, entry_id, 5)], {watchlist_id: "http://127.0.0.1:9/hook"})
    (due,) = store.due_deliveries(now())
    assert json.loads(due["body"]) == {"hit_id": hit_id} and due["webhook_secret"] == "s" * 20
    later = now() + timedelta(hours=1)
    store.delivery_attempted(due["id"], "pending", 1, later, "HTTP 500")
    assert store.due_deliveries(now()) == [] and abs((store.next_due() - later).total_seconds()) < 1
    assert store.retry_now() == 1 and len(store.due_deliveries(now())) == 1
    store.delivery_attempted(due["id"], "delivered", 2, later, None)
    assert store.next_due() is None and store.deliveries_of([hit_id])[hit_id]["status"] == "delivered"
