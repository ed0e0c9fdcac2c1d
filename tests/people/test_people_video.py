"""Video faces in people: a performer's track joins the person of his photo (real clip, ../shared/data)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from facefind.api import FaceFind

pytestmark = pytest.mark.shared_data


def people_with(facefind: FaceFind, file_name: str) -> list:
    return [p for p in (facefind.person(s.person_id) for s in facefind.people_list())
            if any(Path(f.source.path).name == file_name for f in p.face_list)]


@pytest.mark.parametrize("video_first", [False, True], ids=["incremental", "build"])
def test_the_performers_track_joins_his_photos_person(tmp_path, pipeline, data_dir, video_first: bool) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(data_dir / "named_people" / "train", photos)
    for name in ("lin-manuel-miranda.png", "alex-lacamoire.png"):
        shutil.copy(data_dir / "named_people" / "misc" / name, photos / name)
    clip = data_dir / "videos" / "hamilton_clip.mp4"
    facefind = FaceFind(tmp_path / "lib")
    facefind._pipeline = pipeline
    facefind.index([photos, clip] if video_first else [photos], workers=1)
    facefind.people_build()
    if not video_first:
        facefind.index([clip], workers=1)  # the new track is assigned by the incremental update
    [performer] = people_with(facefind, "lin-manuel-miranda.png")
    tracks = {f.video.track_id for f in performer.face_list if f.video is not None}
    assert len(tracks) >= 1 and performer.videos == 1
    video_faces = [f for f in performer.face_list if f.video is not None]
    assert any(f.video.start_s <= 3.5 and f.video.end_s >= 6.5 for f in video_faces)  # on stage 3.5-6.5 s
    for other in ("obama", "biden", "kit_harington", "rose_leslie"):
        assert not any(other in f.source.path for f in performer.face_list)
