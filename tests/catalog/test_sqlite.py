"""The catalog contract, run against every backend (SQLite today)."""

import dataclasses
import sqlite3

import numpy as np
import pytest

from facefind.catalog import MediaOutcome, NewFace, NewTrack, SqliteCatalog


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


def _video(path: str, seed: int) -> MediaOutcome:
    """Two tracks of two templates each."""
    faces = [dataclasses.replace(_face(i, seed * 10 + i), track_index=i // 2, frame_time_s=float(i)) for i in range(4)]
    tracks = [NewTrack(t, [[0.0, 2.0]], float(2 * t), 3, f"frame{seed}_{t}.jpg") for t in range(2)]
    return MediaOutcome(path=path, status="indexed", sha256=f"v{seed}", kind="video", faces=faces, tracks=tracks)


def test_removing_a_video_face_removes_its_track_and_frame(catalog):
    added = catalog.commit_outcomes([_video("/v.mp4", 3)]).added_ids
    removed, released = catalog.remove_faces([added[1]])  # one template of track 0
    assert removed == added[:2]
    assert sorted(released) == sorted([f"t{30}.jpg", f"t{31}.jpg", "frame3_0.jpg"])
    left = catalog.faces_of_media("/v.mp4")
    assert [f.id for f in left] == added[2:] and {f.track.track_index for f in left} == {1}
    assert catalog.media_by_path("/v.mp4").face_count == 2


def test_removal_scrubs_the_search_log(catalog):
    added = catalog.commit_outcomes([_outcome("/a.jpg", 1), _outcome("/b.jpg", 1, seed=1)]).added_ids
    as_probe = catalog.record_search({"path": "/a.jpg", "sha256": "hash0", "face": {}}, np.ones(512, np.float32),
                                     {}, [(added[0], 0.9), (added[1], 0.2)])
    copy_as_probe = catalog.record_search({"path": "/elsewhere/copy.jpg", "sha256": "hash0", "face": {}},
                                          np.ones(512, np.float32), {}, [(added[1], 0.2)])
    other = catalog.record_search({"path": "/p.jpg", "sha256": "zzz", "face": {}}, np.ones(512, np.float32), {},
                                  [(added[0], 0.9), (added[1], 0.3)])
    catalog.remove_media("/a.jpg")
    for search_id in (as_probe, copy_as_probe):
        probe, embedding, _, _ = catalog.search_result(search_id, 2 if search_id == as_probe else 1)
        assert probe["path"] is None and probe["sha256"] is None and probe["erased"] and embedding.size == 0
    assert catalog.search_result(other, 1) is None  # the removed face's result row is gone
    probe, embedding, face_id, _ = catalog.search_result(other, 2)
    assert probe["path"] == "/p.jpg" and embedding.size == 512 and face_id == added[1]


def test_removed_rows_leave_no_bytes_in_the_file_or_its_log(tmp_path):
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite3")
    outcome = _outcome("/secret/photo.jpg", 2, seed=7)
    catalog.commit_outcomes([outcome, _outcome("/kept.jpg", 1, seed=8)])
    catalog.remove_media("/secret/photo.jpg")
    assert catalog.checkpoint()
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for face in outcome.faces:
        assert face.embedding.tobytes()[:64] not in written
    assert b"/secret/photo.jpg" not in written and b"hash7" not in written
    catalog.close()


def test_integrity_check_finds_a_damaged_sql_index_and_reindex_repairs_it(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    catalog = SqliteCatalog(path)
    catalog.commit_outcomes([_outcome(f"/{i}.jpg", 0, seed=i) for i in range(20)])
    catalog.close()  # checkpoints the WAL into the file
    with sqlite3.connect(path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'media_sha256'").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    at = data.index(b"hash13", start, start + page_size)
    data[at + 5] = ord("9")  # the index now says hash19 where the table says hash13
    path.write_bytes(bytes(data))
    catalog = SqliteCatalog(path)
    assert catalog.integrity_problems()
    catalog.rebuild_sql_indexes()
    assert catalog.integrity_problems() == []
    catalog.close()


def test_a_damaged_embedding_drops_its_files_faces_for_reanalysis(catalog):
    added = catalog.commit_outcomes([_video("/v.mp4", 4), _outcome("/a.jpg", 1, seed=5)]).added_ids
    removed, released = catalog.mark_damaged([added[2]])
    assert removed == added[:4] and len(released) == 6  # 4 crops and 2 track frames
    media = catalog.media_by_path("/v.mp4")
    assert (media.status, media.reason, media.face_count) == ("failed", "damaged_in_catalog", 0)
    assert catalog.media_by_path("/a.jpg").face_count == 1


def test_mark_abandoned_ingests(catalog):
    catalog.start_ingest(["/x"])  # its process was killed
    done = catalog.start_ingest(["/y"])
    catalog.finish_ingest(done, {}, "finished")
    assert catalog.mark_abandoned_ingests() == 1
    assert catalog.stats()["last_ingest"]["status"] == "finished"
    assert catalog.mark_abandoned_ingests() == 0
