"""A whole library on Milvus: faces indexed into a Milvus collection are found by search, from this library
and from a replica sharing its PostgreSQL catalog; removal reaches the server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facefind.api import Backends, FaceFind
from facefind.index import open_index
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def _open(folder: Path, pipeline, backends: Backends | None = None) -> FaceFind:
    instance = FaceFind(folder, backends=backends)
    instance._pipeline = pipeline
    return instance


def test_a_library_with_its_index_on_milvus(tmp_path, pipeline, photo_folder, milvus_spec):
    facefind = _open(tmp_path / "library", pipeline, Backends(index=milvus_spec))
    report = facefind.index([photo_folder], workers=1)
    assert json.loads((tmp_path / "library" / "backends.json").read_text())["index"] == milvus_spec
    held = open_index(milvus_spec, facefind.embedding_dim, model_id=facefind.model_id)
    try:
        assert len(held) == report.faces_added == facefind.stats()["faces"] > 0
    finally:
        held.close()
    result = facefind.search(probe_sample(), purpose=PURPOSE)
    assert Path(result.matches[0].source.path).name == "players.jpg" and result.matches[0].similarity > 0.5

    again = _open(tmp_path / "library", pipeline)  # reopened: verified against the catalog, not rebuilt
    assert again.stats()["index_size"] == report.faces_added
    again.remove(path=photo_folder / "players.jpg")
    assert all(Path(m.source.path).name != "players.jpg" for m in again.search(probe_sample(), purpose=PURPOSE).matches)


def test_replicas_on_one_postgres_catalog_and_one_milvus_index(tmp_path, pipeline, photo_folder, sample_rgb,
                                                              postgres_schema_url, milvus_spec):
    writer = _open(tmp_path / "writer", pipeline, Backends(postgres_schema_url, milvus_spec))
    writer.index([photo_folder], workers=1)
    replica_folder = tmp_path / "replica"
    replica_folder.mkdir()
    (replica_folder / "backends.json").write_bytes((tmp_path / "writer" / "backends.json").read_bytes())
    replica = _open(replica_folder, pipeline)
    seen = replica.search(probe_sample(), purpose=PURPOSE)
    assert [m.face.face_id for m in seen.matches] == [m.face.face_id for m in
                                                      writer.search(probe_sample(), purpose=PURPOSE).matches]

    more = tmp_path / "more"
    more.mkdir()
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(sample_rgb[:, ::-1])).save(more / "mirrored.jpg")
    writer.index([more], workers=1)  # committed through one...
    names = [Path(m.source.path).name for m in replica.search(probe_sample(), purpose=PURPOSE).matches]
    assert "mirrored.jpg" in names  # ...searchable through the other at once
    assert replica.stats()["index_size"] == writer.stats()["index_size"]


@pytest.mark.parametrize("spec", ["milvus://", "milvus://127.0.0.1:notaport"])
def test_a_bad_milvus_spec_is_refused_before_any_work(tmp_path, pipeline, photo_folder, spec):
    from facefind.errors import FaceFindError

    with pytest.raises(FaceFindError) as raised:
        _open(tmp_path / "library", pipeline, Backends(index=spec)).index([photo_folder], workers=1)
    assert raised.value.reason == "bad_argument"
