"""What only the SQLite catalog does: its file and WAL hold no erased bytes, and REINDEX repairs a damaged index."""

import sqlite3

from facefind.catalog import SqliteCatalog
from tests.catalog.conftest import outcome as _outcome


def test_removed_rows_leave_no_bytes_in_the_file_or_its_log(tmp_path):
    catalog = SqliteCatalog(tmp_path / "catalog.sqlite3")
    outcome = _outcome("/secret/photo.jpg", 2, seed=7)
    catalog.commit_outcomes([outcome, _outcome("/kept.jpg", 1, seed=8)])
    catalog.remove_media("/secret/photo.jpg")
    assert catalog.checkpoint()
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    for face in outcome.faces:
        assert face.embedding.tobytes()[:64] not in written
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
