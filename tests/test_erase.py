"""Erasing a person: no byte of their faces, crops, probes or only-theirs files is left; an opt-out keeps them out."""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facefind.errors import FaceFindError
from facefind.samples import probe_sample
from tests.conftest import PURPOSE
from tests.test_erasure import audit_crops


def _library_bytes(library: Path) -> bytes:
    """Every file of the library, the audit log and its anchors included."""
    return b"".join(path.read_bytes() for path in sorted(library.rglob("*")) if path.is_file())


def _traces(facefind, face_ids: list[int], solo: Path) -> dict[str, bytes]:
    """Byte patterns of the person: stored vectors, crops, probe vectors of searches for them, the solo photo."""
    library = facefind.library_path
    with sqlite3.connect(library / "catalog.sqlite3") as db:
        marks = ",".join("?" * len(face_ids))
        faces = db.execute(f"SELECT id, embedding, masked_embedding, thumbnail FROM faces WHERE id IN ({marks})",
                           face_ids).fetchall()
        probes = db.execute("SELECT id, embedding FROM searches").fetchall()
    traces = {}
    for face_id, embedding, masked, thumbnail in faces:
        traces[f"face {face_id} embedding"] = embedding[:64]
        if masked:
            traces[f"face {face_id} masked"] = masked[:64]
        crop = (library / "thumbs" / thumbnail).read_bytes()
        traces[f"face {face_id} crop"] = crop[len(crop) // 2: len(crop) // 2 + 64]  # past the common JPEG header
    traces.update({f"search {search_id} probe": blob[:64] for search_id, blob in probes})
    traces["solo path"] = str(solo).encode()
    traces["solo sha256"] = hashlib.sha256(solo.read_bytes()).hexdigest().encode()
    return traces


@pytest.fixture
def with_solo_photo(photo_folder: Path) -> Path:
    """The sample folder plus a photo of only the person to erase (the probe, mirrored: other bytes)."""
    Image.open(probe_sample()).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photo_folder / "solo.jpg", quality=95)
    return photo_folder / "solo.jpg"


@pytest.mark.parametrize("opt_out", [False, True])
def test_an_erased_person_leaves_no_trace_and_an_opt_out_keeps_them_out(opt_out, facefind, photo_folder,
                                                                         with_solo_photo):
    solo = with_solo_photo
    facefind.index([photo_folder], workers=1)
    searches = []
    for probe in (probe_sample(), probe_sample(), solo):  # search and audit logs now hold their probes
        searches.append(facefind.search(probe, purpose=PURPOSE))
        assert searches[-1].matches
    others = facefind.search(photo_folder / "gdp.jpg", purpose=PURPOSE, show_all=True)  # someone else's search

    plan = facefind.erasure_plan(probe_sample())
    found = {Path(c.path).name for c in plan.candidates}
    assert found == {"players.jpg", "solo.jpg"}, found  # their faces, and no one of gdp.jpg
    traces = _traces(facefind, [c.face_id for c in plan.candidates], solo)
    theirs = [key for key in traces if key.startswith("search") and not key.endswith(f"{others.search_id} probe")]
    for key in [k for k in traces if k.startswith("search") and k not in theirs]:
        del traces[key]  # the search for someone else keeps its probe
    traces.update(audit_crops(facefind, {s.search_id for s in searches}))
    template = plan.probe_face.embedding.astype(np.float32).tobytes()[:64]
    before = _library_bytes(facefind.library_path)
    assert all(pattern in before for pattern in traces.values())  # the scan can see them

    report = facefind.erase_person(plan, opt_out=opt_out)

    assert report.faces_removed == len(plan.candidates) and report.files_forgotten == 1
    assert report.searches_scrubbed == 3
    after = _library_bytes(facefind.library_path)
    left = [name for name, pattern in traces.items()
            if pattern in after and not (opt_out and pattern == template)]
    assert left == [], f"still in the library after erasure: {left}"
    assert after.count(template) == (1 if opt_out else 0)  # the block list's one template, only when opted out
    assert not facefind.search(probe_sample(), purpose=PURPOSE).matches
    assert facefind.search(photo_folder / "gdp.jpg", purpose=PURPOSE).matches  # everyone else is still there
    assert facefind.check().healthy
    erasures = [e for e in facefind.audit_log.entries() if e["action"] == "erase"]
    assert len(erasures) == 1 and json.loads(erasures[0]["details"])["faces_removed"] == report.faces_removed
    verdict = facefind.audit_verify()  # their 3 searches, and someone else's whose results showed them
    assert verdict.intact and verdict.redacted == 4, verdict.problem
    assert json.loads(erasures[0]["details"])["redacted_entries"] == [
        e["id"] for e in facefind.audit_log.select() if e["payload"] == "redacted"]

    shutil.copy(photo_folder / "players.jpg", photo_folder / "players-again.jpg")  # a new photo with them in it
    again = facefind.index([photo_folder], workers=1)
    if opt_out:
        assert again.opted_out == 2  # the solo photo and their face in the new copy, never stored
        assert facefind.media_item(str(solo)).reason == "opted_out"
        assert facefind.stats()["unindexed_by_reason"] == {"opted_out": 1}
        assert not facefind.search(probe_sample(), purpose=PURPOSE).matches
        copy = facefind.faces(photo_folder / "players-again.jpg")
        assert copy.indexed and len(copy.faces) == len(facefind.faces(photo_folder / "players.jpg").faces)
    else:
        assert again.opted_out == 0 and len(facefind.search(probe_sample(), purpose=PURPOSE).matches) == 2


def test_erasure_is_an_admins_and_refuses_a_probe_without_a_face(facefind, photo_folder, tmp_path):
    from facefind.access import Actor

    facefind.index([photo_folder], workers=1)
    with pytest.raises(FaceFindError) as refused:
        facefind.erasure_plan(probe_sample(), actor=Actor("ivy", "investigator"))
    assert refused.value.reason == "forbidden"
    wall = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (90, 90, 90)).save(wall)
    with pytest.raises(FaceFindError) as no_face:
        facefind.erasure_plan(wall)
    assert no_face.value.reason == "no_face"


def test_erasing_a_person_in_a_video_takes_their_tracks_and_boxed_frames(facefind, clip_with_a_cut):
    folder = clip_with_a_cut.parent
    facefind.index([clip_with_a_cut], workers=1)
    thumbs = facefind.library_path / "thumbs"
    stored = {path for path in thumbs.rglob("*") if path.is_file()}
    assert len(facefind.faces(clip_with_a_cut).faces) >= 2 and stored

    report = facefind.erase_person(facefind.erasure_plan(probe_sample()), opt_out=True)

    assert report.files_forgotten == 1  # only they were in it
    assert not [path for path in thumbs.rglob("*") if path.is_file()]  # crops and boxed frames are gone
    assert facefind.stats()["faces"] == 0 and facefind.check().healthy
    shutil.copy(clip_with_a_cut, folder / "clip-again.mp4")
    again = facefind.index([clip_with_a_cut, folder / "clip-again.mp4"], workers=1)
    assert again.opted_out >= 2 and again.faces_added == 0
    assert not [path for path in thumbs.rglob("*") if path.is_file()]  # not even a crop was written
