"""Vector search at scale: exact vs the compressed ANN index, on realistic synthetic embeddings.

Usage::

    nice python bench/scale.py [--sizes 100000,1000000] [--embed-only]
    nice python bench/scale.py --cli 1000000 [--baseline REV]  # a library on disk: CLI, stages, service (below)
    nice python bench/scale.py --covered-sweep 1000000  # covered-probe recall vs time (below)
    nice -n 19 python bench/scale.py --servers milvus,pgvector [--servers-size 1000000] [--ef-construction 200]

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
4. CLI end to end: a one-off ``facefind search`` subprocess against a library on disk (wall, RSS; with
   ``--baseline REV`` that revision's CLI too, interleaved);
   where a library-level search (api.search less its pipeline) spends its time, stage by stage; a real
   ``facefind serve`` on it: search over HTTP, and ``facefind search --service`` (the CLI as its client).
5. Covered probes: recall@10 vs fused scoring of every face against time, by candidates asked and
   PQ proposals per candidate (IndexPolicy.rerank_factor).
6. Server indexes: facefind's MilvusIndex and PgvectorIndex on local servers (facefind.devservices), on the
   gallery and probes of the FAISS rows (same generator and seed), FAISS exact and ANN again in the same run:
   insert + build time, single-query latency, recall@10, mate recall, server memory (PSS) and size on disk.

Writes bench/results/scale.json and scale.png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import nullcontext
from multiprocessing import get_context
from pathlib import Path

import faiss
import numpy as np

from _common import RESULTS, data_dir_or_exit, revision_src, write_json
from facefind.evaluation.lfw import central_face, list_images
from facefind.index import FaissAnnIndex, FaissFlatIndex
from facefind.index.ann import TRAIN_SAMPLE
from facefind.ingest import init_worker, worker_pipeline
from facefind.pipeline import PipelineConfig
from facefind.pipeline.decode import decode_image

CACHE = RESULTS / "cache" / "scale-lfw-arcface.npz"
# a synthetic face's stored quality: complete, so searches can report it as a match like any other
SYNTHETIC_QUALITY = {"face_px": 112.0, "eye_distance_px": 40.0, "sharpness": 300.0, "yaw_deg": 0.0, "pitch_deg": 0.0,
                     "roll_deg": 0.0, "detection_score": 0.9, "verdict": "good", "reasons": []}


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


# -- 2. the fitted generator -------------------------------------------------------------------------


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _root(covariance: np.ndarray) -> np.ndarray:
    """A matrix square root of a covariance (negative eigenvalues from estimation noise clipped)."""
    values, vectors = np.linalg.eigh(covariance)
    return vectors * np.sqrt(np.clip(values, 0, None))


class Generator:
    """Synthetic faces whose same/different-person cosines match real facefind embeddings."""

    def __init__(self, identity: np.ndarray, plain: np.ndarray, masked: np.ndarray) -> None:
        people, counts = np.unique(identity, return_counts=True)
        several = np.isin(identity, people[counts >= 2])
        members = [identity == person for person in people[counts >= 2]]
        centres = np.stack([plain[m].mean(axis=0) for m in members])
        residuals = np.concatenate([plain[m] - plain[m].mean(axis=0) for m in members])
        self.mean = plain.mean(axis=0)
        self.between = _root(np.cov(centres, rowvar=False))
        self.within = _root(np.cov(residuals, rowvar=False))
        # masked template = a * face + mask direction + residual, fitted by least squares
        centred_plain, centred_masked = plain - plain.mean(axis=0), masked - masked.mean(axis=0)
        self.mask_gain = float((centred_plain * centred_masked).sum() / (centred_plain ** 2).sum())
        mask_residual = masked - self.mask_gain * plain
        self.mask_offset = mask_residual.mean(axis=0)
        self.mask_noise = _root(np.cov(mask_residual, rowvar=False))
        self.scales = (1.0, 1.0, 0.0)
        self.scales = self._fit_scales(identity[several], plain[several])

    def _fit_scales(self, identity: np.ndarray, plain: np.ndarray) -> tuple[float, float, float]:
        """Between-person scale, within-person scale and its spread from photo to photo (log-normal:
        some photos are much worse than others) making the synthetic cosine statistics match the real."""
        target = np.array(cosine_stats(identity, plain))
        best, best_error = self.scales, np.inf
        for between in (0.8, 1.0, 1.2, 1.4):
            for within in (0.6, 0.8, 1.0, 1.2):
                for spread in (0.0, 0.3, 0.5, 0.7):
                    self.scales = (between, within, spread)
                    ids, faces, _ = self.sample(1500, 4, np.random.default_rng(0))
                    error = np.abs(np.array(cosine_stats(ids, faces)) - target).sum()
                    if error < best_error:
                        best, best_error = self.scales, error
        return best

    def centres(self, people: int, rng: np.random.Generator) -> np.ndarray:
        return (self.mean + self.scales[0] * rng.standard_normal((people, len(self.mean))) @ self.between.T).astype(np.float32)

    def faces_of(self, centres: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(plain, masked template) of one new photo of each centre's person."""
        noise = rng.standard_normal((len(centres), centres.shape[1])).astype(np.float32)
        per_photo = self.scales[1] * np.exp(self.scales[2] * rng.standard_normal((len(centres), 1)))
        plain = _unit(centres + per_photo.astype(np.float32) * (noise @ self.within.T))
        noise = rng.standard_normal((len(centres), centres.shape[1])).astype(np.float32)
        masked = _unit(self.mask_gain * plain + self.mask_offset + noise @ self.mask_noise.T)
        return plain, masked

    def sample(self, people: int, per_person: int, rng: np.random.Generator):
        """(identity, plain, masked) of ``people`` x ``per_person`` faces."""
        centres = self.centres(people, rng)
        identity = np.repeat(np.arange(people), per_person)
        plain, masked = self.faces_of(centres[identity], rng)
        return identity, plain, masked


def pair_cosines(identity: np.ndarray, a: np.ndarray, b: np.ndarray | None = None, pairs: int = 20_000,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(same-person, different-person) cosines of ``a`` faces against ``b`` faces (default ``a``)."""
    b = a if b is None else b
    rng = np.random.default_rng(seed)
    order = np.argsort(identity, kind="stable")
    starts = np.searchsorted(identity[order], identity)
    counts = np.bincount(identity)[identity]
    first = rng.choice(np.flatnonzero(counts >= 2), pairs)
    second = order[starts[first] + rng.integers(0, counts[first])]
    keep = second != first
    same = np.einsum("ij,ij->i", a[first[keep]], b[second[keep]])
    x, y = rng.integers(0, len(a), pairs), rng.integers(0, len(a), pairs)
    keep = identity[x] != identity[y]
    return same, np.einsum("ij,ij->i", a[x[keep]], b[y[keep]])


def cosine_stats(identity: np.ndarray, plain: np.ndarray) -> tuple[float, float, float, float]:
    same, different = pair_cosines(identity, plain)
    return float(same.mean()), float(same.std()), float(different.mean()), float(different.std())


# -- 3. the index benchmark ---------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentiles(seconds: list[float]) -> dict:
    ms = np.array(seconds) * 1000
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}


def gallery(generator: Generator, size: int, seed: int):
    """(identity, plain, masked float16, probe identity, plain probes, covered probes) of ``size`` faces:
    1 + Poisson(3) photos a person; probes are other photos of 300 people in the gallery."""
    rng = np.random.default_rng(seed)
    counts = 1 + rng.poisson(3, size // 4 + 1000)
    counts = counts[: np.searchsorted(np.cumsum(counts), size) + 1]
    identity = np.repeat(np.arange(len(counts)), counts)[:size]
    centres = generator.centres(len(counts), rng)
    plain = np.empty((size, centres.shape[1]), np.float32)
    masked = np.empty((size, centres.shape[1]), np.float16)
    for start in range(0, size, 100_000):
        chunk = slice(start, min(start + 100_000, size))
        plain[chunk], chunk_masked = generator.faces_of(centres[identity[chunk]], rng)
        masked[chunk] = chunk_masked
    probe_identity = rng.choice(np.unique(identity), 300, replace=False)
    probes, covered = generator.faces_of(centres[probe_identity], rng)  # a new photo; its masked version
    return identity, plain, masked, probe_identity, probes, covered


def measure_index(name: str, build, plain: np.ndarray, identity: np.ndarray, probes: np.ndarray,
                  probe_identity: np.ndarray, exact_top: np.ndarray | None, threshold: float, folder: Path,
                  covered: tuple) -> tuple[dict, np.ndarray]:
    """Build, time single-query searches (index + exact re-scoring of 40 candidates, as search does),
    recall@10 and mate recall against exact search, covered probes, save, reopen (read and mmap), memory."""
    started = time.perf_counter()
    index = build()
    ids = np.arange(len(plain), dtype=np.int64)
    for start in range(0, len(plain), 50_000):
        index.add(ids[start : start + 50_000], plain[start : start + 50_000])
    build_s = time.perf_counter() - started
    latencies, found = [], []
    for probe in probes:
        started = time.perf_counter()
        _, candidates = index.search(probe[None, :], 40)
        candidates = candidates[0][candidates[0] >= 0]
        scores = plain[candidates] @ probe
        found.append(candidates[np.argsort(-scores)[:10]])
        latencies.append(time.perf_counter() - started)
    found = np.array(found)
    result = {"index": name, "build_s": round(build_s, 2), **percentiles(latencies), "params": index.params()}
    if exact_top is not None:
        result["recall_at_10"] = float(np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact_top, found)]))
        mates = [(row, face) for row, top in enumerate(exact_top) for face in top
                 if identity[face] == probe_identity[row] and plain[face] @ probes[row] >= threshold]
        result["mates_above_threshold"] = len(mates)
        result["mate_recall"] = float(np.mean([face in found[row] for row, face in mates])) if mates else None
    masked, covered_probes, fused_top = covered
    result["covered"] = [measure_covered(index, plain, masked, covered_probes, fused_top, widening)
                         for widening in (1, 10, 25)]
    path = folder / f"{name}.index"
    index.save(path)
    files, trained_on = index.files(path), getattr(index, "trained_on", None)
    del index
    result["file_mb"] = round(sum(f.stat().st_size for f in files) / 2**20, 1)
    np.save(folder / "probe.npy", probes[:1])
    for mmap in (False, True):  # read: the service's resident index; mmap: a one-off CLI search
        key = "mmap" if mmap else "read"
        measured = json.loads(subprocess.run(
            [sys.executable, __file__, "--open", str(path), "--open-mmap" if mmap else "--open-read",
             "--trained-on", str(trained_on or 0)], check=True, capture_output=True, text=True).stdout)
        result[f"open_{key}_s"], result[f"rss_{key}_mb"] = measured["open_s"], measured["rss_mb"]
    for file in files:
        file.unlink()
    return result, found


def open_in_this_process(path: Path, mmap: bool, trained_on: int) -> None:
    """Open an index file and search once in a fresh process: (open + first search seconds, RSS added)."""
    probe = np.load(path.parent / "probe.npy")
    before = rss_mb()
    started = time.perf_counter()
    index = FaissFlatIndex.load(path, mmap=mmap) if trained_on == 0 else \
        FaissAnnIndex.load(path, trained_on=trained_on, mmap=mmap)
    index.search(probe, 40)
    print(json.dumps({"open_s": round(time.perf_counter() - started, 3), "rss_mb": round(rss_mb() - before, 1)}))


def exact_fused_top(plain: np.ndarray, masked: np.ndarray, probes: np.ndarray, k: int = 10) -> np.ndarray:
    """Top-``k`` face rows per covered probe by fused score (mean of plain and masked), scoring every face."""
    best_scores = np.full((len(probes), 0), -np.inf, np.float32)
    best_rows = np.empty((len(probes), 0), np.int64)
    for start in range(0, len(plain), 100_000):
        rows = slice(start, min(start + 100_000, len(plain)))
        fused = ((plain[rows] @ probes.T + masked[rows].astype(np.float32) @ probes.T) / 2).T
        scores = np.concatenate([best_scores, fused], axis=1)
        candidates = np.concatenate([best_rows, np.broadcast_to(np.arange(rows.start, rows.stop), fused.shape)], axis=1)
        keep = np.argsort(-scores, axis=1)[:, :k]
        best_scores, best_rows = np.take_along_axis(scores, keep, 1), np.take_along_axis(candidates, keep, 1)
    return best_rows


def measure_covered(index, plain: np.ndarray, masked: np.ndarray, covered: np.ndarray, fused_top: np.ndarray,
                    widening: int) -> dict:
    """Covered probes: the plain index's top 40 x ``widening`` re-scored with plain + masked templates
    (search._candidates, mode mean_of_both) vs fused scoring of every face."""
    hits, latencies = [], []
    for probe, exact in zip(covered, fused_top):
        started = time.perf_counter()
        _, candidates = index.search(probe[None, :], 40 * widening)
        candidates = candidates[0][candidates[0] >= 0]
        scores = (plain[candidates] @ probe + masked[candidates].astype(np.float32) @ probe) / 2
        found = candidates[np.argsort(-scores)[:10]]
        latencies.append(time.perf_counter() - started)
        hits.append(len(set(exact) & set(found)) / 10)
    return {"widening": widening, "recall_at_10_vs_fused": float(np.mean(hits)), **percentiles(latencies)}


def covered_sweep(generator: Generator, size: int, probes: int = 100) -> dict:
    """Covered probes through the ANN index, recall@10 vs fused scoring of every face, against time:
    candidates asked (40 x widening) by proposals per candidate (``rerank_factor``; 0: the former
    ``k + rerank_extra`` only). Vectors are kept as float16 (as the index re-ranks them) so 1M fits in ~3 GB."""
    from facefind.index import IndexPolicy

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(size)
    counts = 1 + rng.poisson(3, size // 4 + 1000)
    counts = counts[: np.searchsorted(np.cumsum(counts), size) + 1]
    identity = np.repeat(np.arange(len(counts)), counts)[:size]
    centres = generator.centres(len(counts), rng)
    _, covered = generator.faces_of(centres[rng.choice(np.unique(identity), probes, replace=False)], rng)
    plain = np.empty((size, centres.shape[1]), np.float16)
    masked = np.empty((size, centres.shape[1]), np.float16)
    index = None
    started = time.perf_counter()
    for start in range(0, size, 100_000):
        chunk = slice(start, min(start + 100_000, size))
        chunk_plain, chunk_masked = generator.faces_of(centres[identity[chunk]], rng)
        if index is None:  # people are in random order: the first chunk is as good a sample as any
            index = FaissAnnIndex.trained(chunk_plain.shape[1], chunk_plain[:TRAIN_SAMPLE], size)
        index.add(np.arange(chunk.start, chunk.stop, dtype=np.int64), chunk_plain)
        plain[chunk], masked[chunk] = chunk_plain, chunk_masked
        print(f"\rcovered sweep: {chunk.stop}/{size} faces", end="", flush=True)
    del centres
    print()
    built_s = time.perf_counter() - started
    fused_top = exact_fused_top(plain, masked, covered)
    rows = []
    for widening in (1, 10, 25):
        for factor in (0, 4, 16, 32):
            index.policy = IndexPolicy(rerank_factor=factor)
            hits, latencies = [], []
            for probe, exact in zip(covered, fused_top):
                began = time.perf_counter()
                _, candidates = index.search(probe[None, :], 40 * widening)
                candidates = candidates[0][candidates[0] >= 0]
                scores = (plain[candidates].astype(np.float32) @ probe + masked[candidates].astype(np.float32) @ probe) / 2
                found = candidates[np.argsort(-scores)[:10]]
                latencies.append(time.perf_counter() - began)
                hits.append(len(set(exact) & set(found)) / 10)
            row = {"widening": widening, "rerank_factor": factor,
                   "proposals": max(40 * widening + index.policy.rerank_extra, 40 * widening * factor),
                   "recall_at_10_vs_fused": round(float(np.mean(hits)), 3), **percentiles(latencies)}
            print(row, flush=True)
            rows.append(row)
    return {"faces": size, "covered_probes": probes, "generate_and_build_s": round(built_s, 1), "rows": rows}


def bench_size(generator: Generator, size: int, threshold: float, folder: Path) -> dict:
    faiss.omp_set_num_threads(1)  # the service answers many searches at once: one core each
    started = time.perf_counter()
    identity, plain, masked, probe_identity, probes, covered = gallery(generator, size, seed=size)
    report = {"faces": size, "people": int(identity.max() + 1), "generate_s": round(time.perf_counter() - started, 1)}
    print(f"{size}: generated in {report['generate_s']} s", flush=True)
    covered = (masked, covered[:100], exact_fused_top(plain, masked, covered[:100]))
    flat, exact_top = measure_index("flat", lambda: FaissFlatIndex(plain.shape[1]), plain, identity,
                                    probes, probe_identity, None, threshold, folder, covered)
    flat["recall_at_10"], flat["mate_recall"] = 1.0, 1.0
    print(f"{size}: flat {flat}", flush=True)
    sample = plain[np.random.default_rng(1).choice(size, min(TRAIN_SAMPLE, size), replace=False)]
    ann, _ = measure_index(
        "pq-refine", lambda: FaissAnnIndex.trained(plain.shape[1], sample, size), plain, identity, probes,
        probe_identity, exact_top, threshold, folder, covered)
    print(f"{size}: ann {ann}", flush=True)
    return {**report, "flat": flat, "ann": ann}


# -- 4. a library on disk and the CLI ------------------------------------------------------------------


def build_library(generator: Generator, size: int, root: Path) -> dict:
    """Write ``size`` synthetic faces (4 a photo, with masked templates) through the catalog in batches,
    the index following as a running ingest's does (flat, switched to ANN at the threshold)."""
    from facefind.catalog import MediaOutcome, NewFace
    from facefind.library import Library
    from facefind.pipeline.models import STACKS

    model_id = STACKS["arcface"].model_id
    rng = np.random.default_rng(size)
    started, index_s = time.perf_counter(), 0.0
    with Library(root, model_id, 512, writable=True) as library:
        for start in range(0, size, 4000):
            people = generator.centres(1000, rng)
            plain, masked = generator.faces_of(np.repeat(people, 4, axis=0)[: min(4000, size - start)], rng)
            outcomes = [MediaOutcome(path=f"/synthetic/{start + i}.jpg", status="indexed", sha256=f"{start + i:064x}",
                                     faces=[NewFace(j, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, SYNTHETIC_QUALITY, model_id,
                                                    plain[i + j], None, masked_embedding=masked[i + j])
                                            for j in range(min(4, len(plain) - i))])
                        for i in range(0, len(plain), 4)]
            with library.writing():
                result = library.catalog.commit_outcomes(outcomes)
                index_started = time.perf_counter()
                library.apply_commit(result)
                index_s += time.perf_counter() - index_started
            print(f"\rlibrary: {start + len(plain)}/{size}", end="", flush=True)
        save_started = time.perf_counter()
        library.save_index()
        kind = library.index.kind
    print()
    return {"faces": size, "write_s": round(time.perf_counter() - started, 1), "index_insert_s": round(index_s, 1),
            "index_save_s": round(time.perf_counter() - save_started, 1), "index_kind": kind,
            "faces_per_s": round(size / (time.perf_counter() - started))}


STAGES = {  # what a library-level search spends its time on: (owner, attribute) wrapped with a timer
    "pipeline (decode, detect, embed)": ("facefind.search", "probe_faces"),
    "index search (PQ proposals + fp16 re-rank)": ("facefind.index.ann.FaissAnnIndex", "search"),
    "catalog: candidates' embeddings": ("facefind.library.Library", "embeddings"),
    "catalog: matched faces' records": ("facefind.catalog.sqlite.SqliteCatalog", "faces"),
    "catalog: search log write": ("facefind.catalog.sqlite.SqliteCatalog", "record_search"),
    "audit log write": ("facefind.audit.AuditLog", "append"),
}


def measure_search_stages(root: Path, probes: list[Path], face_ids: list[int]) -> dict:
    """api.search on the resident library (as the service holds it), each stage timed: where the time goes.

    ``library_level`` is a search less its pipeline. In the same run, the fp16 re-ranking is timed both
    ways (FAISS reconstruct_batch, as before; numpy views of the codes, as now) on the same candidates.
    """
    import importlib
    from unittest import mock

    from facefind import FaceFind
    from facefind.access import Purpose

    spent: dict[str, list[float]] = {stage: [] for stage in STAGES}
    patches = []
    for stage, (owner, attribute) in STAGES.items():
        target = _resolve(importlib, owner)
        original = getattr(target, attribute)

        def timed(*args, _original=original, _stage=stage, **kwargs):
            started = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_stage][-1] += time.perf_counter() - started

        patches.append(mock.patch.object(target, attribute, timed))
    purpose = Purpose("bench", "benchmark of search speed")
    datas = [path.read_bytes() for path in probes]
    totals, face_id_totals, photo_spent = [], [], spent
    with FaceFind(root) as facefind:
        for data in datas[:3]:
            facefind.search(data, show_all=True, purpose=purpose)  # warm: first calls pay for lazy set-up
        for patch in patches:
            patch.start()
        try:
            for data in datas:
                for seconds in spent.values():
                    seconds.append(0.0)
                started = time.perf_counter()
                facefind.search(data, show_all=True, purpose=purpose)
                totals.append(time.perf_counter() - started)
            by_face_id = {stage: [] for stage in STAGES}
            spent = by_face_id  # the timers look the name up at each call
            for face_id in face_ids:  # the same stages, searching from a stored face: no pipeline at all
                for seconds in by_face_id.values():
                    seconds.append(0.0)
                started = time.perf_counter()
                facefind.search_face(face_id, show_all=True, purpose=purpose)
                face_id_totals.append(time.perf_counter() - started)
        finally:
            for patch in patches:
                patch.stop()
        rerank = _rerank_both_ways(facefind)
    pipeline = np.array(photo_spent["pipeline (decode, detect, embed)"])
    library_level = np.array(totals) - pipeline
    return {"searches": len(totals), "api_search_p50_ms": round(float(np.median(totals)) * 1000, 1),
            "library_level": percentiles(list(library_level)),
            "stage_p50_ms": _stage_medians(photo_spent, library_level),
            "by_face_id": {"searches": len(face_id_totals), **percentiles(face_id_totals),
                           "stage_p50_ms": _stage_medians(by_face_id, np.array(face_id_totals))},
            "rerank_640": rerank}


def measure_rescoring_side_by_side(root: Path, face_ids: list[int]) -> dict:
    """Library-level search from stored faces (api.search_face: no pipeline) on the resident library, alternating
    the index's own scores re-scored only where reportable (now) with every candidate's stored embedding read
    and scored (before: FaissAnnIndex without ``score_slack``), by default limits and with show_all. Each way
    searches its own faces (the ways take turns over ``face_ids``): one way never reads catalog pages another
    has just brought into memory."""
    from unittest import mock

    from facefind import FaceFind
    from facefind.access import Purpose
    from facefind.index import FaissAnnIndex

    purpose = Purpose("bench", "benchmark of search speed")
    timings = {f"{way}, {limits}": [] for way in ("index scores", "every candidate read")
               for limits in ("within limits", "show_all")}
    with FaceFind(root) as facefind:
        for face_id in face_ids[:3]:
            facefind.search_face(face_id, purpose=purpose)  # warm-up
        for turn, face_id in enumerate(face_ids[3:]):
            key = list(timings)[turn % len(timings)]
            with mock.patch.object(FaissAnnIndex, "score_slack", new=None) if "every" in key else nullcontext():
                started = time.perf_counter()
                facefind.search_face(face_id, show_all=key.endswith("show_all"), purpose=purpose)
                timings[key].append(time.perf_counter() - started)
    return {"searches_each": len(timings[key]), **{key: percentiles(seconds) for key, seconds in timings.items()}}


def _stage_medians(spent: dict[str, list[float]], library_level: np.ndarray) -> dict:
    """Median ms per stage, and the rest of the library-level time (calibration, responses, locks)."""
    measured = {stage: round(float(np.median(seconds)) * 1000, 2) for stage, seconds in spent.items() if seconds}
    accounted = sum(np.array(seconds) for stage, seconds in spent.items() if seconds and not stage.startswith("pipeline"))
    measured["rest (calibration, records to responses, locks)"] = round(float(np.median(library_level - accounted)) * 1000, 2)
    return measured


def _resolve(importlib, owner: str):
    """A module or a class by dotted name."""
    try:
        return importlib.import_module(owner)
    except ModuleNotFoundError:
        module, _, name = owner.rpartition(".")
        return getattr(importlib.import_module(module), name)


def _rerank_both_ways(facefind) -> dict:
    """Re-ranking 640 proposals with FAISS's reconstruct_batch vs numpy views of the fp16 codes (same ids)."""
    with facefind._library() as library:
        index = library.index
        queries = index.vectors(index.ids()[:: max(1, len(index) // 100)][:100])
        proposed = [index._proposals.search(query[None, :], 640)[1][0] for query in queries]
        held_ids, order, codes = index._rerank_views()
        timings = {"faiss_reconstruct_batch": [], "numpy_views": []}
        for query, candidates in zip(queries, proposed):
            started = time.perf_counter()
            index._refine.reconstruct_batch(candidates) @ query
            timings["faiss_reconstruct_batch"].append(time.perf_counter() - started)
            started = time.perf_counter()
            rows = np.searchsorted(held_ids, candidates)
            codes[rows if order is None else order[rows]].astype(np.float32) @ query
            timings["numpy_views"].append(time.perf_counter() - started)
    return {way: percentiles(seconds) for way, seconds in timings.items()}


def measure_service(root: Path, probe: Path, allow_root: Path, face_ids: list[int], seconds: float = 20.0) -> dict:
    """A real `facefind serve` on the library: search over HTTP (1 client), and `facefind search --service`."""
    from service import free_port, measure

    facefind = [sys.executable, "-m", "facefind", "--library", str(root)]
    user = f"bench{time.strftime('%H%M%S')}"
    subprocess.run([*facefind, "users", "add", "--admin", "--password-stdin", user],
                   input="bench password, not for use\n", text=True, check=True, capture_output=True)
    key = subprocess.run([*facefind, "keys", "create", "--user", user, "--scope", "search", "--expires", "1d"],
                         text=True, check=True, capture_output=True).stdout.split()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = subprocess.Popen([*facefind, "serve", "--port", str(port), "--allow-root", str(allow_root),
                               "--searches-per-hour", "100000000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        import httpx

        import service

        service.HEADERS["Authorization"] = f"Bearer {key}"
        while True:
            try:
                httpx.get(url + "/api/v1/stats", timeout=5, headers=service.HEADERS).raise_for_status()
                break
            except httpx.TransportError:
                if server.poll() is not None or time.perf_counter() - started > 1800:
                    server.kill()  # else reading its stderr waits for ever
                    raise RuntimeError(f"the server did not start: {server.communicate()[1]}")
                time.sleep(0.5)
        open_s = time.perf_counter() - started
        measure(url, probe.read_bytes(), 1, 3.0)  # warm-up
        http = measure(url, probe.read_bytes(), 1, seconds)
        side_by_side = _photo_and_face_id_over_http(url, probe.read_bytes(), face_ids, seconds)
        environment = {**os.environ, "FACEFIND_SERVICE": url, "FACEFIND_API_KEY": key}
        runs, runs_by_id = [], []
        for face_id in face_ids[:3]:
            for by_id, times in ((False, runs), (True, runs_by_id)):
                started = time.perf_counter()
                completed = subprocess.run([sys.executable, "-m", "facefind", "search",
                                            *(["--face-id", str(face_id)] if by_id else [str(probe)]), "--json",
                                            "--case", "bench", "--reason", "benchmark of search speed"],
                                           capture_output=True, text=True, env=environment)
                times.append(time.perf_counter() - started)
                if completed.returncode != 0:
                    raise SystemExit(f"facefind search --service failed: {completed.stderr[-2000:]}")
        imports = []
        for _ in range(3):  # what a CLI process costs before it does anything
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import facefind.cli"], check=True)
            imports.append(time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait(120)
    return {"server_open_s": round(open_s, 1), "http_search_1_client": http,
            "http_photo_vs_face_id_1_client": side_by_side,
            "cli_search_via_service_wall_s": [round(r, 2) for r in runs],
            "cli_search_face_id_via_service_wall_s": [round(r, 2) for r in runs_by_id],
            "cli_import_only_s": [round(r, 2) for r in imports]}


def _photo_and_face_id_over_http(url: str, probe: bytes, face_ids: list[int], seconds: float) -> dict:
    """One client alternating a photo upload and a stored face id (POST /api/v1/search either way) for
    ``seconds``: both latencies under the same conditions. A face id skips decode, detection and embedding."""
    import httpx

    import service

    latencies: dict[str, list[float]] = {"photo": [], "face_id": []}
    stop_at = time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=300, headers=service.HEADERS) as http:
        while time.monotonic() < stop_at:
            for kind in latencies:
                started = time.perf_counter()
                if kind == "photo":
                    response = http.post("/api/v1/search", files={"file": ("probe.jpg", probe, "image/jpeg")},
                                         data=service.PURPOSE)
                else:
                    face_id = face_ids[len(latencies[kind]) % len(face_ids)]
                    response = http.post("/api/v1/search", data={**service.PURPOSE, "face_id": str(face_id)})
                response.raise_for_status()
                latencies[kind].append(time.perf_counter() - started)
    return {kind: {"searches": len(times), **percentiles(times)} for kind, times in latencies.items()}


def measure_switch(generator: Generator, root: Path) -> dict:
    """The commit that crosses the ANN threshold, inline (the CLI) vs in the background (the service): how
    long the commit holds the write lock, and single searches (index level) meanwhile, until the swap."""
    import shutil
    import threading

    from facefind.index import IndexPolicy
    from facefind.library import Library
    from facefind.pipeline.models import STACKS

    threshold = IndexPolicy().ann_threshold
    base = root / "below-threshold"
    if not (base / "catalog.sqlite3").exists():
        build_library(generator, threshold - 2000, base)
    rng = np.random.default_rng(3)
    batch = [generator.faces_of(generator.centres(1000, rng).repeat(4, axis=0), rng) for _ in range(2)]
    results = {}
    for mode in ("inline", "background"):
        folder = root / mode
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(base, folder)
        with Library(folder, STACKS["arcface"].model_id, 512, writable=True) as library:
            library.build_in_background = mode == "background"
            latencies, stop = [], threading.Event()

            def search() -> None:
                queries = generator.faces_of(generator.centres(50, np.random.default_rng(4)), np.random.default_rng(5))[0]
                while not stop.is_set():
                    started = time.perf_counter()
                    with library.reading():
                        library.index.search(queries[len(latencies) % 50][None, :], 40)
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.01)

            searcher = threading.Thread(target=search)
            searcher.start()
            time.sleep(1.0)
            began = time.perf_counter()
            commits = []
            for plain, masked in batch:  # the first crosses the threshold, the second lands during the build
                started = time.perf_counter()
                library.commit_outcomes([_synthetic_outcome(f"/switch/{mode}/{len(commits)}/{i}", plain[i:i + 4],
                                                            masked[i:i + 4]) for i in range(0, len(plain), 4)])
                commits.append(round(time.perf_counter() - started, 2))
            library.wait_for_index_build()
            swapped_s = time.perf_counter() - began
            stop.set()
            searcher.join()
            results[mode] = {"commit_s": commits, "until_ann_serves_s": round(swapped_s, 1),
                             "index_kind": library.index.kind, "faces": len(library.index),
                             "searches_meanwhile": len(latencies),
                             "search_p50_ms": round(float(np.median(latencies)) * 1000, 1),
                             "search_max_ms": round(float(np.max(latencies)) * 1000, 1)}
            print(mode, results[mode], flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return results


def _synthetic_outcome(path: str, plain: np.ndarray, masked: np.ndarray):
    from facefind.catalog import MediaOutcome, NewFace
    from facefind.pipeline.models import STACKS

    model_id = STACKS["arcface"].model_id
    return MediaOutcome(path=path, status="indexed", sha256=None, faces=[
        NewFace(j, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, SYNTHETIC_QUALITY, model_id, plain[j], None,
                masked_embedding=masked[j]) for j in range(len(plain))])


# Runs the CLI in a fresh interpreter and reports its memory at exit: private (anonymous) memory apart from the
# index and catalog file pages it maps. With the files in the page cache, the kernel maps whole large folios
# (up to MBs) around each page a search touches, so RSS counts hundreds of MB of cached file pages that were
# never read for this search and belong to no process; the private part is what the search costs.
CLI_WITH_MEMORY = """
import runpy, sys
sys.argv = ["facefind", *sys.argv[1:]]
try:
    runpy.run_module("facefind", run_name="__main__")
finally:
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    print("MEMORY", *(int(status[key].split()[0]) // 1024 for key in ("VmHWM", "RssAnon", "RssFile")), file=sys.stderr)
"""


def _cli_memory(stderr: str) -> dict:
    """(peak RSS, private, file-backed) MB from the CLI_WITH_MEMORY line."""
    peak, private, mapped = (int(v) for v in next(l for l in stderr.splitlines() if l.startswith("MEMORY")).split()[1:])
    return {"peak_rss_mb": peak, "private_mb_at_exit": private, "file_pages_mapped_mb_at_exit": mapped}


def measure_cli(root: Path, probe: Path, face_ids: list[int], baseline_src: Path | None = None) -> dict:
    """A one-off `facefind search` by photo and by stored face id, alternated (wall, memory), and
    library-level candidate searches in this process. With ``baseline_src`` (another revision's src/), its
    CLI runs interleaved with this code's, on the same library, so the two are compared side by side."""
    from facefind.library import Library
    from facefind.pipeline.models import STACKS
    from facefind.search import _candidates, _proposed

    codes = {"this": None, **({"baseline": baseline_src} if baseline_src else {})}
    walls = {(code, by_id): [] for code in codes for by_id in (False, True)}
    memory = []
    for face_id in face_ids[:5]:
        for code, src in codes.items():
            for by_id in (False, True):
                environment = {**os.environ, **({"PYTHONPATH": str(src)} if src else {})}
                started = time.perf_counter()
                completed = subprocess.run([sys.executable, "-c", CLI_WITH_MEMORY, "--library", str(root), "search",
                                            *(["--face-id", str(face_id)] if by_id else [str(probe)]), "--json",
                                            "--case", "bench", "--reason", "benchmark of search speed"],
                                           capture_output=True, text=True, env=environment)
                walls[(code, by_id)].append(time.perf_counter() - started)
                if completed.returncode not in (0, 1):
                    raise SystemExit(f"facefind search ({code}) failed: {completed.stderr[-2000:]}")
                if code == "this":
                    memory.append(_cli_memory(completed.stderr))
    runs, runs_by_id = walls[("this", False)], walls[("this", True)]
    compared = {}
    if baseline_src:
        before, before_by_id = walls[("baseline", False)], walls[("baseline", True)]
        compared = {"baseline_cli_search_wall_s": [round(r, 2) for r in before],
                    "baseline_cli_search_face_id_wall_s": [round(r, 2) for r in before_by_id],
                    "cli_search_vs_baseline": round(statistics.median(runs) / statistics.median(before), 3),
                    "cli_search_face_id_vs_baseline": round(statistics.median(runs_by_id)
                                                            / statistics.median(before_by_id), 3)}
    started = time.perf_counter()
    with Library(root, STACKS["arcface"].model_id, 512) as library:
        open_s = time.perf_counter() - started
        queries = library.index.vectors(library.index.ids()[:: max(1, len(library.index) // 200)][:200])
        timings = {}
        for label, mode, find in (("plain", "plain", _candidates), ("mean_of_both", "mean_of_both", _candidates),
                                  ("plain_index_scores_no_catalog_read", "plain", _proposed)):
            seconds = []
            for query in queries:
                started = time.perf_counter()
                find(library, query, 10, None, mode, None)
                seconds.append(time.perf_counter() - started)
            timings[label] = percentiles(seconds)
    return {**compared, "cli_search_wall_s": [round(r, 2) for r in runs],
            "cli_search_face_id_wall_s": [round(r, 2) for r in runs_by_id],
            "cli_search_wall_s_median": round(statistics.median(runs), 2),
            "cli_search_face_id_wall_s_median": round(statistics.median(runs_by_id), 2),
            "cli_memory_mb": {key: max(m[key] for m in memory) for key in memory[0]},
            "library_open_read_only_s": round(open_s, 3), "library_search_candidates": timings,
            "catalog_mb": round((root / "catalog.sqlite3").stat().st_size / 2**20),
            "index_files_mb": {p.name: round(p.stat().st_size / 2**20, 1) for p in (root / "index").glob("*.index")}}


# -- 6. the server indexes (pgvector, Milvus) next to FAISS -----------------------------------------------

SERVER_CANDIDATES = 40  # what search asks the index for (top_k 10 x 4), then re-scores exactly


def _search_row(index, plain: np.ndarray, identity: np.ndarray, probes: np.ndarray, probe_identity: np.ndarray,
                exact_top: np.ndarray | None, threshold: float) -> tuple[dict, np.ndarray]:
    """Single-query latency of what search does (index top 40, exact re-scoring), recall@10 and mate recall."""
    for probe in probes[:20]:  # warm caches and connections: the service's resident state
        index.search(probe[None, :], SERVER_CANDIDATES)
    latencies, found = [], []
    for probe in probes:
        started = time.perf_counter()
        _, candidates = index.search(probe[None, :], SERVER_CANDIDATES)
        candidates = candidates[0][candidates[0] >= 0]
        found.append(candidates[np.argsort(-(plain[candidates] @ probe))[:10]])
        latencies.append(time.perf_counter() - started)
    found = np.array(found)
    exact_top = found if exact_top is None else exact_top
    mates = [(row, face) for row, top in enumerate(exact_top) for face in top
             if identity[face] == probe_identity[row] and plain[face] @ probes[row] >= threshold]
    return {**percentiles(latencies),
            "recall_at_10": round(float(np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact_top, found)])), 4),
            "mate_recall": round(float(np.mean([face in found[row] for row, face in mates])), 4) if mates else None,
            "mates_above_threshold": len(mates)}, found


def _ef_sweep(module, setting: str, values: tuple[int, ...], index, plain, identity, probes, probe_identity,
              exact_top, threshold) -> list[dict]:
    """The same built graph searched wider and narrower: how much latency each step of mate recall costs, so
    the library's search breadth is chosen from measurements, not guessed."""
    default, rows = getattr(module, setting), []
    try:
        for value in values:
            setattr(module, setting, value)
            row, _ = _search_row(index, plain, identity, probes, probe_identity, exact_top, threshold)
            rows.append({setting.lower(): value, **row})
            print(rows[-1], flush=True)
    finally:
        setattr(module, setting, default)
    return rows


def _add_all(index, plain: np.ndarray) -> None:
    ids = np.arange(len(plain), dtype=np.int64)
    for start in range(0, len(plain), 50_000):
        index.add(ids[start:start + 50_000], plain[start:start + 50_000])
        print(f"\r  added {min(start + 50_000, len(plain))}/{len(plain)}", end="", flush=True)
    print()


def _pss_mb(pids: list[int]) -> float:
    """Proportional set size of processes together (PostgreSQL's shared buffers counted once, not per backend)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return round(total / 1024, 1)


def _process_tree(root_pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [root_pid]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue += children.get(pid, [])
    return found


def _folder_mb(folder: Path) -> float:
    return round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20, 1)


def faiss_server_rows(plain, identity, probes, probe_identity, threshold) -> tuple[list[dict], np.ndarray]:
    """The FAISS rows of the same run (exact, then ANN): the reference the servers are compared with."""
    rows, exact_top = [], None
    sample = plain[np.random.default_rng(1).choice(len(plain), min(TRAIN_SAMPLE, len(plain)), replace=False)]
    for name, build in (("faiss flat", lambda: FaissFlatIndex(plain.shape[1])),
                        ("faiss pq-refine", lambda: FaissAnnIndex.trained(plain.shape[1], sample, len(plain)))):
        started = time.perf_counter()
        index = build()
        _add_all(index, plain)
        build_s = time.perf_counter() - started
        row, found = _search_row(index, plain, identity, probes, probe_identity, exact_top, threshold)
        exact_top = found if exact_top is None else exact_top
        rows.append({"index": name, "build_s": round(build_s, 1), **row, "params": index.params(),
                     "process_rss_mb": round(rss_mb())})
        print(rows[-1], flush=True)
        del index
    return rows, exact_top


def milvus_server_row(plain, identity, probes, probe_identity, threshold, exact_top) -> dict:
    """facefind's MilvusIndex (HNSW, Strong reads, as a library uses it) on a local Milvus: insert, flush and
    wait until every sealed segment is indexed, reload, then search."""
    from facefind.devservices.milvus import milvus_server
    from facefind.index import milvus_index
    from facefind.index.milvus_index import MilvusIndex

    with milvus_server() as server:
        idle = _pss_mb(_process_tree(server.pid))
        index = MilvusIndex(server.uri, "bench_scale", plain.shape[1])
        started = time.perf_counter()
        _add_all(index, plain)
        insert_s = time.perf_counter() - started
        index.save(Path("unused"))  # flush: seals the segments, the server builds their HNSW graphs
        client = index._client
        while True:
            info = client.describe_index(index.collection, "vector")
            if int(info.get("pending_index_rows", 0)) == 0 and int(info.get("indexed_rows", 0)) >= len(plain):
                break
            time.sleep(2)
        build_s = time.perf_counter() - started
        client.release_collection(index.collection)  # every segment from its sealed, indexed files
        client.load_collection(index.collection)
        row, _ = _search_row(index, plain, identity, probes, probe_identity, exact_top, threshold)
        result = {"index": "milvus hnsw", "insert_s": round(insert_s, 1), "build_s": round(build_s, 1), **row,
                  "params": index.params(), "server_pss_idle_mb": idle,
                  "server_pss_mb": _pss_mb(_process_tree(server.pid)), "on_disk_mb": _folder_mb(server.data_dir),
                  "ef_sweep": _ef_sweep(milvus_index, "HNSW_EF", (256, 1024), index, plain, identity, probes,
                                        probe_identity, exact_top, threshold)}
        index.close()
    print(result, flush=True)
    return result


def pgvector_server_row(plain, identity, probes, probe_identity, threshold, exact_top, ef_construction: int) -> dict:
    """facefind's PgvectorIndex (HNSW over halfvec) on a local PostgreSQL: COPY the rows, build the graph once
    (as Library.rebuild_index does), then search with the library's ef_search."""
    import psycopg

    from facefind.devservices.postgres import local_postgres
    from facefind.index import pgvector_index

    pgvector_index.HNSW_EF_CONSTRUCTION = ef_construction
    # the whole graph in maintenance_work_mem (pgvector's build slows many times once it spills)
    settings = {"shared_buffers": "1GB", "maintenance_work_mem": "4GB" if len(plain) > 300_000 else "2GB",
                "max_parallel_maintenance_workers": "1"}
    with local_postgres(settings=settings) as server:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        idle = _pss_mb(_process_tree(postmaster))
        index = pgvector_index.PgvectorIndex(server.url, plain.shape[1], "bench")
        started = time.perf_counter()
        index.reset()  # rows first, the graph once
        _add_all(index, plain)
        copy_s = time.perf_counter() - started
        index.save(Path("unused"))  # writes no file: builds the HNSW graph
        build_s = time.perf_counter() - started
        row, _ = _search_row(index, plain, identity, probes, probe_identity, exact_top, threshold)
        with psycopg.connect(server.url) as connection:
            table = f"{index.schema}.{index.table}"
            table_bytes, graph_bytes = connection.execute(
                "SELECT pg_total_relation_size(%s) - pg_indexes_size(%s), pg_relation_size(%s)",
                (table, table, f"{table}_hnsw")).fetchone()
        result = {"index": "pgvector hnsw", "insert_s": round(copy_s, 1), "build_s": round(build_s, 1), **row,
                  "params": {**index.params(), "ef_search": max(pgvector_index.EF_SEARCH_MIN, SERVER_CANDIDATES)},
                  "server_pss_idle_mb": idle, "server_pss_mb": _pss_mb(_process_tree(postmaster)),
                  "table_mb": round(table_bytes / 2**20, 1), "graph_mb": round(graph_bytes / 2**20, 1),
                  "on_disk_mb": _folder_mb(server.data_dir),
                  "ef_sweep": _ef_sweep(pgvector_index, "EF_SEARCH_MIN", (100, 400, 800), index, plain, identity,
                                        probes, probe_identity, exact_top, threshold)}
        index.close()
    print(result, flush=True)
    return result


def bench_servers(generator: Generator, backend: str, size: int, threshold: float, ef_construction: int) -> dict:
    """One server backend at ``size`` faces, FAISS exact and ANN measured in the same run on the same gallery
    (the generator and seed of the FAISS size rows)."""
    faiss.omp_set_num_threads(1)
    identity, plain, _, probe_identity, probes, _ = gallery(generator, size, seed=size)
    rows, exact_top = faiss_server_rows(plain, identity, probes, probe_identity, threshold)
    if backend == "milvus":
        rows.append(milvus_server_row(plain, identity, probes, probe_identity, threshold, exact_top))
    else:
        rows.append(pgvector_server_row(plain, identity, probes, probe_identity, threshold, exact_top, ef_construction))
    return {"faces": size, "probes": len(probes), "candidates": SERVER_CANDIDATES, "rows": rows}


def store_server_result(backend: str, measured: dict, note: str | None) -> None:
    """Merge one backend's rows into scale.json (two backends may run at once: a lock around read + write)."""
    import fcntl

    with open(RESULTS / "cache" / "scale-servers.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = json.loads((RESULTS / "scale.json").read_text())
        previous.pop("machine", None)
        servers = previous.get("servers") or {}
        servers[backend] = {**measured, **({"note": note} if note else {})}
        write_json("scale", {**previous, "servers": servers})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-only", action="store_true", help="compute the real-embedding cache and stop")
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--cli", type=int, help="instead: build a library of this many faces (cached) and time the CLI")
    parser.add_argument("--baseline", help="with --cli: also time this git revision's CLI, interleaved (side by side)")
    parser.add_argument("--covered-sweep", type=int, help="instead: covered-probe recall vs time at this many faces")
    parser.add_argument("--plot-only", action="store_true", help="instead: draw scale.png again from scale.json")
    parser.add_argument("--switch", action="store_true", help="instead: the threshold-crossing commit, inline vs background")
    parser.add_argument("--servers", help="instead: the server indexes (milvus, pgvector: comma-separated) next to FAISS")
    parser.add_argument("--servers-size", type=int, default=1_000_000, help="faces for --servers")
    parser.add_argument("--ef-construction", type=int, default=200, help="pgvector HNSW ef_construction for --servers")
    parser.add_argument("--note", help="why a --servers run differs from the plan (recorded with its rows)")
    parser.add_argument("--open", type=Path, help=argparse.SUPPRESS)  # internal: measure one index open
    parser.add_argument("--open-mmap", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--open-read", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--trained-on", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open:
        open_in_this_process(args.open, args.open_mmap, args.trained_on)
        return
    identity, plain, masked = real_embeddings(data_dir_or_exit() / "lfw")
    print(f"{len(plain)} real faces of {len(np.unique(identity))} people")
    if args.embed_only:
        return
    from facefind.calibration.table import default_calibration

    threshold = default_calibration().tables["standard"].threshold_for_fmr(1e-5)

    def make_generator() -> Generator:  # fitted only where embeddings are generated (minutes on a loaded machine)
        return Generator(identity, plain, masked)

    generator = None if args.cli else make_generator()
    if args.covered_sweep:
        previous = json.loads((RESULTS / "scale.json").read_text())
        previous.pop("machine", None)
        write_json("scale", {**previous, "covered_sweep": covered_sweep(generator, args.covered_sweep)})
        args.plot_only = True
    if args.switch:
        previous = json.loads((RESULTS / "scale.json").read_text())
        previous.pop("machine", None)
        write_json("scale", {**previous, "threshold_switch": measure_switch(generator, RESULTS / "cache" / "scale-switch")})
        return
    if args.servers:
        for backend in args.servers.split(","):
            key = backend if backend == "milvus" else f"pgvector_efc{args.ef_construction}"  # graphs differ by it
            store_server_result(key, bench_servers(generator, backend, args.servers_size, threshold,
                                                   args.ef_construction), args.note)
        args.plot_only = True
    if args.plot_only:  # the figure again from scale.json (the histograms are recomputed: they are cheap)
        stored = json.loads((RESULTS / "scale.json").read_text())
        plot(*fit_histograms(generator, identity, plain, masked)[1:], stored["sizes"], stored.get("covered_sweep"),
             stored.get("servers"))
        return
    if args.cli:
        root = RESULTS / "cache" / f"scale-library-{args.cli}"
        built = None if (root / "catalog.sqlite3").exists() else build_library(make_generator(), args.cli, root)
        lfw = data_dir_or_exit() / "lfw"
        probes = [lfw / path for path in list_images(lfw)[:40]]
        face_ids = [int(i) for i in np.random.default_rng(1).integers(1, args.cli + 1, 50)]  # stored faces to search from
        with tempfile.TemporaryDirectory() as scratch:
            baseline_src = revision_src(args.baseline, Path(scratch)) if args.baseline else None
            measured = {**(built or {}), **({"baseline": args.baseline} if args.baseline else {}),
                        **measure_cli(root, probes[0], face_ids, baseline_src)}
        print(measured, flush=True)
        measured["search_stages"] = measure_search_stages(root, probes, face_ids)
        print(measured["search_stages"], flush=True)
        measured["rescoring_side_by_side"] = measure_rescoring_side_by_side(root, face_ids)
        print(measured["rescoring_side_by_side"], flush=True)
        measured["service"] = measure_service(root, probes[0], lfw, face_ids)
        print(measured["service"], flush=True)
        previous = json.loads((RESULTS / "scale.json").read_text())
        previous.pop("machine", None)
        cli = previous.get("cli") or {}
        write_json("scale", {**previous, "cli": {**cli, str(args.cli): {**cli.get(str(args.cli), {}), **measured}}})
        return
    fit, real, synthetic = fit_histograms(generator, identity, plain, masked)
    print(json.dumps(fit, indent=1), flush=True)
    folder = RESULTS / "cache" / "scale-index"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [bench_size(generator, int(size), threshold, folder) for size in args.sizes.split(",")]
    payload = {"threshold_fmr_1e-5": threshold, "generator": {"scales": generator.scales,
               "mask_gain": generator.mask_gain, "fit": fit}, "sizes": sizes}
    previous = RESULTS / "scale.json"
    if previous.exists():  # keep the figures measured by --cli and --covered-sweep
        stored = json.loads(previous.read_text())
        payload.update({key: stored[key] for key in ("cli", "covered_sweep", "servers", "threshold_switch") if key in stored})
    write_json("scale", payload)
    plot(real, synthetic, sizes, payload.get("covered_sweep"), payload.get("servers"))


def fit_histograms(generator: Generator, identity: np.ndarray, plain: np.ndarray, masked: np.ndarray):
    """(fit summary, real cosines, synthetic cosines): same/different-person pairs, plain and covered."""
    synthetic_identity, synthetic_plain, synthetic_masked = generator.sample(2000, 4, np.random.default_rng(7))
    real = {"plain": pair_cosines(identity, plain), "covered": pair_cosines(identity, masked, plain)}
    synthetic = {"plain": pair_cosines(synthetic_identity, synthetic_plain),
                 "covered": pair_cosines(synthetic_identity, synthetic_masked, synthetic_plain)}
    fit = {kind: {source: {"same_mean": float(pairs[0].mean()), "same_std": float(pairs[0].std()),
                           "different_mean": float(pairs[1].mean()), "different_std": float(pairs[1].std())}
                  for source, pairs in (("real", real[kind]), ("synthetic", synthetic[kind]))}
           for kind in real}
    return fit, real, synthetic


def plot(real: dict, synthetic: dict, sizes: list[dict], sweep: dict | None = None, servers: dict | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 + bool(sweep) + bool(servers)
    figure, axes = plt.subplots(1, panels, figsize=(5.3 * panels, 4.5))
    for axis, kind in zip(axes[:2], ("plain", "covered")):
        for source, pairs, style in (("real", real[kind], "-"), ("synthetic", synthetic[kind], "--")):
            for label, values, colour in (("same person", pairs[0], "tab:green"), ("different", pairs[1], "tab:red")):
                axis.hist(values, bins=80, range=(-0.3, 1), density=True, histtype="step", linestyle=style,
                          color=colour, label=f"{source}: {label}")
        axis.set_title(f"cosine, {'photo vs photo' if kind == 'plain' else 'masked template vs photo'}")
        axis.legend(fontsize=7)
    axis = axes[2]
    x = np.arange(len(sizes))
    for offset, key, colour in ((-0.2, "flat", "tab:blue"), (0.2, "ann", "tab:orange")):
        axis.bar(x + offset, [s[key]["p50_ms"] for s in sizes], 0.4, color=colour, label=f"{key} p50")
        axis.scatter(x + offset, [s[key]["p95_ms"] for s in sizes], color="black", marker="_", s=200)
    axis.set_xticks(x, [f"{s['faces']:,} faces" for s in sizes])
    axis.set_ylabel("single-query search, ms (bar p50, tick p95)")
    axis.set_yscale("log")
    axis.legend()
    if sweep:
        axis = axes[3]
        for factor, colour in zip(sorted({row["rerank_factor"] for row in sweep["rows"]}), plt.cm.viridis([0, .35, .65, .9])):
            rows = [row for row in sweep["rows"] if row["rerank_factor"] == factor]
            axis.plot([row["p50_ms"] for row in rows], [row["recall_at_10_vs_fused"] for row in rows], "o-", color=colour,
                      label=f"proposals >= {factor} x asked" if factor else "proposals = asked + 600 (before)")
            for row in rows:
                axis.annotate(f"x{row['widening']}", (row["p50_ms"], row["recall_at_10_vs_fused"]), fontsize=7)
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("covered probe, index + fused re-scoring p50 ms (machine shared)")
        axis.set_ylabel("recall@10 vs fused scoring of every face")
        axis.set_title(f"covered probes at {sweep['faces']:,} faces (xN: 40N candidates)")
        axis.legend(fontsize=7)
    if servers:
        plot_servers(axes[-1], servers)
    figure.tight_layout()
    figure.savefig(RESULTS / "scale.png", dpi=110)


def plot_servers(axis, servers: dict) -> None:
    """Each --servers run: p50 (bar) and p95 (tick) per index, labelled with faces, recall@10 and build time."""
    labels, p50, p95, colours = [], [], [], []
    for backend, run in servers.items():
        for row in run["rows"]:
            labels.append(f"{row['index']} @ {run['faces'] // 1000}k\nrecall@10 {row['recall_at_10']:.2f},"
                          + (f" build {row['build_s']:.0f} s" if row.get("build_s") is not None else " build: see note"))
            p50.append(row["p50_ms"])
            p95.append(row["p95_ms"])
            colours.append("tab:blue" if row["index"].startswith("faiss") else "tab:purple")
    y = np.arange(len(labels))
    axis.barh(y, p50, color=colours)
    axis.scatter(p95, y, color="black", marker="|", s=200)
    axis.set_yticks(y, labels, fontsize=6)
    axis.set_xscale("log")
    axis.set_xlabel("single query, index top 40 + exact re-scoring, ms (bar p50, tick p95)")
    axis.set_title("server indexes next to FAISS (same gallery, same run each)")


if __name__ == "__main__":
    main()
