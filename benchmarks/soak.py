"""Memory under a steady load: a real `faceid serve`, several clients identifying (and
enrolling and deleting) for a number of minutes, the server's resident memory sampled.

    .venv/bin/python -m benchmarks.soak [--minutes 20] [--clients 4] [--out reports/bench_soak.json]

Loopback only; bounded in time; stops by itself.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks.service import start_server

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def photos(data: Path, n: int) -> list[bytes]:
    files = sorted(data.glob("*/*.jpg"))[:n] if data.is_dir() else []
    return [p.read_bytes() for p in files] or [(FIXTURES / "group.jpg").read_bytes()]


def client(base: str, pool: list[bytes], stop: float, seed: int, counts: dict[str, int], lock: threading.Lock) -> None:
    rng = random.Random(seed)
    with httpx.Client(base_url=base, timeout=60) as http:
        while time.monotonic() < stop:
            roll = rng.random()
            photo = rng.choice(pool)
            if roll < 0.85:
                r = http.post("/identify", files={"image": ("q.jpg", photo, "image/jpeg")})
            elif roll < 0.95:
                r = http.post("/enroll", data={"person_id": f"s{seed}-{rng.randrange(50)}"}, files=[("images", ("e.jpg", photo, "image/jpeg"))])
            else:
                r = http.delete(f"/persons/s{seed}-{rng.randrange(50)}")
            with lock:
                counts["requests"] += 1
                counts["5xx"] += r.status_code >= 500


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--weights", default="casia-webface")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_soak.json"))
    args = parser.parse_args()
    pool = photos(args.data, 64)
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(Path(tmp), args.weights)
        try:
            counts, lock = {"requests": 0, "5xx": 0}, threading.Lock()
            stop = time.monotonic() + 60 * args.minutes
            threads = [threading.Thread(target=client, args=(base, pool, stop, i, counts, lock)) for i in range(args.clients)]
            for t in threads:
                t.start()
            samples, start = [], time.monotonic()
            while any(t.is_alive() for t in threads):
                samples.append({"s": round(time.monotonic() - start), "rss_mb": round(rss_mb(proc.pid), 1), "requests": counts["requests"]})
                print(samples[-1], flush=True)
                time.sleep(15)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    last_third = [s["rss_mb"] for s in samples[len(samples) * 2 // 3 :]]
    report = {"minutes": args.minutes, "clients": args.clients, **counts, "rss_mb_start": samples[0]["rss_mb"],
              "rss_mb_end": samples[-1]["rss_mb"], "rss_mb_last_third_range": [min(last_third), max(last_third)], "samples": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}))


if __name__ == "__main__":
    main()
