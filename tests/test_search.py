from pathlib import Path

import pytest

from facefind.errors import FaceFindError, NoFaceError, NotFoundError
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def test_sample_probe_finds_the_same_player_in_the_team_photo(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    result = facefind.search(probe_sample(), purpose=PURPOSE)
    assert result.matches, "the player should be found"
    best = result.matches[0]
    assert Path(best.source.path).name == "players.jpg"
    assert best.similarity > 0.5
    assert best.match_id == f"{result.search_id}-1"
    assert Path(best.face.thumbnail).is_file()
    assert best.source.sha256 and len(best.source.sha256) == 64
    # nobody else in the gallery comes close to the true match
    assert all(m.similarity < best.similarity - 0.2 for m in result.matches[1:])


def test_top_k_and_show_all(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    everything = facefind.search(probe_sample(), top_k=50, show_all=True, purpose=PURPOSE)
    assert len(everything.matches) == everything.gallery_size
    assert [m.rank for m in everything.matches] == list(range(1, everything.gallery_size + 1))
    sims = [m.similarity for m in everything.matches]
    assert sims == sorted(sims, reverse=True)
    assert len(facefind.search(probe_sample(), top_k=3, show_all=True, purpose=PURPOSE).matches) == 3


def test_probe_without_a_face_is_a_clear_error(facefind, tmp_path):
    from PIL import Image

    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (200, 200, 200)).save(blank)
    with pytest.raises(NoFaceError, match="no face found"):
        facefind.search(blank, purpose=PURPOSE)


def test_missing_probe_and_bad_face_index(facefind, photo_folder):
    with pytest.raises(NotFoundError):
        facefind.search(Path("/nonexistent/probe.jpg"), purpose=PURPOSE)
    with pytest.raises(FaceFindError, match="out of range"):
        facefind.search(probe_sample(), face=3, purpose=PURPOSE)


def test_search_accepts_bytes(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    result = facefind.search(probe_sample().read_bytes(), purpose=PURPOSE)
    assert result.probe_path is None and result.matches


def test_verify_same_and_different(facefind, photo_folder):
    same = facefind.verify(probe_sample(), photo_folder / "players.jpg", face_b=_yao_index(facefind, photo_folder), purpose=PURPOSE)
    assert same.same_person and same.similarity > 0.5 and same.verdict == "strong"
    different = facefind.verify(photo_folder / "gdp.jpg", photo_folder / "gdp.jpg", face_a=0, face_b=1, purpose=PURPOSE)
    assert not different.same_person and different.fmr > 1e-3


def _yao_index(facefind, folder) -> int:
    facefind.index([folder], workers=1)
    best = facefind.search(probe_sample(), purpose=PURPOSE).matches[0]
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
    best = facefind.search(probe_sample(), purpose=PURPOSE).matches[0]
    assert facefind.remove(face_ids=[best.face.face_id]) == 1
    assert all(m.face.face_id != best.face.face_id for m in facefind.search(probe_sample(), show_all=True, purpose=PURPOSE).matches)
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
            result = facefind.search(people / "probes" / probe_name, face=face, purpose=PURPOSE)
            assert result.matches, f"{probe_name} face {face}: no match"
            found.add(Path(result.matches[0].source.path).parent.name)
        assert found == identities, probe_name


def test_matches_carry_calibrated_evidence(facefind, photo_folder):
    facefind.index([photo_folder], workers=1)
    result = facefind.search(probe_sample(), purpose=PURPOSE)
    best = result.matches[0]
    assert best.verdict == "strong" and best.within_limits
    assert best.fmr <= 1e-5 and best.fmr_text.startswith(("1 in", "< 1 in"))
    assert best.expected_false_matches == pytest.approx(result.gallery_size * best.fmr, rel=0.01)
    assert result.probe_assessment.supports_identification
    # the pair is scored with the table of its poorer face (good: standard; fair: fair)
    assert {result.probe_assessment.calibration_table, best.calibration_table} <= {"standard", "fair"}
    low, high = best.fmr_interval
    assert low <= high == best.fmr or best.fmr_is_bound


def test_a_stranger_gets_no_match_by_default(facefind, photo_folder, tmp_path):
    only_team = tmp_path / "team"
    only_team.mkdir()
    (only_team / "players.jpg").write_bytes((photo_folder / "players.jpg").read_bytes())
    facefind.index([only_team], workers=1)
    stranger = photo_folder / "gdp.jpg"  # three other players, not in the team photo
    assert facefind.search(stranger, purpose=PURPOSE).matches == []
    candidates = facefind.search(stranger, show_all=True, top_k=5, purpose=PURPOSE).matches
    assert len(candidates) == 5
    assert not any(m.within_limits for m in candidates)
    assert all(m.verdict in ("weak", "not a match") for m in candidates)


def test_a_poor_probe_is_searched_but_cannot_support_a_claim(facefind, photo_folder, tmp_path, sample_rgb):
    import cv2
    from PIL import Image

    facefind.index([photo_folder], workers=1)
    tiny = tmp_path / "tiny.png"
    Image.fromarray(cv2.resize(sample_rgb, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA)).save(tiny)
    result = facefind.search(tiny, show_all=True, purpose=PURPOSE)
    assert result.searched_face.quality.verdict == "poor"
    assert not result.probe_assessment.supports_identification
    assert result.probe_assessment.calibration_table == "low_quality"
    assert "cannot support an identification" in result.probe_assessment.notes[0]
    assert all(m.calibration_table == "low_quality" for m in result.matches)


def test_max_fmr_is_validated(facefind):
    with pytest.raises(FaceFindError, match="max.fmr"):
        facefind.search(probe_sample(), max_fmr=0, purpose=PURPOSE)


def test_a_masked_probe_is_matched_in_masked_mode_with_its_own_calibration(facefind, photo_folder, tmp_path, pipeline, sample_rgb):
    from tests.pipeline.test_occlusion import search_in_a_mask

    result = search_in_a_mask(facefind, pipeline, photo_folder, tmp_path, sample_rgb)
    assert result.searched_face.quality.lower_face_covered
    assert result.probe_assessment.calibration_table == "covered"
    assert any("lower face is covered" in note for note in result.probe_assessment.notes)
    best = result.matches[0]
    assert Path(best.source.path).name == "players.jpg" and best.calibration_table == "covered"
    assert best.similarity > result.matches[1].similarity + 0.1


def test_a_search_racing_a_removal_drops_the_vanished_faces(facefind, photo_folder):
    """Another process removes a file between the index lookup and the catalog read: no KeyError."""
    from facefind.search import search_library

    facefind.index([photo_folder], workers=1)
    with facefind.open_library() as stale:  # its in-memory index still holds players.jpg's faces
        facefind.remove(photo_folder / "players.jpg")
        result, _ = search_library(stale, facefind.pipeline, facefind.calibration, probe_sample(), show_all=True,
                                   top_k=50)
    assert result.matches and all(Path(m.source.path).name == "gdp.jpg" for m in result.matches)


def test_a_corrupted_stored_embedding_is_refused_not_scored(facefind, photo_folder):
    """Bytes flipped in a stored embedding were reported as similarity 1.1e26, verdict strong."""
    import sqlite3

    import numpy as np

    from facefind.errors import DamagedLibraryError

    facefind.index([photo_folder], workers=1)
    best = facefind.search(probe_sample(), purpose=PURPOSE).matches[0].face.face_id
    with sqlite3.connect(facefind.library_path / "catalog.sqlite3") as db:
        blob = db.execute("SELECT embedding FROM faces WHERE id = ?", (best,)).fetchone()[0]
        damaged = bytearray(blob)
        damaged[3] ^= 0x7F  # the exponent byte of the first component
        db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (bytes(damaged), best))
    assert not np.isclose(np.linalg.norm(np.frombuffer(bytes(damaged), np.float32)), 1.0)
    for within in (None, photo_folder):
        with pytest.raises(DamagedLibraryError, match=f"face {best}.*check --repair"):
            facefind.search(probe_sample(), within=within, purpose=PURPOSE)


@pytest.mark.parametrize("operation", ["search", "verify"])
def test_the_audit_record_reuses_what_the_search_saw_of_the_probe(facefind, photo_folder, monkeypatch, operation):
    """The probe is read and decoded once: the audit log's hash and crop come from the search itself."""
    import base64
    import hashlib
    import io

    from PIL import Image

    from facefind import api, search

    facefind.index([photo_folder / "gdp.jpg"], workers=1)
    decoded, reads = [], []
    for module in (search, api):  # wherever a probe could be decoded or read again
        real_decode, real_read = module.decode_image, getattr(module, "read_probe")
        monkeypatch.setattr(module, "decode_image", lambda *a, real=real_decode, **k: decoded.append(1) or real(*a, **k))
        monkeypatch.setattr(module, "read_probe", lambda *a, real=real_read, **k: reads.append(1) or real(*a, **k))
    if operation == "search":
        facefind.search(probe_sample(), purpose=PURPOSE)
        probes = [facefind.audit_log.select()[-1]["details"]["probe"]]
    else:
        facefind.verify(probe_sample(), photo_folder / "gdp.jpg", purpose=PURPOSE)
        details = facefind.audit_log.select()[-1]["details"]
        probes = [details["probe_a"], details["probe_b"]]
    assert len(decoded) == len(reads) == len(probes)  # once per probe, not again for the audit record
    assert probes[0]["sha256"] == hashlib.sha256(probe_sample().read_bytes()).hexdigest()
    for probe in probes:
        crop = Image.open(io.BytesIO(base64.b64decode(probe["crop_jpeg_base64"])))
        assert crop.size == (48, 48)


@pytest.fixture
def with_portrait(facefind, photo_folder) -> int:
    """The team photos and the player's portrait indexed; the portrait's face id."""
    (photo_folder / "portrait.jpg").write_bytes(probe_sample().read_bytes())
    facefind.index([photo_folder], workers=1)
    return facefind.faces(photo_folder / "portrait.jpg").faces[0].face_id


def test_a_stored_face_is_searched_like_its_photo_less_itself(facefind, photo_folder, with_portrait):
    """Where else does this face appear? The stored embedding is the photo's, so the ranking is the photo search's
    with the face itself left out; nothing is analysed again."""
    by_photo = facefind.search(probe_sample(), top_k=50, show_all=True, purpose=PURPOSE)
    assert by_photo.matches[0].face.face_id == with_portrait  # the photo finds the portrait itself first
    by_face = facefind.search_face(with_portrait, top_k=50, show_all=True, purpose=PURPOSE)
    others = [m for m in by_photo.matches if m.face.face_id != with_portrait]
    assert [m.face.face_id for m in by_face.matches] == [m.face.face_id for m in others]
    assert [m.similarity for m in by_face.matches] == pytest.approx([m.similarity for m in others], abs=2e-4)
    assert Path(by_face.matches[0].source.path).name == "players.jpg" and by_face.matches[0].verdict == "strong"
    assert by_face.searched_face.face_id == with_portrait and by_face.probe_path == str(photo_folder / "portrait.jpg")
    assert by_face.gallery_size == by_photo.gallery_size
    within = facefind.search_face(with_portrait, purpose=PURPOSE)  # the default limits keep the one true match
    assert [Path(m.source.path).name for m in within.matches] == ["players.jpg"]


def test_a_stored_face_search_is_logged_and_audited_like_a_photo_search(facefind, with_portrait):
    result = facefind.search_face(with_portrait, purpose=PURPOSE)
    reopened = facefind.reopen_search(result.search_id)
    assert [m.face.face_id for m in reopened.matches] == [m.face.face_id for m in result.matches]
    assert reopened.searched_face.face_id == with_portrait
    entry = facefind.audit_log.select(action="search")[-1]
    assert entry["details"]["search_id"] == result.search_id
    assert entry["details"]["probe"]["face_id"] == with_portrait and entry["purpose"] == PURPOSE.as_dict()
    assert entry["details"]["probe"]["crop_jpeg_base64"]  # who was searched for, from the stored crop
    assert [r["face_id"] for r in entry["details"]["results"]] == [m.face.face_id for m in result.matches]


def test_stored_face_search_refusals(facefind, with_portrait):
    from facefind.access import Actor, ForbiddenError, PurposeRequiredError

    with pytest.raises(NotFoundError, match="no face 999999"):
        facefind.search_face(999_999, purpose=PURPOSE)
    with pytest.raises(FaceFindError, match="face_id must be") as caught:
        facefind.search_face(-1, purpose=PURPOSE)
    assert caught.value.reason == "bad_argument"
    with pytest.raises(PurposeRequiredError):
        facefind.search_face(with_portrait)
    with pytest.raises(ForbiddenError):
        facefind.search_face(with_portrait, purpose=PURPOSE, actor=Actor("val", "viewer"))
    denied = facefind.audit_log.select(action="denied")[-1]
    assert denied["actor"] == "val" and denied["details"]["operation"] == "search"


# -- ranking from the index's own scores, re-scored exactly only where a match could be reported ---------------

SYNTHETIC_QUALITY = {"face_px": 112.0, "eye_distance_px": 40.0, "sharpness": 300.0, "yaw_deg": 0.0, "pitch_deg": 0.0,
                     "roll_deg": 0.0, "detection_score": 0.9, "verdict": "good", "reasons": []}


def _synthetic_library(root: Path, count: int, dim: int = 64):
    """``count`` faces of people with five photos each (same-person cosine ~0.8) in an ANN-indexed library."""
    import numpy as np

    from facefind.catalog import MediaOutcome, NewFace
    from facefind.index import IndexPolicy
    from facefind.library import Library

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(count // 5, dim))
    plain = np.repeat(centres, 5, axis=0) + 0.5 * rng.normal(size=(count, dim))
    plain = (plain / np.linalg.norm(plain, axis=1, keepdims=True)).astype(np.float32)
    library = Library(root, "m", dim, writable=True, index_policy=IndexPolicy(ann_threshold=300))
    qualities = [SYNTHETIC_QUALITY, {**SYNTHETIC_QUALITY, "verdict": "fair"}, {**SYNTHETIC_QUALITY, "verdict": "poor"}]
    library.commit_outcomes([MediaOutcome(path=f"/p/{i}.jpg", status="indexed", faces=[
        NewFace(0, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, qualities[i % 3], "m", plain[i], None)]) for i in range(count)])
    return library


def _every_candidate_scored(library, calibration, probe, show_all: bool) -> list[tuple]:
    """The reference: all 44 candidates' stored embeddings read and scored, each one calibrated in turn."""
    from facefind.search import _candidates, calibrated, pair_table, within_limits

    candidates, gallery_size = _candidates(library, probe.embedding, 11, None, "plain")
    records, hits = library.catalog.faces([face_id for face_id, _ in candidates]), []
    for face_id, score in candidates:
        if face_id == probe.face_id:
            continue
        fields = calibrated(pair_table(calibration, probe.searched.quality.verdict,
                                       records[face_id].quality["verdict"], False), score)
        inside = within_limits(fields["fmr"], gallery_size, 1e-5)[1]
        if show_all or inside:
            hits.append((face_id, fields["similarity"], fields["fmr"], inside))
        if len(hits) == 10:
            break
    return hits


@pytest.mark.parametrize("show_all", [False, True], ids=["within-limits", "show-all"])
def test_index_scores_re_scored_where_reportable_equal_re_scoring_every_candidate(tmp_path, monkeypatch, show_all):
    """A plain probe keeps the ANN index's fp16 scores (within score_slack of exact), reads the records of the
    candidates that could be listed and the stored embeddings of those that could be reported only: the matches
    and scores are those of reading and scoring all 44 candidates."""
    from facefind.calibration.table import default_calibration
    from facefind.index import FaissAnnIndex
    from facefind.search import rank_and_log, stored_face_probe

    calibration = default_calibration()
    with _synthetic_library(tmp_path, 2000) as library:
        assert isinstance(library.index, FaissAnnIndex)
        expected = {}
        for face_id in range(1, 2001, 100):
            probe = stored_face_probe(library, face_id, None)
            expected[face_id] = _every_candidate_scored(library, calibration, probe, show_all)
        reads = {"embeddings": [], "records": []}
        for name, owner in (("embeddings", library), ("records", library.catalog)):
            real = getattr(owner, "embeddings" if name == "embeddings" else "faces")
            monkeypatch.setattr(owner, "embeddings" if name == "embeddings" else "faces",
                                lambda ids, *a, _real=real, _name=name: reads[_name].append(len(ids)) or _real(ids, *a))
        for face_id, hits in expected.items():
            probe = stored_face_probe(library, face_id, None)
            before = {name: len(read) for name, read in reads.items()}
            found = rank_and_log(library, calibration, probe, "m", top_k=10, show_all=show_all)
            assert [(m.face.face_id, m.similarity, m.fmr, m.within_limits) for m in found.matches] == hits
            mates = set(range((face_id - 1) // 5 * 5 + 1, (face_id - 1) // 5 * 5 + 6)) - {face_id}
            assert {m.face.face_id for m in found.matches[:4]} == mates  # the person's other photos
            assert len(found.matches) == 10 or not show_all
            rows = {name: sum(read[before[name]:]) for name, read in reads.items()}
            assert rows["records"] <= 24 and rows["embeddings"] <= 12  # of the 44 candidates, read in chunks of 12


def test_a_search_embeds_its_probe_once_not_masked_too(facefind, photo_folder, monkeypatch):
    """A probe meets the gallery's masked templates, never its own: the recogniser runs on its faces once."""
    facefind.index([photo_folder / "gdp.jpg"], workers=1)
    recognizer = facefind.pipeline.recognizer
    batches, real = [], recognizer.features_and_maps  # every pass of the recogniser goes through it
    monkeypatch.setattr(recognizer, "features_and_maps",
                        lambda crops, *summarise: batches.append(len(crops)) or real(crops, *summarise))
    assert facefind.search(probe_sample(), purpose=PURPOSE).faces_in_probe
    assert batches == [1]  # the portrait's one face, not it and its masked copy
