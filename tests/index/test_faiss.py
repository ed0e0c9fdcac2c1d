"""The VectorIndex contract, run against every backend (FAISS flat today)."""

import numpy as np
import pytest

from facefind.index import FaissFlatIndex


@pytest.fixture(params=["faiss-flat"])
def index(request):
    return FaissFlatIndex(8)


def _unit(rows: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, 8)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_search_returns_exact_inner_product_ranking(index):
    vectors = _unit(50)
    index.add(np.arange(100, 150), vectors)
    scores, ids = index.search(vectors[7:8], 5)
    assert ids[0, 0] == 107 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    expected = np.argsort(-(vectors @ vectors[7]))[:5] + 100
    assert list(ids[0]) == list(expected)


def test_remove_and_unknown_ids(index):
    index.add(np.arange(10), _unit(10))
    assert index.remove(np.array([3, 4, 99])) == 2
    assert len(index) == 8
    _, ids = index.search(_unit(10)[3:4], 10)
    assert 3 not in ids[0]


def test_wrong_vector_size_is_a_clear_error(index):
    with pytest.raises(ValueError, match="size 8"):
        index.add(np.arange(2), np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="size 8"):
        index.search(np.ones((1, 3), np.float32), 1)


def test_empty_index_searches_to_nothing(index):
    scores, ids = index.search(_unit(1), 5)
    assert ids.shape == (1, 0)


def test_save_load_roundtrip_is_atomic(index, tmp_path):
    index.add(np.arange(20), _unit(20))
    path = tmp_path / "i.faiss"
    index.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["i.faiss"]  # no temporary left behind
    loaded = FaissFlatIndex.load(path)
    assert len(loaded) == 20 and loaded.dim == 8
    assert np.array_equal(loaded.search(_unit(20)[:2], 3)[1], index.search(_unit(20)[:2], 3)[1])


def test_loading_garbage_fails_cleanly(tmp_path):
    path = tmp_path / "bad.faiss"
    path.write_bytes(b"garbage")
    with pytest.raises(RuntimeError):
        FaissFlatIndex.load(path)
