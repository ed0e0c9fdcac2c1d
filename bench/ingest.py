"""Ingest throughput: images/s and faces/s end to end (walk, hash, decode, detect, align, embed, commit).

Runs on the LFW tree (7,701 small tight crops) and on group_photos/ (large
photos, many faces), with 1 and with all worker processes side by side in one
run, several repeats each; reports medians, the parallel speed-up ratio and
peak memory (parent, largest worker, all workers together: sampled while it runs).
Each run is a fresh process, so the code measured can be this tree or a baseline git revision (``--baseline``, default HEAD,
extracted to a temp folder), run interleaved with it; the load average is recorded.
Writes bench/results/ingest.json and ingest.png.

    python bench/ingest.py [--limit 2000] [--repeats 3] [--baseline HEAD | --baseline ""]
    nice -n 10 python bench/ingest.py --cluster [--limit 200] [--repeats 2]   # Dask: writes ingest_cluster.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

import psutil  # comes with distributed (the cluster extra)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, RESULTS, data_dir_or_exit, revision_src, write_json  # noqa: E402

LFW_TARGET_IMAGES_PER_SECOND = 25.0


def _subset(source: Path, limit: int | None, workdir: Path) -> Path:
    """A folder of symlinks to the first ``limit`` images of ``source`` (all when None)."""
    images = sorted(p for p in source.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    if limit:
        images = images[:limit]
    target = workdir / source.name
    target.mkdir()
    for i, image in enumerate(images):
        os.symlink(image, target / f"{i:06d}{image.suffix}")
    return target


class RssSampler(threading.Thread):
    """Samples the resident memory of a set of processes every 0.2 s: the peak of their SUM (what the machine
    must hold) and of the largest one. getrusage cannot see workers that are never waited for (it said 0 MB)."""

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak_total_mb, self.peak_single_mb = pids, 0.0, 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            sizes = []
            for pid in self.pids():
                with contextlib.suppress(psutil.Error):
                    sizes.append(psutil.Process(pid).memory_info().rss / 2**20)
            self.peak_total_mb = max(self.peak_total_mb, sum(sizes))
            self.peak_single_mb = max(self.peak_single_mb, max(sizes, default=0.0))

    def __enter__(self) -> "RssSampler":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()


def _local_workers() -> list[int]:
    return [child.pid for child in psutil.Process().children(recursive=True)]


def _measure(folder: Path, workers: int, library: Path, cluster: str | None = None,
             cluster_pids: list[int] | None = None) -> dict:
    """One ingest into a new library, in this process (the code on sys.path); on ``cluster`` when given,
    whose worker processes are ``cluster_pids``."""
    from facefind.api import FaceFind

    with RssSampler(lambda: cluster_pids if cluster else _local_workers()) as sampler:
        report = FaceFind(library).index([folder], workers=workers, cluster=cluster) if cluster else \
            FaceFind(library).index([folder], workers=workers)
    return {
        "peak_mb_parent": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_mb_worker": sampler.peak_single_mb,
        "peak_mb_workers_total": sampler.peak_total_mb,
        "seconds": report.seconds,
        "images": report.processed,
        "faces": report.faces_added,
        "images_per_second": report.processed / report.seconds,
        "faces_per_second": report.faces_added / report.seconds,
        "failed": report.failed,
    }


def _run(source: Path, folder: Path, workers: int, workdir: Path, cluster: str | None = None,
         cluster_pids: list[int] | None = None) -> dict:
    """:func:`_measure` in a fresh process importing facefind from ``source`` (a src/ folder)."""
    library = workdir / f"lib-{workers}-{'cluster' if cluster else 'local'}"
    shutil.rmtree(library, ignore_errors=True)
    command = [sys.executable, __file__, "--measure", str(folder), str(workers), str(library)]
    if cluster:
        command += ["--measure-cluster", cluster, ",".join(map(str, cluster_pids or []))]
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(source)}, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(repeats: list[dict]) -> dict:
    return {
        "images": repeats[0]["images"],
        "faces": repeats[0]["faces"],
        "failed": repeats[0]["failed"],
        "median_images_per_second": statistics.median(r["images_per_second"] for r in repeats),
        "median_faces_per_second": statistics.median(r["faces_per_second"] for r in repeats),
        "runs": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N LFW images (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default="HEAD", help="git revision to compare against; empty for none")
    parser.add_argument("--cluster", action="store_true",
                        help="compare local worker processes with 1, 2 and 4 Dask workers on loopback instead")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)  # internal: one run, JSON on stdout
    parser.add_argument("--measure-cluster", nargs=2, help=argparse.SUPPRESS)  # internal: scheduler, worker pids
    args = parser.parse_args()
    if args.measure:
        folder, workers, library = args.measure
        cluster, pids = args.measure_cluster or (None, "")
        print(json.dumps(_measure(Path(folder), int(workers), Path(library), cluster,
                                  [int(pid) for pid in pids.split(",") if pid])))
        return
    if args.cluster:
        cluster_main(args.limit or 200, args.repeats)
        return
    data = data_dir_or_exit()
    workers_all = os.cpu_count() or 1
    results: dict = {"sets": {}}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        sources = {"current": REPO / "src"}
        if args.baseline:
            (workdir / "baseline").mkdir()
            sources["baseline"] = revision_src(args.baseline, workdir / "baseline")
        for name, source, limit in (("lfw", data / "lfw", args.limit), ("group_photos", data / "group_photos", None)):
            folder = _subset(source, limit, workdir)
            runs = {(workers, code): [] for workers in (1, workers_all) for code in sources}
            for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits all alike
                for (workers, code), collected in runs.items():
                    collected.append(_run(sources[code], folder, workers, workdir))
                    print(name, code, workers, "workers", f"{collected[-1]['images_per_second']:.1f} img/s", flush=True)
            summary = {f"workers_{workers}": _summary(runs[(workers, "current")]) for workers in (1, workers_all)}
            summary["parallel_speedup"] = (
                summary[f"workers_{workers_all}"]["median_images_per_second"] / summary["workers_1"]["median_images_per_second"]
            )
            if "baseline" in sources:
                baseline = {f"workers_{w}": _summary(runs[(w, "baseline")]) for w in (1, workers_all)}
                summary["baseline"] = baseline
                summary["speedup_vs_baseline"] = {
                    key: summary[key]["median_images_per_second"] / baseline[key]["median_images_per_second"]
                    for key in baseline
                }
            results["sets"][name] = summary
    current_runs = [r for s in results["sets"].values() for w in (1, workers_all) for r in s[f"workers_{w}"]["runs"]]
    self_peak = max(r["peak_mb_parent"] for r in current_runs)
    child_peak = max(r["peak_mb_worker"] for r in current_runs)
    workers_peak = max(r["peak_mb_workers_total"] for r in current_runs)
    lfw_best = results["sets"]["lfw"][f"workers_{workers_all}"]["median_images_per_second"]
    results.update(
        peak_memory_mb={"parent": round(self_peak, 1), "largest_worker": round(child_peak, 1),
                        "all_workers": round(workers_peak, 1)},
        lfw_target_images_per_second=LFW_TARGET_IMAGES_PER_SECOND,
        lfw_meets_target=lfw_best >= LFW_TARGET_IMAGES_PER_SECOND,
        repeats=args.repeats,
        lfw_limit=args.limit,
        baseline=args.baseline or None,
        load_average_1_5_15_min={"before": load_before, "after": os.getloadavg()},
    )
    path = write_json("ingest", results)
    _plot(results, workers_all)
    print(f"LFW: {lfw_best:.1f} images/s with {workers_all} workers (target {LFW_TARGET_IMAGES_PER_SECOND});"
          f" peak memory parent {self_peak:.0f} MB, worker {child_peak:.0f} MB; wrote {path}")


CLUSTER_SIZES = (1, 2, 4)


def cluster_main(limit: int, repeats: int) -> None:
    """Images/s of the local process pool against 1, 2 and 4 Dask worker processes on loopback, on the same
    ``limit`` LFW files in one run, each Dask run next to a local one; each cluster is warmed up first (its
    workers keep their models between ingests, as a standing cluster does), the local pool loads them every run."""
    from distributed import Client

    from facefind.devservices.dask_cluster import dask_cluster

    data = data_dir_or_exit()
    workers_all = os.cpu_count() or 1
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {f"local_{workers_all}_processes": []}
    runs.update({f"dask_{n}_workers": [] for n in CLUSTER_SIZES})
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        folder = _subset(data / "lfw", limit, workdir)
        warm_up = _subset(data / "group_photos", 8, workdir)
        for n in CLUSTER_SIZES:  # one cluster at a time (4 workers hold ~4 sets of models), local runs beside each
            with dask_cluster(workers=n) as cluster:
                with Client(cluster.address, set_as_default=False) as client:
                    pids = sorted(client.run(os.getpid).values())
                _run(REPO / "src", warm_up, 0, workdir, cluster.address, pids)
                for _ in range(repeats):  # interleaved, so drift on a shared machine hits both alike
                    runs[f"local_{workers_all}_processes"].append(_run(REPO / "src", folder, workers_all, workdir))
                    runs[f"dask_{n}_workers"].append(_run(REPO / "src", folder, 0, workdir, cluster.address, pids))
                    print({name: round(r[-1]["images_per_second"], 1) for name, r in runs.items() if r}, flush=True)
    results = {name: _summary(collected) for name, collected in runs.items()}
    local = results[f"local_{workers_all}_processes"]["median_images_per_second"]
    for name, summary in results.items():
        summary["vs_local_pool"] = round(summary["median_images_per_second"] / local, 3)
        summary["peak_mb_workers_total"] = round(max(r["peak_mb_workers_total"] for r in summary["runs"]))
    payload = {"files": limit, "repeats": repeats, "cpus": workers_all, "sets": results,
               "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
               "note": "all processes share this machine's cores; Dask workers keep their models loaded between"
                       " runs (warmed up first), the local pool loads them in every run"}
    path = write_json("ingest_cluster", payload)
    _plot_cluster(results, limit)
    print(f"wrote {path}")


def _plot_cluster(results: dict, limit: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 3.5))
    names = list(results)
    axis.bar(range(len(names)), [results[n]["median_images_per_second"] for n in names])
    axis.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
    axis.set_ylabel("images/s (median)")
    axis.set_title(f"ingest of {limit} LFW images: local pool vs Dask on loopback")
    fig.tight_layout()
    fig.savefig(RESULTS / "ingest_cluster.png", dpi=110)


def _plot(results: dict, workers_all: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for axis, metric, label in ((axes[0], "median_images_per_second", "images/s"), (axes[1], "median_faces_per_second", "faces/s")):
        names = list(results["sets"])
        for offset, workers in ((-0.2, 1), (0.2, workers_all)):
            values = [results["sets"][n][f"workers_{workers}"][metric] for n in names]
            axis.bar([i + offset for i in range(len(names))], values, width=0.4, label=f"{workers} worker(s)")
        axis.set_xticks(range(len(names)), names)
        axis.set_ylabel(label)
        axis.legend()
    axes[0].axhline(LFW_TARGET_IMAGES_PER_SECOND, color="red", linestyle="--", linewidth=1)
    fig.suptitle("facefind ingest throughput (medians)")
    fig.tight_layout()
    fig.savefig(RESULTS / "ingest.png", dpi=110)


if __name__ == "__main__":
    main()
