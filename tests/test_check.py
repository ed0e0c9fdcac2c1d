"""`facefind check [--repair]`: each damaged state is found, and repair restores a working library."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facefind.cli import app
from facefind.errors import DamagedLibraryError, NotFoundError
from facefind.index import FaissFlatIndex
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


@pytest.fixture
def indexed(facefind, photo_folder):
    """The sample photos indexed, and the face ids a probe search ranks (the library's working state)."""
    facefind.index([photo_folder], workers=1)
    ranked = [m.face.face_id for m in facefind.search(probe_sample(), show_all=True, top_k=50, purpose=PURPOSE).matches]
    return facefind, photo_folder, ranked


def _ranked(facefind) -> list[int]:
    return [m.face.face_id for m in facefind.search(probe_sample(), show_all=True, top_k=50, purpose=PURPOSE).matches]


def _crops(library: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(library / "thumbs").as_posix(): np.asarray(Image.open(p), np.int16)
            for p in sorted((library / "thumbs").rglob("*.jpg"))}


def test_a_healthy_library_checks_clean(indexed):
    facefind, _, _ = indexed
    report = facefind.check()
    assert report.healthy and report.problems == []
    assert report.checked["embeddings"] > 0 and report.checked["thumbnails"] == facefind.stats()["faces"]


def _damage_index_vectors(library: Path) -> None:
    """Same ids, other vectors: state.json still names the current revision."""
    index = FaissFlatIndex.load(library / "index" / "faiss.index")
    ids = index.ids()
    vectors = np.random.default_rng(0).normal(size=(len(ids), index.dim)).astype(np.float32)
    damaged = FaissFlatIndex(index.dim)
    damaged.add(ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    damaged.save(library / "index" / "faiss.index")


def _damage_id_map(library: Path) -> None:
    data = bytearray((library / "index" / "faiss.index").read_bytes())
    data[-8:] = (10**9).to_bytes(8, "little")  # the last id: a face that does not exist
    (library / "index" / "faiss.index").write_bytes(bytes(data))


DAMAGE = {
    "index_gone": (lambda library: shutil.rmtree(library / "index"), "index"),
    "index_vectors": (_damage_index_vectors, "index"),
    "index_id_map": (_damage_id_map, "index"),
    "orphans": (lambda library: [(library / "thumbs" / "zz").mkdir(), (library / "thumbs" / "zz" / "x.jpg").write_bytes(b"x"),
                                 (library / "index" / "faiss.index.tmp4242").write_bytes(b"half")], "orphans"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_repair_restores_the_index_from_the_catalog_alone(indexed, damage, tmp_path):
    facefind, photo_folder, ranked = indexed
    harm, part = DAMAGE[damage]
    harm(facefind.library_path)
    found = facefind.check()
    assert not found.healthy and {p.part for p in found.problems} == {part}
    assert not any(p.repaired for p in found.problems)
    photo_folder.rename(tmp_path / "away")  # the catalog suffices: no source file is read
    repaired = facefind.check(repair=True)
    assert repaired.healthy and repaired.problems and all(p.repaired for p in repaired.problems)
    assert facefind.check().problems == []
    assert _ranked(facefind) == ranked


def test_repair_cuts_missing_and_damaged_thumbnails_again_from_the_source(indexed):
    facefind, _, ranked = indexed
    library = facefind.library_path
    before = _crops(library)
    damaged = sorted(before)[0]
    shutil.rmtree(library / "thumbs")
    (library / "thumbs" / damaged).parent.mkdir(parents=True)
    (library / "thumbs" / damaged).write_bytes(b"\xff\xd8 truncated")
    found = facefind.check()
    assert not found.healthy and {p.part for p in found.problems} == {"thumbnails"}
    assert facefind.check(repair=True).healthy
    after = _crops(library)
    assert sorted(after) == sorted(before)
    for name, pixels in before.items():  # cut with the stored landmarks: the same crop, up to JPEG noise
        assert np.abs(after[name] - pixels).mean() < 4, name
    assert facefind.check().problems == [] and _ranked(facefind) == ranked


def test_a_thumbnail_whose_source_is_gone_is_reported_not_invented(indexed, tmp_path):
    facefind, photo_folder, _ = indexed
    shutil.rmtree(facefind.library_path / "thumbs")
    photo_folder.rename(tmp_path / "away")
    report = facefind.check(repair=True)
    assert not report.healthy
    assert all(p.part == "thumbnails" and not p.repaired and "is gone" in p.detail for p in report.problems)


def test_a_track_frame_is_boxed_again_from_the_video(facefind, clip_with_a_cut):
    facefind.index([clip_with_a_cut], workers=1)
    library = facefind.library_path
    names = set(_crops(library))
    shutil.rmtree(library / "thumbs")
    assert facefind.check(repair=True).healthy
    assert set(_crops(library)) == names and any("_t" in name for name in names)


def test_a_damaged_embedding_is_dropped_and_its_file_reanalysed_by_the_next_index(indexed):
    facefind, photo_folder, ranked = indexed
    with sqlite3.connect(facefind.library_path / "catalog.sqlite3") as db:
        db.execute("UPDATE faces SET embedding = zeroblob(2048) WHERE id = ?", (ranked[0],))
    with pytest.raises(DamagedLibraryError, match=f"face {ranked[0]}"):
        facefind.search(probe_sample(), purpose=PURPOSE)
    found = facefind.check()
    assert {p.part for p in found.problems} >= {"embeddings"}
    assert facefind.check(repair=True).healthy
    players = str(photo_folder / "players.jpg")
    with facefind.open_library() as library:
        media = library.catalog.media_by_path(players)
        assert (media.status, media.reason) == ("failed", "damaged_in_catalog")
    assert facefind.check().healthy and facefind.index([photo_folder], workers=1).indexed == 1
    assert Path(facefind.search(probe_sample(), purpose=PURPOSE).matches[0].source.path).name == "players.jpg"


def test_a_catalog_that_cannot_be_opened_is_reported(indexed):
    facefind, _, _ = indexed
    catalog = facefind.library_path / "catalog.sqlite3"
    catalog.write_bytes(b"garbage" * 1000)
    for suffix in ("-wal", "-shm"):
        Path(str(catalog) + suffix).unlink(missing_ok=True)
    report = facefind.check(repair=True)
    assert not report.healthy and report.problems[0].part == "catalog" and "damaged" in report.problems[0].detail
    with pytest.raises(DamagedLibraryError):
        facefind.stats()


def test_check_needs_an_existing_library(tmp_path):
    from facefind.api import FaceFind

    with pytest.raises(NotFoundError, match="no facefind library"):
        FaceFind(tmp_path / "typo").check()
    assert not (tmp_path / "typo").exists()


def test_cli_check_exit_codes_and_json(indexed):
    facefind, _, _ = indexed
    runner = CliRunner()
    args = ["--library", str(facefind.library_path), "check"]
    healthy = runner.invoke(app, args)
    assert healthy.exit_code == 0 and "healthy" in healthy.output
    shutil.rmtree(facefind.library_path / "index")
    found = runner.invoke(app, [*args, "--json"])
    assert found.exit_code == 1
    assert json.loads(found.output)["problems"][0]["part"] == "index"
    repaired = runner.invoke(app, [*args, "--repair"])
    assert repaired.exit_code == 0 and "repaired" in repaired.output
    assert runner.invoke(app, ["--library", str(facefind.library_path / "typo"), "check"]).exit_code == 2
