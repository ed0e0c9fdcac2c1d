"""The vector index: nearest-neighbour search over face embeddings, rebuildable from the catalog."""

from facefind.index.base import VectorIndex
from facefind.index.faiss_index import FaissFlatIndex
from facefind.index.ann import FaissAnnIndex, IndexPolicy

__all__ = ["FaissAnnIndex", "FaissFlatIndex", "IndexPolicy", "VectorIndex"]
