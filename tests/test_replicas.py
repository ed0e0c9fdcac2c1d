"""Two `facefind serve` replicas, real processes on loopback, sharing one PostgreSQL catalog and one Milvus index:
what one indexes the other finds, and killing one mid-ingest (kill -9) loses nothing it committed."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest
from PIL import Image

from facefind.api import Backends, FaceFind
from facefind.catalog.postgres import split_catalog_url
from facefind.index import open_index
from facefind.library import Library
from facefind.samples import gallery_samples, probe_sample
from tests.conftest import PURPOSE

pytestmark = pytest.mark.slow
COPIES = 40  # re-encodes of each gallery photo: 80 files, several commits (one per 32 files or 2 s)


@dataclass
class Replica:
    """One running `facefind serve`: its process, its library folder and a client holding its admin's key."""

    process: subprocess.Popen
    folder: Path
    client: httpx.Client

    def wait_for_job(self, job_id: int, timeout_s: float = 300.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/v1/jobs/{job_id}").raise_for_status().json()
            if job["status"] != "running":
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still running after {timeout_s} s")

    def search(self) -> dict:
        """The built-in probe (Yao Ming, who is in players.jpg), every candidate shown."""
        response = self.client.post("/api/v1/search", files={"file": ("probe.jpg", probe_sample().read_bytes())},
                                    data={"case": PURPOSE.case, "reason": PURPOSE.reason, "top_k": 500,
                                          "show_all": "true"})
        assert response.status_code == 200, response.text
        return response.json()


def _facefind(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facefind", *args], capture_output=True, text=True, timeout=300,
                          **options)


def _admin_key(folder: Path) -> str:
    """An admin and an API key of theirs, made through the CLI as an operator would (accounts are per replica)."""
    made = _facefind("--library", str(folder), "users", "add", "--admin", "--password-stdin", "root",
                     input="a long admin password\n")
    assert made.returncode == 0, made.stderr
    key = _facefind("--library", str(folder), "keys", "create", "--user", "root", "--scope", "search",
                    "--scope", "index", "--scope", "admin", "--expires", "1d")
    assert key.returncode == 0, key.stderr
    return key.stdout.split()[-1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def _serve(folder: Path, allowed: Path) -> Iterator[Replica]:
    """`facefind serve` on a free loopback port until the block ends (then Ctrl-C, or kill if it hangs)."""
    key = _admin_key(folder)
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "facefind", "serve", "--port", str(port), "--library", str(folder), "--allow-root",
         str(allowed), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0,
                          headers={"Authorization": f"Bearer {key}"})
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                client.get("/api/v1/stats").raise_for_status()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "the replica did not start"
                time.sleep(0.3)
        yield Replica(process, folder, client)
    finally:
        client.close()
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


@pytest.fixture
def shared_library(tmp_path, postgres_schema_url, milvus_spec) -> tuple[Path, Path, str]:
    """One library config (PostgreSQL catalog, Milvus index) in two replica folders whose thumbnails are one folder."""
    first, second, thumbs = tmp_path / "replica-a", tmp_path / "replica-b", tmp_path / "shared-thumbs"
    thumbs.mkdir()
    for folder in (first, second):
        folder.mkdir()
        (folder / "thumbs").symlink_to(thumbs)
    FaceFind(first, backends=Backends(postgres_schema_url, milvus_spec)).open_library(writable=True).close()
    for name in ("backends.json", "access.json"):
        (second / name).write_bytes((first / name).read_bytes())
    return first, second, postgres_schema_url


def _re_encoded_copies(folder: Path, copies: int) -> list[Path]:
    """Each gallery photo ``copies`` times, every copy a distinct file (JPEG quality and a 1-pixel crop vary)."""
    folder.mkdir()
    made = []
    for sample in gallery_samples():
        image = Image.open(sample).convert("RGB")
        for n in range(copies):
            cropped = image.crop((n % 3, n % 2, image.width - (n % 4), image.height))
            target = folder / f"{sample.stem}-{n:03d}.jpg"
            buffer = io.BytesIO()
            cropped.save(buffer, "JPEG", quality=80 + n % 16)
            target.write_bytes(buffer.getvalue())
            made.append(target)
    return made


def _catalog_rows(url: str, query: str) -> list[tuple]:
    conninfo, schema = split_catalog_url(url)
    with psycopg.connect(conninfo) as connection:
        connection.execute(f'SET search_path TO "{schema}", public')
        return connection.execute(query).fetchall()


def _players_paths(result: dict) -> list[str]:
    """Source paths of the probe's person's faces found (one in each copy of players.jpg; twice means doubled)."""
    return [m["source"]["path"] for m in result["matches"] if m["similarity"] > 0.5]


def _check(folder: Path) -> subprocess.CompletedProcess:
    return _facefind("--library", str(folder), "check", env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("index", ["pgvector", "milvus"])
def test_a_replica_killed_before_recording_the_index_state_leaves_a_sound_index(tmp_path, pipeline, photo_folder,
                                                                             postgres_schema_url, request, index):
    """Killed between its index add and its state write: the shared index holds the catalog's faces exactly, under
    the previous revision. That is no damage: readers and `check` accept it, a writer records the state again."""
    spec = "pgvector" if index == "pgvector" else request.getfixturevalue("milvus_spec")
    facefind = FaceFind(tmp_path / "library", backends=Backends(postgres_schema_url, spec))
    facefind._pipeline = pipeline
    facefind.index([photo_folder], workers=1)
    root, model, dim = facefind.library_path, facefind.model_id, facefind.embedding_dim
    shared = open_index(spec, dim, model_id=model, catalog_url=postgres_schema_url)
    try:
        state = shared.read_state()
        shared.write_state({**state, "revision": state["revision"] - 1})
        with Library(root, model, dim) as reader:
            assert reader.index_problem is None and reader.index_problems() == [] and not reader.rebuilt_index
        assert facefind.check().healthy
        with Library(root, model, dim, writable=True) as writer:
            assert writer.index_problem is None and not writer.rebuilt_index
            assert shared.read_state()["revision"] == writer.catalog.revision() == state["revision"]
    finally:
        shared.close()


def test_an_index_job_through_one_replica_is_searchable_through_the_other(shared_library, tmp_path, photo_folder):
    first, second, _ = shared_library
    with _serve(first, tmp_path) as a, _serve(second, tmp_path) as b:
        job = a.client.post("/api/v1/jobs", json={"paths": [str(photo_folder)]})
        assert job.status_code == 202, job.text
        done = a.wait_for_job(job.json()["job_id"])
        assert done["status"] == "finished" and done["faces"] > 0, done
        through_a, through_b = a.search(), b.search()
        assert through_b["gallery_size"] == through_a["gallery_size"] == done["faces"]
        assert through_b["matches"][0]["face"]["face_id"] == through_a["matches"][0]["face"]["face_id"]
        assert Path(through_b["matches"][0]["source"]["path"]).name == "players.jpg"
        assert b.client.get("/api/v1/stats").json()["index_size"] == done["faces"]


def test_killing_a_replica_mid_ingest_loses_nothing_it_committed(shared_library, tmp_path):
    first, second, url = shared_library
    photos = _re_encoded_copies(tmp_path / "photos", COPIES)
    players = {str(p) for p in photos if p.name.startswith("players")}
    with ExitStack() as servers:
        a = servers.enter_context(_serve(first, tmp_path))
        b = servers.enter_context(_serve(second, tmp_path))
        started = a.client.post("/api/v1/jobs", json={"paths": [str(tmp_path / "photos")]})
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 300
        while not 0 < _catalog_rows(url, "SELECT COUNT(*) FROM media")[0][0] < len(photos) * 2 // 3:
            assert time.monotonic() < deadline and a.process.poll() is None, "no batch was committed"
            time.sleep(0.05)
        time.sleep(1.0)  # into the middle of the next batch
        a.process.kill()
        a.process.wait(30)
        committed = {row[0] for row in _catalog_rows(url, "SELECT path FROM media")}
        assert 0 < len(committed) < len(photos), f"the kill should land mid-ingest ({len(committed)} committed)"

        after_kill = b.search()
        found = _players_paths(after_kill)
        assert sorted(found) == sorted(players & committed), "every committed face is searchable through B, once"
        stats = b.client.get("/api/v1/stats").json()
        assert stats["faces"] == stats["index_size"] == after_kill["gallery_size"]
        checked = _check(second)  # catalog, embeddings, crops of committed faces: all sound
        problems = [line for line in checked.stdout.splitlines() if line.startswith("problem ")]
        # Leftovers of the kill that `check` rightly names: crops of files A never committed (past 20 they are
        # counted, not listed), and - when the kill fell between a batch's catalog commit and its index insert -
        # a shared index one batch behind the catalog, which B's search already covers (it verified and searched
        # a copy) and B's next ingest repairs (below).
        assert all(line.startswith(("problem orphans: ", "problem index: ")) for line in problems), checked.stdout
        assert "Traceback" not in checked.stderr

        rerun = b.client.post("/api/v1/jobs", json={"paths": [str(tmp_path / "photos")]})
        assert rerun.status_code == 202, rerun.text
        done = b.wait_for_job(rerun.json()["job_id"])
        assert done["status"] == "finished", done
        assert done["failed"] == 0 and done["files_done"] == done["total_files"] > 0
        paths = [row[0] for row in _catalog_rows(url, "SELECT path FROM media")]
        assert sorted(paths) == sorted(str(p) for p in photos), "every file once: nothing lost, nothing doubled"
        final = b.search()
        assert sorted(_players_paths(final)) == sorted(players)
        stats = b.client.get("/api/v1/stats").json()
        assert stats["faces"] == stats["index_size"] == final["gallery_size"]
        assert sorted(r[0] for r in _catalog_rows(url, "SELECT status FROM ingest_log")) == ["died", "finished"]
        checked = _check(second)  # the crops A wrote for files it never committed were deleted by B's ingest
        assert checked.returncode == 0 and "Traceback" not in checked.stderr, checked.stdout + checked.stderr
