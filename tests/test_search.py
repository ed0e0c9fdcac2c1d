from pathlib import Path

import pytest

from facefind.errors import FaceFindError, NoFaceError, NotFoundError
from facefind.samples import probe_sample


def test_sample_probe_finds_the_same_player_in_the_team_photo(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    result = facefind.search(probe_sample())
    assert result.matches, "the player should be found"
    best = result.matches[0]
    assert Path(best.source.path).name == "players.jpg"
    assert best.similarity > 0.5
    assert best.match_id == f"{result.search_id}-1"
    assert Path(best.face.thumbnail).is_file()
    assert best.source.sha256 and len(best.source.sha256) == 64
    # nobody else in the gallery comes close to the true match
    assert all(m.similarity < best.similarity - 0.2 for m in result.matches[1:])


def test_top_k_and_min_similarity(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    everything = facefind.search(probe_sample(), top_k=50, min_similarity=-1.0)
    assert len(everything.matches) == everything.gallery_size
    assert [m.rank for m in everything.matches] == list(range(1, everything.gallery_size + 1))
    sims = [m.similarity for m in everything.matches]
    assert sims == sorted(sims, reverse=True)
    assert len(facefind.search(probe_sample(), top_k=3, min_similarity=-1.0).matches) == 3


def test_probe_without_a_face_is_a_clear_error(facefind, tmp_path):
    from PIL import Image

    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (200, 200, 200)).save(blank)
    with pytest.raises(NoFaceError, match="no face found"):
        facefind.search(blank)


def test_missing_probe_and_bad_face_index(facefind, photo_folder):
    with pytest.raises(NotFoundError):
        facefind.search(Path("/nonexistent/probe.jpg"))
    with pytest.raises(FaceFindError, match="out of range"):
        facefind.search(probe_sample(), face=3)


def test_search_accepts_bytes(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    result = facefind.search(probe_sample().read_bytes())
    assert result.probe_path is None and result.matches


def test_verify_same_and_different(facefind, photo_folder):
    same = facefind.verify(probe_sample(), photo_folder / "players.jpg", face_b=_yao_index(facefind, photo_folder))
    assert same.same_person and same.similarity > 0.5
    different = facefind.verify(photo_folder / "gdp.jpg", photo_folder / "gdp.jpg", face_a=0, face_b=1)
    assert not different.same_person


def _yao_index(facefind, folder) -> int:
    facefind.index([folder], workers=1)
    best = facefind.search(probe_sample()).matches[0]
    return best.face.face_index


def test_faces_of_indexed_and_unindexed_files(facefind, photo_folder):
    live = facefind.faces(photo_folder / "gdp.jpg")
    assert not live.indexed and len(live.faces) == 5
    facefind.index([photo_folder], workers=1)
    stored = facefind.faces(photo_folder / "gdp.jpg")
    assert stored.indexed and [f.face_id is not None for f in stored.faces] == [True] * 5


def test_remove_file_and_single_face(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    before = facefind.stats()["faces"]
    removed = facefind.remove(photo_folder / "gdp.jpg")
    assert removed == 5
    assert facefind.stats()["index_size"] == before - 5
    best = facefind.search(probe_sample()).matches[0]
    assert facefind.remove(face_ids=[best.face.face_id]) == 1
    assert all(m.face.face_id != best.face.face_id for m in facefind.search(probe_sample(), min_similarity=-1).matches)
    assert not Path(best.face.thumbnail).exists()
    with pytest.raises(NotFoundError):
        facefind.remove(photo_folder / "gdp.jpg")


@pytest.mark.shared_data
def test_named_people_every_probe_face_finds_its_person_at_rank_1(tmp_path, pipeline, data_dir):
    from facefind.api import FaceFind

    facefind = FaceFind(tmp_path / "lib")
    facefind._pipeline = pipeline
    people = data_dir / "named_people"
    report = facefind.index([people / "train"], workers=1)
    assert report.failed == 0
    expected = {
        "alex_lacamoire1.jpg": {"alex_lacamoire"},
        "johnsnow_test1.jpg": {"kit_harington"},
        "obama1.jpg": {"obama"},
        "kit_with_rose.jpg": {"kit_harington", "rose_leslie"},
        "obama_and_biden.jpg": {"obama", "biden"},
    }
    for probe_name, identities in expected.items():
        found = set()
        for face in range(len(identities)):  # the largest faces are the named people
            result = facefind.search(people / "probes" / probe_name, face=face)
            assert result.matches, f"{probe_name} face {face}: no match"
            found.add(Path(result.matches[0].source.path).parent.name)
        assert found == identities, probe_name
