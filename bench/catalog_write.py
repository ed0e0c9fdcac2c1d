"""Catalog at scale: write throughput, bytes per face, and the index rebuild's time and peak memory, before and after.

Both versions run side by side in one run: ``--before REV`` extracts that git revision's ``src/`` into a temporary
folder and each measurement runs in its own child process with ``PYTHONPATH`` pointing at one tree, so the two
share the machine's load. Faces are synthetic (unit vectors, 4 a photo, each with a masked template, boxes,
landmarks and quality as ingest writes them), committed through ``SqliteCatalog.commit_outcomes`` in ingest-sized
batches; the rebuild opens the written library without index files (what a first open after a bulk write does).
A third part checks what storing embeddings as float16 costs in scores, on real LFW embeddings against the shipped
calibration's thresholds.

    nice -n 10 .venv/bin/python bench/catalog_write.py --faces 200000 --before 72ca2eb [--rebuild]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, write_json

REPO = Path(__file__).resolve().parent.parent
MODEL_ID = "w600k_mbf"
DIM = 512
FACES_PER_PHOTO = 4
QUALITY = {"face_px": 112.4, "eye_distance_px": 40.17, "sharpness": 301.52, "yaw_deg": 3.2, "pitch_deg": -4.8,
           "roll_deg": 1.1, "detection_score": 0.912, "verdict": "good", "reasons": [], "lower_face_covered": False,
           "lower_face_covered_score": 0.031, "eyes_covered": False, "eyes_covered_score": 0.012, "usable": True,
           "feature_norm": 21.43}  # Quality.to_dict() of a typical face


# -- children: one measurement each, in the tree PYTHONPATH points at ---------------------------------------------


def synthetic_outcomes(start: int, faces: int, rng: np.random.Generator) -> list:
    """Ingest outcomes of ``faces`` faces, 4 a photo, shaped as ingest commits them."""
    from facefind.catalog import MediaOutcome, NewFace

    plain = rng.standard_normal((faces, DIM), dtype=np.float32)
    plain /= np.linalg.norm(plain, axis=1, keepdims=True)
    masked = plain + 0.5 * rng.standard_normal((faces, DIM), dtype=np.float32) / np.sqrt(DIM)
    masked /= np.linalg.norm(masked, axis=1, keepdims=True)
    outcomes = []
    for first in range(0, faces, FACES_PER_PHOTO):
        number = start + first
        outcomes.append(MediaOutcome(
            path=f"/photos/{number // 1000:05d}/IMG_{number:08d}.jpg", status="indexed", sha256=f"{number:064x}",
            size=2_400_000 + number, mtime_ns=1_700_000_000_000_000_000 + number, width=4032, height=3024,
            format="JPEG", exif_time="2024:06:01 12:00:00",
            faces=[NewFace(
                face_index=j, box=[round(float(x), 2) for x in rng.uniform(0, 3000, 4)],  # as ingest rounds them
                landmarks=[[round(float(x), 2) for x in point] for point in rng.uniform(0, 3000, (5, 2))],
                detection_score=float(rng.uniform(0.5, 1)), quality=QUALITY, model_id=MODEL_ID,
                embedding=plain[first + j], thumbnail=f"{number:064x}_{j}.jpg", masked_embedding=masked[first + j],
            ) for j in range(min(FACES_PER_PHOTO, faces - first))],
        ))
    return outcomes


def child_write(root: Path, faces: int, batch: int) -> dict:
    """Commit ``faces`` faces in batches of ``batch`` (only the commits are timed) and measure the file."""
    from facefind.catalog import SqliteCatalog

    import facefind

    rng = np.random.default_rng(12)
    root.mkdir(parents=True, exist_ok=True)
    catalog = SqliteCatalog(root / "catalog.sqlite3")
    catalog.set_meta("model_id", MODEL_ID)
    per_batch, committed = [], 0.0
    for start in range(0, faces, batch):
        outcomes = synthetic_outcomes(start, min(batch, faces - start), rng)
        started = time.perf_counter()
        catalog.commit_outcomes(outcomes)
        took = time.perf_counter() - started
        committed += took
        per_batch.append(min(batch, faces - start) / took)
    started = time.perf_counter()
    catalog.checkpoint()
    catalog.close()
    checkpoint_s = time.perf_counter() - started
    size = (root / "catalog.sqlite3").stat().st_size
    return {"source": str(Path(facefind.__file__).parent), "faces": faces, "batch_faces": batch,
            "commit_s": round(committed, 2), "checkpoint_s": round(checkpoint_s, 2),
            "faces_per_s": round(faces / committed), "batch_faces_per_s_p50": round(statistics.median(per_batch)),
            "catalog_mb": round(size / 2**20, 1), "bytes_per_face": round(size / faces),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def child_rebuild(root: Path) -> dict:
    """Open the written library with no index files: the vector index is rebuilt from the catalog."""
    from facefind.library import Library

    shutil.rmtree(root / "index", ignore_errors=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with Library(root, MODEL_ID, DIM, writable=True) as library:
        took = time.perf_counter() - started
        kind, count = library.index.kind, len(library.index)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"rebuild_s": round(took, 1), "index_kind": kind, "indexed": count,
            "peak_rss_mb": round(peak / 1024), "rss_before_open_mb": round(base / 1024)}


# -- float16 storage: what it changes in scores ----------------------------------------------------------------


def float16_error() -> dict:
    """Cosine error of float16-stored embeddings on real LFW pairs, and decisions flipped at calibrated thresholds."""
    from facefind.calibration.table import default_calibration

    cached = np.load(REPO / "bench" / "results" / "cache" / "scale-lfw-arcface.npz")
    plain, identity = cached["plain"].astype(np.float32), cached["identity"]
    stored = plain.astype(np.float16).astype(np.float32)
    norm_error = np.abs(np.linalg.norm(stored.astype(np.float64), axis=1) - 1.0)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(plain), (2, 200_000))
    same = np.flatnonzero(identity[:, None] == identity[None, :])  # every mated pair (LFW is small)
    mates_a, mates_b = np.divmod(same, len(plain))
    keep = mates_a < mates_b
    a, b = np.concatenate([a, mates_a[keep]]), np.concatenate([b, mates_b[keep]])
    exact = np.einsum("ij,ij->i", plain[a], plain[b])  # a probe (float32) against a stored face, both ways
    rounded = np.einsum("ij,ij->i", plain[a], stored[b])
    table = default_calibration().table_for("good")
    flips = {}
    for fmr in (1e-3, 1e-4, 1e-5, 1e-6):
        threshold = table.threshold_for_fmr(fmr)
        flips[f"{fmr:g}"] = {"threshold": round(float(threshold), 4),
                             "decisions_flipped": int(np.sum((exact >= threshold) != (rounded >= threshold))),
                             "pairs_within_1e-3": int(np.sum(np.abs(exact - threshold) < 1e-3))}
    error = np.abs(exact - rounded)
    return {"pairs": int(len(a)), "mated_pairs": int(keep.sum()), "cosine_error_max": float(error.max()),
            "cosine_error_p99": float(np.quantile(error, 0.99)), "norm_error_max": float(norm_error.max()),
            "library_norm_tolerance": 1e-3, "at_thresholds": flips}


# -- the parent: trees, children, side by side -------------------------------------------------------------------


def tree_of(revision: str, folder: Path) -> Path:
    """``src/`` of a git revision, extracted into ``folder`` (read-only git: archive)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "src"


def run_child(source: Path, *args: str) -> dict:
    environment = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{REPO / 'bench'}"}
    done = subprocess.run([sys.executable, __file__, "--child", *args], env=environment, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200_000, help="Faces written per version.")
    parser.add_argument("--batch", type=int, default=4000, help="Faces per commit (ingest commits ~ this many).")
    parser.add_argument("--before", help="Git revision to compare with (its src/ runs in a child).")
    parser.add_argument("--rebuild", action="store_true", help="Also time the index rebuild from each catalog.")
    parser.add_argument("--name", default="catalog_write", help="Result name in bench/results/.")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, root, *rest = args.child
        result = child_write(Path(root), *map(int, rest)) if mode == "write" else child_rebuild(Path(root))
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="catalog-bench-") as folder:
        trees = {"after": REPO / "src"}
        if args.before:
            (Path(folder) / "before").mkdir()
            trees = {"before": tree_of(args.before, Path(folder) / "before"), **trees}
        versions = {}
        for name, source in trees.items():
            root = Path(folder) / f"library-{name}"
            versions[name] = {"write": run_child(source, "write", str(root), str(args.faces), str(args.batch))}
            print(name, "write", versions[name]["write"], flush=True)
            if args.rebuild:
                versions[name]["rebuild"] = run_child(source, "rebuild", str(root))
                print(name, "rebuild", versions[name]["rebuild"], flush=True)
            shutil.rmtree(root)
    result = {"faces": args.faces, "batch_faces": args.batch, "before": args.before, "versions": versions,
              "float16": float16_error()}
    print(json.dumps(result["float16"], indent=1))
    write_json(args.name, result)
    plot(result, args.name)


def plot(result: dict, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = result["versions"]
    panels = [("write", "faces_per_s", "faces written / s"), ("write", "bytes_per_face", "catalog bytes / face")]
    if all("rebuild" in v for v in versions.values()):
        panels += [("rebuild", "rebuild_s", "index rebuild s"), ("rebuild", "peak_rss_mb", "rebuild peak RSS MB")]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for axis, (part, key, title) in zip(axes, panels):
        values = [versions[v][part][key] for v in versions]
        axis.bar(list(versions), values, color=["#999999", "#3b7dd8"][-len(values):])
        axis.set_title(title, fontsize=9)
        for x, value in enumerate(values):
            axis.text(x, value, f"{value:,}", ha="center", va="bottom", fontsize=8)
    figure.suptitle(f"SQLite catalog, {result['faces']:,} faces in batches of {result['batch_faces']:,}", fontsize=10)
    figure.tight_layout()
    figure.savefig(RESULTS / f"{name}.png", dpi=110)


if __name__ == "__main__":
    main()
