"""The yardstick figures are divided by: one eager PyTorch forward of the backbone at batch 1,
measured in the same run on the same machine, so that figures from different CPUs compare.

    .venv/bin/python -m benchmarks.yardstick
"""

from __future__ import annotations

import statistics
import time

import torch

from core.constants import CROP_SIZE
from core.models.backbone import build_backbone

DEFAULT_THREADS = torch.get_num_threads()  # read on import, before a benchmark sets its own


def yardstick_ms(repeats: int = 30) -> float:
    """Median milliseconds of one eager forward of InceptionResnetV1 on a 160×160 crop, on
    torch's default threads whatever the process set since (a serving process detects on one
    thread); randomly initialised weights: the arithmetic is the same."""
    net = build_backbone().eval()
    x = torch.randn(1, 3, CROP_SIZE, CROP_SIZE)
    times = []
    threads = torch.get_num_threads()
    torch.set_num_threads(DEFAULT_THREADS)
    try:
        with torch.inference_mode():
            for i in range(repeats + 5):
                start = time.perf_counter()
                net(x)
                if i >= 5:  # the first runs warm the allocator and the kernels
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return round(1000 * statistics.median(times), 2)


if __name__ == "__main__":
    print(f"yardstick: {yardstick_ms()} ms (one eager torch forward of the backbone, batch 1)")
