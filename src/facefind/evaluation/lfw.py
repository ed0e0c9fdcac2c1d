"""LFW through facefind's own pipeline: embeddings, the View-2 protocol, identity splits.

Embeddings are computed once per image (detect -> align -> embed, exactly as
at ingest) and cached in an ``.npz`` keyed by model id, so calibration and the
accuracy benchmark do not redo minutes of work.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np

from facefind.ingest import init_worker, worker_pipeline
from facefind.pipeline import DetectedFace, PipelineConfig
from facefind.pipeline.decode import decode_image
from facefind.pipeline.models import stack_named


@dataclass(frozen=True)
class LfwEmbeddings:
    """One embedding per LFW image (NaN rows where no face was found), with identity labels."""

    paths: list[str]  # relative: Person/Person_0001.jpg
    identities: np.ndarray  # (n,) int person index
    names: list[str]  # person index -> name
    embeddings: np.ndarray  # (n, dim) float32
    quality: list[str]  # quality verdict per image ("" where no face)

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.embeddings[:, 0])

    def index_of(self, name: str, number: int) -> int:
        return self._lookup[f"{name}/{name}_{number:04d}.jpg"]

    @cached_property
    def _lookup(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}


def central_face(faces: list[DetectedFace], width: int, height: int) -> DetectedFace | None:
    """The face LFW is about: the one nearest the centre of the crop, among reasonably large ones."""
    if not faces:
        return None
    largest = max(f.area for f in faces)
    candidates = [f for f in faces if f.area >= 0.25 * largest]
    centre = np.array([width / 2, height / 2])
    return min(candidates, key=lambda f: float(np.linalg.norm((f.box[:2] + f.box[2:]) / 2 - centre)))


def list_images(lfw_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(lfw_dir)) for p in lfw_dir.glob("*/*.jpg"))


def embed_lfw(
    lfw_dir: Path,
    cache: Path | None = None,
    transform: Callable[[np.ndarray, int], np.ndarray] | None = None,
    transform_id: str = "",
    workers: int = 0,
    config: PipelineConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LfwEmbeddings:
    """Embed every image of ``lfw_dir`` in worker processes; ``transform(pixels, i)`` degrades images.

    ``transform`` must be a module-level function (it is sent to the workers).
    """
    config = config or PipelineConfig()
    paths = list_images(lfw_dir)
    stack = stack_named(config.model)
    key = hashlib.sha256(f"{stack.model_id}|{config}|{transform_id}|{len(paths)}|{paths[:3]}".encode()).hexdigest()[:16]
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        if str(stored["key"]) == key:
            return _assemble(paths, stored["embeddings"], list(stored["quality"]))
    embeddings = np.full((len(paths), stack.dim), np.nan, dtype=np.float32)
    quality = [""] * len(paths)
    workers = workers or os.cpu_count() or 1
    chunks = [list(range(start, min(start + 64, len(paths)))) for start in range(0, len(paths), 64)]
    worker_config = PipelineConfig(**{**config.__dict__, "threads": 1})
    done = 0
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker, initargs=(worker_config,)) as pool:
        jobs = [pool.submit(_embed_chunk, str(lfw_dir), [(i, paths[i]) for i in chunk], transform) for chunk in chunks]
        for job in as_completed(jobs):
            for i, vector, verdict in job.result():
                if vector is not None:
                    embeddings[i] = vector
                    quality[i] = verdict
                done += 1
            if progress is not None:
                progress(done, len(paths))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, key=key, embeddings=embeddings, quality=np.array(quality))
    return _assemble(paths, embeddings, quality)


def _embed_chunk(lfw_dir: str, items: list[tuple[int, str]], transform) -> list[tuple[int, np.ndarray | None, str]]:
    pipeline = worker_pipeline()
    results = []
    for i, relative in items:
        pixels = decode_image(Path(lfw_dir) / relative).pixels
        if transform is not None:
            pixels = transform(pixels, i)
        face = central_face(pipeline.analyze(pixels), pixels.shape[1], pixels.shape[0])
        results.append((i, None, "") if face is None else (i, face.embedding, face.quality.verdict))
    return results


def _assemble(paths: list[str], embeddings: np.ndarray, quality: list[str]) -> LfwEmbeddings:
    names = sorted({p.split("/")[0] for p in paths})
    number = {n: i for i, n in enumerate(names)}
    identities = np.array([number[p.split("/")[0]] for p in paths])
    return LfwEmbeddings(paths, identities, names, embeddings, quality)


def read_view2_pairs(pairs_file: Path) -> list[list[tuple[str, int, str, int, bool]]]:
    """The 10 folds of View 2: (name1, n1, name2, n2, same) with 1-based image numbers."""
    lines = pairs_file.read_text().split("\n")
    folds_count, per_half = (int(v) for v in lines[0].split())
    rows = [line.split() for line in lines[1:] if line.strip()]
    folds = []
    for fold in range(folds_count):
        block = rows[fold * 2 * per_half : (fold + 1) * 2 * per_half]
        pairs = []
        for row in block:
            if len(row) == 3:
                pairs.append((row[0], int(row[1]), row[0], int(row[2]), True))
            else:
                pairs.append((row[0], int(row[1]), row[2], int(row[3]), False))
        folds.append(pairs)
    return folds


def identity_split(names: list[str], seed: int = 0) -> tuple[set[int], set[int]]:
    """Two disjoint halves of the identities (fit, check), reproducibly."""
    order = np.random.default_rng(seed).permutation(len(names))
    half = len(names) // 2
    return set(order[:half].tolist()), set(order[half:].tolist())


def pair_scores(lfw: LfwEmbeddings, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All genuine and all impostor cosine scores among the images ``members`` (with a face)."""
    members = members[lfw.found[members]]
    vectors = lfw.embeddings[members]
    ids = lfw.identities[members]
    genuine, impostor = [], []
    block = 2048
    for start in range(0, len(members), block):
        scores = vectors[start : start + block] @ vectors.T
        rows = np.arange(start, min(start + block, len(members)))
        upper = rows[:, None] < np.arange(len(members))[None, :]  # each unordered pair once
        same = ids[rows][:, None] == ids[None, :]
        genuine.append(scores[upper & same])
        impostor.append(scores[upper & ~same])
    return np.concatenate(genuine), np.concatenate(impostor)
