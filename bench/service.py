"""Search over HTTP with `facefind serve`: latency and throughput, idle and while an index job writes.

For each gallery size (10k and 100k faces: the real faces of named_people/train plus synthetic unit
embeddings committed through the catalog), a real `facefind serve` process is started on a loopback
port and searched with a real photo (named_people/probes/obama1.jpg, uploaded) by 1, 4 and 16
concurrent clients: p50/p95 latency and searches/s. The same is measured again while an index job
ingests LFW in the server. In the same run, `facefind search` (the CLI, which opens the library for
every search) is timed on the same library: the CLI-to-service latency ratio. Writes
bench/results/service.json and service.png.

    python bench/service.py [--sizes 10000 100000] [--seconds 8]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, data_dir_or_exit, write_json  # noqa: E402

from facefind.api import FaceFind  # noqa: E402
from facefind.catalog import MediaOutcome, NewFace  # noqa: E402

FACES_PER_SYNTHETIC_FILE = 10
CONCURRENCY = (1, 4, 16)
CLI_REPEATS = 3


def build_library(library: Path, size: int, people: Path) -> int:
    """Real faces of named_people/train, then synthetic ones up to ``size``, written through the catalog."""
    facefind = FaceFind(library)
    facefind.index([people / "train"], workers=1)
    with facefind.open_library(writable=True) as opened:
        real = len(opened.index)
        template = next(iter(opened.catalog.faces(list(range(1, 2))).values()))
        rng = np.random.default_rng(0)
        missing, file_number = size - real, 0
        while missing > 0:
            outcomes = []
            for _ in range(min(500, -(-missing // FACES_PER_SYNTHETIC_FILE))):
                count = min(FACES_PER_SYNTHETIC_FILE, missing)
                vectors = rng.standard_normal((count, opened.dim)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                faces = [NewFace(face_index=i, box=template.box, landmarks=template.landmarks,
                                 detection_score=template.detection_score, quality=template.quality,
                                 model_id=template.model_id, embedding=vector, thumbnail=None)
                         for i, vector in enumerate(vectors)]
                outcomes.append(MediaOutcome(path=f"/synthetic/{file_number:07d}.jpg", status="indexed",
                                             sha256=f"{file_number:064x}", size=1, mtime_ns=1, width=640,
                                             height=480, format="JPEG", faces=faces))
                file_number += 1
                missing -= count
            opened.commit_outcomes(outcomes)
        opened.save_index()
        return len(opened.index)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


PURPOSE = {"case": "BENCH", "reason": "measuring search latency under load"}
HEADERS: dict[str, str] = {}  # the bench account's API key, once start_server made it


def bench_account(library: Path) -> None:
    """An admin and an API key of theirs, made as a user would (facefind has no default credentials)."""
    facefind = [sys.executable, "-m", "facefind", "--library", str(library)]
    subprocess.run([*facefind, "users", "add", "--admin", "--password-stdin", "bench"],
                   input="bench password, not for use\n", text=True, check=True, capture_output=True)
    key = subprocess.run([*facefind, "keys", "create", "--user", "bench", "--scope", "search", "--scope", "index",
                          "--expires", "1d"], text=True, check=True, capture_output=True).stdout.split()[-1]
    HEADERS["Authorization"] = f"Bearer {key}"


def start_server(library: Path, allow_root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    bench_account(library)
    process = subprocess.Popen(
        [sys.executable, "-m", "facefind", "serve", "--port", str(port), "--library", str(library),
         "--allow-root", str(allow_root), "--workers", "1", "--searches-per-hour", "100000000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(url + "/api/v1/stats", timeout=5, headers=HEADERS).raise_for_status()
            return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {process.stderr.read() if process.stderr else ''}")
            time.sleep(0.5)


def measure(url: str, probe: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads searching back to back for ``seconds``: latency percentiles and searches/s."""
    latencies: list[float] = []
    failures: list[int] = []
    gallery_sizes: set[int] = set()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=300, headers=HEADERS) as http:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                response = http.post("/api/v1/search", files={"file": ("probe.jpg", probe, "image/jpeg")},
                                     data=PURPOSE)
                elapsed = time.perf_counter() - started
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                        gallery_sizes.add(response.json()["gallery_size"])
                    else:
                        failures.append(response.status_code)

    began = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "searches": len(latencies),
        "failures": len(failures),
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p95_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
        "searches_per_second": round(len(latencies) / wall, 2),
        "gallery_sizes_seen": sorted(gallery_sizes),
    }


def cli_latency(library: Path, probe: Path) -> list[float]:
    """Wall time of `facefind search --json` (a new process that opens the library), CLI_REPEATS times."""
    times = []
    for _ in range(CLI_REPEATS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "facefind", "--library", str(library), "search", str(probe), "--json",
                        "--case", "bench", "--reason", "benchmark of search speed"], check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


def run_size(size: int, data: Path, workdir: Path, seconds: float) -> dict:
    people = data / "named_people"
    probe_path = people / "probes" / "obama1.jpg"
    probe = probe_path.read_bytes()
    library = workdir / f"lib-{size}"
    started = time.monotonic()
    faces = build_library(library, size, people)
    print(f"{size}: library of {faces} faces built in {time.monotonic() - started:.0f} s", flush=True)
    cli = cli_latency(library, probe_path)
    process, url = start_server(library, data / "lfw")
    try:
        measure(url, probe, 1, 2.0)  # warm-up: first requests pay for lazy imports and caches
        idle = [measure(url, probe, clients, seconds) for clients in CONCURRENCY]
        rss_idle = rss_mb(process.pid)
        for row in idle:
            print(f"{size} idle   {row}", flush=True)
        job = httpx.post(url + "/api/v1/jobs", json={"paths": [str(data / "lfw")]}, timeout=60, headers=HEADERS).json()
        time.sleep(3.0)  # past discovery: files are being analysed and committed
        during = []
        for clients in CONCURRENCY:
            row = measure(url, probe, clients, seconds)
            state = httpx.get(f"{url}/api/v1/jobs/{job['job_id']}", timeout=60, headers=HEADERS).json()
            row["job_files_done"], row["job_status"] = state["files_done"], state["status"]
            during.append(row)
            print(f"{size} ingest {row}", flush=True)
        httpx.post(f"{url}/api/v1/jobs/{job['job_id']}/cancel", timeout=60, headers=HEADERS)
        rss_ingest = rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(120)
    service_p50 = idle[0]["p50_ms"] / 1000
    return {
        "gallery_faces": faces,
        "idle": idle,
        "during_ingest": during,
        "cli_search_seconds": [round(t, 3) for t in cli],
        "cli_median_seconds": round(statistics.median(cli), 3),
        "service_p50_seconds_1_client": round(service_p50, 4),
        "cli_to_service_latency_ratio": round(statistics.median(cli) / service_p50, 1),
        "server_rss_mb": {"idle": round(rss_idle, 1), "after_ingest": round(rss_ingest, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per concurrency level")
    args = parser.parse_args()
    data = data_dir_or_exit()
    results: dict = {"probe": "named_people/probes/obama1.jpg", "ingest_during": "lfw/ (index job, 1 worker)",
                     "seconds_per_level": args.seconds, "load_average_at_start": os.getloadavg(), "sizes": {}}
    with tempfile.TemporaryDirectory(prefix="facefind-bench-service-") as tmp:
        for size in args.sizes:
            results["sizes"][str(size)] = run_size(size, data, Path(tmp), args.seconds)
    results["load_average_at_end"] = os.getloadavg()  # the machine is shared: contention shows here
    path = write_json("service", results)
    plot(results)
    for size, row in results["sizes"].items():
        print(f"{size} faces: CLI {row['cli_median_seconds']} s vs service p50 {row['service_p50_seconds_1_client']} s"
              f" -> ratio {row['cli_to_service_latency_ratio']}")
    print(f"wrote {path}")


def plot(results: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for size, row in results["sizes"].items():
        for phase, style in (("idle", "-"), ("during_ingest", "--")):
            points = row[phase]
            label = f"{int(size) // 1000}k faces, {'idle' if phase == 'idle' else 'during ingest'}"
            axes[0].plot([p["clients"] for p in points], [p["p50_ms"] for p in points], style, marker="o", label=label)
            axes[0].plot([p["clients"] for p in points], [p["p95_ms"] for p in points], style, marker="x", alpha=0.4)
            axes[1].plot([p["clients"] for p in points], [p["searches_per_second"] for p in points], style, marker="o",
                         label=label)
    axes[0].set(xscale="log", xlabel="concurrent clients", ylabel="latency ms (o p50, x p95)", title="search latency")
    axes[1].set(xscale="log", xlabel="concurrent clients", ylabel="searches/s", title="throughput")
    for axis in axes:
        axis.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
        axis.legend(fontsize=7)
    fig.suptitle(f"facefind serve over HTTP on {os.cpu_count()} cores")
    fig.tight_layout()
    fig.savefig(RESULTS / "service.png", dpi=110)


if __name__ == "__main__":
    main()
