import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facefind.api import FaceFind
from facefind.errors import LibraryBusyError
from facefind.library import Library
from tests.conftest import PURPOSE


def _jpeg_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


@pytest.fixture
def messy_folder(tmp_path, sample_rgb) -> Path:
    """One good photo and one of each kind of bad input the brief lists."""
    folder = tmp_path / "messy"
    (folder / "sub").mkdir(parents=True)
    good = _jpeg_bytes(sample_rgb)
    (folder / "good.jpg").write_bytes(good)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (folder / "text.png").write_bytes(b"hello, I am not a picture")
    Image.new("RGB", (3000, 3000), (90, 90, 90)).save(folder / "bomb.png")
    Image.new("RGB", (200, 150), (30, 160, 60)).save(folder / "sub" / "grass.png")
    (folder / "notes.txt").write_text("ignored: not an image extension")
    os.symlink(folder, folder / "sub" / "loop")  # a symlink loop back to the root
    os.symlink(folder / "missing.jpg", folder / "dangling.jpg")
    return folder


def test_bad_inputs_are_recorded_with_reasons_and_the_run_goes_on(facefind, messy_folder):
    facefind.max_pixels = 5_000_000
    report = facefind.index([messy_folder], workers=1)
    assert report.indexed == 1 and report.faces_added == 1
    assert report.no_face == 1
    reasons = {Path(p).name: r for p, r, _ in report.failures}
    assert reasons == {
        "empty.jpg": "empty", "truncated.jpg": "corrupt", "text.png": "not_an_image",
        "bomb.png": "too_large", "loop": "symlink_loop", "dangling.jpg": "broken_link",
    }
    stats = facefind.stats()
    assert stats["unindexed_by_reason"]["corrupt"] == 1 and stats["unindexed_by_reason"]["no_face"] == 1
    assert stats["faces"] == stats["index_size"] == 1


def test_permission_denied_is_recorded(facefind, tmp_path, sample_rgb, monkeypatch):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "locked.jpg").write_bytes(_jpeg_bytes(sample_rgb))

    real_open = os.open

    def refuse_locked(path, *args, **kwargs):
        if os.fspath(path).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse_locked)  # root ignores chmod, so refuse in code
    report = facefind.index([tmp_path / "in"], workers=1)
    assert [r for _, r, _ in report.failures] == ["permission_denied"]


def test_rerun_skips_unchanged_and_redoes_changed_files(facefind, photo_folder, sample_rgb):
    first = facefind.index([photo_folder], workers=1)
    assert first.indexed == 2 and first.faces_added >= 20
    again = facefind.index([photo_folder], workers=1)
    assert again.processed == 0 and again.unchanged == 2
    (photo_folder / "gdp.jpg").write_bytes(_jpeg_bytes(sample_rgb))  # new content under an old name
    os.utime(photo_folder / "players.jpg")  # touched, same content
    changed = facefind.index([photo_folder], workers=1)
    assert changed.indexed == 1 and changed.unchanged == 1 and changed.faces_added == 1
    stats = facefind.stats()
    assert stats["faces"] == stats["index_size"] == first.faces_added - 5 + 1  # gdp.jpg had 5 faces


def test_interrupt_keeps_what_was_committed_and_resumes(facefind, photo_folder):
    class InterruptAfterFirstFile:
        def started(self, total_files):
            pass

        def file_done(self, path, status, faces):
            raise KeyboardInterrupt

    report = facefind.index([photo_folder], workers=1, progress=InterruptAfterFirstFile())
    assert report.interrupted and report.indexed == 1
    stats = facefind.stats()
    assert stats["files"] == 1 and stats["faces"] == stats["index_size"] > 0
    resumed = facefind.index([photo_folder], workers=1)
    assert resumed.indexed == 1 and resumed.unchanged == 1


def test_worker_processes_give_the_same_result(tmp_path, photo_folder, facefind):
    serial = facefind.index([photo_folder], workers=1)
    parallel_library = FaceFind(tmp_path / "parallel")
    parallel = parallel_library.index([photo_folder], workers=2)
    assert parallel.faces_added == serial.faces_added
    probe = photo_folder / "gdp.jpg"
    assert [m.similarity for m in parallel_library.search(probe, purpose=PURPOSE).matches] == pytest.approx(
        [m.similarity for m in facefind.search(probe, purpose=PURPOSE).matches], abs=1e-4
    )


def test_a_second_writer_is_refused_while_one_runs(facefind, photo_folder):
    with Library(facefind.library_path, facefind.model_id, facefind.embedding_dim, writable=True):
        with pytest.raises(LibraryBusyError):
            facefind.index([photo_folder], workers=1)


def test_kill_9_mid_ingest_leaves_a_consistent_library_that_resumes(tmp_path, sample_rgb):
    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(60):
        (photos / f"{i:03d}.jpg").write_bytes(_jpeg_bytes(np.roll(sample_rgb, i, axis=1)))
    library = tmp_path / "lib"
    command = [sys.executable, "-m", "facefind", "--library", str(library), "index", str(photos), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    catalog = library / "catalog.sqlite3"
    deadline = time.monotonic() + 120
    committed = 0
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with sqlite3.connect(catalog, timeout=1) as db:
                committed = db.execute("SELECT COUNT(*) FROM media").fetchone()[0]
        except sqlite3.Error:
            committed = 0
        if committed >= 5:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 5 <= committed < 60, "the run should have been killed part-way"

    reopened = FaceFind(library)
    stats = reopened.stats()
    assert stats["faces"] == stats["index_size"] == stats["files"]  # one face per photo, catalog == index
    finished = reopened.index([photos], workers=1)
    assert finished.unchanged == stats["files"]
    assert reopened.stats()["faces"] == reopened.stats()["index_size"] == 60


def _last_ingest_status(library_path: Path) -> str:
    with sqlite3.connect(library_path / "catalog.sqlite3") as db:
        return db.execute("SELECT status FROM ingest_log ORDER BY id DESC LIMIT 1").fetchone()[0]


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_commits_what_is_done_and_logs_cancelled(facefind, tmp_path, sample_rgb, workers):
    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(12):
        (photos / f"{i:03d}.jpg").write_bytes(_jpeg_bytes(np.roll(sample_rgb, i, axis=1)))
    cancel = threading.Event()

    class CancelAfterFirstFile:
        def started(self, total_files):
            pass

        def file_done(self, path, status, faces):
            cancel.set()

    report = facefind.index([photos], workers=workers, progress=CancelAfterFirstFile(), cancel=cancel)
    assert report.cancelled and not report.interrupted
    assert 1 <= report.indexed < 12
    assert _last_ingest_status(facefind.library_path) == "cancelled"
    stats = facefind.stats()
    assert stats["files"] == report.indexed and stats["faces"] == stats["index_size"] == report.faces_added
    resumed = facefind.index([photos], workers=1)
    assert resumed.unchanged == report.indexed and resumed.indexed == 12 - report.indexed
    assert not resumed.cancelled and _last_ingest_status(facefind.library_path) == "finished"


def test_cancel_drops_a_half_analysed_video(facefind, clip_with_a_cut, tmp_path):
    cancel = threading.Event()

    class CancelDuringFootage:
        def started(self, total_files):
            pass

        def file_done(self, path, status, faces):
            pass

        def footage(self, path, frames, seconds_done, seconds_total):
            if frames == 3:
                cancel.set()

    report = facefind.index([clip_with_a_cut], workers=1, progress=CancelDuringFootage(), cancel=cancel)
    assert report.cancelled and report.processed == 0
    assert facefind.stats()["files"] == 0  # nothing half-done recorded: the next run does the whole video
    assert facefind.index([clip_with_a_cut], workers=1).indexed == 1


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")
def test_workers_die_with_a_killed_parent(tmp_path, sample_rgb):
    photos = tmp_path / "many"
    photos.mkdir()
    for i in range(40):
        (photos / f"{i:03d}.jpg").write_bytes(_jpeg_bytes(np.roll(sample_rgb, i, axis=1)))
    command = [sys.executable, "-m", "facefind", "--library", str(tmp_path / "lib"), "index", str(photos),
               "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 120
    while len(workers) < 2 and time.monotonic() < deadline and process.poll() is None:
        workers = {pid for pid in _children(process.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()}
        time.sleep(0.1)
    assert len(workers) == 2, "the run should have started two workers"
    time.sleep(1.0)  # let them start work
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert not survivors, "worker processes outlived their killed parent"


def test_a_video_fps_that_never_advances_is_refused_before_the_run(facefind, clip_with_a_cut):
    from facefind.errors import FaceFindError
    from facefind.ingest import IngestOptions, ingest

    with facefind.open_library(writable=True) as library:
        for fps in (0, -1.0, float("nan")):
            with pytest.raises(FaceFindError) as caught:
                ingest(library, [clip_with_a_cut], IngestOptions(workers=1, video_fps=fps))
            assert caught.value.reason == "bad_argument"
