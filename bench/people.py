"""People clustering quality: LFW (all 7,701 faces) and celeba_dev, from the cached embeddings.

For each set, faces are grouped by facefind.people.cluster at the default FMR (1e-5, the shipped
calibration's per-quality thresholds) with average linkage (facefind's choice) and with single
linkage (connected components of links, the usual alternative), each with and without the
constraints. These sets hold one face per photo, so to give the one-photo rule something to bind,
the faces are dealt into simulated group photos of GROUP_SIZE different people (as a real group
photo holds different people); "free" ignores that rule. Reported: pairwise precision / recall,
BCubed precision / recall / F, people found with 2+ faces vs true people with 2+ photos, time.
Writes bench/results/people.json and people.png.

    python bench/people.py [--cache bench/results/cache] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, data_dir_or_exit, write_json  # noqa: E402

from facefind.calibration import default_calibration  # noqa: E402
from facefind.evaluation.lfw import list_images  # noqa: E402
from facefind.people.cluster import ClusterInput, cluster_faces  # noqa: E402
from facefind.pipeline.models import ARCFACE_MBF  # noqa: E402

DEFAULT_FMR = 1e-5
SETS = {"lfw": ("lfw", "arcface-lfw-clean.npz"), "celeba_dev": ("celeba_dev", "arcface-celeba-dev.npz")}
TARGET_PRECISION = 0.99
TARGET_COUNT_ERROR = 0.10
GROUP_SIZE = 3


def group_photos(truth: np.ndarray, seed: int = 0) -> list[int]:
    """A simulated photo id per face: faces dealt in turn into photos that never hold one person twice."""
    order = np.random.default_rng(seed).permutation(len(truth))
    photos: list[set[int]] = []
    photo_of = [0] * len(truth)
    open_photos: list[int] = []
    for face in order:
        spot = next((p for p in open_photos if truth[face] not in photos[p]), None)
        if spot is None:
            photos.append(set())
            spot = len(photos) - 1
            open_photos.append(spot)
        photos[spot].add(int(truth[face]))
        photo_of[face] = spot
        if len(photos[spot]) == GROUP_SIZE:
            open_photos.remove(spot)
    return photo_of


def pairwise(groups: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Precision and recall over all same-group face pairs vs same-person pairs."""
    def pairs(counts) -> int:
        return int(sum(c * (c - 1) // 2 for c in counts))

    together = pairs(Counter(groups.tolist()).values())
    same = pairs(Counter(truth.tolist()).values())
    both = pairs(Counter(zip(groups.tolist(), truth.tolist())).values())
    return both / max(together, 1), both / max(same, 1)


def bcubed(groups: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    joint = Counter(zip(groups.tolist(), truth.tolist()))
    size_g, size_t = Counter(groups.tolist()), Counter(truth.tolist())
    precision = np.mean([joint[(g, t)] / size_g[g] for g, t in zip(groups.tolist(), truth.tolist())])
    recall = np.mean([joint[(g, t)] / size_t[t] for g, t in zip(groups.tolist(), truth.tolist())])
    return float(precision), float(recall), float(2 * precision * recall / (precision + recall))


def run(vectors: np.ndarray, quality: np.ndarray, truth: np.ndarray, linkage: str, constrained: bool,
        repeats: int) -> dict:
    calibration = default_calibration(ARCFACE_MBF.model_id)
    thresholds = np.array([calibration.table_for(q).threshold_for_fmr(DEFAULT_FMR) for q in quality])
    ids = np.arange(len(vectors))
    data = ClusterInput(ids, vectors, thresholds, media_ids=group_photos(truth))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        found = cluster_faces(data, linkage=linkage, constrained=constrained)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    groups = np.empty(len(ids), dtype=np.int64)
    for number, members in enumerate(found):
        groups[members] = number
    precision, recall = pairwise(groups, truth)
    b_precision, b_recall, b_f = bcubed(groups, truth)
    true_count = sum(1 for c in Counter(truth.tolist()).values() if c >= 2)
    found_count = sum(1 for members in found if len(members) >= 2)
    return {"linkage": linkage, "constrained": constrained, "median_seconds": round(seconds, 3), "repeats": repeats,
            "pairwise_precision": round(precision, 5), "pairwise_recall": round(recall, 5),
            "bcubed_precision": round(b_precision, 5), "bcubed_recall": round(b_recall, 5),
            "bcubed_f": round(b_f, 5), "people_2plus": found_count, "true_people_2plus": true_count,
            "count_error": round(found_count / true_count - 1, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    args = parser.parse_args()
    data = data_dir_or_exit()
    report: dict = {"default_fmr": DEFAULT_FMR, "targets": {"pairwise_precision": TARGET_PRECISION,
                                                            "count_error": TARGET_COUNT_ERROR}, "sets": {}}
    for name, (folder, cache) in SETS.items():
        stored = np.load(args.cache / cache, allow_pickle=False)
        paths = list_images(data / folder)
        found = ~np.isnan(stored["embeddings"][:, 0])
        truth_names = np.array([p.split("/")[0] for p in paths])[found]
        truth = np.unique(truth_names, return_inverse=True)[1]
        vectors, quality = stored["embeddings"][found], stored["quality"][found]
        rows = [run(vectors, quality, truth, linkage, constrained, args.repeats)
                for linkage in ("average", "single") for constrained in (True, False)]
        report["sets"][name] = {"faces": int(found.sum()), "images": len(paths), "group_size": GROUP_SIZE,
                                "runs": rows}
        for row in rows:
            print(name, row)
    path = write_json("people", report)
    plot(report)
    print(path)


def plot(report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(report["sets"]), figsize=(11, 4))
    for axis, (name, entry) in zip(np.atleast_1d(axes), report["sets"].items()):
        labels = [f"{r['linkage']}\n{'constr.' if r['constrained'] else 'free'}" for r in entry["runs"]]
        x = np.arange(len(labels))
        for offset, key in ((-0.27, "pairwise_precision"), (0, "pairwise_recall"), (0.27, "bcubed_f")):
            axis.bar(x + offset, [r[key] for r in entry["runs"]], 0.27, label=key)
        axis.axhline(TARGET_PRECISION, color="k", linestyle=":", linewidth=1)
        axis.set_xticks(x, labels)
        axis.set_ylim(0.5, 1.0)
        axis.set_title(f"{name}: {entry['faces']} faces")
    np.atleast_1d(axes)[0].legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(RESULTS / "people.png", dpi=110)


if __name__ == "__main__":
    main()
