"""The VectorIndex contract, run against every backend in INDEX_BACKENDS (FAISS flat and ANN, pgvector)."""

import numpy as np
import pytest

from facefind.index import keeps_state_in_server
from tests.index.conftest import unit as _unit


def test_search_returns_the_inner_product_ranking(index):
    vectors = _unit(50)
    index.add(np.arange(100, 150), vectors)
    scores, ids = index.search(vectors[7:8], 5)
    assert ids[0, 0] == 107 and scores[0, 0] == pytest.approx(1.0, abs=max(index.tolerance, 1e-5))
    expected = np.argsort(-(vectors @ vectors[7]))[:5] + 100
    assert list(ids[0]) == list(expected)
    assert np.all(np.diff(scores[0]) <= index.tolerance)  # best first


def test_several_queries_at_once(index):
    vectors = _unit(30)
    index.add(np.arange(30), vectors)
    _, ids = index.search(vectors[[3, 9, 20]], 1)
    assert ids[:, 0].tolist() == [3, 9, 20]


def test_remove_and_unknown_ids(index):
    index.add(np.arange(10), _unit(10))
    assert index.remove(np.array([3, 4, 99])) == 2
    assert len(index) == 8 and sorted(index.ids().tolist()) == [0, 1, 2, 5, 6, 7, 8, 9]
    _, ids = index.search(_unit(10)[3:4], 10)
    assert 3 not in ids[0] and ids.shape == (1, 8)


def test_stored_vectors_come_back_and_unknown_ids_raise(index):
    vectors = _unit(10)
    index.add(np.arange(10), vectors)
    assert np.abs(index.vectors(np.array([7, 2])) - vectors[[7, 2]]).max() <= index.tolerance
    with pytest.raises(KeyError):
        index.vectors(np.array([1, 99]))


def test_wrong_vector_size_is_a_clear_error(index):
    with pytest.raises(ValueError, match="size 8"):
        index.add(np.arange(2), np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match="size 8"):
        index.search(np.ones((1, 3), np.float32), 1)


def test_empty_index_searches_to_nothing(index):
    scores, ids = index.search(_unit(1), 5)
    assert ids.shape == (1, 0)


def test_reset_drops_every_vector(index):
    index.add(np.arange(10), _unit(10))
    index.reset()
    assert len(index) == 0
    index.add(np.arange(20, 25), _unit(5))
    assert sorted(index.ids().tolist()) == [20, 21, 22, 23, 24]


def test_saved_index_opens_again_with_the_same_answers(backend, index, tmp_path, request):
    vectors = _unit(20)
    index.add(np.arange(20), vectors)
    path = tmp_path / "i.faiss"
    index.save(path)
    assert sorted(tmp_path.iterdir()) == sorted(index.files(path))  # what it wrote, no temporary left behind
    assert keeps_state_in_server(index) == (index.files(path) == [])
    reopened = backend.reopen(index, path, request)
    try:
        assert len(reopened) == 20 and reopened.dim == 8 and reopened.params() == index.params()
        assert np.array_equal(reopened.search(vectors[:2], 3)[1], index.search(vectors[:2], 3)[1])
    finally:
        if hasattr(reopened, "close"):
            reopened.close()
