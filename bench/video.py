"""Video ingest speed: seconds of footage processed per wall-clock second, and tracks found.

On videos/hamilton_clip.mp4 (640x360), videos/pedestrians.mp4 (1920x1080) and
videos/night_crowd_mot20.mp4, at 5 sampled frames per second of footage (facefind's
default) and at 2. Each run is a fresh process, so the code measured can be this tree or
a baseline git revision (``--baseline``, default HEAD, extracted to a temp folder): both are
run interleaved, repeat by repeat, so a busy shared machine slows both alike; medians and
their ratio are reported with the load average. Writes bench/results/video.json and video.png;
``--only`` replaces just the videos it names there and keeps the others' stored results (each entry
says when, against which baseline and under what load it was measured).

On a shared machine, wall time mostly measures the other users (Linux gives every session's process
group an equal share whatever its nice value: sched_autogroup). Footage per CPU-second is the steadier
figure: at 4x real time on 2 fully used cores it is 2.

    python bench/video.py [--repeats 3] [--baseline HEAD | --baseline path/to/src | --baseline ""] [--only 640x360]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, data_dir_or_exit, machine, write_json  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VIDEOS = {"640x360": "hamilton_clip.mp4", "1920x1080": "pedestrians.mp4", "826x540 crowd": "night_crowd_mot20.mp4"}
SAMPLE_RATES = (5.0, 2.0)
TARGET_REAL_TIME = 4.0  # issue 12: 640x360 at 5 fps, 2 cores


def _measure(video: Path, fps: float, library: Path) -> dict:
    """One ingest of one video into a new library, in this process (the code on sys.path)."""
    from facefind.api import FaceFind
    from facefind.pipeline.video import video_info

    before = resource.getrusage(resource.RUSAGE_SELF)
    report = FaceFind(library).index([video], workers=1, video_fps=fps)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    footage = video_info(video).duration_s
    with sqlite3.connect(library / "catalog.sqlite3") as db:
        tracks = db.execute("SELECT observations FROM tracks").fetchall()
    return {
        "seconds": report.seconds,
        "footage_seconds_per_second": footage / report.seconds,
        # CPU time is less swayed by other users of the machine than wall time: at 4x real time on
        # 2 fully used cores, footage per CPU-second is 2.
        "cpu_seconds": cpu_seconds,
        "footage_seconds_per_cpu_second": footage / cpu_seconds,
        "tracks": len(tracks),
        "tracks_with_3_or_more_sightings": sum(1 for (n,) in tracks if n >= 3),
        "failed": report.failed,
    }


def _run(source: Path, video: Path, fps: float, library: Path) -> dict:
    """:func:`_measure` in a fresh process importing facefind from ``source`` (a src/ folder)."""
    env = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, __file__, "--measure", str(video), str(fps), str(library)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(collected: list[dict]) -> dict:
    return {
        "median_footage_seconds_per_second": statistics.median(r["footage_seconds_per_second"] for r in collected),
        "median_footage_seconds_per_cpu_second": statistics.median(
            r["footage_seconds_per_cpu_second"] for r in collected),
        "tracks": collected[0]["tracks"],
        "tracks_with_3_or_more_sightings": collected[0]["tracks_with_3_or_more_sightings"],
        "runs": collected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default="HEAD", help="git revision (or a src/ folder) to compare against; empty for none")
    parser.add_argument("--only", choices=list(VIDEOS), action="append", help="measure only these videos")
    parser.add_argument("--measure", nargs=3, help=argparse.SUPPRESS)  # internal: one run, JSON on stdout
    args = parser.parse_args()
    if args.measure:
        video, fps, library = args.measure
        print(json.dumps(_measure(Path(video), float(fps), Path(library))))
        return
    from facefind.pipeline.video import video_info

    videos = data_dir_or_exit() / "videos"
    names = args.only or list(VIDEOS)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"current": REPO / "src"}
        if args.baseline and Path(args.baseline).is_dir():  # a src/ folder: e.g. this tree less one change
            sources["baseline"] = Path(args.baseline).resolve()
        elif args.baseline:
            baseline_tree = Path(tmp) / "baseline"
            baseline_tree.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline, "src"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(baseline_tree)], input=archive, check=True)
            sources["baseline"] = baseline_tree / "src"
        runs = {(name, fps, code): [] for name in names for fps in SAMPLE_RATES for code in sources}
        for repeat in range(args.repeats):
            for (name, fps, code), collected in runs.items():
                library = Path(tmp) / f"{name}-{fps}-{code}-{repeat}"
                collected.append(_run(sources[code], videos / VIDEOS[name], fps, library))
        results = {}
        for name in names:
            for fps in SAMPLE_RATES:
                key = f"{name} @ {fps:g} fps"
                info = video_info(videos / VIDEOS[name])
                entry = {"file": VIDEOS[name], "duration_s": info.duration_s, "sample_fps": fps}
                entry.update({code: _summary(runs[(name, fps, code)]) for code in sources})
                if "baseline" in sources:
                    entry["speedup_vs_baseline"] = (entry["current"]["median_footage_seconds_per_second"]
                                                    / entry["baseline"]["median_footage_seconds_per_second"])
                results[key] = entry
                line = "  ".join(f"{code} {entry[code]['median_footage_seconds_per_second']:5.2f} s/s"
                                 f" {entry[code]['median_footage_seconds_per_cpu_second']:5.2f} s/cpu-s"
                                 f" ({entry[code]['tracks']} tracks)" for code in sources)
                ratio = f"  x{entry['speedup_vs_baseline']:.2f}" if "baseline" in sources else ""
                print(f"{key:28s} {line}{ratio}")
    load = {"before": load_before, "after": os.getloadavg()}
    measured = {"date": machine()["date"], "repeats": args.repeats, "baseline_revision": args.baseline or None,
                "load_average_1_5_15_min": load}
    for entry in results.values():
        entry.update(measured)
    stored = RESULTS / "video.json"
    if args.only and stored.exists():  # keep the videos not measured this time
        results = {**json.loads(stored.read_text()).get("videos", {}), **results}
    path = write_json("video", {"videos": results, "workers": 1})
    _plot(results, list(sources))
    print(f"load average before {load_before[0]:.1f}, after {load['after'][0]:.1f}; wrote {path}")


def _plot(results: dict, codes: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / len(codes)
    panels = (("median_footage_seconds_per_second", "s of footage per wall s", TARGET_REAL_TIME),
              ("median_footage_seconds_per_cpu_second", "s of footage per CPU s", TARGET_REAL_TIME / 2))
    for axis, (field, label, target) in zip(axes, panels):
        for i, code in enumerate(codes):
            values = [results[k][code][field] if code in results[k] else 0.0 for k in keys]
            axis.bar([x + (i - (len(codes) - 1) / 2) * width for x in range(len(keys))], values, width=width,
                     label=code)
        axis.axhline(target, color="red", linestyle="--", linewidth=1, label="target (640x360 @ 5 fps, 2 cores)")
        axis.set_xticks(range(len(keys)), keys, rotation=20, fontsize=7)
        axis.set_ylabel(label)
        axis.legend(fontsize=7)
    fig.suptitle("facefind video ingest speed, 1 process (medians, interleaved runs; wall time depends on machine load)")
    fig.tight_layout()
    fig.savefig(RESULTS / "video.png", dpi=110)


if __name__ == "__main__":
    main()
