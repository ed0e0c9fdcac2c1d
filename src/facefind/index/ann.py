"""Compressed approximate search for large libraries: PQ fast-scan proposes, fp16 codes re-rank.

bench/scale.py measured it at 1M faces: a flat scan costs ~90 ms a query, HNSW builds for 15 min
and IVF needs ~1000 probes; 4-bit product-quantisation fast-scan (dim/8 bytes a face) scans a
million codes in a few ms, and re-ranking its best few hundred with half-precision copies of the
vectors restores the exact order (search then re-scores the top from the catalog, in full precision).

FAISS's own ``IndexRefine`` cannot remove ids, so the two parts are two ``IndexIDMap2`` indexes
that receive the same adds and removals. The proposal codebook is trained on a sample of the
library; :class:`IndexPolicy` says when to switch to this index and when to train it again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import faiss
import numpy as np

from facefind.index.base import check_batch, check_vectors
from facefind.index.faiss_index import (
    id_map_ids,
    id_map_vectors,
    read_faiss_index,
    write_faiss_index,
)

TRAIN_SAMPLE = 65_536  # vectors the PQ codebook is trained on (16 centroids per sub-space need few)


@dataclass(frozen=True)
class IndexPolicy:
    """Which index a library of a given size uses, and when the ANN codebook is trained again.

    ``ann_threshold``: below it the flat index is exact and fast enough (its scan grows linearly:
    ~9 ms a query at 100k faces on 2 cores); above it the ANN index is built. ``retrain_growth``:
    a codebook trained on N faces is trained again once the library holds that many times N.
    ``rerank_extra``: candidates proposed beyond the ``k`` asked for, re-ranked with the fp16 codes;
    ``rerank_factor``: but at least this many times ``k``. A plain search asks for 40 (640 proposed);
    a covered probe asks for 400, and its fused top 10 lies deeper in the plain order, so the PQ
    proposals need proportionally more slack (bench/scale.py --covered-sweep: at 500k faces its
    recall@10 vs fused scoring of every face went 0.905 -> 0.97 from 1,000 to 4,000+ proposals).
    """

    ann_threshold: int = 100_000
    retrain_growth: float = 4.0
    rerank_extra: int = 600
    rerank_factor: int = 16

    def kind_for(self, count: int) -> str:
        return "pq-refine" if count >= self.ann_threshold else "flat"

    def to_dict(self) -> dict:
        return asdict(self)


class FaissAnnIndex:
    """PQ fast-scan (dim/4 sub-spaces of 4 bits) proposes candidates; SQfp16 codes re-rank them."""

    kind = "pq-refine"
    tolerance = 2e-3  # |fp16 copy - stored vector| per component; the flat index holds them exactly
    # |index score - exact score| for unit vectors: fp16 rounds each component by at most 2^-11 of it, so the
    # copy is within 2^-11 (4.9e-4) of the vector in length, and so is its inner product with a unit probe
    score_slack = 1e-3

    def __init__(self, dim: int, proposals: faiss.Index, refine: faiss.Index, trained_on: int,
                 policy: IndexPolicy | None = None) -> None:
        self.dim = dim
        self._proposals = proposals
        self._refine = refine
        self.trained_on = trained_on
        self.policy = policy or IndexPolicy()
        self._views: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None = None  # see _rerank_views

    @classmethod
    def trained(cls, dim: int, sample: np.ndarray, trained_on: int, policy: IndexPolicy | None = None) -> "FaissAnnIndex":
        """An empty index whose codebook is fitted to ``sample`` (a random subset of the library)."""
        sample = check_vectors(sample, dim)
        proposals = faiss.index_factory(dim, f"IDMap2,PQ{dim // 4}x4fs", faiss.METRIC_INNER_PRODUCT)
        proposals.train(sample)
        refine = faiss.index_factory(dim, "IDMap2,SQfp16", faiss.METRIC_INNER_PRODUCT)
        refine.train(sample)  # no-op for fp16, kept so another codec can be swapped in
        return cls(dim, proposals, refine, trained_on, policy)

    def __len__(self) -> int:
        return int(self._refine.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids, vectors = check_batch(ids, vectors, self.dim)
        if len(ids) == 0:
            return
        self._views = None  # an add may move the buffers the views point into
        self._proposals.add_with_ids(vectors, ids)
        self._refine.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> int:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return 0
        self._views = None
        self._proposals.remove_ids(faiss.IDSelectorBatch(ids))
        return int(self._refine.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = check_vectors(queries, self.dim)
        if len(self) == 0 or k <= 0:
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        k = min(k, len(self))
        wanted = min(len(self), max(k + self.policy.rerank_extra, k * self.policy.rerank_factor))
        _, proposed = self._proposals.search(queries, wanted)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        held_ids, order, codes = self._rerank_views()
        for row, (query, candidates) in enumerate(zip(queries, proposed)):
            positions = np.minimum(np.searchsorted(held_ids, candidates), len(held_ids) - 1)
            held = held_ids[positions] == candidates  # every proposal is held; this drops the -1 of empty slots
            candidates, positions = candidates[held], positions[held]
            rows = positions if order is None else order[positions]
            exactish = codes[rows].astype(np.float32) @ query
            best = np.argsort(-exactish)[:k]
            scores[row, : len(best)], ids[row, : len(best)] = exactish[best], candidates[best]
        return scores, ids

    def _rerank_views(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(held ids ascending, the row of each, or None when the rows are already in id order, and the fp16
        codes as an (n, dim) float16 array): views of the re-ranking index's own buffers, no copy (mapped
        ones stay mapped). Gathering the candidates' rows with numpy is ~4x faster than FAISS's per-id
        ``reconstruct_batch`` (bench/scale.py, 1M faces). Dropped on every change, which may move the buffers.
        """
        views = self._views
        if views is None:
            count, inner = len(self), faiss.downcast_index(self._refine.index)
            codes = faiss.rev_swig_ptr(inner.codes.data(), count * inner.code_size)
            codes = codes.view(np.float16).reshape(count, self.dim)  # SQfp16 codes are IEEE half floats
            held_ids = faiss.rev_swig_ptr(self._refine.id_map.data(), count)
            if bool((held_ids[1:] > held_ids[:-1]).all()):  # ids are added in catalog order: usually sorted
                views = (held_ids, None, codes)
            else:
                order = np.argsort(held_ids, kind="stable")
                views = (held_ids[order], order, codes)
            self._views = views
        return views

    def ids(self) -> np.ndarray:
        return id_map_ids(self._refine)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        return id_map_vectors(self._refine, ids)

    @staticmethod
    def files(path: Path) -> list[Path]:
        """The files :meth:`save` writes for ``path``: the proposal codes, then the re-ranking codes."""
        return [path, path.with_name(path.stem + "-refine" + path.suffix)]

    def save(self, path: Path) -> None:
        proposals_path, refine_path = self.files(path)
        write_faiss_index(self._proposals, proposals_path)
        write_faiss_index(self._refine, refine_path)

    def reset(self) -> None:
        self._views = None
        self._proposals.reset()
        self._refine.reset()

    def params(self) -> dict:
        return {"kind": self.kind, "proposals": f"PQ{self.dim // 4}x4fs", "refine": "SQfp16",
                "trained_on": self.trained_on, **self.policy.to_dict()}

    @classmethod
    def load(cls, path: Path, trained_on: int, policy: IndexPolicy | None = None, mmap: bool = False) -> "FaissAnnIndex":
        """Read the two files; ``mmap`` maps the re-ranking codes (read-only) instead of reading them,
        so a one-off search reads the small proposal codes and only the pages of its candidates."""
        proposals_path, refine_path = cls.files(path)
        proposals, refine = read_faiss_index(proposals_path), read_faiss_index(refine_path, mmap=mmap)
        if proposals.d != refine.d or proposals.ntotal != refine.ntotal:
            raise ValueError(f"{path} and {refine_path.name} do not hold the same faces")
        return cls(refine.d, proposals, refine, trained_on, policy)
