"""What only the FAISS file index does: its file is checked on load."""

import pytest

from facefind.index import FaissFlatIndex


def test_loading_garbage_fails_cleanly(tmp_path):
    path = tmp_path / "bad.faiss"
    path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError):
        FaissFlatIndex.load(path)
