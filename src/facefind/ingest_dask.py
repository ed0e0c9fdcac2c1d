"""Ingest on a Dask cluster: image files fan out to Dask workers; the parent alone commits.

Workers only compute, exactly as the local worker processes do (``ingest.analyze_file``, one
pipeline loaded per worker process and kept); each returns the file's outcome and thumbnails, and
the parent hands them to the same committer as the local pool. So crash safety is unchanged: a worker
killed mid-file is noticed by the scheduler, which runs its files again on another worker (up to
``distributed.scheduler.allowed-failures`` times, then the file is recorded ``worker_crashed`` and
retried by the next run); a killed parent loses only uncommitted work, and the next run resumes.

Workers open files by the path the parent found, so they must see the folders at the same paths
(shared storage: NFS, a cluster file system, or one machine). Videos stay in the parent (frames of
one file are tracked in order).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import CancelledError
from typing import Callable

from facefind.catalog import MediaOutcome
from facefind.errors import FaceFindError
from facefind.ingest import IngestOptions, analyze_file
from facefind.pipeline import FacePipeline, PipelineConfig

CONNECT_TIMEOUT_S = 20.0
WAIT_FOR_WORKERS_S = 60.0
QUEUED_PER_THREAD = 4  # files submitted ahead per worker thread: keeps workers busy, bounds parent memory

_pipelines: dict[PipelineConfig, FacePipeline] = {}
_pipelines_lock = threading.Lock()


def analyze_on_worker(
    path: str, previous_sha256: str | None, max_pixels: int, config: PipelineConfig, processes_by_host: dict[str, int]
) -> tuple[MediaOutcome, dict[str, bytes]]:
    """Runs in a Dask worker: the models are loaded once per worker process (first file) and kept, with
    this host's cores shared among the facefind worker processes on it."""
    from distributed import get_worker

    with _pipelines_lock:
        pipeline = _pipelines.get(config)
        if pipeline is None:
            host = get_worker().address.rsplit(":", 1)[0].split("://")[-1]
            threads = max(1, (os.cpu_count() or 1) // max(1, processes_by_host.get(host, 1)))
            pipeline = _pipelines[config] = FacePipeline(PipelineConfig(**{**config.__dict__, "threads": threads}))
    return analyze_file(pipeline, path, previous_sha256, max_pixels)


def run_on_cluster(
    tasks: list[tuple[str, str | None]],
    options: IngestOptions,
    accept: Callable[[MediaOutcome, dict[str, bytes]], None],
    cancel: threading.Event,
) -> None:
    """Analyse ``tasks`` (path, previous hash) on the Dask cluster at ``options.cluster``, handing each
    result to ``accept`` (the committer) as it arrives. Once ``cancel`` is set, queued files are dropped
    (they are retried by the next run) and the call returns."""
    from distributed import Client, KilledWorker, as_completed

    try:
        client = Client(options.cluster, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise FaceFindError(f"cannot reach the Dask scheduler at {options.cluster}: {error}",
                            reason="cluster_unavailable") from None
    with client:
        try:
            client.wait_for_workers(1, timeout=WAIT_FOR_WORKERS_S)
        except TimeoutError:
            raise FaceFindError(f"the Dask cluster at {options.cluster} has no workers"
                                f" (waited {WAIT_FOR_WORKERS_S:.0f} s)", reason="cluster_unavailable") from None
        workers = client.scheduler_info(n_workers=-1)["workers"]
        processes_by_host: dict[str, int] = {}
        for info in workers.values():
            processes_by_host[info["host"]] = processes_by_host.get(info["host"], 0) + 1
        queue = iter(tasks)
        running = as_completed(loop=client.loop)
        path_of: dict[str, str] = {}

        def submit_next() -> None:
            task = next(queue, None)
            if task is not None and not cancel.is_set():
                future = client.submit(analyze_on_worker, task[0], task[1], options.max_pixels, options.pipeline,
                                       processes_by_host, pure=False)
                path_of[future.key] = task[0]
                running.add(future)

        for _ in range(max(1, sum(info["nthreads"] for info in workers.values())) * QUEUED_PER_THREAD):
            submit_next()
        for future in running:
            path = path_of.pop(future.key)
            try:
                outcome = future.result()
            except KilledWorker as error:  # this file took down a worker every time it ran
                outcome = MediaOutcome(path=path, status="failed", reason="worker_crashed",
                                       message=f"Dask workers died analysing it: {error}"), {}
            except CancelledError:
                if cancel.is_set():
                    continue
                raise FaceFindError(f"lost the Dask scheduler at {options.cluster} mid-run; what was done is saved,"
                                    " run again to resume", reason="cluster_unavailable") from None
            future.release()
            accept(*outcome)
            if cancel.is_set():
                client.cancel(list(running.futures))
                running.clear()
                break
            submit_next()
