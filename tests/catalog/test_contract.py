"""The catalog contract, run against every backend in CATALOG_BACKENDS (SQLite, PostgreSQL)."""

import dataclasses

import numpy as np
import pytest

from facefind.catalog import MediaOutcome, open_catalog
from tests.catalog.conftest import outcome as _outcome
from tests.catalog.conftest import video as _video


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


def test_embeddings_are_stored_in_half_precision_and_the_index_gets_them_as_stored(catalog):
    batch = [_outcome("/a.jpg", 2), _video("/v.mp4", 3)]
    batch[0] = dataclasses.replace(batch[0], faces=[dataclasses.replace(
        face, masked_embedding=face.embedding[::-1].copy()) for face in batch[0].faces])
    result = catalog.commit_outcomes(batch)
    given = np.stack([face.embedding for outcome in batch for face in outcome.faces])
    assert np.array_equal(result.added_vectors, given.astype(np.float16).astype(np.float32))
    assert 0 < np.abs(result.added_vectors - given).max() < 1e-3  # rounded, so index and catalog are identical
    assert np.array_equal(catalog.embeddings(result.added_ids), result.added_vectors)  # no dim given: recorded
    assert np.array_equal(catalog.stored_embeddings(result.added_ids, dim=512)[1], result.added_vectors)
    assert result.added_masked_ids == result.added_ids[:2]
    assert np.array_equal(catalog.embeddings(result.added_masked_ids, masked=True), result.added_masked_vectors)
    ids, vectors = next(catalog.iter_embeddings("m:1", masked=True))
    assert list(ids) == result.added_masked_ids and np.array_equal(vectors, result.added_masked_vectors)


def test_a_path_twice_in_one_batch_ends_as_its_last_outcome(catalog):
    result = catalog.commit_outcomes([_outcome("/a.jpg", 2), _outcome("/b.jpg", 1, seed=2),
                                      _outcome("/a.jpg", 1, seed=5)])
    assert sorted(result.removed_ids) == result.added_ids[:2]
    assert [f.id for f in catalog.faces_of_media("/a.jpg")] == result.added_ids[3:]
    assert catalog.media_by_path("/a.jpg").sha256 == "hash5" and catalog.stats()["faces"] == 2


def test_a_removed_face_id_is_never_given_again(catalog):
    """Search logs, audit entries and evidence name faces by id: a new face must not take an erased one's."""
    first = catalog.commit_outcomes([_outcome("/a.jpg", 3)])
    catalog.remove_media("/a.jpg")
    second = catalog.commit_outcomes([_outcome("/b.jpg", 2, seed=1), _video("/v.mp4", 2)])
    assert min(second.added_ids) > max(first.added_ids)
    assert len(set(second.added_ids)) == 6


def test_a_failing_batch_commits_nothing(catalog):
    catalog.commit_outcomes([_outcome("/kept.jpg", 1)])
    revision = catalog.revision()
    broken = MediaOutcome(path="/broken.jpg", status="indexed", faces=[None])  # fails after /new.jpg was written
    with pytest.raises(Exception):
        catalog.commit_outcomes([_outcome("/new.jpg", 2, seed=3), broken])
    assert catalog.media_by_path("/new.jpg") is None and catalog.revision() == revision
    assert catalog.stats()["faces"] == 1


def test_revision_moves_with_every_change_to_faces(catalog):
    start = catalog.revision()
    catalog.commit_outcomes([_outcome("/a.jpg", 1)])
    after_add = catalog.revision()
    catalog.commit_outcomes([_outcome("/n.jpg", 0)])
    assert catalog.revision() == after_add  # no faces changed
    catalog.remove_media("/a.jpg")
    assert start < after_add < catalog.revision()


def test_meta_values_are_kept_and_replaced(catalog):
    assert catalog.get_meta("model_id") is None
    catalog.set_meta("model_id", "m:1")
    catalog.set_meta("model_id", "m:2")
    assert catalog.get_meta("model_id") == "m:2"


def test_recommitting_a_path_replaces_its_faces(catalog):
    first = catalog.commit_outcomes([_outcome("/a.jpg", 2)])
    second = catalog.commit_outcomes([_outcome("/a.jpg", 1, seed=5)])
    assert sorted(second.removed_ids) == sorted(first.added_ids)
    assert len(catalog.faces_of_media("/a.jpg")) == 1
    assert set(second.released_thumbnails) == {"t0.jpg", "t1.jpg"}  # the new face's crop is t50.jpg
    assert catalog.pending_deletions() == ["t0.jpg", "t1.jpg"]
    catalog.deletions_done(["t0.jpg", "t1.jpg"])
    assert catalog.pending_deletions() == []
    assert catalog.referenced_thumbnails() == {"t50.jpg"}


def test_remove_folder_removes_only_what_is_inside(catalog):
    catalog.commit_outcomes([_outcome("/x/a.jpg", 1), _outcome("/x/sub/b.jpg", 1, 1), _outcome("/x_other.jpg", 1, 2)])
    assert len(catalog.face_ids_under("/x")) == 2
    ids, thumbs, files = catalog.remove_media("/x")
    assert files == 2 and len(ids) == 2 and len(thumbs) == 2
    assert catalog.media_by_path("/x_other.jpg") is not None


def test_remove_single_faces_updates_counts(catalog):
    added = catalog.commit_outcomes([_outcome("/a.jpg", 3)]).added_ids
    catalog.remove_faces(added[:2])
    assert catalog.media_by_path("/a.jpg").face_count == 1
    assert set(catalog.faces(added)) == {added[2]}
    assert catalog.fingerprint("m:1") == (1, added[2])
    assert catalog.fingerprint("m:1", excluding=[added[2]]) == (0, 0)


def test_faces_come_back_with_where_they_were_found(catalog):
    added = catalog.commit_outcomes([_outcome("/b.jpg", 1, seed=2), _outcome("/a.jpg", 2)]).added_ids
    record = catalog.faces([added[0]])[added[0]]
    assert (record.path, record.sha256, record.media_width, record.box) == ("/b.jpg", "hash2", 100, [1, 2, 30, 40])
    assert record.quality == {"verdict": "good"} and record.track is None
    assert [f.path for f in catalog.iter_faces()] == ["/a.jpg", "/a.jpg", "/b.jpg"]
    found, vectors = catalog.stored_embeddings([added[2], 10_000, added[0]], dim=512)
    assert list(found) == [added[2], added[0]] and vectors.shape == (2, 512)


def test_stats_count_reasons(catalog):
    bad = MediaOutcome(path="/bad.jpg", status="failed", reason="corrupt", message="cut short")
    catalog.commit_outcomes([_outcome("/a.jpg", 2), bad, _outcome("/n.jpg", 0)])
    stats = catalog.stats()
    assert stats["files"] == 3 and stats["faces"] == 2
    assert stats["unindexed_by_reason"] == {"corrupt": 1, "no_face": 1}
    assert stats["faces_by_quality"] == {"good": 2}
    page, total = catalog.list_media("failed", 0, 10)
    assert total == 1 and [m.path for m in page] == ["/bad.jpg"]


def test_searches_are_logged_with_ranked_results(catalog):
    added = catalog.commit_outcomes([_outcome("/a.jpg", 2)]).added_ids
    search_id = catalog.record_search({"path": "/p.jpg"}, np.ones(512, np.float32), {"top_k": 2},
                                      [(added[1], 0.8), (added[0], 0.5)])
    probe, embedding, face_id, score = catalog.search_result(search_id, 1)
    assert probe == {"path": "/p.jpg"} and face_id == added[1] and score == pytest.approx(0.8)
    assert catalog.search_result(search_id, 3) is None
    assert catalog.stats()["searches"] == 1
    entries, total = catalog.list_searches(0, 10)
    assert total == 1 and entries[0][0] == search_id and entries[0][4] == 2
    _, _, params, results = catalog.search_log_entry(search_id)
    assert params == {"top_k": 2} and [r[1] for r in results] == [added[1], added[0]]


def test_forgotten_probes_keep_no_vector_or_results(catalog):
    added = catalog.commit_outcomes([_outcome("/a.jpg", 1)]).added_ids
    search_id = catalog.record_search({"path": "/p.jpg", "sha256": "s"}, np.ones(512, np.float32), {}, [(added[0], 0.9)])
    assert catalog.probe_embeddings()[0] == [search_id]
    catalog.forget_search_probes([search_id])
    assert catalog.probe_embeddings()[0] == [] and catalog.search_result(search_id, 1) is None
    assert catalog.search_log_entry(search_id)[1]["erased"] is True


def test_blocked_templates_are_kept_per_model(catalog):
    template = np.ones(512, np.float32) / np.sqrt(512)
    catalog.block_template("m:1", template, 0.4)
    templates, thresholds = catalog.blocked_templates("m:1")
    assert np.allclose(templates, [template]) and thresholds.tolist() == pytest.approx([0.4])
    assert len(catalog.blocked_templates("m:2")[0]) == 0


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


def test_removal_leaves_the_file_name_nowhere_in_the_ingest_log(catalog):
    ingest = catalog.start_ingest(["/secret.jpg", "/kept"])
    catalog.finish_ingest(ingest, {}, "finished")
    catalog.commit_outcomes([_outcome("/secret.jpg", 1)])
    catalog.remove_media("/secret.jpg")
    assert catalog.checkpoint()
    assert "/secret.jpg" not in str(catalog.stats()["last_ingest"])


def test_a_damaged_embedding_drops_its_files_faces_for_reanalysis(catalog):
    added = catalog.commit_outcomes([_video("/v.mp4", 4), _outcome("/a.jpg", 1, seed=5)]).added_ids
    removed, released = catalog.mark_damaged([added[2]])
    assert removed == added[:4] and len(released) == 6  # 4 crops and 2 track frames
    media = catalog.media_by_path("/v.mp4")
    assert (media.status, media.reason, media.face_count) == ("failed", "damaged_in_catalog", 0)
    assert catalog.media_by_path("/a.jpg").face_count == 1


def test_a_sound_catalog_has_no_integrity_problems(catalog):
    catalog.commit_outcomes([_video("/v.mp4", 4), _outcome("/a.jpg", 1, seed=5)])
    assert catalog.integrity_problems() == []
    catalog.rebuild_sql_indexes()
    assert catalog.integrity_problems() == []


def test_mark_abandoned_ingests(catalog, catalog_spec):
    killed = open_catalog(catalog_spec)
    killed.start_ingest(["/x"])
    killed.close()  # its process was killed: it never finished the ingest
    done = catalog.start_ingest(["/y"])
    catalog.finish_ingest(done, {}, "finished")
    assert catalog.mark_abandoned_ingests() == 1
    assert catalog.stats()["last_ingest"]["status"] == "finished"
    assert catalog.mark_abandoned_ingests() == 0
