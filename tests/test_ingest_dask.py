"""Ingest on a real local Dask cluster (scheduler + nanny-managed worker processes on 127.0.0.1)."""

from __future__ import annotations

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
from facefind.devservices.dask_cluster import DaskCluster, dask_cluster
from facefind.errors import FaceFindError
from facefind.library import Library
from tests.conftest import PURPOSE


@pytest.fixture(scope="module")
def cluster() -> DaskCluster:
    with dask_cluster(workers=2) as running:
        yield running


def _faces(facefind: FaceFind) -> dict[tuple[str, int], tuple[list[float], np.ndarray]]:
    """(file name, face index) -> (box, embedding) of every face in the library."""
    with Library(facefind.library_path, facefind.model_id, facefind.embedding_dim, writable=False) as library:
        records = list(library.catalog.iter_faces())
        embeddings = library.catalog.embeddings([record.id for record in records])
    return {(Path(r.path).name, r.face_index): (r.box, e) for r, e in zip(records, embeddings)}


def test_cluster_ingest_gives_the_same_faces_as_the_local_pool(cluster, photo_folder, facefind, tmp_path):
    local = facefind.index([photo_folder], workers=2)
    on_cluster = FaceFind(tmp_path / "on-cluster")
    on_cluster._pipeline = facefind.pipeline
    report = on_cluster.index([photo_folder], cluster=cluster.address)
    assert (report.indexed, report.failed, report.faces_added) == (local.indexed, 0, local.faces_added)
    expected, found = _faces(facefind), _faces(on_cluster)
    assert found.keys() == expected.keys()
    for key, (box, embedding) in expected.items():
        assert found[key][0] == pytest.approx(box, abs=0.05)
        assert float(found[key][1] @ embedding) > 0.9999
    probe = photo_folder / "gdp.jpg"
    assert [m.similarity for m in on_cluster.search(probe, purpose=PURPOSE).matches] == pytest.approx(
        [m.similarity for m in facefind.search(probe, purpose=PURPOSE).matches], abs=1e-4)


def _worker_pids(cluster: DaskCluster) -> list[int]:
    from distributed import Client

    with Client(cluster.address, set_as_default=False) as client:
        return sorted(client.run(os.getpid).values())


class KillAWorkerAfterFirstFile:
    """Progress that kills one Dask worker process (kill -9) as soon as the first file is committed."""

    def __init__(self, pid: int) -> None:
        self.pid, self.killed, self.files_left = pid, False, 0

    def started(self, total_files: int) -> None:
        self.files_left = total_files

    def file_done(self, path: str, status: str, faces: int) -> None:
        self.files_left -= 1
        if not self.killed:
            os.kill(self.pid, signal.SIGKILL)
            self.killed = True
            self.files_left_at_kill = self.files_left

    def footage(self, *args) -> None:
        pass


def test_a_killed_worker_loses_nothing(cluster, facefind, tmp_path, sample_rgb):
    photos = _photos(tmp_path / "many", sample_rgb, 24)
    victim = _worker_pids(cluster)[0]
    progress = KillAWorkerAfterFirstFile(victim)
    report = facefind.index([photos], cluster=cluster.address, progress=progress)
    assert progress.killed and progress.files_left_at_kill > 10  # killed while most files were still to do
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)
    assert (report.indexed, report.failed, report.faces_added) == (24, 0, 24)
    stats = facefind.stats()
    assert stats["files"] == stats["faces"] == stats["index_size"] == 24
    deadline = time.monotonic() + 60
    while len(_worker_pids(cluster)) < 2 and time.monotonic() < deadline:  # the nanny restarts it
        time.sleep(0.5)
    assert victim not in _worker_pids(cluster)


def _photos(folder: Path, sample_rgb: np.ndarray, count: int) -> Path:
    """``count`` distinct JPEGs of one face (the sample shifted sideways)."""
    folder.mkdir()
    for i in range(count):
        buffer = io.BytesIO()
        Image.fromarray(np.roll(sample_rgb, i, axis=1)).save(buffer, format="JPEG", quality=90)
        (folder / f"{i:03d}.jpg").write_bytes(buffer.getvalue())
    return folder


def test_a_killed_parent_keeps_what_it_committed_and_resumes(cluster, tmp_path, sample_rgb):
    photos = _photos(tmp_path / "many", sample_rgb, 40)
    library = tmp_path / "lib"
    command = [sys.executable, "-m", "facefind", "--library", str(library), "index", str(photos),
               "--cluster", cluster.address]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, committed = time.monotonic() + 180, 0
    while time.monotonic() < deadline and process.poll() is None and committed < 3:
        try:
            with sqlite3.connect(library / "catalog.sqlite3", timeout=1) as db:
                committed = db.execute("SELECT COUNT(*) FROM media").fetchone()[0]
        except sqlite3.Error:
            committed = 0
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert 3 <= committed < 40, "the run should have been killed part-way"
    reopened = FaceFind(library)
    stats = reopened.stats()
    assert stats["faces"] == stats["index_size"] == stats["files"]  # one face per photo, catalog == index
    finished = reopened.index([photos], cluster=cluster.address)
    assert finished.unchanged == stats["files"] and finished.failed == 0
    assert reopened.stats()["faces"] == reopened.stats()["index_size"] == 40


class CancelAfterFirstFile:
    def __init__(self, cancel: threading.Event) -> None:
        self.cancel = cancel

    def started(self, total_files: int) -> None:
        pass

    def file_done(self, path: str, status: str, faces: int) -> None:
        self.cancel.set()

    def footage(self, *args) -> None:
        pass


def test_cancel_stops_a_cluster_run_and_keeps_what_is_done(cluster, facefind, tmp_path, sample_rgb):
    photos = _photos(tmp_path / "many", sample_rgb, 24)
    cancel = threading.Event()
    report = facefind.index([photos], cluster=cluster.address, cancel=cancel, progress=CancelAfterFirstFile(cancel))
    assert report.cancelled and 1 <= report.indexed < 24
    assert facefind.stats()["faces"] == facefind.stats()["index_size"] == report.indexed
    resumed = facefind.index([photos], cluster=cluster.address)
    assert resumed.unchanged == report.indexed and facefind.stats()["faces"] == 24


def test_an_unreachable_scheduler_is_a_clear_error(facefind, photo_folder, monkeypatch):
    import facefind.ingest_dask as ingest_dask

    monkeypatch.setattr(ingest_dask, "CONNECT_TIMEOUT_S", 2.0)
    with pytest.raises(FaceFindError, match="cannot reach the Dask scheduler") as raised:
        facefind.index([photo_folder], cluster="tcp://127.0.0.1:9")
    assert raised.value.reason == "cluster_unavailable"
    assert facefind.stats()["files"] == 0


def test_cli_index_on_a_cluster(cluster, photo_folder, tmp_path):
    library = tmp_path / "lib"
    result = subprocess.run(
        [sys.executable, "-m", "facefind", "--library", str(library), "index", str(photo_folder),
         "--cluster", cluster.address, "--json"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert '"indexed": 2' in result.stdout and "Traceback" not in result.stderr
