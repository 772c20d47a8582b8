"""The engine's scheduling without models: the batching thread CUDA embeds through (driven here
by a stand-in forward pass), and the admission limit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine import Admission, Batcher, Overloaded

ROOT = Path(__file__).resolve().parents[1]


def rows_of(crops: torch.Tensor) -> np.ndarray:
    """A stand-in embedding: each crop's first pixel, so every caller can check it got its own rows."""
    return crops[:, 0, 0, :1].numpy().astype(np.float32)


def crops(first: int, n: int) -> torch.Tensor:
    out = torch.zeros((n, 3, 4, 4), dtype=torch.uint8)
    out[:, 0, 0, 0] = torch.arange(first, first + n, dtype=torch.uint8)
    return out


def test_requests_arriving_together_share_one_forward_pass_and_get_their_own_rows():
    entered, release, sizes = threading.Event(), threading.Event(), []

    def forward(batch: torch.Tensor) -> np.ndarray:
        sizes.append(len(batch))
        entered.set()
        release.wait(10)
        return rows_of(batch)

    batcher = Batcher(forward, batch_size=8, on_batch=lambda size: None)
    batcher.start()
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(batcher.embed, crops(0, 1), 10)
        assert entered.wait(10)  # the first request's pass is running: the next ones queue up
        rest = [pool.submit(batcher.embed, crops(10 * i, 2), 10) for i in range(1, 5)]
        while batcher.waiting < 4:
            threading.Event().wait(0.01)
        release.set()
        assert first.result().ravel().tolist() == [0]
        assert [f.result().ravel().tolist() for f in rest] == [[10, 11], [20, 21], [30, 31], [40, 41]]
    batcher.stop()
    assert sizes == [1, 8]  # four requests of two faces, in one pass of the batch size


def test_a_failed_pass_is_every_waiting_requests_error_and_the_thread_goes_on():
    calls = []

    def forward(batch: torch.Tensor) -> np.ndarray:
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("out of device memory")
        return rows_of(batch)

    batcher = Batcher(forward, batch_size=8, on_batch=lambda size: None)
    batcher.start()
    with pytest.raises(RuntimeError, match="device memory"):
        batcher.embed(crops(0, 1), 10)
    assert batcher.embed(crops(5, 1), 10).ravel().tolist() == [5]
    batcher.stop()


def test_admission_refuses_past_its_limit_and_counts_work_until_it_ends():
    admission = Admission(max_pending=1, timeout_s=10)
    entered, release = threading.Event(), threading.Event()

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "done"

    async def scenario() -> None:
        first = asyncio.create_task(admission.run("a.jpg", slow))
        await asyncio.get_running_loop().run_in_executor(None, entered.wait, 10)
        assert admission.saturation() is not None
        with pytest.raises(Overloaded, match="b.jpg: 1 photos are already waiting"):
            await admission.run("b.jpg", slow)
        release.set()
        assert await first == "done"
        assert admission.saturation() is None and admission.alone()

    asyncio.run(scenario())


def test_a_serving_process_keeps_every_blas_pool_to_one_thread_and_hands_the_gil_on_sooner(tmp_path):
    """An OpenBLAS pool woken by a request's small matrix products spins on a core long after;
    serving keeps each loaded one (numpy's, scipy's, OpenCV's) to one thread, and lets the event
    loop have the GIL sooner than CPython's default. In a subprocess: the settings are the
    process's own."""
    script = (
        "import json, sys, numpy, scipy.ndimage, threadpoolctl\n"
        "from app.config import Settings\n"
        "from app.wiring import GIL_SWITCH_S, set_serving_threads\n"
        "before = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
        "switch_before = sys.getswitchinterval()\n"
        f"set_serving_threads(Settings(data_dir={str(tmp_path)!r}))\n"
        "after = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
        "print(json.dumps([before, after, switch_before, sys.getswitchinterval(), GIL_SWITCH_S]))\n"
    )
    env = os.environ | {"OPENBLAS_NUM_THREADS": "2"}  # a pool of two even on a one-core runner
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    before, after, switch_before, switch_after, wanted = json.loads(out.stdout.strip().splitlines()[-1])
    assert before and max(before) == 2
    assert after == [1] * len(before)
    assert switch_after == pytest.approx(wanted) and wanted < switch_before
