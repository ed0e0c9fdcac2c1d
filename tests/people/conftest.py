"""The people tests' library: sample photos where one player recurs, and one photo holding one face twice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from facefind.api import FaceFind
from facefind.pipeline import FacePipeline
from facefind.samples import gallery_samples, probe_sample


def portrait() -> Image.Image:
    return Image.open(probe_sample()).convert("RGB")


def side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    both = Image.new("RGB", (left.width + right.width, max(left.height, right.height)))
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    return both


def write_photos(photos: Path) -> Path:
    """The team photo, the three-player photo, the portrait, its mirror image, and one photo holding the
    portrait twice (plain and mirrored): two near-identical faces of one photo."""
    photos.mkdir()
    for sample in gallery_samples():
        shutil.copy(sample, photos / sample.name)
    portrait().save(photos / "yaoming.jpg")
    mirror = portrait().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    mirror.save(photos / "yaoming_mirror.jpg")
    side_by_side(portrait(), mirror).save(photos / "twice.jpg")
    return photos


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory, pipeline: FacePipeline) -> Path:
    """A folder with photos/ and library/ (those photos indexed, no people yet)."""
    root = tmp_path_factory.mktemp("people")
    facefind = FaceFind(root / "library")
    facefind._pipeline = pipeline
    facefind.index([write_photos(root / "photos")], workers=1)
    return root
