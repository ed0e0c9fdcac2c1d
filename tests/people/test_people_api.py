"""People through the library API (FaceFind): build, constraints, manual decisions that survive re-runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from facefind.access import Actor, ForbiddenError
from facefind.api import FaceFind
from facefind.errors import FaceFindError
from facefind.pipeline import FacePipeline
from facefind.samples import probe_sample
from tests.conftest import PURPOSE
from tests.people.conftest import portrait


@pytest.fixture
def people(indexed: Path, tmp_path: Path, pipeline: FacePipeline) -> FaceFind:
    """A copy of the indexed library, people built."""
    shutil.copytree(indexed / "library", tmp_path / "library")
    facefind = FaceFind(tmp_path / "library")
    facefind._pipeline = pipeline
    facefind.people_build()
    return facefind


def person_of(facefind: FaceFind, file_name: str, face_index: int = 0) -> int | None:
    for summary in facefind.people_list(include_hidden=True):
        for face in facefind.person(summary.person_id).face_list:
            if Path(face.source.path).name == file_name and face.face.face_index == face_index:
                return summary.person_id
    return None


def face_id_of(facefind: FaceFind, folder: Path, file_name: str, face_index: int = 0) -> int:
    faces = facefind.faces(folder / file_name).faces
    return next(f.face_id for f in faces if f.face_index == face_index)


def test_build_joins_one_person_across_photos_but_never_two_faces_of_one_photo(people: FaceFind) -> None:
    listed = people.people_list()
    assert listed and all(p.faces >= 2 for p in listed)
    for summary in listed:
        files = [face.source.path for face in people.person(summary.person_id).face_list]
        assert len(files) == len(set(files)), f"person {summary.person_id} holds two faces of one photo"
    assert person_of(people, "twice.jpg", 0) != person_of(people, "twice.jpg", 1)
    portrait_person = person_of(people, "yaoming.jpg")
    assert portrait_person is not None
    in_team = [f for f in people.person(portrait_person).face_list if Path(f.source.path).name == "players.jpg"]
    assert len(in_team) == 1  # the portrait's player is found in the team photo
    summary = next(p for p in listed if p.person_id == portrait_person)
    assert summary.cohesion is not None and summary.cohesion.fmr <= 1e-5
    assert summary.nearest is not None  # the mirror-image person: the risky merge a user should see


def test_merging_two_faces_of_one_photo_is_refused(people: FaceFind) -> None:
    first, second = person_of(people, "twice.jpg", 0), person_of(people, "twice.jpg", 1)
    with pytest.raises(FaceFindError) as refused:
        people.person_merge(first, [second])
    assert refused.value.reason == "people_conflict" and "one photo" in str(refused.value)
    assert person_of(people, "twice.jpg", 0) == first  # nothing changed


def test_name_split_and_merge_survive_an_incremental_update_and_a_rebuild(
        people: FaceFind, indexed: Path, tmp_path: Path) -> None:
    photos = indexed / "photos"
    yao = person_of(people, "yaoming.jpg")
    mirror = person_of(people, "yaoming_mirror.jpg")
    team_face = face_id_of(people, photos, "players.jpg", next(
        f.face.face_index for f in people.person(yao).face_list if Path(f.source.path).name == "players.jpg"))
    people.person_rename(yao, "Yao Ming")
    people.person_merge(yao, [people.person_split(yao, [team_face])[1]])  # split off, then merged back
    people.people_build()
    assert team_face in {f.face.face_id for f in people.person(yao).face_list}
    split_off = people.person_split(yao, [team_face])[1]
    newer = tmp_path / "newer"
    newer.mkdir()
    portrait().resize((portrait().width * 3 // 4, portrait().height * 3 // 4)).save(newer / "smaller.jpg", quality=80)
    people.index([newer], workers=1)  # the new face is assigned by the incremental update
    new_person = person_of(people, "smaller.jpg")
    assert new_person in {yao, split_off, mirror}
    for run in ("incremental", "rebuild"):
        assert people.person(yao).name == "Yao Ming", run
        assert team_face not in {f.face.face_id for f in people.person(yao).face_list}, run
        assert team_face in {f.face.face_id for f in people.person(split_off).face_list}, run
        people.people_build()


def test_not_this_person_is_honoured_by_every_later_run(people: FaceFind, indexed: Path) -> None:
    yao = person_of(people, "yaoming.jpg")
    portrait_face = face_id_of(people, indexed / "photos", "yaoming.jpg")
    people.face_not_person(portrait_face, yao)
    assert portrait_face not in {f.face.face_id for f in people.person(yao).face_list}
    people.people_build()
    assert person_of(people, "yaoming.jpg") != yao
    people.face_move(portrait_face, yao)  # the person's own decision undoes it
    assert person_of(people, "yaoming.jpg") == yao


def test_removed_faces_leave_their_person_and_search_names_the_person(people: FaceFind, indexed: Path) -> None:
    yao = person_of(people, "yaoming.jpg")
    people.person_rename(yao, "Yao Ming")
    result = people.search(probe_sample(), purpose=PURPOSE)
    named = [m.person for m in result.matches if m.person is not None]
    assert named and named[0].person_id == yao and named[0].name == "Yao Ming" and named[0].photos >= 2
    people.remove(path=indexed / "photos" / "yaoming.jpg")
    assert person_of(people, "yaoming.jpg") is None
    assert people.person(yao).faces >= 1


def test_coappearance_and_graph_export(people: FaceFind) -> None:
    first, second = person_of(people, "twice.jpg", 0), person_of(people, "twice.jpg", 1)
    seen = people.person_coappearance(first)
    together = next(c for c in seen if c.person_id == second)
    assert any(path.endswith("twice.jpg") for path in together.photos) and together.count >= 1
    graph = json.loads(people.people_export("json"))
    assert {(link["source"], link["target"]) for link in graph["links"]} & {(first, second), (second, first)}
    assert "<graphml" in people.people_export("graphml")
    with pytest.raises(FaceFindError):
        people.people_export("csv")


def test_viewers_read_people_but_cannot_change_them_and_changes_are_audited(people: FaceFind) -> None:
    viewer = Actor("vera", "viewer")
    person_id = people.people_list(actor=viewer)[0].person_id
    with pytest.raises(ForbiddenError):
        people.person_rename(person_id, "Someone", actor=viewer)
    people.person_hide(person_id)
    assert person_id not in {p.person_id for p in people.people_list()}
    assert person_id in {p.person_id for p in people.people_list(include_hidden=True)}
    actions = [json.loads(line)["action"] for line in people.audit_export(None).splitlines()]
    assert {"people_build", "person_hide", "denied"} <= set(actions)


def test_an_erased_person_leaves_the_people_view_name_and_all(people: FaceFind) -> None:
    yao = person_of(people, "yaoming.jpg")
    people.person_rename(yao, "Yao Ming")
    plan = people.erasure_plan(probe_sample())
    erased = {candidate.face_id for candidate in plan.candidates}
    assert erased
    people.erase_person(plan)
    remaining = {f.face.face_id for p in people.people_list(include_hidden=True)
                 for f in people.person(p.person_id).face_list}
    assert not remaining & erased
    assert not people._people_store().assignments(erased)  # no row of the people store names them
    assert "Yao Ming" not in {p.name for p in people.people_list(include_hidden=True)}


def test_an_actor_limited_to_collections_sees_only_people_with_faces_there(
        people: FaceFind, indexed: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    people.set_collection("elsewhere", [tmp_path / "elsewhere"])
    people.set_collection("photos", [indexed / "photos"])
    outsider = Actor("olga", "investigator", collections=frozenset({"elsewhere"}))
    insider = Actor("ida", "investigator", collections=frozenset({"photos"}))
    yao = person_of(people, "yaoming.jpg")
    assert people.people_list(actor=outsider) == []
    with pytest.raises(FaceFindError):
        people.person(yao, actor=outsider)
    with pytest.raises(FaceFindError):
        people.person_rename(yao, "Guess", actor=outsider)
    assert yao in {p.person_id for p in people.people_list(actor=insider)}


def test_recluster_one_person_keeps_every_face_and_confirms_the_result(people: FaceFind) -> None:
    yao = person_of(people, "yaoming.jpg")
    before = {f.face.face_id for f in people.person(yao).face_list}
    parts = people.person_split(yao)  # no faces named: re-cluster at a 10x stricter FMR
    assert parts[0] == yao
    after = [people.person(p) for p in parts]
    assert {f.face.face_id for p in after for f in p.face_list} == before
    assert all(f.assigned_by == "manual" for p in after for f in p.face_list)
