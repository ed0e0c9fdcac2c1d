"""A search restricted to some collections: score the allowed faces exactly, or re-query the index wider?

Usage::

    nice python bench/restricted.py [--faces 50000] [--probes 20]

A synthetic library (random unit vectors, 4 faces a file) is written through the catalog, its files
spread over folders (collections) of growing size. For each collection size a probe is searched
restricted to that folder both ways (``search._candidates`` with ``EXACT_SCORING_MAX`` above and
below the size, side by side in one run): median latency, and whether the top 10 agree. The
answer sets ``search.EXACT_SCORING_MAX``. Writes bench/results/restricted.json and restricted.png.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, write_json
from facefind import search
from facefind.catalog import MediaOutcome, NewFace
from facefind.library import Library
from facefind.pipeline.models import STACKS

QUALITY = {"face_px": 112.0, "eye_distance_px": 40.0, "sharpness": 300.0, "yaw_deg": 0.0, "pitch_deg": 0.0,
           "roll_deg": 0.0, "detection_score": 0.9, "verdict": "good", "reasons": []}
COLLECTION_SIZES = (100, 1_000, 5_000, 20_000)


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def build(root: Path, faces: int, rng: np.random.Generator) -> dict[int, str]:
    """The library; returns collection size -> its folder (the rest of the faces lie in /synthetic/rest)."""
    model_id = STACKS["arcface"].model_id
    folders, start = {}, 0
    for size in COLLECTION_SIZES:
        folders[size] = (start, start + size)
        start += size

    def folder_of(face: int) -> str:
        return next((f"/synthetic/c{size}" for size, (a, b) in folders.items() if a <= face < b), "/synthetic/rest")

    with Library(root, model_id, 512, writable=True) as library:
        for first in range(0, faces, 4000):
            vectors = unit(rng.standard_normal((min(4000, faces - first), 512)))
            outcomes = [MediaOutcome(path=f"{folder_of(first + i)}/{first + i}.jpg", status="indexed",
                                     sha256=f"{first + i:064x}",
                                     faces=[NewFace(j, [0, 0, 1, 1], [[0, 0]] * 5, 0.9, QUALITY, model_id,
                                                    vectors[i + j], None) for j in range(min(4, len(vectors) - i))])
                        for i in range(0, len(vectors), 4)]
            with library.writing():
                library.apply_commit(library.catalog.commit_outcomes(outcomes))
            print(f"\rlibrary: {first + len(vectors)}/{faces}", end="", flush=True)
        library.save_index()
    print()
    return {size: f"/synthetic/c{size}" for size in COLLECTION_SIZES}


def timed_candidates(library: Library, probe: np.ndarray, root: str, exact: bool) -> tuple[float, list[int]]:
    search.EXACT_SCORING_MAX = 10**9 if exact else 0
    started = time.perf_counter()
    candidates, _ = search._candidates(library, probe, 10, None, "plain", [root])
    return time.perf_counter() - started, [face_id for face_id, _ in candidates[:10]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=50_000)
    parser.add_argument("--probes", type=int, default=20)
    options = parser.parse_args()
    default_max = search.EXACT_SCORING_MAX
    rng = np.random.default_rng(11)
    rows = []
    with tempfile.TemporaryDirectory(prefix="facefind-restricted-") as folder:
        roots = build(Path(folder) / "library", options.faces, rng)
        with Library(Path(folder) / "library", STACKS["arcface"].model_id, 512) as library:
            index_kind = library.index.kind
            for size, root in roots.items():
                timings = {"exact": [], "index": []}
                agree = 0
                for probe in unit(rng.standard_normal((options.probes, 512))):
                    exact_s, exact_top = timed_candidates(library, probe, root, exact=True)
                    index_s, index_top = timed_candidates(library, probe, root, exact=False)
                    timings["exact"].append(exact_s)
                    timings["index"].append(index_s)
                    agree += exact_top == index_top
                rows.append({"collection_faces": size, "exact_median_ms": round(1000 * statistics.median(
                    timings["exact"]), 2), "index_median_ms": round(1000 * statistics.median(timings["index"]), 2),
                    "top10_agree": f"{agree}/{options.probes}"})
                print(rows[-1])
    payload = {"library_faces": options.faces, "index_kind": index_kind, "probes": options.probes,
               "exact_scoring_max": default_max, "rows": rows}
    write_json("restricted", payload)
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(6, 4))
    sizes = [row["collection_faces"] for row in rows]
    axis.plot(sizes, [row["exact_median_ms"] for row in rows], "o-", label="score the collection exactly")
    axis.plot(sizes, [row["index_median_ms"] for row in rows], "s-", label="re-query the index wider")
    axis.set(xscale="log", yscale="log", xlabel="faces in the allowed collection",
             ylabel="median candidate search (ms)", title=f"restricted search, {options.faces} faces ({index_kind})")
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "restricted.png", dpi=120)


if __name__ == "__main__":
    main()
