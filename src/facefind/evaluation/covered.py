"""LFW with synthetic face coverings: the data behind the occlusion classifier and masked matching.

One pass over LFW (in worker processes) yields, per image, the embeddings of
its aligned face plain, wearing a training-shape mask, wearing a held-out-shape
mask, wearing the gallery mask (the template every gallery face gets), and with
sunglasses. Cached in an ``.npz``.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np

from facefind.evaluation.lfw import central_face, list_images
from facefind.ingest import init_worker, worker_pipeline
from facefind.pipeline import PipelineConfig
from facefind.pipeline.decode import decode_image
from facefind.pipeline.models import stack_named
from facefind.pipeline.occlusion import (
    GALLERY_SHAPE,
    HELD_OUT_SHAPES,
    TRAINING_SHAPES,
    combine_scores,
    draw_mask,
    draw_sunglasses,
)

VARIANTS = ("plain", "train_mask", "held_out_mask", "gallery_mask", "sunglasses")


@dataclass(frozen=True)
class CoveredLfw:
    paths: list[str]
    identities: np.ndarray
    names: list[str]
    embeddings: dict[str, np.ndarray]  # variant -> (n, 512), NaN rows where no face was found

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.embeddings["plain"][:, 0])


def _variants(crop: np.ndarray, index: int) -> list[np.ndarray]:
    return [
        crop,
        draw_mask(crop, TRAINING_SHAPES[index % len(TRAINING_SHAPES)], seed=index),
        draw_mask(crop, HELD_OUT_SHAPES[index % len(HELD_OUT_SHAPES)], seed=index + 1),
        draw_mask(crop, GALLERY_SHAPE, seed=0),
        draw_sunglasses(crop, seed=index),
    ]


def _chunk(lfw_dir: str, items: list[tuple[int, str]]) -> list[tuple[int, np.ndarray | None]]:
    pipeline = worker_pipeline()
    results = []
    for i, relative in items:
        pixels = decode_image(Path(lfw_dir) / relative).pixels
        face = central_face(pipeline.analyze(pixels), pixels.shape[1], pixels.shape[0])
        results.append((i, None if face is None else pipeline.recognizer.embed(np.stack(_variants(face.aligned, i)))))
    return results


def embed_covered_lfw(
    lfw_dir: Path, cache: Path | None = None, workers: int = 0, progress: Callable[[int, int], None] | None = None,
    model: str = "arcface",
) -> CoveredLfw:
    paths = list_images(lfw_dir)
    stack = stack_named(model)
    key = hashlib.sha256(f"{stack.model_id}|covered-v1|{len(paths)}".encode()).hexdigest()[:16]
    names = sorted({p.split("/")[0] for p in paths})
    number = {n: i for i, n in enumerate(names)}
    identities = np.array([number[p.split("/")[0]] for p in paths])
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        if str(stored["key"]) == key:
            return CoveredLfw(paths, identities, names, {v: stored[v] for v in VARIANTS})
    embeddings = {v: np.full((len(paths), stack.dim), np.nan, np.float32) for v in VARIANTS}
    chunks = [list(range(s, min(s + 64, len(paths)))) for s in range(0, len(paths), 64)]
    done = 0
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=get_context("spawn"),
                             initializer=init_worker, initargs=(PipelineConfig(threads=1, model=model),)) as pool:
        jobs = [pool.submit(_chunk, str(lfw_dir), [(i, paths[i]) for i in chunk]) for chunk in chunks]
        for job in as_completed(jobs):
            for i, vectors in job.result():
                if vectors is not None:
                    for variant, vector in zip(VARIANTS, vectors):
                        embeddings[variant][i] = vector
                done += 1
            if progress is not None:
                progress(done, len(paths))
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, key=key, **embeddings)
    return CoveredLfw(paths, identities, names, embeddings)


MATCH_MODES = ("plain", "masked", "best_of_both", "mean_of_both")


def covered_pair_scores(
    covered: CoveredLfw, members: np.ndarray, probe_variant: str, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine/impostor scores of covered probes against the gallery, in a matching mode.

    ``plain``: against the gallery faces as they are; ``masked``: against their masked
    templates; ``best_of_both``: the higher of the two; ``mean_of_both``: their mean. A
    probe is never compared with its own image.
    """
    members = members[covered.found[members]]
    probes = covered.embeddings[probe_variant][members]
    plain_gallery = covered.embeddings["plain"][members]
    masked_gallery = covered.embeddings["gallery_mask"][members]
    ids = covered.identities[members]
    genuine, impostor = [], []
    for start in range(0, len(members), 1024):
        rows = slice(start, start + 1024)
        plain = probes[rows] @ plain_gallery.T
        masked = probes[rows] @ masked_gallery.T
        scores = combine_scores(plain, masked, mode)
        same = ids[rows][:, None] == ids[None, :]
        itself = np.arange(len(members))[rows][:, None] == np.arange(len(members))[None, :]
        genuine.append(scores[same & ~itself])
        impostor.append(scores[~same])
    return np.concatenate(genuine), np.concatenate(impostor)
