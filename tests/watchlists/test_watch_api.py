"""Watchlists through the library API (FaceFind): hits on newly indexed faces, webhooks, visibility, review."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from facefind.access import Actor, ForbiddenError
from facefind.api import FaceFind
from facefind.errors import FaceFindError, NotFoundError
from facefind.samples import probe_sample
from facefind.watchlists.ops import hit_fields
from tests.conftest import PURPOSE
from tests.watchlists.conftest import SECRET, webhook_receiver

IVY = Actor("ivy", "investigator")


def _yao_face_id(facefind: FaceFind, folder: Path) -> int:
    """The face of ``folder`` a search for the sample portrait puts first: the same player in the team photo."""
    return facefind.search(probe_sample(), within=folder, purpose=PURPOSE).matches[0].face.face_id


def test_a_listed_person_in_a_newly_indexed_folder_raises_one_hit_and_no_one_else_does(facefind, photo_folder):
    facefind.watch_add("yao", photos=[probe_sample()], actor=IVY)
    report = facefind.index([photo_folder])
    hits = facefind.watch_hits(actor=IVY)
    assert report.faces_added > 10 and hits.total == 1  # ~19 new faces, one of them the listed player
    hit = hits.items[0]
    assert hit.face_id == _yao_face_id(facefind, photo_folder) and Path(hit.media_path).name == "players.jpg"
    assert hit.verdict == "strong" and hit.fmr <= 1e-5 and hit.state == "new" and hit.time_s is None
    assert hit.expected_false_matches == pytest.approx(hit.fmr * 1, rel=1e-2)  # one template compared
    assert hit.entry == probe_sample().name and hit.thumbnail and Path(hit.thumbnail).is_file()
    (photo_folder / "players.jpg").touch()  # a re-run that re-reads the file does not double the hit
    facefind.index([photo_folder])
    assert facefind.watch_hits(actor=IVY).total == 1


def test_faces_indexed_before_the_watchlist_existed_raise_no_hit(facefind, photo_folder):
    facefind.index([photo_folder])
    facefind.watch_add("yao", photos=[probe_sample()], actor=IVY)
    assert facefind.watch_hits(actor=IVY).total == 0


def test_an_inactive_library_without_watchlists_indexes_as_before(facefind, photo_folder):
    assert facefind.index([photo_folder]).faces_added > 10
    assert facefind.watch_list(actor=IVY) == []


@pytest.mark.parametrize("quality, capped", [
    ({"verdict": "good", "usable": True}, False),
    ({"verdict": "poor", "usable": True}, True),
    ({"verdict": "good", "usable": False}, True),  # not a usable face, whatever its other measures
])
def test_a_poor_or_unusable_face_never_raises_a_strong_hit(facefind, quality, capped):
    fields = hit_fields(facefind.calibration, "good", quality, 0.95)  # a score far beyond any impostor's
    assert (fields["verdict"] == "weak") if capped else (fields["verdict"] == "strong")


# who -> may they see the watchlist's hits, may they acknowledge them
VISIBILITY = [
    (Actor("ivy", "investigator"), True, True),  # its creator
    (Actor("vera", "viewer"), True, False),  # named, but a viewer only reads
    (Actor("ian", "investigator"), False, False),  # not named: the hit does not exist for them
    (Actor("root", "admin"), False, False),  # an admin is not named either
    (Actor("aud", "auditor"), False, False),  # role may not read watchlists at all
]


@pytest.mark.parametrize("actor, sees, reviews", VISIBILITY, ids=lambda v: getattr(v, "name", None))
def test_hits_are_visible_only_to_those_the_watchlist_names(facefind, photo_folder, actor, sees, reviews):
    facefind.watch_add("yao", photos=[probe_sample()], visible_users=["vera"], actor=IVY)
    facefind.index([photo_folder])
    hit_id = facefind.watch_hits(actor=IVY).items[0].hit_id
    if actor.role == "auditor":
        with pytest.raises(ForbiddenError):
            facefind.watch_hits(actor=actor)
        return
    assert facefind.watch_hits(actor=actor).total == (1 if sees else 0)
    assert len(facefind.watch_list(actor=actor)) == (1 if sees else 0)
    if reviews:
        assert facefind.hit_acknowledge(hit_id, actor=actor).state == "acknowledged"
    else:
        with pytest.raises(ForbiddenError if actor.role == "viewer" else NotFoundError):
            facefind.hit_acknowledge(hit_id, actor=actor)


def test_a_role_named_by_the_watchlist_sees_its_hits(facefind, photo_folder):
    facefind.watch_add("yao", photos=[probe_sample()], visible_roles=["investigator"], actor=IVY)
    facefind.index([photo_folder])
    assert facefind.watch_hits(actor=Actor("ian", "investigator")).total == 1
    assert facefind.watch_hits(actor=Actor("vera", "viewer")).total == 0


def test_acknowledge_and_dismiss_change_the_state_and_are_audited(facefind, photo_folder, tmp_path):
    facefind.watch_add("yao", photos=[probe_sample()], actor=IVY)
    facefind.watch_add("yao again", photos=[probe_sample()], actor=IVY)
    facefind.index([photo_folder])
    first, second = (hit.hit_id for hit in facefind.watch_hits(actor=IVY).items)
    assert facefind.hit_acknowledge(first, actor=IVY).decided_by == "ivy"
    assert facefind.hit_dismiss(second, actor=IVY).state == "dismissed"
    assert [h.hit_id for h in facefind.watch_hits(state="new", actor=IVY).items] == []
    assert [h.hit_id for h in facefind.watch_hits(state="dismissed", actor=IVY).items] == [second]
    out = tmp_path / "audit.jsonl"
    facefind.audit_export(out)
    entries = [json.loads(line) for line in out.read_text().splitlines()]
    decided = {e["action"]: e for e in entries if e["action"].startswith("watch_hit_")}
    assert decided["watch_hit_acknowledge"]["actor"] == "ivy"
    assert decided["watch_hit_acknowledge"]["details"]["hit_id"] == first
    assert decided["watch_hit_dismiss"]["details"].items() >= {"hit_id": second, "before": "new",
                                                               "after": "dismissed"}.items()
    assert {"watch_add", "watch_hits"} <= {e["action"] for e in entries}


@pytest.mark.parametrize("arguments, reason", [
    ({}, "bad_argument"),  # nothing to watch for
    ({"photos": [b"not an image"]}, "unreadable"),
    ({"photos": [probe_sample()], "max_fmr": 0}, "bad_argument"),
    ({"photos": [probe_sample()], "visible_roles": ["boss"]}, "bad_argument"),
    ({"photos": [probe_sample()], "webhook_url": "http://127.0.0.1:9/x"}, "bad_argument"),  # no secret
    ({"photos": [probe_sample()], "webhook_url": "file:///etc/passwd", "webhook_secret": SECRET}, "bad_argument"),
    ({"people": [12345]}, "not_found"),
])
def test_bad_watchlists_are_refused_with_a_reason_and_nothing_is_stored(facefind, arguments, reason):
    with pytest.raises(FaceFindError) as refused:
        facefind.watch_add("bad", **arguments, actor=IVY)
    assert refused.value.reason == reason or (reason == "unreadable" and refused.value.reason in (
        "unreadable", "not_an_image", "corrupt"))
    assert facefind.watch_list(actor=IVY) == []


def test_a_name_is_used_once_and_a_viewer_may_not_create(facefind):
    facefind.watch_add("yao", photos=[probe_sample()], actor=IVY)
    with pytest.raises(FaceFindError, match="exists"):
        facefind.watch_add("yao", photos=[probe_sample()], actor=IVY)
    with pytest.raises(ForbiddenError):
        facefind.watch_add("other", photos=[probe_sample()], actor=Actor("vera", "viewer"))


def test_a_failing_webhook_is_retried_until_it_is_delivered_signed(facefind, photo_folder, fast_retries):
    with webhook_receiver(fail_first=2) as receiver:
        facefind.watch_add("yao", photos=[probe_sample()], webhook_url=receiver.url, webhook_secret=SECRET, actor=IVY)
        facefind.index([photo_folder])  # waits a moment for its webhooks (a one-shot run)
        hit = facefind.watch_hits(actor=IVY).items[0]
        assert [a["signed"] for a in receiver.attempts] == [True, True, True]
        assert len({a["delivery"] for a in receiver.attempts}) == 1  # one delivery, retried
        assert receiver.accepted[0]["hit_id"] == hit.hit_id and receiver.accepted[0]["face_id"] == hit.face_id
        assert receiver.accepted[0]["watchlist"]["name"] == "yao" and receiver.accepted[0]["verdict"] == "strong"
        assert hit.delivery.status == "delivered" and hit.delivery.attempts == 3


def test_a_delivery_that_failed_in_one_run_is_sent_by_a_later_one(facefind, photo_folder, fast_retries, pipeline):
    with webhook_receiver(fail_first=1000) as down:  # the receiver is down for the whole first run
        facefind.watch_add("yao", photos=[probe_sample()], webhook_url=down.url, webhook_secret=SECRET, actor=IVY)
        facefind.index([photo_folder])
        hit = facefind.watch_hits(actor=IVY).items[0]
        assert hit.delivery.status == "pending" and hit.delivery.attempts >= 2 and "500" in hit.delivery.last_error
        port_url = down.url
    with webhook_receiver() as receiver:  # back up: a later run, another process, sends what was left
        later = FaceFind(facefind.library_path)
        later._pipeline = pipeline
        _repoint(later, port_url, receiver.url)
        assert later.watch_deliver(actor=IVY)
        assert [body["hit_id"] for body in receiver.accepted] == [hit.hit_id]
        assert later.watch_hits(actor=IVY).items[0].delivery.status == "delivered"


def _repoint(facefind: FaceFind, old: str, new: str) -> None:
    """The receiver came back on another port: the stored deliveries go to the new address (test plumbing)."""
    from facefind.watchlists.store import deliveries

    store, _ = facefind._watch_store()
    with store.engine.begin() as db:
        db.execute(deliveries.update().where(deliveries.c.url == old).values(url=new))


def test_removed_faces_take_their_hits_with_them(facefind, photo_folder):
    facefind.watch_add("yao", photos=[probe_sample()], actor=IVY)
    facefind.index([photo_folder])
    facefind.remove(photo_folder / "players.jpg")
    assert facefind.watch_hits(actor=IVY).total == 0


def test_a_listed_person_is_watched_through_their_faces(facefind, photo_folder, tmp_path):
    portrait = tmp_path / "portrait"
    portrait.mkdir()
    shutil.copy(probe_sample(), portrait / probe_sample().name)
    ImageOps.mirror(Image.open(probe_sample())).save(portrait / "mirrored.jpg")  # a person needs two faces
    facefind.index([portrait])
    facefind.people_build()
    (person,) = facefind.people_list()
    facefind.watch_add("yao, the person", people=[person.person_id], actor=IVY)
    facefind.index([photo_folder])  # the new face may join the person first: it is never a hit on itself
    hits = facefind.watch_hits(actor=IVY)
    assert hits.total == 1 and hits.items[0].entry == f"person {person.person_id}"
    assert hits.items[0].face_id == _yao_face_id(facefind, photo_folder) and hits.items[0].verdict == "strong"


def test_a_listed_person_who_is_gone_does_not_stop_ingest_or_the_other_entries(facefind, photo_folder):
    facefind.watch_add("yao", photos=[probe_sample()], actor=IVY)
    store, _ = facefind._watch_store()
    reference = store.watchlists()[0].entries[0]
    store.add_watchlist("gone and yao", 1e-5, ["ivy"], [], "ivy", None, None, [  # as if person 999 was erased since
        {"person_id": 999, "label": "person 999"},
        {"embedding": reference.embedding, "probe_sha256": reference.probe_sha256, "quality": "good", "label": "yao"}])
    assert facefind.index([photo_folder]).failed == 0
    assert sorted(hit.watchlist for hit in facefind.watch_hits(actor=IVY).items) == ["gone and yao", "yao"]
