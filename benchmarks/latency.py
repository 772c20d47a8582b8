"""Where one /identify's milliseconds go, stage by stage, through the service's own Engine and
Gallery (no HTTP): decode, detect (with crop and quality), embed, search. For FACECOM photos as they
are (224x336 portraits, 250x250 LFW-style) and the portraits at 1024 px.

    .venv/bin/python -m benchmarks.latency [--data DIR] [--n 40] [--out reports/bench_latency.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from app.config import Settings
from app.engine import Engine
from app.gallery.gallery import Gallery
from app.gallery.records import NewFace
from app.wiring import build_engine, open_gallery, set_serving_threads
from benchmarks.machine import machine
from benchmarks.photos import jpeg_at


def stages(engine: Engine, gallery: Gallery, data: bytes) -> dict[str, float]:
    t = [time.perf_counter()]
    decoded = engine.decode(data, "q.jpg")
    t.append(time.perf_counter())
    (crops,) = engine.detect([decoded])  # MTCNN, then the crops and their quality
    t.append(time.perf_counter())
    vectors = engine.embed([c.crop for c in crops])
    t.append(time.perf_counter())
    gallery.search(vectors, 5)
    t.append(time.perf_counter())
    return {name: 1000 * (t[i + 1] - t[i]) for i, name in enumerate(("decode", "detect", "embed", "search"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--n", type=int, default=40)
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
        portraits = sorted(args.data.glob("*_frontal/*.jpg"))[: args.n]
        lfw = sorted(p for p in args.data.glob("*/*_0001.jpg") if "_frontal" not in p.parent.name)[: args.n]
        report = {"machine": machine(), "torch_threads": torch.get_num_threads(),
                  "embedder": type(engine.embedder).__name__, "gallery_faces": args.gallery, "ms": {}}
        for label, files, side in (("portrait_224x336", portraits, None), ("lfw_250x250", lfw, None), ("portrait_1024px", portraits, 1024)):
            photos = [jpeg_at(p, side) for p in files]
            stages(engine, gallery, photos[0])  # warm-up
            runs = [stages(engine, gallery, p) for p in photos]
            report["ms"][label] = {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}
            report["ms"][label]["total"] = round(statistics.median(sum(r.values()) for r in runs), 2)
            totals = [sum(r.values()) for r in runs]  # over the photos: the spread of one request's cost
            report["ms"][label]["total_p10_p90"] = [round(float(np.percentile(totals, q)), 2) for q in (10, 90)]
            print(label, report["ms"][label], flush=True)
        gallery.close()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
