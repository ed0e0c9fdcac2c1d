"""Watchlists on the labelled data: reference photos raise hits in new photos and in video, at the right time."""

from __future__ import annotations

from pathlib import Path

import pytest

from facefind.access import Actor
from facefind.api import FaceFind

pytestmark = pytest.mark.shared_data
IVY = Actor("ivy", "investigator")


def test_listed_people_are_found_in_new_photos_and_video_and_no_one_else(tmp_path, pipeline, data_dir):
    facefind = FaceFind(tmp_path / "library")
    facefind._pipeline = pipeline
    people = data_dir / "named_people"
    facefind.open_library(writable=True).close()
    facefind.watch_add("obama", photos=[people / "train" / "obama" / "obama.jpg"], actor=IVY)
    facefind.watch_add("performer", photos=[people / "misc" / "lin-manuel-miranda.png"], actor=IVY)
    report = facefind.index([people / "probes", data_dir / "videos" / "hamilton_clip.mp4"], workers=1)
    assert report.failed == 0
    found: dict[str, list] = {}
    for hit in facefind.watch_hits(actor=IVY).items:
        found.setdefault(hit.watchlist, []).append(hit)
    photos = {Path(h.media_path).name for h in found["obama"] if h.time_s is None}
    assert photos == {"obama1.jpg", "obama_and_biden.jpg"}  # not Biden's, Kit's, Rose's or Alex's faces
    (performer,) = found["performer"]  # one hit for the whole track, not one per template
    assert Path(performer.media_path).name == "hamilton_clip.mp4" and 3.5 <= performer.time_s <= 6.5
    assert performer.track_id is not None and performer.verdict == "strong"
