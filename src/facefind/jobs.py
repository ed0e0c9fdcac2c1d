"""Index jobs: ingest runs in a background thread of a long-lived process, with progress and cancel.

The HTTP service is the library's one writer, so its ingest runs inside it, one job at a time,
while searches go on in other threads (the library's reader/writer lock keeps each committed
batch whole). A job's progress comes from the ingest progress protocol; cancelling sets an event
that ingest checks between files, and everything committed before that stays.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from facefind.errors import FaceFindError, LibraryBusyError, NotFoundError
from facefind.ingest import IngestReport
from facefind.schema import IndexJob

RunIngest = Callable[["JobProgress", threading.Event], IngestReport]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JobProgress:
    """Receives ingest progress (the IngestProgress protocol) into a job's record, under a lock."""

    def __init__(self, job: IndexJob, lock: threading.Lock) -> None:
        self.job = job
        self.lock = lock
        self.began = time.monotonic()

    def started(self, total_files: int) -> None:
        with self.lock:
            self.job.total_files = total_files

    def file_done(self, path: str, status: str, faces: int) -> None:
        with self.lock:
            job = self.job
            job.files_done += 1
            job.faces += faces
            job.no_face += status == "no_face"
            job.failed += status == "failed"
            job.current_file = path
            job.footage = None
            job.files_per_s = round(job.files_done / max(time.monotonic() - self.began, 1e-6), 2)

    def footage(self, path: str, frames: int, seconds_done: float, seconds_total: float) -> None:
        with self.lock:
            self.job.current_file = path
            self.job.footage = f"{frames} frames, {seconds_done:.1f} of {seconds_total:.1f} s"


class IndexJobs:
    """One index job at a time, run in a daemon thread; finished jobs are kept for their reports."""

    def __init__(self, keep: int = 100) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._jobs: dict[int, IndexJob] = {}
        self._cancels: dict[int, threading.Event] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._next_id = 1

    def start(self, paths: list[Path], started_by: str, run: RunIngest) -> IndexJob:
        """Start ``run`` (an ingest of ``paths``) now; refused (busy) while another job runs: the library has one writer."""
        with self._lock:
            running = [job for job in self._jobs.values() if job.status == "running"]
            if running:
                raise LibraryBusyError(f"index job {running[0].job_id} is still running; wait for it or cancel it")
            job = IndexJob(job_id=self._next_id, paths=[str(p) for p in paths], status="running",
                           started_by=started_by, started_at=_now())
            self._next_id += 1
            self._jobs[job.job_id] = job
            self._cancels[job.job_id] = threading.Event()
            self._forget_old()
            thread = threading.Thread(target=self._work, args=(job, run), name=f"index-job-{job.job_id}", daemon=True)
            self._threads[job.job_id] = thread
        thread.start()
        return self.get(job.job_id)

    def _work(self, job: IndexJob, run: RunIngest) -> None:
        progress = JobProgress(job, self._lock)
        cancel = self._cancels[job.job_id]
        status, error, reason = "finished", None, None
        try:
            report = run(progress, cancel)
            if report.cancelled or report.interrupted:
                status = "cancelled"
        except FaceFindError as failure:
            status, error, reason = "failed", str(failure), failure.reason
        except Exception as failure:  # a bug must end the job visibly, not kill the thread silently
            status, error, reason = "failed", f"{type(failure).__name__}: {failure}", "internal"
        with self._lock:
            job.status, job.error, job.error_reason = status, error, reason
            job.finished_at = _now()
            job.current_file = job.footage = None

    def get(self, job_id: int) -> IndexJob:
        with self._lock:
            if job_id not in self._jobs:
                raise NotFoundError(f"no index job {job_id}")
            return self._jobs[job_id].model_copy()

    def all(self) -> list[IndexJob]:
        """Every kept job, newest first."""
        with self._lock:
            return [job.model_copy() for job in sorted(self._jobs.values(), key=lambda j: -j.job_id)]

    def cancel(self, job_id: int) -> IndexJob:
        """Ask a running job to stop after the file in hand; what it committed stays."""
        self.get(job_id)
        self._cancels[job_id].set()
        return self.get(job_id)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Cancel running jobs and wait for them to commit what they have (the service is stopping)."""
        for event in self._cancels.values():
            event.set()
        for thread in list(self._threads.values()):
            thread.join(timeout_s)

    def _forget_old(self) -> None:
        finished = sorted(job_id for job_id, job in self._jobs.items() if job.status != "running")
        for job_id in finished[: max(0, len(self._jobs) - self._keep)]:
            del self._jobs[job_id], self._cancels[job_id]
            self._threads.pop(job_id, None)
