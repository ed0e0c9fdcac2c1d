"""The cost of one audit entry, as a search pays it: reopening the log per entry vs one connection kept.

Until the append connection was kept per thread, every entry opened SQLite, set its pragmas and
re-ran the schema script before writing. Both ways are timed here in one run, interleaved, on the
same log, with the service's `anchor=False` and the CLI's `anchor=True` (an fsynced anchor line).

    nice -n 10 .venv/bin/python bench/audit_write.py [--entries 300]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _common import RESULTS, write_json

from facefind.audit import AuditLog

DETAILS = {"top_k": 10, "max_fmr": 1e-5, "gallery_faces": 1000, "results": 3,
           "probe": {"sha256": "0" * 64, "path": "/photos/probe.jpg"}, "face_ids": [1, 2, 3]}
PURPOSE = {"case": "BENCH-1", "reason": "measuring the audit write"}


def time_append(log: AuditLog, reopen: bool, anchor: bool) -> float:
    """Milliseconds for one entry; ``reopen`` closes the connection after it, as every entry did before
    (closing the last connection to a WAL database checkpoints it into the file)."""
    started = time.perf_counter()
    log.append("bench", "search", DETAILS, PURPOSE, "127.0.0.1", anchor=anchor)
    if reopen:
        log._drop_writer()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=300, help="Entries timed per way.")
    args = parser.parse_args()
    ways = {f"{'reopen' if reopen else 'kept'}_anchor_{anchor}": (reopen, anchor)
            for anchor in (False, True) for reopen in (True, False)}
    timings: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as folder:
        logs = {name: AuditLog(Path(folder) / name) for name in ways}  # one log each: a kept connection stays kept
        for log in logs.values():
            log.append("bench", "warm-up", {}, anchor=False)
        for _ in range(args.entries):
            for name, (reopen, anchor) in ways.items():  # interleaved: load on the machine hits all alike
                timings[name].append(time_append(logs[name], reopen, anchor))
        assert all(log.verify().intact for log in logs.values())
    summary = {name: {"p50_ms": round(statistics.median(values), 3),
                      "p95_ms": round(statistics.quantiles(values, n=20)[18], 3)} for name, values in timings.items()}
    write_json("audit_write", {"entries_per_way": args.entries, "per_entry": summary})
    plot(summary)
    for name, figures in summary.items():
        print(f"{name:24} p50 {figures['p50_ms']:8.2f} ms   p95 {figures['p95_ms']:8.2f} ms")


def plot(summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(summary)
    ax.bar(names, [summary[name]["p50_ms"] for name in names], color=["tab:red", "tab:green"] * 2)
    ax.set_ylabel("ms per audit entry (median)")
    ax.set_title("Audit append: connection reopened per entry vs kept")
    ax.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "audit_write.png", dpi=110)


if __name__ == "__main__":
    main()
