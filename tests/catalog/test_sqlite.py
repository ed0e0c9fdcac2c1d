"""The catalog contract, run against every backend (SQLite today)."""

import numpy as np
import pytest

from facefind.catalog import MediaOutcome, NewFace, SqliteCatalog


@pytest.fixture(params=["sqlite"])
def catalog(request, tmp_path):
    instance = SqliteCatalog(tmp_path / "catalog.sqlite3")
    yield instance
    instance.close()


def _face(index: int, seed: int) -> NewFace:
    vector = np.random.default_rng(seed).normal(size=512).astype(np.float32)
    return NewFace(
        face_index=index, box=[1, 2, 30, 40], landmarks=[[5, 5]] * 5, detection_score=0.9,
        quality={"verdict": "good"}, model_id="m:1", embedding=vector / np.linalg.norm(vector), thumbnail=f"t{seed}.jpg",
    )


def _outcome(path: str, faces: int, seed: int = 0) -> MediaOutcome:
    return MediaOutcome(
        path=path, status="indexed" if faces else "no_face", reason=None if faces else "no_face", sha256=f"hash{seed}", size=10, mtime_ns=1,
        width=100, height=80, faces=[_face(i, seed * 10 + i) for i in range(faces)],
    )


def test_commit_stores_media_faces_and_embeddings(catalog):
    result = catalog.commit_outcomes([_outcome("/a.jpg", 2), _outcome("/b.jpg", 0, seed=1)])
    assert len(result.added_ids) == 2 and result.added_vectors.shape == (2, 512)
    assert catalog.media_by_path("/a.jpg").face_count == 2
    assert catalog.media_by_path("/b.jpg").status == "no_face"
    stored = catalog.embeddings(result.added_ids[::-1])
    assert np.allclose(stored, result.added_vectors[::-1])
    with pytest.raises(KeyError):
        catalog.embeddings([999])
    ids, vectors = next(catalog.iter_embeddings("m:1"))
    assert list(ids) == result.added_ids


def test_revision_moves_with_every_change_to_faces(catalog):
    start = catalog.revision()
    catalog.commit_outcomes([_outcome("/a.jpg", 1)])
    after_add = catalog.revision()
    catalog.commit_outcomes([_outcome("/n.jpg", 0)])
    assert catalog.revision() == after_add  # no faces changed
    catalog.remove_media("/a.jpg")
    assert start < after_add < catalog.revision()


def test_recommitting_a_path_replaces_its_faces(catalog):
    first = catalog.commit_outcomes([_outcome("/a.jpg", 2)])
    second = catalog.commit_outcomes([_outcome("/a.jpg", 1, seed=5)])
    assert sorted(second.removed_ids) == sorted(first.added_ids)
    assert len(catalog.faces_of_media("/a.jpg")) == 1


def test_remove_folder_removes_only_what_is_inside(catalog):
    catalog.commit_outcomes([_outcome("/x/a.jpg", 1), _outcome("/x/sub/b.jpg", 1, 1), _outcome("/x_other.jpg", 1, 2)])
    ids, thumbs, files = catalog.remove_media("/x")
    assert files == 2 and len(ids) == 2 and len(thumbs) == 2
    assert catalog.media_by_path("/x_other.jpg") is not None


def test_remove_single_faces_updates_counts(catalog):
    added = catalog.commit_outcomes([_outcome("/a.jpg", 3)]).added_ids
    catalog.remove_faces(added[:2])
    assert catalog.media_by_path("/a.jpg").face_count == 1
    assert set(catalog.faces(added)) == {added[2]}


def test_stats_count_reasons(catalog):
    bad = MediaOutcome(path="/bad.jpg", status="failed", reason="corrupt", message="cut short")
    catalog.commit_outcomes([_outcome("/a.jpg", 2), bad, _outcome("/n.jpg", 0)])
    stats = catalog.stats()
    assert stats["files"] == 3 and stats["faces"] == 2
    assert stats["unindexed_by_reason"] == {"corrupt": 1, "no_face": 1}


def test_searches_are_logged_with_ranked_results(catalog):
    added = catalog.commit_outcomes([_outcome("/a.jpg", 2)]).added_ids
    search_id = catalog.record_search({"path": "/p.jpg"}, np.ones(512, np.float32), {"top_k": 2},
                                      [(added[1], 0.8), (added[0], 0.5)])
    probe, embedding, face_id, score = catalog.search_result(search_id, 1)
    assert probe == {"path": "/p.jpg"} and face_id == added[1] and score == pytest.approx(0.8)
    assert catalog.search_result(search_id, 3) is None
    assert catalog.stats()["searches"] == 1
