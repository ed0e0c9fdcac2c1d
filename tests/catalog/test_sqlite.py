"""What only the SQLite catalog does: its file and WAL hold no erased bytes, REINDEX repairs a damaged index, a
catalog written before float16 embeddings and 8 KB pages still reads, and streaming embeddings costs linear time."""

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from facefind.catalog import SqliteCatalog
from facefind.catalog.sqlite import PAGE_SIZE
from tests.catalog.conftest import outcome as _outcome


def _written(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())


def test_removed_rows_leave_no_bytes_in_the_file_or_its_log(tmp_path):
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite3")
    outcome = _outcome("/secret/photo.jpg", 2, seed=7)
    catalog.commit_outcomes([outcome, _outcome("/kept.jpg", 1, seed=8)])
    stored = [face.embedding.astype(np.float16).tobytes()[:64] for face in outcome.faces]  # as the file keeps them
    assert all(blob in _written(tmp_path) for blob in stored)
    catalog.remove_media("/secret/photo.jpg")
    assert catalog.checkpoint()
    written = _written(tmp_path)
    for face, blob in zip(outcome.faces, stored):
        assert face.embedding.tobytes()[:64] not in written and blob not in written
    assert b"/secret/photo.jpg" not in written and b"hash7" not in written
    catalog.close()


def test_integrity_check_finds_a_damaged_sql_index_and_reindex_repairs_it(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    catalog = SqliteCatalog(path)
    catalog.commit_outcomes([_outcome(f"/{i}.jpg", 0, seed=i) for i in range(20)])
    catalog.close()  # checkpoints the WAL into the file
    with sqlite3.connect(path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'media_sha256'").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    start = (root - 1) * page_size
    at = data.index(b"hash13", start, start + page_size)
    data[at + 5] = ord("9")  # the index now says hash19 where the table says hash13
    path.write_bytes(bytes(data))
    catalog = SqliteCatalog(path)
    assert catalog.integrity_problems()
    catalog.rebuild_sql_indexes()
    assert catalog.integrity_problems() == []
    catalog.close()


def test_a_catalog_from_before_half_precision_reads_its_float32_rows_beside_new_ones(tmp_path):
    path = tmp_path / "catalog.sqlite3"
    old = _outcome("/old.jpg", 2, seed=1)
    with sqlite3.connect(path) as db:  # what facefind wrote before: 4 KB pages, float32 blobs, no embedding_dims
        db.execute("PRAGMA page_size=4096")
        db.execute("PRAGMA journal_mode=WAL")
    catalog = SqliteCatalog(path)
    old_ids = catalog.commit_outcomes([old]).added_ids
    catalog.close()
    with sqlite3.connect(path) as db:
        for face_id, face in zip(old_ids, old.faces):
            db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (face.embedding.tobytes(), face_id))
        db.execute("DELETE FROM meta WHERE key = 'embedding_dims'")
    catalog = SqliteCatalog(path)
    originals = np.stack([face.embedding for face in old.faces])
    assert np.array_equal(catalog.embeddings(old_ids), originals)  # exactly: nothing was rounded
    new_ids = catalog.commit_outcomes([_outcome("/new.jpg", 1, seed=2)]).added_ids
    ids, vectors = next(catalog.iter_embeddings("m:1"))
    assert list(ids) == old_ids + new_ids and np.array_equal(vectors[:2], originals)
    assert np.abs(vectors[2] - _outcome("/new.jpg", 1, seed=2).faces[0].embedding).max() < 1e-3
    assert catalog._db.execute("PRAGMA page_size").fetchone()[0] == 4096  # an existing file keeps its pages
    catalog.close()


@pytest.mark.parametrize("size", [100, 1000, 2048, 4096])
def test_a_stored_embedding_of_any_other_size_reads_as_damage(tmp_path, size):
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite3")
    ids = catalog.commit_outcomes([_outcome("/a.jpg", 2)]).added_ids
    catalog._db.execute("UPDATE faces SET embedding = zeroblob(?) WHERE id = ?", (size, ids[0]))
    vectors = catalog.stored_embeddings(ids, dim=512)[1]
    assert (np.isnan(vectors[0]).all() if size not in (1024, 2048) else not vectors[0].any())
    assert np.isfinite(vectors[1]).all()
    catalog.close()


def test_a_new_catalog_has_pages_that_fit_several_faces(tmp_path):
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite3")
    assert catalog._db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE == 8192
    catalog.close()


def test_streaming_embeddings_reads_each_row_once_whatever_the_page_size(tmp_path):
    """Paging by ``id > last`` must walk the rowid range, not re-sort every remaining face per page."""
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite3")
    catalog.commit_outcomes([_outcome(f"/{i}.jpg", 4, seed=i) for i in range(500)])
    steps = {}
    for batch in (2000, 50):
        counted = [0]

        def count() -> int:
            counted[0] += 1
            return 0

        catalog._db.set_progress_handler(count, 100)
        assert sum(len(ids) for ids, _ in catalog.iter_embeddings("m:1", batch=batch, dim=512)) == 2000
        catalog._db.set_progress_handler(None, 100)
        steps[batch] = counted[0]
    assert steps[50] < 3 * steps[2000]  # 40 pages: linear; a sort per page made it ~20x
    catalog.close()
