"""Crash safety: kill -9 the ingest at random moments, re-run, and end exactly where a clean run ends.

Builds a folder of distinct image files from the built-in samples (random crops, flips, rescales
and JPEG qualities, so every file differs), indexes it once without interruption (the reference),
then indexes it again into a fresh library with `facefind index --workers 2`, sending SIGKILL at
random moments spread over the run (each restart resumes where the last one stopped) before a
final run to completion. It then checks that

- the catalog equals the reference: every file's status, SHA-256 and reason; every face's box,
  landmarks, detection score, quality, embeddings and thumbnail bytes (faces are keyed by file and
  face number: ids depend on the order in which two workers finish);
- the index on disk names the catalog's revision and holds exactly the catalog's face ids, with
  the catalog's vectors, in both libraries (masked templates are kept in the catalog only);
- no orphan is left: no thumbnail that no row refers to, none missing, no `*.tmp*` file;
- no worker process outlives the `facefind` process that started it.

Every run imports the same frozen copy of the facefind package, so edits to the working tree
during the benchmark cannot pass for a difference. Writes bench/results/torture.json and torture.png.

    python bench/torture.py [--files 150] [--kills 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, write_json  # noqa: E402

import facefind  # noqa: E402
from facefind.catalog.sql import face_vectors  # noqa: E402
from facefind.index import FaissFlatIndex  # noqa: E402
from facefind.samples import gallery_samples, probe_sample  # noqa: E402

WORKERS = 2
EMBEDDING_DIM = 512  # the default recogniser's (the libraries tortured here are built with it)
LAST_KILL_AT = 0.85  # kills land before this share of the files is committed, so each one hits a run
KILL_JITTER_S = 2.0  # after the target is reached, wait up to this long: kills land mid-batch, mid-save...
WORKER_EXIT_GRACE_S = 15.0  # how long orphaned workers get to notice their parent died
RUN_TIMEOUT_S = 1800.0


# -- the files --------------------------------------------------------------------------------------


def make_images(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` different photos made from the built-in samples: crops, flips, rescales, JPEG qualities."""
    rng = random.Random(seed)
    sources = [Image.open(path).convert("RGB") for path in [*gallery_samples(), probe_sample()]]
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for number in range(count):
        image = sources[number % len(sources)]
        width, height = image.size
        crop_w, crop_h = int(width * rng.uniform(0.6, 1.0)), int(height * rng.uniform(0.6, 1.0))
        left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
        variant = image.crop((left, top, left + crop_w, top + crop_h))
        if rng.random() < 0.5:
            variant = ImageOps.mirror(variant)
        scale = rng.uniform(0.6, 1.0)
        variant = variant.resize((max(64, round(crop_w * scale)), max(64, round(crop_h * scale))), Image.LANCZOS)
        path = folder / f"{number:04d}.jpg"
        variant.save(path, quality=rng.randint(80, 95))
        made.append(path)
    return made


# -- running and killing `facefind index` -------------------------------------------------------------


def freeze_code(workdir: Path) -> Path:
    """A copy of the facefind package for every run to import, so all runs (reference, killed, final)
    run the same code even while the working tree is being edited."""
    code = workdir / "code"
    shutil.copytree(Path(facefind.__file__).parent, code / "facefind", ignore=shutil.ignore_patterns("__pycache__"))
    return code


def start_index(library: Path, folder: Path, workdir: Path) -> subprocess.Popen:
    """`facefind index` on the code frozen in ``workdir``, its output appended to ``workdir``/facefind.log."""
    with open(workdir / "facefind.log", "ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "facefind", "--library", str(library), "index", str(folder), "--workers", str(WORKERS)],
            stdout=output, stderr=output, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(workdir / "code")},
        )


def committed_files(library: Path) -> int:
    """Files the catalog holds now (read-only; 0 while there is no catalog yet)."""
    catalog = library / "catalog.sqlite3"
    if not catalog.exists():
        return 0
    try:
        with sqlite3.connect(f"{catalog.as_uri()}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM media").fetchone()[0])
    except sqlite3.Error:
        return 0


def child_pids(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the worker pool and its resource tracker), from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pids: list[int], grace_s: float) -> tuple[list[int], float]:
    """Wait until every process in ``pids`` has exited; returns those still alive after ``grace_s`` and the wait."""
    started = time.monotonic()
    while any(_alive(pid) for pid in pids) and time.monotonic() - started < grace_s:
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)], round(time.monotonic() - started, 2)


def _kill_leftovers(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_to_completion(library: Path, folder: Path, workdir: Path) -> dict:
    started = time.monotonic()
    process = start_index(library, folder, workdir)
    children: set[int] = set()
    while process.poll() is None:  # the pool starts late: look for its workers while the run lasts
        children.update(child_pids(process.pid))
        if time.monotonic() - started > RUN_TIMEOUT_S:
            process.kill()
            break
        time.sleep(0.2)
    seconds = time.monotonic() - started
    leftover, _ = wait_gone(sorted(children), WORKER_EXIT_GRACE_S)
    _kill_leftovers(leftover)
    return {"exit_code": process.wait(), "seconds": round(seconds, 2), "leftover_workers": leftover}


def kill_trial(library: Path, folder: Path, workdir: Path, target_files: int, rng: random.Random) -> dict:
    """Start an index run, let it commit ``target_files`` files (or start, if it already has), wait a random
    moment more, and SIGKILL it; then check that its workers go too."""
    started = time.monotonic()
    process = start_index(library, folder, workdir)
    while process.poll() is None and committed_files(library) < target_files:
        if time.monotonic() - started > RUN_TIMEOUT_S:
            break
        time.sleep(0.1)
    deadline = time.monotonic() + rng.uniform(0, KILL_JITTER_S)
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    trial = {"target_files": target_files}
    if process.poll() is not None:
        return {**trial, "killed": False, "exit_code": process.returncode, "seconds": round(time.monotonic() - started, 2)}
    children = child_pids(process.pid)
    os.kill(process.pid, signal.SIGKILL)
    killed_after = time.monotonic() - started
    process.wait()
    leftover, waited = wait_gone(children, WORKER_EXIT_GRACE_S)
    _kill_leftovers(leftover)  # so one failure does not slow every later trial
    return {**trial, "killed": True, "killed_after_s": round(killed_after, 2),
            "committed_at_kill": committed_files(library), "workers_at_kill": len(children),
            "workers_gone_after_s": waited, "leftover_workers": leftover}


# -- what a library holds ---------------------------------------------------------------------------


def snapshot(library: Path) -> dict:
    """The catalog's files and faces keyed by path (and face number), with thumbnail bytes' hashes."""
    thumbs = library / "thumbs"
    with sqlite3.connect(f"{(library / 'catalog.sqlite3').as_uri()}?mode=ro", uri=True) as db:
        media = {path: (status, sha256, reason, face_count) for path, status, sha256, reason, face_count in
                 db.execute("SELECT path, status, sha256, reason, face_count FROM media")}
        faces = {}
        for row in db.execute(
            "SELECT media.path, faces.face_index, faces.box, faces.landmarks, faces.detection_score, faces.quality,"
            " faces.embedding, faces.masked_embedding, faces.thumbnail FROM faces JOIN media ON media.id = faces.media_id"
        ):
            path, index, box, landmarks, score, quality, embedding, masked, thumbnail = row
            picture = thumbs / thumbnail if thumbnail else None
            faces[(path, index)] = {
                "box": box, "landmarks": landmarks, "detection_score": score, "quality": quality,
                "embedding": _stored_vector(embedding),
                "masked_embedding": None if masked is None else _stored_vector(masked),
                "thumbnail": hashlib.sha256(picture.read_bytes()).hexdigest()
                if picture is not None and picture.is_file() else None,
            }
    return {"media": media, "faces": faces}


def _stored_vector(blob: bytes) -> np.ndarray:
    """A catalog embedding as float32 (stored float16 since facefind halves them; float32 in older libraries)."""
    return face_vectors([blob], EMBEDDING_DIM)[0]


def check_library(library: Path) -> list[str]:
    """Problems inside one library: an index that disagrees with the catalog, orphan or missing files."""
    problems = []
    with sqlite3.connect(f"{(library / 'catalog.sqlite3').as_uri()}?mode=ro", uri=True) as db:
        revision = int((db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone() or [0])[0])
        rows = db.execute("SELECT id, embedding, masked_embedding, thumbnail FROM faces").fetchall()
        named = {name for (name,) in db.execute(
            "SELECT thumbnail FROM faces WHERE thumbnail IS NOT NULL"
            " UNION SELECT frame_thumbnail FROM tracks WHERE frame_thumbnail IS NOT NULL")}
    state = json.loads((library / "index" / "state.json").read_text())
    if state.get("revision") != revision:
        problems.append(f"index/state.json names revision {state.get('revision')}, the catalog is at {revision}")
    for file_name, column in (("faiss.index", 1),):  # masked templates live in the catalog only
        expected = {row[0]: _stored_vector(row[column]) for row in rows if row[column] is not None}
        index = FaissFlatIndex.load(library / "index" / file_name)
        ids = sorted(int(i) for i in index.ids())
        if ids != sorted(expected):
            problems.append(f"{file_name}: {len(set(ids) - set(expected))} ids not in the catalog,"
                            f" {len(set(expected) - set(ids))} catalog faces missing, {len(ids) - len(set(ids))} twice")
            continue
        if ids:
            gap = float(np.abs(index.vectors(np.asarray(ids)) - np.stack([expected[i] for i in ids])).max())
            if gap > 1e-6:
                problems.append(f"{file_name}: vectors differ from the catalog's by up to {gap:.3g}")
    on_disk = {str(p.relative_to(library / "thumbs")) for p in (library / "thumbs").rglob("*") if p.is_file()}
    if on_disk - named:
        problems.append(f"{len(on_disk - named)} orphan thumbnail(s), e.g. {sorted(on_disk - named)[:3]}")
    if named - on_disk:
        problems.append(f"{len(named - on_disk)} thumbnail(s) missing, e.g. {sorted(named - on_disk)[:3]}")
    leftovers = sorted(str(p.relative_to(library)) for p in library.rglob("*") if ".tmp" in p.name)
    if leftovers:
        problems.append(f"temporary files left: {leftovers[:5]}")
    return problems


def compare(reference: dict, result: dict) -> list[str]:
    """Where the tortured library differs from the reference (empty: identical)."""
    differences = []
    for what in ("media", "faces"):
        missing, extra = reference[what].keys() - result[what].keys(), result[what].keys() - reference[what].keys()
        if missing or extra:
            differences.append(f"{what}: {len(missing)} missing, {len(extra)} extra, e.g. {sorted(missing or extra)[:2]}")
    changed_files = [path for path in sorted(reference["media"].keys() & result["media"].keys())
                     if reference["media"][path] != result["media"][path]]
    if changed_files:
        path = changed_files[0]
        differences.append(f"{len(changed_files)} file(s) recorded differently, e.g. {path}:"
                           f" {result['media'][path]} instead of {reference['media'][path]}")
    changed_faces: dict[str, list] = {}  # field -> faces where it differs
    for key in sorted(reference["faces"].keys() & result["faces"].keys()):
        want, got = reference["faces"][key], result["faces"][key]
        for field, value in want.items():
            if isinstance(value, np.ndarray) or value is None:
                same = (value is None) == (got[field] is None) and (
                    value is None or (value.shape == got[field].shape and np.allclose(value, got[field], atol=1e-6)))
            else:
                same = value == got[field]
            if not same:
                changed_faces.setdefault(field, []).append(key)
    for field, keys in changed_faces.items():
        want, got = reference["faces"][keys[0]][field], result["faces"][keys[0]][field]
        example = "" if isinstance(want, np.ndarray) else f": {str(got)[:300]} instead of {str(want)[:300]}"
        differences.append(f"{field} differs for {len(keys)} face(s), e.g. face {keys[0][1]} of {keys[0][0]}{example}")
    return differences


# -- the benchmark ----------------------------------------------------------------------------------


def torture(folder: Path, workdir: Path, kills: int, seed: int) -> dict:
    """The whole check on the files in ``folder``; every finding is in the returned report."""
    rng = random.Random(seed)
    files = sum(1 for p in folder.iterdir() if p.is_file())
    freeze_code(workdir)
    reference_library, tortured_library = workdir / "reference", workdir / "tortured"

    reference_run = run_to_completion(reference_library, folder, workdir)
    targets = sorted(round(rng.uniform(0, LAST_KILL_AT) * files) for _ in range(kills))
    started = time.monotonic()
    trials = [kill_trial(tortured_library, folder, workdir, target, rng) for target in targets]
    final_run = run_to_completion(tortured_library, folder, workdir)
    torture_seconds = time.monotonic() - started

    reference, result = snapshot(reference_library), snapshot(tortured_library)
    problems = {
        "reference_library": check_library(reference_library),
        "tortured_library": check_library(tortured_library),
        "differences_from_reference": compare(reference, result),
        "leftover_workers": sorted({pid for run in [*trials, reference_run, final_run]
                                    for pid in run.get("leftover_workers", [])}),
        "runs_that_failed": [name for name, run in (("reference", reference_run), ("final", final_run))
                             if run["exit_code"] != 0],
    }
    passed = not any(problems.values())
    return {
        "files": files,
        "faces": len(reference["faces"]),
        "workers": WORKERS,
        "kills_requested": kills,
        "kills_landed": sum(trial["killed"] for trial in trials),
        "seed": seed,
        "reference_run": reference_run,
        "trials": trials,
        "final_run": final_run,
        "torture_seconds": round(torture_seconds, 2),
        "compared": {
            "catalog": "every file's status, SHA-256, reason and face count; every face's box, landmarks,"
                       " detection score, quality, embedding and masked embedding (keyed by path and face number)",
            "index": "state.json revision = catalog revision; faiss.index holds exactly the"
                     " catalog's face ids with the catalog's vectors (both libraries)",
            "thumbnails": "SHA-256 of every face's thumbnail equals the reference's; no orphan or missing thumbnail",
            "leftovers": "no *.tmp* file in the library; no worker alive 15 s after its parent was killed",
        },
        "problems": problems,
        "result": "pass" if passed else "fail",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=150)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="facefind-torture-") as tmp:
        workdir = Path(tmp)
        make_images(workdir / "photos", args.files, args.seed)
        report = torture(workdir / "photos", workdir, args.kills, args.seed)
    path = write_json("torture", report)
    _plot(report)
    print(f"{report['result']}: {report['kills_landed']} kills on {report['files']} files ({report['faces']} faces);"
          f" clean run {report['reference_run']['seconds']} s, with kills {report['torture_seconds']} s; wrote {path}")
    for name, found in report["problems"].items():
        for problem in found:
            print(f"  {name}: {problem}")
    sys.exit(0 if report["result"] == "pass" else 1)


def _plot(report: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = report["trials"]
    fig, axis = plt.subplots(figsize=(8, 3.8))
    rows = [("clean", report["reference_run"]["seconds"], None, "tab:green")]
    rows += [(f"kill {i + 1}", t.get("killed_after_s", t.get("seconds", 0)), t.get("committed_at_kill"), "tab:red")
             for i, t in enumerate(trials)]
    rows.append(("resume", report["final_run"]["seconds"], report["files"], "tab:blue"))
    for y, (label, seconds, committed, colour) in enumerate(rows):
        axis.barh(y, seconds, color=colour)
        if committed is not None:
            axis.text(seconds, y, f" {committed} files committed", va="center", fontsize=8)
    axis.set_yticks(range(len(rows)), [label for label, *_ in rows])
    axis.invert_yaxis()
    axis.set_xlabel("seconds from start of the run")
    axis.set_title(f"kill -9 during ingest ({report['files']} files, {report['workers']} workers): {report['result']}")
    fig.tight_layout()
    fig.savefig(RESULTS / "torture.png", dpi=110)


if __name__ == "__main__":
    main()
