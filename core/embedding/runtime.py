"""Which runtime embeds: torch, ONNX Runtime in fp32, or its int8 copy, by device and setting."""

from __future__ import annotations

import importlib.util

from core.embedding.embedder import Embedder
from core.models.backbone import Backbone

RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def make_embedder(backbone: Backbone, device: str, batch_size: int = 32, runtime: str = "auto") -> Embedder:
    """The embedder that fits the hardware: on the CPU, ONNX Runtime's int8 copy when installed
    (it is checked against fp32 on this CPU when it loads, and fp32 ONNX Runtime embeds if it
    fails; both are faster than torch at batch 1, docs/benchmarks.md), torch on CUDA.
    `runtime` "torch", "onnx" (fp32) or "onnx-int8" forces one."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    if runtime.startswith("onnx") and device != "cpu":
        raise ValueError(f"the {runtime} runtime runs on the CPU here; use runtime torch for CUDA")
    if embeds_on_onnx(device, runtime):
        from core.embedding.onnx_embedder import OnnxEmbedder

        return OnnxEmbedder(backbone.net, backbone.sha256, batch_size, int8=runtime in ("onnx-int8", "auto"))
    return Embedder(backbone.net, device, batch_size)


def embeds_on_onnx(device: str, runtime: str = "auto") -> bool:
    """Whether `make_embedder` picks ONNX Runtime for this device and runtime setting."""
    return runtime.startswith("onnx") or (runtime == "auto" and device == "cpu" and importlib.util.find_spec("onnxruntime") is not None)
