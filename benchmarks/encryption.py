"""What encrypting templates at rest costs (FACEID_ENCRYPTION_KEY_FILE): an enrolment's store
write, with and without sealing, and a gallery's start with 100k faces (its store read and opened,
its indexes built; then from its saved snapshot), on the SQLite store. Synthetic faces: a 512-d
embedding, a 160×160 crop-sized PNG (for the enrolments) and photo evidence each, as /enroll stores them.

    .venv/bin/python -m benchmarks.encryption [--faces 100000] [--enrolments 300] [--out reports/bench_encryption.json]
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from app.gallery.gallery import Gallery
from app.gallery.records import NewFace, PhotoRecord
from app.gallery.sealing import Sealer
from app.gallery.sqlite import SqliteStore
from benchmarks.machine import machine
from core.constants import EMBEDDING_DIM
from core.photos.descriptor import PROJECTED_DIM, THUMB_SIDE

MODEL = "bench@0"
CROP_BYTES = 30_000  # about what a 160×160 face crop's PNG takes


def faces(n: int, seed: int, crops: bool = True) -> list[NewFace]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, EMBEDDING_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    photo = rng.standard_normal(PROJECTED_DIM).astype(np.float32)
    record = PhotoRecord(rng.integers(0, 255, (THUMB_SIDE, THUMB_SIDE), dtype=np.uint8), photo / np.linalg.norm(photo), (0.3, 0.2, 0.7, 0.8))
    crop = rng.integers(0, 255, CROP_BYTES, dtype=np.uint8).tobytes()
    return [NewFace(f"{seed}-{i}.jpg", v, crop if crops else None, record) for i, v in enumerate(vectors)]


def enrolments(folder: Path, sealer: Sealer, n: int) -> dict:
    """n enrolments of one face each, one transaction each, as /enroll writes them."""
    store = SqliteStore(folder / "enrol.sqlite3", sealer=sealer)
    times = []
    for i, face in enumerate(faces(n, seed=1)):
        start = time.perf_counter()
        with store.write() as w:
            w.add_faces([(f"p{i}", None, [face])], MODEL)
        times.append(1000 * (time.perf_counter() - start))
    store.close()
    return {"enrolments": n, "p50_ms": round(statistics.median(times), 3), "p90_ms": round(float(np.percentile(times, 90)), 3)}


def start_up(folder: Path, sealer: Sealer, n: int) -> dict:
    store = SqliteStore(folder / "gallery.sqlite3", sealer=sealer)
    started = time.perf_counter()
    for first in range(0, n, 5000):
        batch = faces(min(5000, n - first), seed=first + 10, crops=False)  # a start reads no crop: 3 GB of them would only slow the fill
        with store.write() as w:
            w.add_faces([(f"q{first + i}", None, [f]) for i, f in enumerate(batch)], MODEL)
    filled = time.perf_counter() - started
    store.close()
    out = {"faces": n, "fill_s": round(filled, 2)}
    for label in ("cold_start_s", "start_from_snapshot_s"):  # the store read and the indexes built; then the snapshot loaded
        started = time.perf_counter()
        gallery = Gallery(SqliteStore(folder / "gallery.sqlite3", sealer=sealer), folder, MODEL)
        out[label] = round(time.perf_counter() - started, 2)
        assert gallery.index.size == n
        started = time.perf_counter()
        gallery.save_snapshot()
        out.setdefault("snapshot_save_s", round(time.perf_counter() - started, 2))
        gallery.close()
    out["store_bytes"] = (folder / "gallery.sqlite3").stat().st_size
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--enrolments", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path("reports/bench_encryption.json"))
    args = ap.parse_args()
    report: dict = {"machine": machine(), "faces": args.faces}
    for label, sealer in (("plain", Sealer()), ("sealed", Sealer([secrets.token_bytes(32)]))):
        with tempfile.TemporaryDirectory() as tmp:
            report[label] = {"enrol": enrolments(Path(tmp), sealer, args.enrolments), "start": start_up(Path(tmp), sealer, args.faces)}
        print(label, json.dumps(report[label]), flush=True)
    report["ratio_sealed_to_plain"] = {
        "enrol_p50": round(report["sealed"]["enrol"]["p50_ms"] / report["plain"]["enrol"]["p50_ms"], 3),
        "cold_start": round(report["sealed"]["start"]["cold_start_s"] / report["plain"]["start"]["cold_start_s"], 3),
        "start_from_snapshot": round(report["sealed"]["start"]["start_from_snapshot_s"] / report["plain"]["start"]["start_from_snapshot_s"], 3)}
    print("sealed / plain:", report["ratio_sealed_to_plain"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
