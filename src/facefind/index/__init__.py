"""The vector index: nearest-neighbour search over face embeddings, rebuildable from the catalog."""

import faiss

from facefind.index.base import VectorIndex
from facefind.index.faiss_index import FaissFlatIndex
from facefind.index.ann import FaissAnnIndex, IndexPolicy

__all__ = ["FaissAnnIndex", "FaissFlatIndex", "IndexPolicy", "VectorIndex"]

# facefind searches one probe at a time (many at once in the service, each on its own thread): FAISS's
# OpenMP threads only add contention. bench/scale.py, 1M faces, loaded 2-core machine: ANN search
# p50 20.5 ms with 2 threads, 6.9 ms with 1.
faiss.omp_set_num_threads(1)
