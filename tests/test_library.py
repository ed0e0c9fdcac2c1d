import json

import numpy as np
import pytest

from facefind.catalog import MediaOutcome, NewFace
from facefind.errors import FaceFindError, LibraryBusyError
from facefind.library import Library


def _add_faces(library: Library, path: str, count: int) -> list[int]:
    vectors = np.eye(4, dtype=np.float32)[:count]
    faces = [NewFace(i, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, {"verdict": "good"}, "m", vectors[i], None) for i in range(count)]
    result = library.catalog.commit_outcomes([MediaOutcome(path=path, status="indexed", faces=faces)])
    library.apply_commit(result)
    return result.added_ids


def test_second_writer_gets_a_clear_error(tmp_path):
    with Library(tmp_path, "m", 4, writable=True):
        with pytest.raises(LibraryBusyError, match="another facefind process"):
            Library(tmp_path, "m", 4, writable=True)
        with Library(tmp_path, "m", 4) as reader:  # readers are never blocked
            assert len(reader.index) == 0


def test_stale_index_is_rebuilt_from_the_catalog(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        library.save_index()
        _add_faces(library, "/a.jpg", 3)  # committed to the catalog, index file never saved: a crash
    with Library(tmp_path, "m", 4) as reopened:
        assert reopened.rebuilt_index
        assert len(reopened.index) == 3


def test_damaged_index_file_is_rebuilt(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        _add_faces(library, "/a.jpg", 2)
        library.save_index()
    (tmp_path / "index" / "faiss.index").write_bytes(b"\0" * 10)
    with Library(tmp_path, "m", 4) as reopened:
        assert len(reopened.index) == 2


def test_fresh_index_is_loaded_not_rebuilt(tmp_path):
    with Library(tmp_path, "m", 4, writable=True) as library:
        _add_faces(library, "/a.jpg", 2)
        library.save_index()
    assert json.loads((tmp_path / "index" / "state.json").read_text())["model_id"] == "m"
    with Library(tmp_path, "m", 4) as reopened:
        assert not reopened.rebuilt_index and len(reopened.index) == 2


def test_a_library_refuses_another_model(tmp_path):
    Library(tmp_path, "model-a", 4, writable=True).close()
    with pytest.raises(FaceFindError, match="cannot be compared"):
        Library(tmp_path, "model-b", 4)
