"""Shared fixtures: the loaded pipeline, sample photos, a fresh library, and ../shared/data when present."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from PIL import Image

from facefind.access import Purpose
from facefind.api import FaceFind
from facefind.evaluation import shared_data_dir
from facefind.pipeline import FacePipeline
from facefind.samples import gallery_samples, probe_sample


PURPOSE = Purpose("TEST-1", "automated test of facefind's search path")  # every search states one


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
    instance.open_library(writable=True).close()  # read-only commands refuse a library that does not exist
    return instance


def write_video(path: Path, frames: list[np.ndarray], times_s: list[float] | None = None, fps: int = 10) -> Path:
    """Encode RGB frames as H.264 MP4 with PyAV; ``times_s`` gives variable frame timing."""
    import av

    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if times_s is not None:
            from fractions import Fraction

            stream.codec_context.time_base = Fraction(1, 1000)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            if times_s is not None:
                frame.pts = int(times_s[i] * 1000)
                frame.time_base = stream.codec_context.time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def set_display_rotation(path: Path, clockwise_90: bool = True) -> None:
    """Write a 90-degree display matrix into the MP4 track header, as phones do for portrait video."""
    import struct

    data = bytearray(path.read_bytes())
    header = data.find(b"tkhd")
    matrix = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000] if clockwise_90 else [0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000]
    data[header + 44 : header + 80] = struct.pack(">9i", *matrix)  # version-0 tkhd: matrix at byte 44
    path.write_bytes(data)


def face_scene(sample_rgb: np.ndarray, width: int = 320, height: int = 240, offset_x: int = 0) -> np.ndarray:
    """A grey frame with the sample portrait pasted in."""
    face = np.asarray(Image.fromarray(sample_rgb).resize((128, 158)))
    canvas = np.full((height, width, 3), 90, np.uint8)
    x = (width - 128) // 2 + offset_x
    canvas[40:198, x : x + 128] = face
    return canvas


@pytest.fixture
def clip_with_a_cut(tmp_path, sample_rgb) -> Path:
    """4 s at 10 fps: the face 0-1.5 s, an empty shot 1.6-2.4 s, the face again (moved) 2.5-3.9 s."""
    empty = np.full((240, 320, 3), 90, np.uint8)
    frames = [face_scene(sample_rgb) if t < 15 else empty if t < 25 else face_scene(sample_rgb, offset_x=60) for t in range(40)]
    return write_video(tmp_path / "clip.mp4", frames)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL 18 + pgvector server on 127.0.0.1, started once for the run and stopped (its folder deleted) at
    the end; tests keep apart by each using its own schema (``postgres_schema_url``)."""
    from facefind.devservices.postgres import local_postgres

    with local_postgres() as server:
        yield server.url


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """A catalog URL naming a schema of its own for this test, dropped with everything in it afterwards."""
    import uuid

    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield f"{postgres_url}?schema={schema}"
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def milvus_uri() -> Iterator[str]:
    """A Milvus 2.3.5 standalone server on 127.0.0.1 (from the milvus wheel), started once for the run and stopped,
    its data deleted, at the end; tests keep apart by each using its own collection (``milvus_spec``)."""
    from facefind.devservices.milvus import milvus_server

    with milvus_server() as server:
        yield server.uri


@pytest.fixture
def milvus_spec(milvus_uri: str) -> Iterator[str]:
    """An index spec naming a library of its own for this test (``milvus://host:port/NAME``); its collections are
    dropped afterwards."""
    import uuid

    from pymilvus import MilvusClient

    name = f"test_{uuid.uuid4().hex[:12]}"
    yield milvus_uri.replace("http://", "milvus://") + f"/{name}"
    client = MilvusClient(uri=milvus_uri)
    for collection in client.list_collections():
        if f"_{name}_" in collection:
            client.drop_collection(collection)
    client.close()
