"""Index jobs' bookkeeping: progress, one job at a time, cancel, and failures kept visible.

The ingest itself is exercised for real in tests/service/ (over HTTP); here the run is a small
function that reports progress like ingest does, so each state can be reached on purpose.
"""

from __future__ import annotations

import threading
import time

import pytest

from facefind.errors import FaceFindError, LibraryBusyError, NotFoundError
from facefind.ingest import IngestReport
from facefind.jobs import IndexJobs


def wait_until_ended(jobs: IndexJobs, job_id: int) -> dict:
    deadline = time.monotonic() + 10
    while jobs.get(job_id).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return jobs.get(job_id).model_dump()


def files_until_cancelled(files: int, release: threading.Event):
    """A run that does ``files`` files, waiting for ``release`` after the first, and stops when cancelled."""

    def run(progress, cancel: threading.Event) -> IngestReport:
        progress.started(files)
        report = IngestReport()
        for number in range(files):
            if cancel.is_set():
                report.cancelled = True
                break
            progress.file_done(f"/photos/{number}.jpg", "indexed" if number % 2 == 0 else "no_face", 1 - number % 2)
            release.wait(5)
        return report

    return run


def test_progress_is_counted_and_the_job_finishes():
    jobs, release = IndexJobs(), threading.Event()
    release.set()
    job = jobs.start([], "alice", files_until_cancelled(5, release))
    assert job.started_by == "alice"
    done = wait_until_ended(jobs, job.job_id)
    assert (done["status"], done["total_files"], done["files_done"], done["faces"], done["no_face"]) == (
        "finished", 5, 5, 3, 2)
    assert done["finished_at"] and done["current_file"] is None


def test_one_job_at_a_time_and_cancel_stops_between_files():
    jobs, release = IndexJobs(), threading.Event()
    first = jobs.start([], "alice", files_until_cancelled(100, release))
    with pytest.raises(LibraryBusyError):
        jobs.start([], "bob", files_until_cancelled(1, release))
    jobs.cancel(first.job_id)
    release.set()
    done = wait_until_ended(jobs, first.job_id)
    assert done["status"] == "cancelled" and done["files_done"] < 100
    assert jobs.start([], "bob", files_until_cancelled(1, release)).job_id == first.job_id + 1


@pytest.mark.parametrize(
    ("error", "reason"),
    [(FaceFindError("the disk is full", reason="disk_full"), "disk_full"), (ZeroDivisionError("bug"), "internal")],
)
def test_a_failing_run_ends_the_job_as_failed_with_its_reason(error, reason):
    def run(progress, cancel):
        raise error

    jobs = IndexJobs()
    done = wait_until_ended(jobs, jobs.start([], "alice", run).job_id)
    assert done["status"] == "failed" and done["error_reason"] == reason and str(error) in done["error"]


def test_unknown_jobs_are_not_found_and_old_ones_are_forgotten():
    jobs, release = IndexJobs(keep=2), threading.Event()
    release.set()
    ids = [wait_until_ended(jobs, jobs.start([], "alice", files_until_cancelled(1, release)).job_id)["job_id"]
           for _ in range(4)]
    assert [job.job_id for job in jobs.all()] == ids[:1:-1]
    with pytest.raises(NotFoundError):
        jobs.get(ids[0])
