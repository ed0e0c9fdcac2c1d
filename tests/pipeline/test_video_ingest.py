"""Video ingest on real footage: faster paths must keep the tracks (bench/video.py measures the speed)."""

import sqlite3

import numpy as np
import pytest

from facefind.api import FaceFind
from facefind.pipeline.decode import decode_image


@pytest.mark.shared_data
def test_hamilton_keeps_its_tracks_while_most_sightings_go_unembedded(tmp_path, pipeline, data_dir, monkeypatch):
    detected: list[int] = []
    embedded: list[int] = []
    video_pipeline = pipeline.single_threaded  # what video runs on: one-thread sessions
    detect, describe = video_pipeline.detector.detect, video_pipeline.describe
    monkeypatch.setattr(video_pipeline.detector, "detect", lambda rgb: (found := detect(rgb), detected.append(len(found)))[0])
    monkeypatch.setattr(video_pipeline, "describe", lambda found, *args, **kwargs: embedded.append(len(found))
                        or describe(found, *args, **kwargs))  # every face described is embedded
    facefind = FaceFind(tmp_path / "lib")
    facefind._pipeline = pipeline
    assert facefind.index([data_dir / "videos" / "hamilton_clip.mp4"], workers=1).failed == 0
    with sqlite3.connect(tmp_path / "lib" / "catalog.sqlite3") as db:
        sightings = [n for (n,) in db.execute("SELECT observations FROM tracks")]
        per_track = db.execute("SELECT t.observations, COUNT(f.id), COUNT(f.masked_embedding) FROM tracks t"
                               " JOIN faces f ON f.track_id = t.id GROUP BY t.id").fetchall()
        faces = db.execute("SELECT id, thumbnail FROM faces").fetchall()
    # As every earlier version found them (bench/results/video.json): 14 tracks, 10 seen 3 times or more.
    assert len(sightings) == 14 and sum(n >= 3 for n in sightings) == 10
    assert sum(sightings) == sum(detected)  # every detection belongs to a track
    assert [(min(n, 3), min(n, 3)) for n, _, _ in per_track] == [(t, m) for _, t, m in per_track]
    # Masked twins are computed for all tracks in one batch: each must sit with its own face, i.e. be
    # nearest to the masked embedding of that face's stored crop (a JPEG, so not exactly equal).
    with facefind.open_library() as library:
        stored = library.catalog.embeddings([face_id for face_id, _ in faces], masked=True)
        crops = np.stack([decode_image(library.thumbs_dir / name).pixels for _, name in faces])
    assert (pipeline.masked_embeddings(crops) @ stored.T).argmax(axis=1).tolist() == list(range(len(faces)))
    # Embedding every detection was 100 of 100; embedding only the faces that did not plainly continue
    # their track, 67. Deferring the continuing faces' embeddings to the templates chosen: 61.
    assert sum(embedded) <= 0.65 * sum(detected)
