"""Helpers shared by the benchmarks: where the data is, where results go, machine facts."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from facefind.evaluation import shared_data_dir

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent


def revision_src(revision: str, into: Path) -> Path:
    """``revision``'s src/ unpacked under ``into``: run with PYTHONPATH pointing there, a fresh process measures that
    code side by side with this tree's (``--baseline`` of bench/ingest.py and bench/scale.py --cli)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision, "src"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def data_dir_or_exit() -> Path:
    found = shared_data_dir()
    if found is None:
        sys.exit("../shared/data not found; set FACEFIND_DATA to the evaluation data folder")
    return found


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    return path


def tar_at_fmr(genuine, impostor, levels) -> dict:
    """TAR at each FMR level, with the threshold taken from the impostor scores themselves."""
    import numpy as np

    ordered = np.sort(impostor)
    result = {}
    for level in levels:
        threshold = float(ordered[int(np.ceil(len(ordered) * (1 - level)))])
        result[f"{level:g}"] = {"threshold": threshold, "tar": float((genuine > threshold).mean())}
    return result
