"""Where one /identify's milliseconds go, stage by stage, through the service's own Engine and
Gallery (no HTTP): decode, detect (with crop and quality), embed, search. For FACECOM photos of
the test people as they are (224x336 portraits, 224x224 LFW-style), clean and each distortion
apart, the distortions mixed, and clean and mixed photos at 1024 px; with the detection path
that found each face (direct, denoised, regressed) and the yardstick (benchmarks/yardstick.py).

    .venv/bin/python -m benchmarks.latency [--data DIR] [--n 40] [--out reports/bench_latency.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from app.config import Settings
from app.engine import Engine
from app.gallery.gallery import Gallery
from app.gallery.records import NewFace
from app.wiring import build_engine, open_gallery, set_serving_threads
from benchmarks.machine import machine
from benchmarks.photos import MIXED, jpeg_at, photos_by_kind
from benchmarks.yardstick import yardstick_ms


def stages(engine: Engine, gallery: Gallery, data: bytes, paths: Counter | None = None) -> dict[str, float]:
    t = [time.perf_counter()]
    decoded = engine.decode(data, "q.jpg")
    t.append(time.perf_counter())
    (crops,) = engine.detect([decoded])  # MTCNN, then the crops and their quality
    t.append(time.perf_counter())
    if paths is not None:
        paths.update(c.path for c in crops)
    vectors = engine.embed([c.crop for c in crops])
    t.append(time.perf_counter())
    gallery.search(vectors, 5)
    t.append(time.perf_counter())
    return {name: 1000 * (t[i + 1] - t[i]) for i, name in enumerate(("decode", "detect", "embed", "search"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--n", type=int, default=42, help="photos of each kind")
    parser.add_argument("--gallery", type=int, default=1000, help="faces in the gallery searched")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_latency.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp))
        set_serving_threads(settings)  # as `faceid serve` runs
        engine = build_engine(settings)
        gallery = open_gallery(settings, engine.model_id)
        rng = np.random.default_rng(0)
        vectors = rng.normal(size=(args.gallery, 512)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        gallery.enroll_many([(f"p{i}", None, [NewFace(f"{i}.jpg", v)]) for i, v in enumerate(vectors)])
        sets = photos_by_kind(args.data, args.n)
        report = {"machine": machine(), "torch_threads": torch.get_num_threads(), "yardstick_ms": yardstick_ms(),
                  "embedder": type(engine.embedder).__name__, "gallery_faces": args.gallery, "ms": {}}
        runs_of = [(kind, files, None) for kind, files in sets.items()] + [(f"{k}_1024px", sets[k], 1024) for k in ("clean", MIXED)]
        for label, files, side in runs_of:
            photos = [jpeg_at(p, side) for p in files]
            stages(engine, gallery, photos[0])  # warm-up
            paths: Counter = Counter()
            runs = [stages(engine, gallery, p, paths) for p in photos]
            row = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
            totals = [sum(r.values()) for r in runs]  # over the photos: the spread of one request's cost
            row |= {"total": round(statistics.median(totals), 2), "total_mean": round(statistics.mean(totals), 2),
                    "total_p10_p90": [round(float(np.percentile(totals, q)), 2) for q in (10, 90)],
                    "photos": len(photos), "faces_by_path": dict(paths)}
            row["total_yardsticks"] = round(row["total"] / report["yardstick_ms"], 3)
            report["ms"][label] = row
            print(label, row, flush=True)
        report["yardstick_ms_after"] = yardstick_ms()  # the machine's drift over the run
        gallery.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
