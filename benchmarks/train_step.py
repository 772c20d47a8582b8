"""Training speed on this machine: a full InceptionResnetV1 forward + backward + AdamW step,
in fp32 and bf16 autocast, with and without channels_last. Picks the CPU defaults in
training/config.py.

    .venv/bin/python -m benchmarks.train_step [--batch 32] [--steps 5] [--out reports/bench_train_step.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from core.device import resolve_device
from core.models.backbone import build_backbone


def images_per_second(device: str, batch: int, steps: int, bf16: bool, channels_last: bool) -> list[float]:
    torch.manual_seed(0)
    net = build_backbone().to(device)
    net.train()
    for module in net.modules():  # as training runs it: batch-norm statistics frozen
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 160, 160, device=device).contiguous(memory_format=fmt)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    rates = []
    for step in range(steps + 1):
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype, enabled=bf16):
            loss = net(x).float().pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if step:  # the first step warms up kernels
            rates.append(batch / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_train_step.json"))
    args = parser.parse_args()
    device = resolve_device("auto")
    report = {"device": device, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "threads": torch.get_num_threads(), "batch": args.batch, "images_per_s": {}}
    for bf16 in (False, True):
        for channels_last in (False, True):
            rates = images_per_second(device, args.batch, args.steps, bf16, channels_last)
            name = f"{'bf16' if bf16 else 'fp32'}{'+channels_last' if channels_last else ''}"
            report["images_per_s"][name] = {"median": round(statistics.median(rates), 2), "min": round(min(rates), 2),
                                            "max": round(max(rates), 2)}
            print(f"{name:22s} {report['images_per_s'][name]}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
