"""Service benchmark on loopback: identify latency and throughput on the test people's photos,
clean and distorted (each kind apart and mixed; 1 client, and 1 and 4 concurrent clients on the
clean and mixed sets), enrolment throughput, and search time vs gallery size, flat vs HNSW, with
recall@1. Every figure also in yardsticks, and the report names the CPU kind.

    .venv/bin/python -m benchmarks.service [--data DIR] [--out reports/bench_service.json]

Starts its own `faceid serve` on a free loopback port with a temporary gallery; every loop
is bounded in count and stops by itself.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from app.gallery.vector_index import IndexSettings, VectorIndex
from benchmarks.machine import machine, spread
from benchmarks.photos import MIXED, jpeg_at, photos_by_kind
from benchmarks.yardstick import yardstick_ms
from core.data.dataset import CLEAN, DEFAULT_TEST_SPLIT, read_split, scan


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(values: list[float]) -> dict[str, float]:
    ms = np.asarray(values) * 1000
    return {f"p{q}": round(float(np.percentile(ms, q)), 1) for q in (50, 95, 99)}


def start_server(data_dir: Path, weights: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = os.environ | {"FACEID_DATA_DIR": str(data_dir), "FACEID_WEIGHTS": weights}
    faceid = Path(sys.executable).with_name("faceid")
    proc = subprocess.Popen([str(faceid), "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not become ready")


def query_sets(data: Path, per_kind: int) -> dict[str, tuple[list[bytes], bool]]:
    """The test people's photos as clients send them, each set with whether it is loaded by
    several clients too: clean and each distortion apart (224x224 LFW-style photos and 224x336
    portraits, as the data set holds them), the distortions mixed, and clean and mixed photos
    enlarged to 1024 px (a phone photo after draft decoding)."""
    sets = photos_by_kind(data, per_kind)
    out = {kind: ([jpeg_at(p, None) for p in paths], kind in (CLEAN, MIXED)) for kind, paths in sets.items()}
    for kind in (CLEAN, MIXED):
        out[f"{kind}_1024px"] = ([jpeg_at(p, 1024) for p in sets[kind]], True)
    return out


def warm_up(base: str, photos: list[bytes], clients: int, seconds: float = 10.0) -> None:
    """Load as a service in use has seen: its detection worker processes start the first time two
    photos arrive together (app/detector_pool.py), which the figures should not include."""
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as http:
            for i in itertools.count(k, clients):
                if time.perf_counter() > stop:
                    return
                http.post("/identify", files={"image": ("q.jpg", photos[i % len(photos)], "image/jpeg")})

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))


def http_benchmarks(data: Path, weights: str, per_kind: int, n_requests: int, client_counts: list[int]) -> dict:
    """One run, with its own server and the test people's clean photos enrolled. Each figure
    also in yardsticks (benchmarks/yardstick.py, measured just before the figure's own load,
    with the server idle: this machine's speed drifts by a third within minutes): p50 /
    yardstick, and identifies/s × yardstick. Each distortion alone runs with one client; clean,
    mixed and the 1024-px sets with each count of clients."""
    clean = [s for s in scan(data, read_split(DEFAULT_TEST_SPLIT)) if s.is_clean]
    yardstick = yardstick_ms()
    out: dict = {"yardstick_ms": yardstick}
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(Path(tmp), weights)
        try:
            with httpx.Client(base_url=base, timeout=120) as http:
                start = time.perf_counter()
                for sample in clean:
                    http.post("/enroll", data={"person_id": sample.identity},
                              files=[("images", (sample.path.name, sample.path.read_bytes(), "image/jpeg"))])
                out["enroll_images_per_s"] = round(len(clean) / (time.perf_counter() - start), 2)
            local = threading.local()
            sets = query_sets(data, per_kind)
            warm_up(base, sets[MIXED][0], max(client_counts))

            for label, (photos, loaded) in sets.items():
                def one(i: int, photos: list[bytes] = photos) -> tuple[float, int, float]:
                    """(seconds, status, seconds of it the server spent on the face work)."""
                    if not hasattr(local, "client"):  # one keep-alive connection per client thread
                        local.client = httpx.Client(base_url=base, timeout=120)
                    t = time.perf_counter()
                    r = local.client.post("/identify", files={"image": ("q.jpg", photos[i % len(photos)], "image/jpeg")})
                    elapsed = time.perf_counter() - t
                    timing = r.headers.get("server-timing", "faces;dur=nan")
                    return elapsed, r.status_code, float(timing.split("dur=")[1]) / 1000

                for clients in client_counts if loaded else [1]:
                    one(0)
                    yardstick = yardstick_ms(15)
                    start = time.perf_counter()
                    with ThreadPoolExecutor(clients) as pool:
                        results = list(pool.map(one, range(max(n_requests, len(photos)))))
                    wall = time.perf_counter() - start
                    row = {**percentiles([t for t, _, _ in results]), "requests_per_s": round(len(results) / wall, 2),
                           "non_200": sum(1 for _, code, _ in results if code != 200),
                           # what a request cost beyond the face work: multipart, routing, JSON, the connection
                           "http_overhead_p50": round(1000 * float(np.median([t - work for t, _, work in results])), 1)}
                    row |= {"yardstick_ms": yardstick, "p50_yardsticks": round(row["p50"] / yardstick, 3),
                            "per_s_per_yardstick": round(row["requests_per_s"] * yardstick / 1000, 3)}
                    out[f"{label}_identify_{clients}_clients"] = row
                    print(f"{label}, {clients} clients: {json.dumps(row)}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return out


def search_benchmarks(sizes: list[int], n_queries: int, seed: int = 0) -> dict:
    """Synthetic unit vectors; queries are noisy copies of gallery entries (like a new photo)."""
    rng = np.random.default_rng(seed)
    out = {}
    for size in sizes:
        gallery = rng.standard_normal((size, 512), dtype=np.float32)
        gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
        targets = rng.integers(0, size, n_queries)
        queries = gallery[targets] + 0.08 * rng.standard_normal((n_queries, 512), dtype=np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        row = {}
        truth = None
        for kind in ("flat", "hnsw"):
            index = VectorIndex(IndexSettings(kind))
            start = time.perf_counter()
            index.add(np.arange(size, dtype=np.int64), gallery)
            build = time.perf_counter() - start
            index.search(queries[:1], 1)
            times = []
            found = []
            for q in queries:
                t = time.perf_counter()
                _, ids = index.search(q[None], 1)
                times.append(time.perf_counter() - t)
                found.append(ids[0, 0])
            found = np.array(found)
            truth = found if kind == "flat" else truth
            row[kind] = {"build_s": round(build, 2), **{f"search_{k}_ms": v for k, v in percentiles(times).items()},
                         "recall@1_vs_flat": round(float(np.mean(found == truth)), 4)}
        out[str(size)] = row
        print(f"gallery {size:>8}: {json.dumps(row)}", flush=True)
        del gallery
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--weights", default=None, help="default: the service's default model")
    parser.add_argument("--per-kind", type=int, default=42, help="photos of each kind")
    parser.add_argument("--requests", type=int, default=64, help="requests per figure (at least each photo once)")
    parser.add_argument("--clients", default="1,4", help="concurrent clients, each setting in turn (clean and mixed sets)")
    parser.add_argument("--repeat", type=int, default=3, help="whole runs, each with its own server: the JSON gives each figure's spread")
    parser.add_argument("--sizes", default="1000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_service.json"))
    args = parser.parse_args()
    from core.models.backbone import default_weights

    runs = [http_benchmarks(args.data, args.weights or default_weights(), args.per_kind, args.requests,
                            [int(c) for c in args.clients.split(",")]) for _ in range(args.repeat)]
    report: dict = {"machine": machine(), "repeats": args.repeat, "http_runs": runs,
                    "http": {"enroll_images_per_s": spread([r["enroll_images_per_s"] for r in runs]),
                             "yardstick_ms": spread([r["yardstick_ms"] for r in runs])}}
    for key, row in runs[0].items():  # each figure's spread over the runs, each run with its own server
        if isinstance(row, dict):
            report["http"][key] = {figure: spread([r[key][figure] for r in runs]) for figure in row}
    print(json.dumps(report["http"], indent=2), flush=True)
    if args.sizes:
        report["search"] = search_benchmarks([int(s) for s in args.sizes.split(",")], args.queries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
