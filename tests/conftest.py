"""Shared fixtures: the loaded pipeline, sample photos, a fresh library, and ../shared/data when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facefind.api import FaceFind
from facefind.evaluation import shared_data_dir
from facefind.pipeline import FacePipeline
from facefind.samples import gallery_samples, probe_sample


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return FacePipeline()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The labelled evaluation data; tests that need it skip cleanly when it is absent."""
    found = shared_data_dir()
    if found is None:
        pytest.skip("../shared/data is not present (set FACEFIND_DATA to point at it)")
    return found


@pytest.fixture(scope="session")
def sample_rgb() -> np.ndarray:
    """The single-portrait sample photo as RGB pixels."""
    return np.asarray(Image.open(probe_sample()).convert("RGB"))


@pytest.fixture
def photo_folder(tmp_path: Path) -> Path:
    """A folder with the built-in gallery photos copied in."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for sample in gallery_samples():
        (folder / sample.name).write_bytes(sample.read_bytes())
    return folder


@pytest.fixture
def facefind(tmp_path: Path, pipeline: FacePipeline) -> FaceFind:
    """A FaceFind over an empty library in a temporary folder, sharing the loaded models."""
    instance = FaceFind(tmp_path / "library")
    instance._pipeline = pipeline
    return instance
