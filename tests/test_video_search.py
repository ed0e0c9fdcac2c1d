"""Video end to end through the library API: ingest, track, search with --in, evidence."""

from pathlib import Path

import pytest

from facefind.samples import probe_sample
from tests.conftest import PURPOSE


@pytest.fixture
def video_folder(tmp_path, clip_with_a_cut, photo_folder) -> Path:
    folder = tmp_path / "footage"
    folder.mkdir()
    clip_with_a_cut.rename(folder / "clip.mp4")
    (folder / "players.jpg").write_bytes((photo_folder / "players.jpg").read_bytes())
    return folder


def test_video_is_indexed_as_tracks_with_templates(facefind, video_folder):
    report = facefind.index([video_folder], workers=1)
    assert report.indexed == 2 and report.failed == 0
    stored = facefind.faces(video_folder / "clip.mp4")
    assert stored.indexed and len(stored.faces) == 3  # one track, three templates
    with facefind.open_library() as library:  # each template also has its masked twin, for covered probes
        assert library.catalog.embeddings([f.face_id for f in stored.faces], masked=True).shape == (3, 512)
    again = facefind.index([video_folder], workers=1)
    assert again.unchanged == 2


def test_search_returns_time_ranges_and_one_hit_per_track(facefind, video_folder):
    facefind.index([video_folder], workers=1)
    result = facefind.search(probe_sample(), purpose=PURPOSE)
    video_hits = [m for m in result.matches if m.video]
    assert len(video_hits) == 1  # three templates, one track, one hit
    hit = video_hits[0].video
    assert len(hit.time_ranges) == 2 and hit.start_s == pytest.approx(0.0) and hit.end_s == pytest.approx(3.8, abs=0.21)
    assert Path(hit.frame_thumbnail).is_file()
    assert [a.path for a in result.appearances] == [str(video_folder / "clip.mp4")]
    assert result.appearances[0].time_ranges == hit.time_ranges
    # the photo is found too
    assert any(Path(m.source.path).name == "players.jpg" for m in result.matches)


def test_search_in_one_video(facefind, video_folder):
    facefind.index([video_folder], workers=1)
    result = facefind.search(probe_sample(), within=video_folder / "clip.mp4", purpose=PURPOSE)
    assert result.gallery_size == 3 and result.searched_in == str(video_folder / "clip.mp4")
    assert all(m.source.path.endswith("clip.mp4") for m in result.matches)
    assert result.matches[0].verdict == "strong"


def test_video_evidence_shows_the_frame_and_time(facefind, video_folder, tmp_path):
    facefind.index([video_folder], workers=1)
    match = facefind.search(probe_sample(), within=video_folder, purpose=PURPOSE).matches[0]
    page = facefind.export_evidence(match.match_id, tmp_path / "e.html").read_text()
    assert "frame time" in page and "track on screen" in page
    assert page.count("data:image/png;base64,") == 6


def test_bad_videos_are_recorded_and_the_run_goes_on(facefind, tmp_path, clip_with_a_cut):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mov").write_text("not a video at all")
    (folder / "cut.mkv").write_bytes(clip_with_a_cut.read_bytes()[:2000])
    (folder / "good.mp4").write_bytes(clip_with_a_cut.read_bytes())
    report = facefind.index([folder], workers=1)
    reasons = {Path(p).name: r for p, r, _ in report.failures}
    assert reasons["empty.mp4"] == "empty"
    assert reasons["text.mov"] == "corrupt_video"
    assert reasons.get("cut.mkv", "corrupt_video") in ("corrupt_video", "empty_video")
    assert report.indexed >= 1


@pytest.mark.shared_data
def test_hamilton_performer_is_found_as_one_appearance(tmp_path, pipeline, data_dir):
    from facefind.api import FaceFind

    facefind = FaceFind(tmp_path / "lib")
    facefind._pipeline = pipeline
    clip = data_dir / "videos" / "hamilton_clip.mp4"
    assert facefind.index([clip], workers=1).failed == 0
    result = facefind.search(data_dir / "named_people" / "misc" / "lin-manuel-miranda.png", within=clip, purpose=PURPOSE)
    assert result.matches and result.matches[0].verdict == "strong"
    assert len(result.matches) == 1, "the performer's track should not be split into pieces"
    ranges = result.appearances[0].time_ranges
    on_screen = sum(end - start for start, end in ranges)
    assert on_screen >= 3.5 and any(start <= 3.5 and end >= 6.5 for start, end in ranges)


@pytest.mark.shared_data
def test_pedestrians_and_night_crowd(tmp_path, pipeline, data_dir):
    from facefind.api import FaceFind

    facefind = FaceFind(tmp_path / "lib")
    facefind._pipeline = pipeline
    videos = data_dir / "videos"
    report = facefind.index([videos / "pedestrians.mp4", videos / "night_crowd_mot20.mp4"], workers=1)
    assert report.failed == 0
    tracks = {f.face_id for f in facefind.faces(videos / "pedestrians.mp4").faces}
    # About ten people show a face at some point (six of them clearly); 3 templates per track at most.
    assert 6 <= len(tracks) / 3 <= 20


def test_faces_that_plainly_continue_a_track_are_not_embedded(facefind, clip_with_a_cut, pipeline, monkeypatch):
    import sqlite3

    embedded: list[int] = []
    describe = pipeline.single_threaded.describe  # video runs on the one-thread sessions; masked twins apart
    monkeypatch.setattr(pipeline.single_threaded, "describe", lambda found, *args, **kwargs: embedded.append(len(found))
                        or describe(found, *args, **kwargs))
    assert facefind.index([clip_with_a_cut], workers=1).failed == 0
    with sqlite3.connect(facefind.library_path / "catalog.sqlite3") as db:
        tracks = db.execute("SELECT observations FROM tracks").fetchall()
    assert len(tracks) == 1 and tracks[0][0] >= 12  # the face is seen in every sampled frame it is in...
    assert 0 < sum(embedded) <= tracks[0][0] / 2  # ...but embedded in at most half of them
