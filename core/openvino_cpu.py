"""OpenVINO's CPU runtime, as MTCNN's nets use it (core/faces/mtcnn_nets.py): a model compiled
per thread count, one copy per caller at a time.

A compiled model runs one call at a time: threads calling one copy at once queue behind each
other, so each thread running at once takes a copy of its own (`CompiledCopies`). A call runs
on the calling thread and `threads` - 1 of OpenVINO's (one stream). Pinning is off: detection
processes side by side would otherwise pin their threads to the same cores.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np


def openvino() -> Any:
    """The openvino module (ImportError where it is not installed)."""
    import openvino

    return openvino


class CompiledCopies:
    """`model` (an openvino.Model or a model file's path) compiled for the CPU at `precision`
    ("f32" keeps fp32 where OpenVINO would pick bf16 on an AMX or AVX-512 BF16 CPU)."""

    def __init__(self, model: Any, precision: str = "f32") -> None:
        self.model, self.precision = model, precision
        self._core = openvino().Core()
        self._free: dict[int, list[_Copy]] = {}
        self._lock = threading.Lock()
        self._release(self._compile(1))  # fail here, at load, rather than on the first call

    def run(self, inputs: np.ndarray, threads: int = 1) -> list[np.ndarray]:
        """The model's outputs for `inputs` (its one input), on `threads` threads."""
        copy = self._acquire(threads)
        try:
            return copy.run(inputs)
        finally:
            self._release(copy)

    def compiled(self) -> dict[int, int]:
        """How many copies are compiled for each thread count (idle ones: for tests and operators)."""
        with self._lock:
            return {threads: len(free) for threads, free in self._free.items()}

    def _acquire(self, threads: int) -> _Copy:
        with self._lock:
            free = self._free.get(threads)
            if free:
                return free.pop()
        return self._compile(threads)

    def _release(self, copy: _Copy) -> None:
        with self._lock:
            self._free.setdefault(copy.threads, []).append(copy)

    def _compile(self, threads: int) -> _Copy:
        config = {"INFERENCE_PRECISION_HINT": self.precision, "NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads,
                  "ENABLE_CPU_PINNING": False}
        return _Copy(self._core.compile_model(self.model, "CPU", config), threads)


class _Copy:
    """One compiled copy and its request: one call at a time."""

    def __init__(self, compiled: Any, threads: int) -> None:
        self.threads, self.outputs = threads, compiled.outputs
        self.request = compiled.create_infer_request()

    def run(self, inputs: np.ndarray) -> list[np.ndarray]:
        results = self.request.infer({0: inputs})  # copies of the outputs (share_outputs=False): the next call reuses its buffers
        return [results[output] for output in self.outputs]
