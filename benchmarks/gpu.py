"""The identify path on a GPU: decode → detect → embed → search over the service's own pieces,
with batches formed across concurrent requests as a GPU server would form them.

    python -m benchmarks.gpu --photos DIR [--gallery 1000000] [--out reports/bench_gpu.json]

Reports, per batch of requests: identifies/s end to end and each stage's share; one request
alone (batch 1): p50/p99. Also the parts on their own: stock facenet-pytorch MTCNN at batch
128 (the known limit), the embedder in fp32 and bf16 (faces/s, and how far bf16 moves an
embedding), and exact search of a gallery held on the device.

Runs on CUDA when present. Without it, it says so in one plain line and measures the CPU
with small batches, so the script itself can be checked anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import machine
from core.constants import DECODE_MAX_SIDE
from core.device import resolve_device
from core.embedding.embedder import Embedder
from core.embedding.onnx_runtime import RuntimeUnavailable
from core.faces.pipeline import SERVICE_PIPELINE, load_pipeline
from core.faces.subject import subject
from core.images import decode_reduced
from core.models.backbone import default_weights, load_backbone

DETECT_CHUNK = 16  # photos one detection worker takes at a time


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> tuple[object, float]:
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


class IdentifyPath:
    """The service's decode, detection, crop, embedding and an exact on-device search."""

    def __init__(self, weights: str, device: str, gallery_size: int, workers: int) -> None:
        self.device = device
        backbone = load_backbone(weights, device)
        self.model_id = backbone.model_id
        self.pipeline = load_pipeline(SERVICE_PIPELINE, device)
        self.embedder = Embedder(backbone.net, device, batch_size=512)
        self.pool = ThreadPoolExecutor(workers)
        gallery = torch.randn(gallery_size, 512, device=device)
        self.gallery = torch.nn.functional.normalize(gallery, dim=1).to(torch.float16 if device == "cuda" else torch.float32)

    def decode(self, photos: list[bytes]) -> list:
        return list(self.pool.map(lambda data: decode_reduced(data, "photo", max_side=DECODE_MAX_SIDE), photos))

    def detect(self, decoded: list) -> list:
        """The subject's crop of each photo that has a face. On CUDA the whole batch goes to the
        detector at once (same-sized photos share every stage); on the CPU, each worker takes a
        chunk. Crops are cut by the workers either way."""
        if self.device == "cuda":
            found = self.pipeline.detect_batch([d.image for d in decoded])
            pairs = [(d, faces) for d, faces in zip(decoded, found) if faces]
            return list(self.pool.map(lambda pair: self.pipeline.crop(pair[0].image, subject(pair[1], pair[0].image.size).box), pairs))
        chunks = [decoded[i : i + DETECT_CHUNK] for i in range(0, len(decoded), DETECT_CHUNK)]

        def work(chunk: list) -> list:
            found = self.pipeline.detect_batch([d.image for d in chunk])
            return [self.pipeline.crop(d.image, subject(faces, d.image.size).box) for d, faces in zip(chunk, found) if faces]

        return [crop for crops in self.pool.map(work, chunks) for crop in crops]

    def embed(self, crops: list) -> torch.Tensor:
        return torch.from_numpy(self.embedder.embed(torch.stack(crops))) if crops else torch.zeros(0, 512)

    def search(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sims = vectors.to(self.device, self.gallery.dtype) @ self.gallery.T
        return sims.topk(1, dim=1)

    def run(self, photos: list[bytes]) -> dict[str, float]:
        seconds = {}
        decoded, seconds["decode"] = timed(lambda: self.decode(photos), self.device)
        crops, seconds["detect"] = timed(lambda: self.detect(decoded), self.device)
        vectors, seconds["embed"] = timed(lambda: self.embed(crops), self.device)
        _, seconds["search"] = timed(lambda: self.search(vectors), self.device)
        seconds["faces"] = len(crops)
        return seconds


def end_to_end(path: IdentifyPath, photos: list[bytes], batch_sizes: list[int], budget: int) -> dict:
    out = {}
    rng = np.random.default_rng(0)
    path.run(photos[:8])  # warm-up: kernels, exports
    for batch in batch_sizes:
        rounds = max(3, min(30, budget // batch))
        runs = [path.run([photos[i] for i in rng.integers(0, len(photos), batch)]) for _ in range(rounds)]
        wall = [sum(r[k] for k in ("decode", "detect", "embed", "search")) for r in runs]
        row = {"rounds": rounds, "identifies_per_s": round(batch * rounds / sum(wall), 1),
               "faces_found": round(sum(r["faces"] for r in runs) / (batch * rounds), 3),
               "batch_ms_p50": round(1000 * statistics.median(wall), 2),
               "batch_ms_p99": round(1000 * float(np.percentile(wall, 99)), 2),
               "stage_ms_median": {k: round(1000 * statistics.median(r[k] for r in runs), 2) for k in ("decode", "detect", "embed", "search")}}
        out[str(batch)] = row
        print(f"batch {batch:>4}: {json.dumps(row)}", flush=True)
    return out


def stock_mtcnn(photos: list[bytes], device: str, batch: int) -> dict:
    """facenet-pytorch's own MTCNN driver on a batch of same-sized photos: the reference."""
    from facenet_pytorch import MTCNN

    images = [decode_reduced(p, "photo", max_side=DECODE_MAX_SIDE).image for p in photos]
    size = max({im.size for im in images}, key=lambda s: sum(im.size == s for im in images))
    same = [im for im in images if im.size == size]
    same = (same * (batch // len(same) + 1))[:batch]
    mtcnn = MTCNN(min_face_size=20, keep_all=True, device=device)
    ours = load_pipeline(SERVICE_PIPELINE, device)
    mtcnn.detect(same[:4])
    ours.detect_batch(same[:4])
    _, theirs_s = timed(lambda: mtcnn.detect(same), device)
    _, ours_s = timed(lambda: ours.detect_batch(same), device)
    return {"photo_size": list(size), "batch": batch, "stock_images_per_s": round(batch / theirs_s, 1),
            "ours_one_thread_images_per_s": round(batch / ours_s, 1)}


def embedding(path: IdentifyPath, device: str, batches: list[int]) -> dict:
    crops = torch.randint(0, 256, (max(batches), 3, 160, 160), dtype=torch.uint8)
    out = {}
    for precision in ("fp32", "bf16"):
        enabled = precision == "bf16"
        dtype = torch.bfloat16
        for batch in batches:
            x = crops[:batch]
            with torch.autocast(device, dtype=dtype, enabled=enabled):
                path.embedder.embed(x)
                times = [timed(lambda x=x: path.embedder.embed(x), device)[1] for _ in range(10)]
            out[f"{precision}_batch{batch}"] = {"ms_p50": round(1000 * statistics.median(times), 2),
                                                "faces_per_s": round(batch / statistics.median(times), 1)}
    with torch.autocast(device, dtype=torch.bfloat16):
        low = path.embedder.embed(crops[:64])
    full = path.embedder.embed(crops[:64])
    out["bf16_vs_fp32_cosine_min"] = round(float((low * full).sum(axis=1).min()), 5)
    return out


def search(path: IdentifyPath, device: str) -> dict:
    out = {"gallery": len(path.gallery), "dtype": str(path.gallery.dtype)}
    for batch in (1, 512):
        q = torch.nn.functional.normalize(torch.randn(batch, 512, device=device), dim=1)
        path.search(q)
        times = [timed(lambda q=q: path.search(q), device)[1] for _ in range(20)]
        out[f"batch{batch}"] = {"ms_p50": round(1000 * statistics.median(times), 3),
                                "ms_p99": round(1000 * float(np.percentile(times, 99)), 3),
                                "queries_per_s": round(batch / statistics.median(times), 1)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="a folder of JPEG photos (searched recursively)")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--batches", default="1,8,32,128,512")
    parser.add_argument("--budget", type=int, default=3000, help="photos per batch-size setting, at most")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_gpu.json"))
    args = parser.parse_args()
    device = resolve_device("auto")
    batches = [int(b) for b in args.batches.split(",")]
    if device != "cuda":
        print("no CUDA device here: the figures below are this machine's CPU, not a GPU", flush=True)
        batches, args.gallery, args.budget = [b for b in batches if b <= 8], min(args.gallery, 100_000), min(args.budget, 40)
    photos = [p.read_bytes() for p in sorted(args.photos.rglob("*.jpg"))]
    if not photos:
        raise SystemExit(f"{args.photos}: no .jpg photos found")
    report: dict = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "cuda": torch.version.cuda,
                    "machine": machine(), "photos": len(photos)}
    path = IdentifyPath(args.weights or default_weights(), device, args.gallery, workers=os.cpu_count() or 2)
    report["model_id"] = path.model_id
    report["search"] = search(path, device)
    print("search", json.dumps(report["search"]), flush=True)
    report["embedding"] = embedding(path, device, [1, 128] if device == "cuda" else [1, 8])
    print("embedding", json.dumps(report["embedding"]), flush=True)
    try:
        report["detection_batch"] = stock_mtcnn(photos, device, 128 if device == "cuda" else 8)
        print("detection", json.dumps(report["detection_batch"]), flush=True)
    except RuntimeUnavailable as exc:
        report["detection_batch"] = {"error": str(exc)}
    report["end_to_end"] = end_to_end(path, photos, batches, args.budget)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
