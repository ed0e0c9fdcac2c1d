"""A local Dask cluster for development and tests: ``dask scheduler`` + ``dask worker`` processes on 127.0.0.1.

The same commands a real deployment runs on its machines (docs/DEPLOY.md), only all on loopback,
with free ports, no dashboard, and a temporary folder that is removed when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from facefind.devservices.milvus import die_with_parent, stop_process

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class DaskCluster:
    """A running local cluster: ``address`` is what ``facefind index --cluster`` takes."""

    address: str
    workers: int
    scheduler_pid: int
    worker_group_pid: int  # the `dask worker` command; each worker process runs under its own nanny below it


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", *args], stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=die_with_parent,  # never outlive the test or `dev-services`
        )


@contextlib.contextmanager
def dask_cluster(workers: int = 2, threads_per_worker: int = 1, memory_limit: str = "3GiB") -> Iterator[DaskCluster]:
    """Start a scheduler and ``workers`` worker processes (each under a nanny that restarts it if it
    dies) on 127.0.0.1; stop them all and remove their folder when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="facefind-dask-"))
    scheduler_file = root / "scheduler.json"
    processes: list[subprocess.Popen] = []
    try:
        scheduler = _spawn(["distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
                            "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)],
                           root / "scheduler.log")
        processes.append(scheduler)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not scheduler_file.exists():
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Dask scheduler did not start:\n{(root / 'scheduler.log').read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written whole, but give the writer its close
        address = json.loads(scheduler_file.read_text())["address"]
        group = _spawn(["distributed.cli.dask_worker", address, "--nworkers", str(workers), "--nthreads",
                        str(threads_per_worker), "--host", "127.0.0.1", "--no-dashboard", "--memory-limit",
                        memory_limit, "--local-directory", str(root / "workers"), "--death-timeout", "30"],
                       root / "workers.log")
        processes.append(group)
        _wait_for_workers(address, workers, group, root / "workers.log", deadline)
        yield DaskCluster(address=address, workers=workers, scheduler_pid=scheduler.pid, worker_group_pid=group.pid)
    finally:
        for process in reversed(processes):  # workers first: they would otherwise wait for the scheduler
            stop_process(process, timeout=20)
        shutil.rmtree(root, ignore_errors=True)


def _wait_for_workers(address: str, count: int, group: subprocess.Popen, log: Path, deadline: float) -> None:
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT_S, set_as_default=False) as client:
        while len(client.scheduler_info(n_workers=-1)["workers"]) < count:
            if group.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Dask workers did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
