"""Catalog backends the contract suite runs against: adding a backend is one entry in CATALOG_BACKENDS."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import dataclasses

import numpy as np
import pytest

from facefind.catalog import Catalog, MediaOutcome, NewFace, NewTrack, open_catalog


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "catalog.sqlite3")


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return request.getfixturevalue("postgres_schema_url")


# name -> how to get a spec for a fresh, empty catalog of that backend (passed to open_catalog)
CATALOG_BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


@pytest.fixture(params=sorted(CATALOG_BACKENDS))
def catalog_spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return CATALOG_BACKENDS[request.param](request, tmp_path)


@pytest.fixture
def catalog(catalog_spec: str) -> Iterator[Catalog]:
    instance = open_catalog(catalog_spec)
    yield instance
    instance.close()


def face(index: int, seed: int) -> NewFace:
    vector = np.random.default_rng(seed).normal(size=512).astype(np.float32)
    return NewFace(
        face_index=index, box=[1, 2, 30, 40], landmarks=[[5, 5]] * 5, detection_score=0.9,
        quality={"verdict": "good"}, model_id="m:1", embedding=vector / np.linalg.norm(vector), thumbnail=f"t{seed}.jpg",
    )


def outcome(path: str, faces: int, seed: int = 0) -> MediaOutcome:
    return MediaOutcome(
        path=path, status="indexed" if faces else "no_face", reason=None if faces else "no_face", sha256=f"hash{seed}",
        size=10, mtime_ns=1, width=100, height=80, faces=[face(i, seed * 10 + i) for i in range(faces)],
    )


def video(path: str, seed: int) -> MediaOutcome:
    """Two tracks of two templates each."""
    faces = [dataclasses.replace(face(i, seed * 10 + i), track_index=i // 2, frame_time_s=float(i)) for i in range(4)]
    tracks = [NewTrack(t, [[0.0, 2.0]], float(2 * t), 3, f"frame{seed}_{t}.jpg") for t in range(2)]
    return MediaOutcome(path=path, status="indexed", sha256=f"v{seed}", kind="video", faces=faces, tracks=tracks)
