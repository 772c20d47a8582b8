"""Throughput of each pipeline step on this machine: decode, detect, embed (each runtime), at batch 1 and 32.

    .venv/bin/python -m benchmarks.embed [--data DIR] [--out reports/bench_embed.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from benchmarks.machine import machine
from core.device import resolve_device
from core.embedding.runtime import make_embedder
from core.faces.pipeline import PipelineConfig, load_pipeline
from core.faces.subject import subject
from core.images import decode_image
from core.models.backbone import load_backbone

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def images(data: Path, n: int) -> list[tuple[str, bytes]]:
    files = sorted(data.glob("*/*.jpg"))[:n] if data.is_dir() else []
    if not files:  # no data set here: the fixture photos, repeated
        files = [FIXTURES / "portrait.png"] * n
    return [(str(p), p.read_bytes()) for p in files]


def rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--weights", default=None, help="default: the service's model")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_embed.json"))
    args = parser.parse_args()
    device = resolve_device("auto")
    raw = images(args.data, args.n)
    pipeline = load_pipeline(PipelineConfig(use_fallback=True), device)
    backbone = load_backbone(args.weights, device)
    results: dict = {"machine": machine(), "device": device, "torch_threads": torch.get_num_threads(), "weights": backbone.model_id,
                     "n_images": len(raw), "image_size": None}

    start = time.perf_counter()
    decoded = [decode_image(data, name) for name, data in raw]
    results["decode_images_per_s"] = rate(len(decoded), time.perf_counter() - start)
    results["image_size"] = list(decoded[0].size)

    pipeline.detect_all(decoded[0])  # warm-up
    for batch in (1, 32):
        start = time.perf_counter()
        faces = []
        for i in range(0, len(decoded), batch):
            faces += pipeline.detect_batch(decoded[i : i + batch])
        results[f"detect_batch{batch}_images_per_s"] = rate(len(decoded), time.perf_counter() - start)
    crops = torch.stack([pipeline.crop(img, subject(f, img.size).box) for img, f in zip(decoded, faces)])

    runtimes = ["torch", "onnx", "onnx-int8"] if device == "cpu" else ["torch"]
    for runtime in runtimes:
        for batch in (1, 32):
            embedder = make_embedder(backbone, device, batch_size=batch, runtime=runtime)
            results[f"embed_{runtime}_runs_as"] = embedder.runtime  # int8 refused on this CPU: fp32
            embedder.embed(crops[:batch])  # warm-up
            start = time.perf_counter()
            embedder.embed(crops)
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            results[f"embed_{runtime}_batch{batch}_faces_per_s"] = rate(len(crops), seconds)
            results[f"embed_{runtime}_batch{batch}_ms_per_batch"] = round(1000 * seconds / -(-len(crops) // batch), 2)

    if device == "cpu":  # ratios measured in the same run compare across machines
        for batch in (1, 32):
            fp32 = results[f"embed_onnx_batch{batch}_ms_per_batch"]
            results[f"batch{batch}_onnx_over_torch"] = round(fp32 / results[f"embed_torch_batch{batch}_ms_per_batch"], 3)
            results[f"batch{batch}_int8_over_onnx"] = round(results[f"embed_onnx-int8_batch{batch}_ms_per_batch"] / fp32, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    for key, value in results.items():
        print(f"{key:32s} {value}")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
