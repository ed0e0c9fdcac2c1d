"""pgvector next to FAISS: the same gallery, the same probes, one run.

Usage::

    nice -n 10 python bench/pgvector_index.py [--size 100000]

Starts a local PostgreSQL 18 + pgvector (facefind.devservices.postgres), builds bench/scale.py's realistic
synthetic gallery (its generator fitted to real LFW embeddings, cached in bench/results/cache/), and measures
for FAISS flat (exact), FAISS pq-refine (ANN) and facefind's PgvectorIndex (HNSW over halfvec):
build time (pgvector: COPY then one graph build, as a rebuild does; and the rate of adds into a built
graph, as ingest does), single-query latency p50/p95 of what search does (index top 40, then exact
re-scoring from float32 embeddings), recall@10 against exact search, mate recall above the calibrated
threshold (standard table, FMR 1e-5), and memory (FAISS: serialized size; pgvector: table + graph on the
server). pgvector is measured at several ``hnsw.ef_search`` values (facefind uses max(100, k)).
Writes bench/results/pgvector_index.json and pgvector_index.png.

``--inserts``: only the ingest side, facefind's graph (m 16, ef_construction 200). Builds a graph of ``--size``
faces, then adds ingest-sized batches (100 faces, as a commit of 32 files), 1k and 10k batches through
PgvectorIndex.add: into the graph on one connection (as before), split over ``WRITE_CONNECTIONS``, and a 10k
batch by dropping the graph, copying and building it again (the ``REBUILD_FRACTION`` path). Faces/s of each,
one run; writes bench/results/pgvector_inserts.json and pgvector_inserts.png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import faiss
import numpy as np

from _common import RESULTS, write_json
from scale import CACHE, Generator, gallery, percentiles
from facefind.devservices.postgres import local_postgres
from facefind.index import FaissAnnIndex, FaissFlatIndex, open_index
from facefind.index import pgvector_index
from facefind.index.ann import TRAIN_SAMPLE

CANDIDATES = 40  # what search asks the index for (top_k 10 x 4), before exact re-scoring
EF_SEARCH = [40, 100, 200, 400]
GRAPHS = [(16, 64), (16, 200)]  # (m, ef_construction): pgvector's default, and what bench/milvus_index.py chose
INCREMENTAL = 2_000  # faces added into a built graph, for the ingest rate
WRITE_CONNECTIONS = 4


def run_search(index, plain: np.ndarray, probes: np.ndarray) -> tuple[dict, np.ndarray]:
    latencies, found = [], []
    for probe in probes:
        started = time.perf_counter()
        _, candidates = index.search(probe[None, :], CANDIDATES)
        candidates = candidates[0][candidates[0] >= 0]
        scores = plain[candidates] @ probe
        found.append(candidates[np.argsort(-scores)[:10]])
        latencies.append(time.perf_counter() - started)
    return percentiles(latencies), np.array(found)


def quality(found: np.ndarray, exact_top: np.ndarray, identity: np.ndarray, probe_identity: np.ndarray,
            plain: np.ndarray, probes: np.ndarray, threshold: float) -> dict:
    mates = [(row, face) for row, top in enumerate(exact_top) for face in top
             if identity[face] == probe_identity[row] and plain[face] @ probes[row] >= threshold]
    return {"recall_at_10": round(float(np.mean([len(set(e) & set(f)) / 10 for e, f in zip(exact_top, found)])), 4),
            "mate_recall": round(float(np.mean([face in found[row] for row, face in mates])), 4) if mates else None,
            "mates_above_threshold": len(mates)}


def faiss_rows(plain, identity, probes, probe_identity, threshold) -> tuple[list[dict], np.ndarray]:
    ids = np.arange(len(plain), dtype=np.int64)
    rows, exact_top = [], None
    sample = plain[np.random.default_rng(1).choice(len(plain), min(TRAIN_SAMPLE, len(plain)), replace=False)]
    for name, build in (("faiss flat", lambda: FaissFlatIndex(plain.shape[1])),
                        ("faiss pq-refine", lambda: FaissAnnIndex.trained(plain.shape[1], sample, len(plain)))):
        started = time.perf_counter()
        index = build()
        for start in range(0, len(plain), 50_000):
            index.add(ids[start:start + 50_000], plain[start:start + 50_000])
        build_s = time.perf_counter() - started
        latency, found = run_search(index, plain, probes)
        if exact_top is None:
            exact_top = found
        memory = sum(len(faiss.serialize_index(part)) for part in
                     ([index._index] if isinstance(index, FaissFlatIndex) else [index._proposals, index._refine]))
        rows.append({"index": name, "build_s": round(build_s, 1), **latency,
                     **quality(found, exact_top, identity, probe_identity, plain, probes, threshold),
                     "memory_mb": round(memory / 2**20, 1)})
        print(rows[-1], flush=True)
    return rows, exact_top


def relation_mb(url: str, index) -> dict:
    import psycopg

    from facefind.catalog.postgres import split_catalog_url

    conninfo, schema = split_catalog_url(url)
    with psycopg.connect(conninfo) as connection:
        table, graph = connection.execute(
            "SELECT pg_total_relation_size(%s) - pg_indexes_size(%s), pg_relation_size(%s)",
            (f"{schema}.{index.table}", f"{schema}.{index.table}", f"{schema}.{index.table}_hnsw")).fetchone()
    return {"table_mb": round(table / 2**20, 1), "graph_mb": round(graph / 2**20, 1)}


def pgvector_rows(plain, identity, probes, probe_identity, threshold, exact_top) -> list[dict]:
    rows = []
    settings = {"shared_buffers": "1GB", "maintenance_work_mem": "1GB", "max_parallel_maintenance_workers": "1"}
    with local_postgres(settings=settings) as server:
        for m, ef_construction in GRAPHS:
            pgvector_index.HNSW_M, pgvector_index.HNSW_EF_CONSTRUCTION = m, ef_construction
            rows += pgvector_graph_rows(f"{server.url}?schema=bench_m{m}_efc{ef_construction}", plain, identity,
                                        probes, probe_identity, threshold, exact_top)
    return rows


def pgvector_graph_rows(url, plain, identity, probes, probe_identity, threshold, exact_top) -> list[dict]:
    """One HNSW graph: bulk build, adds into it, then searches at each ef_search."""
    ids = np.arange(len(plain), dtype=np.int64)
    rows = []
    index = open_index("pgvector", plain.shape[1], model_id="bench", catalog_url=url)
    bulk = len(plain) - INCREMENTAL
    started = time.perf_counter()
    index.reset()  # as Library.rebuild_index: rows first, the graph once
    for start in range(0, bulk, 50_000):
        index.add(ids[start:min(start + 50_000, bulk)], plain[start:min(start + 50_000, bulk)])
    copied = time.perf_counter() - started
    index.save(RESULTS / "unused")  # writes no file: builds the HNSW graph
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    for start in range(bulk, len(plain), 500):  # ingest-sized batches into the built graph
        index.add(ids[start:start + 500], plain[start:start + 500])
    incremental_s = time.perf_counter() - started
    common = {"copy_s": round(copied, 1), "build_s": round(build_s, 1),
              "adds_per_s_into_graph": round(INCREMENTAL / incremental_s), **relation_mb(url, index)}
    print(common, flush=True)
    for ef in EF_SEARCH:
        pgvector_index.EF_SEARCH_MIN = ef  # what search sets per query (k = 40 here)
        run_search(index, plain, probes[:20])  # warm the buffer cache
        latency, found = run_search(index, plain, probes)
        rows.append({"index": f"pgvector m={pgvector_index.HNSW_M} ef_construction="
                              f"{pgvector_index.HNSW_EF_CONSTRUCTION} ef_search={ef}", **common, **latency,
                     **quality(found, exact_top, identity, probe_identity, plain, probes, threshold)})
        print(rows[-1], flush=True)
    index.close()
    return rows


def insert_rows(plain: np.ndarray, size: int) -> None:
    """Faces/s of each way of adding into a built graph of ``size`` faces (module docstring), written as measured."""
    ids = np.arange(len(plain), dtype=np.int64)
    rows: list[dict] = []
    payload = {"faces_in_graph": size, "m": pgvector_index.HNSW_M,
               "ef_construction": pgvector_index.HNSW_EF_CONSTRUCTION, "write_connections": pgvector_index.WRITE_CONNECTIONS, "rows": rows}
    with local_postgres(settings={"shared_buffers": "1GB"}) as server:
        index = open_index("pgvector", plain.shape[1], model_id="bench", catalog_url=f"{server.url}?schema=inserts")
        index.reset()
        started = time.perf_counter()
        for start in range(0, size, 50_000):
            index.add(ids[start:min(start + 50_000, size)], plain[start:min(start + 50_000, size)])
        copied = time.perf_counter() - started
        index.save(RESULTS / "unused")  # builds the graph (facefind raises maintenance_work_mem for it)
        built = time.perf_counter() - started
        rows.append({"how": f"bulk load: COPY + one graph build of {size:,}", "faces": size, "seconds": round(built, 1),
                     "copy_s": round(copied, 1), "faces_per_s": round(size / built), "load": os.getloadavg()[0]})
        print(rows[-1], flush=True)
        write_json("pgvector_inserts", payload)
        added = size

        def measure(how: str, batch: int, connections: int, repeats: int = 1, rebuild: bool = False) -> None:
            nonlocal added
            pgvector_index.WRITE_CONNECTIONS = connections
            pgvector_index.REBUILD_FRACTION = 0.0 if rebuild else 10.0
            pgvector_index.REBUILD_MIN_ROWS = 0 if rebuild else 10**9
            rates = []
            for _ in range(repeats):
                started = time.perf_counter()
                index.add(ids[added:added + batch], plain[added:added + batch])
                rates.append(batch / (time.perf_counter() - started))
                added += batch
            rows.append({"how": how, "faces": batch, "connections": connections, "repeats": repeats,
                         "faces_per_s": round(statistics.median(rates)), "load": os.getloadavg()[0]})
            print(rows[-1], flush=True)
            write_json("pgvector_inserts", payload)

        for _ in range(2):  # alternated, so both see the same load
            measure("100 (an ingest commit) into the graph, 1 connection", 100, 1, repeats=3)
            measure(f"100 (an ingest commit) into the graph, {WRITE_CONNECTIONS} connections", 100, WRITE_CONNECTIONS,
                    repeats=3)
        measure("1k into the graph, 1 connection", 1000, 1)
        measure(f"1k into the graph, {WRITE_CONNECTIONS} connections", 1000, WRITE_CONNECTIONS)
        measure(f"10k into the graph, {WRITE_CONNECTIONS} connections", 10_000, WRITE_CONNECTIONS)
        measure("10k: drop graph, COPY, build again", 10_000, WRITE_CONNECTIONS, rebuild=True)
        index.close()
    plot_inserts(rows, size)


def plot_inserts(rows: list[dict], size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 0.5 * len(rows) + 1.5))
    axis.barh(np.arange(len(rows)), [row["faces_per_s"] for row in rows])
    axis.set_yticks(np.arange(len(rows)), [row["how"] for row in rows], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlabel("faces/s (median of the repeats)")
    figure.suptitle(f"pgvector adds into a built HNSW graph of {size:,} faces, one run")
    figure.tight_layout()
    figure.savefig(RESULTS / "pgvector_inserts.png", dpi=100)


def plot(rows: list[dict], size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (latency, recall) = plt.subplots(1, 2, figsize=(11, 4))
    names = [row["index"] for row in rows]
    positions = np.arange(len(rows))
    latency.barh(positions, [row["p50_ms"] for row in rows], label="p50")
    latency.barh(positions, [row["p95_ms"] - row["p50_ms"] for row in rows], left=[row["p50_ms"] for row in rows],
                 alpha=0.4, label="p95")
    latency.set_yticks(positions, names)
    latency.set_xlabel("ms per search (index top 40 + exact re-scoring)")
    latency.legend()
    recall.barh(positions, [row["recall_at_10"] for row in rows], label="recall@10 vs exact")
    recall.barh(positions + 0.4, [row["mate_recall"] or 0 for row in rows], height=0.4, label="mate recall")
    recall.set_yticks(positions, [""] * len(rows))
    recall.set_xlim(0.6, 1.0)
    recall.legend(loc="upper left", fontsize=8)
    figure.suptitle(f"{size:,} faces, one run, single queries")
    figure.tight_layout()
    figure.savefig(RESULTS / "pgvector_index.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--inserts", action="store_true", help="measure only adds into a built graph")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    from facefind.calibration.table import default_calibration

    threshold = default_calibration().tables["standard"].threshold_for_fmr(1e-5)
    cached = np.load(CACHE)
    generator = Generator(cached["identity"], cached["plain"], cached["masked"])
    if args.inserts:
        _, plain, *_ = gallery(generator, args.size + 30_000, seed=args.size)
        insert_rows(plain, args.size)
        return
    identity, plain, _, probe_identity, probes, _ = gallery(generator, args.size, seed=args.size)
    probes, probe_identity = probes[:args.probes], probe_identity[:args.probes]
    rows, exact_top = faiss_rows(plain, identity, probes, probe_identity, threshold)
    rows += pgvector_rows(plain, identity, probes, probe_identity, threshold, exact_top)
    print(write_json("pgvector_index", {"faces": args.size, "probes": len(probes), "candidates": CANDIDATES,
                                        "threshold_fmr_1e-5": threshold, "rows": rows}))
    plot(rows, args.size)


if __name__ == "__main__":
    main()
