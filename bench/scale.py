"""Vector search at scale: exact vs the compressed ANN index, on realistic synthetic embeddings.

Usage::

    nice python bench/scale.py [--sizes 100000,1000000] [--embed-only]

1. Real embeddings: every LFW photo's central face through the default pipeline (plain and masked
   template), cached in bench/results/cache/ (git-ignored).
2. A generator fitted to them: identity centres ~ N(mean, between-person covariance), faces =
   normalise(centre + N(0, within-person covariance)); masked templates = normalise(a * face +
   mask direction + residual noise), a and the noise fitted by regression. The plot compares
   same-person and different-person cosine histograms, real vs synthetic.
3. For each size: the exact index and the chosen ANN index built on the same vectors (library
   level: facefind.index backends, the catalog is not involved), then single-query latency,
   recall@10 vs exact, mate recall above the calibrated threshold (standard table, FMR 1e-5),
   index memory, save/open time; covered probes through the plain index re-scored with the masked
   templates (the design in search._candidates) against exhaustive fused scoring.
4. CLI end to end: a one-off ``facefind search`` subprocess against a library on disk (wall, RSS).

Writes bench/results/scale.json and scale.png.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from _common import RESULTS, data_dir_or_exit, write_json
from facefind.evaluation.lfw import central_face, list_images
from facefind.ingest import init_worker, worker_pipeline
from facefind.pipeline import PipelineConfig
from facefind.pipeline.decode import decode_image

CACHE = RESULTS / "cache" / "scale-lfw-arcface.npz"


# -- 1. real embeddings ------------------------------------------------------------------------------


def _embed_chunk(lfw_dir: str, items: list[tuple[int, str]]) -> list[tuple[int, np.ndarray | None, np.ndarray | None]]:
    pipeline = worker_pipeline()
    results = []
    for i, relative in items:
        pixels = decode_image(Path(lfw_dir) / relative).pixels
        face = central_face(pipeline.analyze(pixels), pixels.shape[1], pixels.shape[0])
        results.append((i, None, None) if face is None else (i, face.embedding, face.masked_embedding))
    return results


def real_embeddings(lfw_dir: Path, workers: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(identity per face, plain embeddings, masked templates) of LFW, from the cache when there."""
    if CACHE.exists():
        stored = np.load(CACHE)
        return stored["identity"], stored["plain"], stored["masked"]
    paths = list_images(lfw_dir)
    names = sorted({p.split("/")[0] for p in paths})
    number = {n: i for i, n in enumerate(names)}
    dim = 512
    plain = np.full((len(paths), dim), np.nan, np.float32)
    masked = np.full((len(paths), dim), np.nan, np.float32)
    chunks = [list(range(s, min(s + 64, len(paths)))) for s in range(0, len(paths), 64)]
    config = PipelineConfig(threads=1, masked_templates=True)
    done = 0
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=init_worker,
                             initargs=(config,)) as pool:
        jobs = [pool.submit(_embed_chunk, str(lfw_dir), [(i, paths[i]) for i in chunk]) for chunk in chunks]
        for job in as_completed(jobs):
            for i, vector, masked_vector in job.result():
                if vector is not None:
                    plain[i], masked[i] = vector, masked_vector
            done += 64
            print(f"\rembedding LFW {min(done, len(paths))}/{len(paths)}", end="", flush=True)
    print()
    found = ~np.isnan(plain).any(axis=1)
    identity = np.array([number[p.split("/")[0]] for p in paths])[found]
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez(CACHE, identity=identity, plain=plain[found], masked=masked[found])
    return identity, plain[found], masked[found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-only", action="store_true", help="compute the real-embedding cache and stop")
    args = parser.parse_args()
    identity, plain, masked = real_embeddings(data_dir_or_exit() / "lfw")
    print(f"{len(plain)} real faces of {len(np.unique(identity))} people")
    if args.embed_only:
        return


if __name__ == "__main__":
    main()
