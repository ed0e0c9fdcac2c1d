"""Video ingest speed: seconds of footage processed per wall-clock second, and tracks found.

On videos/hamilton_clip.mp4 (640x360) and videos/pedestrians.mp4 (1920x1080), at
5 sampled frames per second of footage (facefind's default) and at 2, repeated
and interleaved; medians. Writes bench/results/video.json.

    python bench/video.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_dir_or_exit, write_json  # noqa: E402

from facefind.api import FaceFind  # noqa: E402
from facefind.pipeline.video import video_info  # noqa: E402

VIDEOS = {"640x360": "hamilton_clip.mp4", "1920x1080": "pedestrians.mp4", "826x540 crowd": "night_crowd_mot20.mp4"}
SAMPLE_RATES = (5.0, 2.0)


def _run(video: Path, fps: float, library: Path) -> dict:
    report = FaceFind(library).index([video], workers=1, video_fps=fps)
    with sqlite3.connect(library / "catalog.sqlite3") as db:
        tracks = db.execute("SELECT observations FROM tracks").fetchall()
    footage = video_info(video).duration_s
    return {
        "seconds": report.seconds,
        "footage_seconds_per_second": footage / report.seconds,
        "tracks": len(tracks),
        "tracks_with_3_or_more_sightings": sum(1 for (n,) in tracks if n >= 3),
        "failed": report.failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    videos = data_dir_or_exit() / "videos"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        runs: dict[tuple[str, float], list[dict]] = {(name, fps): [] for name in VIDEOS for fps in SAMPLE_RATES}
        for repeat in range(args.repeats):
            for (name, fps), collected in runs.items():
                collected.append(_run(videos / VIDEOS[name], fps, Path(tmp) / f"{name}-{fps}-{repeat}"))
        for (name, fps), collected in runs.items():
            info = video_info(videos / VIDEOS[name])
            key = f"{name} @ {fps:g} fps"
            results[key] = {
                "file": VIDEOS[name],
                "duration_s": info.duration_s,
                "sample_fps": fps,
                "median_footage_seconds_per_second": statistics.median(r["footage_seconds_per_second"] for r in collected),
                "tracks": collected[0]["tracks"],
                "tracks_with_3_or_more_sightings": collected[0]["tracks_with_3_or_more_sightings"],
                "runs": collected,
            }
            print(f"{key:28s} {results[key]['median_footage_seconds_per_second']:5.2f} s of footage per s,"
                  f" {results[key]['tracks']} tracks ({results[key]['tracks_with_3_or_more_sightings']} seen 3+ times)")
    path = write_json("video", {"videos": results, "repeats": args.repeats, "workers": 1})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
