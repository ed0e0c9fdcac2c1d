"""The vector index: nearest-neighbour search over face embeddings, rebuildable from the catalog."""

from typing import Callable

import faiss

from facefind.errors import FaceFindError
from facefind.index.base import ServerVectorIndex, VectorIndex, keeps_state_in_server
from facefind.index.faiss_index import FaissFlatIndex
from facefind.index.ann import FaissAnnIndex, IndexPolicy

__all__ = [
    "FaissAnnIndex", "FaissFlatIndex", "IndexPolicy", "SERVER_INDEXES", "ServerVectorIndex", "VectorIndex",
    "check_index_spec", "is_server_index", "keeps_state_in_server", "open_index",
]
DEFAULT_INDEX = "faiss"


def _pgvector(spec: str, dim: int, model_id: str, catalog_url: str | None) -> VectorIndex:
    """``pgvector``: in the catalog's own PostgreSQL (and its schema)."""
    from facefind.catalog import is_server_catalog
    from facefind.index.pgvector_index import PgvectorIndex

    if catalog_url is None or not is_server_catalog(catalog_url):
        raise FaceFindError("--index pgvector keeps the index in the catalog's PostgreSQL: give --catalog postgresql://...",
                            reason="bad_argument")
    return PgvectorIndex(catalog_url, dim, model_id)


def _milvus(spec: str, dim: int, model_id: str, catalog_url: str | None) -> VectorIndex:
    """``milvus://host:port[/library]``: one collection per library and model in that Milvus."""
    from facefind.index.milvus_index import open_milvus_index

    return open_milvus_index(spec, dim, model_id, catalog_url)


# Indexes kept by a server, by the scheme their spec starts with ("pgvector", "milvus://..."): each opener gets
# (spec, dim, model_id, catalog URL or None). Adding a backend is one entry here and one in tests/index/conftest.py.
SERVER_INDEXES: dict[str, Callable[[str, int, str, str | None], VectorIndex]] = {"pgvector": _pgvector,
                                                                                 "milvus": _milvus}


def index_backend(spec: str) -> str:
    """The backend a spec names: ``faiss``, ``pgvector``, ``milvus`` (from ``milvus://host:port``)..."""
    return spec.split("://", 1)[0].lower()


def is_server_index(spec: str) -> bool:
    return index_backend(spec) in SERVER_INDEXES


def check_index_spec(spec: str) -> str:
    """``spec`` if facefind knows its backend, else a FaceFindError listing the ones it knows."""
    if index_backend(spec) != DEFAULT_INDEX and not is_server_index(spec):
        known = ", ".join([DEFAULT_INDEX, *sorted(SERVER_INDEXES)])
        raise FaceFindError(f"unknown index {spec!r}: use one of {known}", reason="bad_argument")
    return spec


def open_index(spec: str, dim: int, *, model_id: str = "", catalog_url: str | None = None) -> VectorIndex:
    """A vector index for ``spec``: ``faiss`` gives a new, empty exact index (Library loads saved FAISS files and
    switches to ANN itself); a server spec opens (creating if needed) that server's index for this model."""
    backend = index_backend(check_index_spec(spec))
    if backend == DEFAULT_INDEX:
        return FaissFlatIndex(dim)
    return SERVER_INDEXES[backend](spec, dim, model_id, catalog_url)

# facefind searches one probe at a time (many at once in the service, each on its own thread): FAISS's
# OpenMP threads only add contention. bench/scale.py, 1M faces, loaded 2-core machine: ANN search
# p50 20.5 ms with 2 threads, 6.9 ms with 1.
faiss.omp_set_num_threads(1)
