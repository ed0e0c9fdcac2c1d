import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import facefind.ingest as ingest_module
from facefind.api import FaceFind
from facefind.errors import LibraryBusyError
from facefind.library import Library


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

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ingest_module, "open", refuse, raising=False)  # root ignores chmod, so refuse in code
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
    assert [m.similarity for m in parallel_library.search(probe).matches] == pytest.approx(
        [m.similarity for m in facefind.search(probe).matches], abs=1e-4
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
