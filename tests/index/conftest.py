"""Vector index backends the contract suite runs against: adding a backend is one entry in INDEX_BACKENDS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from facefind.index import FaissAnnIndex, FaissFlatIndex, IndexPolicy, VectorIndex, open_index

DIM = 8


@dataclass(frozen=True)
class IndexBackend:
    """How to make an empty index of one backend, and how to open it again after ``save`` (another process would)."""

    make: Callable[[pytest.FixtureRequest], VectorIndex]
    reopen: Callable[[VectorIndex, Path, pytest.FixtureRequest], VectorIndex]


def unit(rows: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _reopen_flat(index: VectorIndex, path: Path, request: pytest.FixtureRequest) -> VectorIndex:
    return FaissFlatIndex.load(path)


def _make_ann(request: pytest.FixtureRequest) -> VectorIndex:
    return FaissAnnIndex.trained(DIM, unit(2000, seed=99), 2000, IndexPolicy())


def _reopen_ann(index: VectorIndex, path: Path, request: pytest.FixtureRequest) -> VectorIndex:
    return FaissAnnIndex.load(path, trained_on=index.trained_on, policy=index.policy)


def _make_pgvector(request: pytest.FixtureRequest) -> VectorIndex:
    return open_index("pgvector", DIM, model_id="test:model", catalog_url=request.getfixturevalue("postgres_schema_url"))


def _reopen_pgvector(index: VectorIndex, path: Path, request: pytest.FixtureRequest) -> VectorIndex:
    return _make_pgvector(request)


def _make_milvus(request: pytest.FixtureRequest) -> VectorIndex:
    return open_index(request.getfixturevalue("milvus_spec"), DIM, model_id="test:model")


INDEX_BACKENDS: dict[str, IndexBackend] = {
    "faiss-flat": IndexBackend(lambda request: FaissFlatIndex(DIM), _reopen_flat),
    "faiss-ann": IndexBackend(_make_ann, _reopen_ann),
    "pgvector": IndexBackend(_make_pgvector, _reopen_pgvector),
    "milvus": IndexBackend(_make_milvus, lambda index, path, request: _make_milvus(request)),
}


@pytest.fixture(params=sorted(INDEX_BACKENDS))
def backend(request: pytest.FixtureRequest) -> IndexBackend:
    return INDEX_BACKENDS[request.param]


@pytest.fixture
def index(backend: IndexBackend, request: pytest.FixtureRequest) -> Iterator[VectorIndex]:
    instance = backend.make(request)
    yield instance
    if hasattr(instance, "close"):
        instance.close()
