"""The embedder on ONNX Runtime: the same network, exported once from the torch weights.

On this project's 2-core CPU, ONNX Runtime runs InceptionResnetV1 at batch 1 in about a third
of eager PyTorch's time (benchmarks/embed.py), and batch 1 is what an interactive /identify
is. The ONNX file is made at first use from the loaded backbone and cached under the models
folder, keyed by the weights' sha256, so no second weights file is ever committed and a
changed model never meets a stale export. Training stays on torch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.constants import CROP_SIZE
from core.embedding.embedder import Embedder
from core.embedding.onnx_runtime import (
    RuntimeUnavailable,
    export_onnx,
    onnx_cache_dir,
    open_session,
    require_runtime,
)
from core.embedding.standardize import standardize

__all__ = ["OnnxEmbedder", "RuntimeUnavailable"]
log = logging.getLogger(__name__)


class OnnxEmbedder(Embedder):
    """`Embedder` on ONNX Runtime, on the CPU: the same batching, another forward pass."""

    def __init__(self, net: nn.Module, sha256: str, batch_size: int = 32, threads: int | None = None,
                 cache_dir: Path | None = None, int8: bool = False) -> None:
        require_runtime()
        path = (cache_dir or onnx_cache_dir()) / f"{sha256}.onnx"
        if not path.is_file():
            log.info("exporting the backbone to %s (once per weights)", path)
            export_onnx(net, path, torch.zeros(1, 3, CROP_SIZE, CROP_SIZE), ["crops"], ["embeddings"],
                        {"crops": {0: "n"}, "embeddings": {0: "n"}}, what="the backbone")
        if int8:  # core/embedding/int8.py: quantized once from the fp32 export, cached beside it
            from core.embedding.int8 import CALIBRATION, quantize

            fp32, path = path, path.with_name(f"{sha256}-int8-{CALIBRATION}.onnx")
            if not path.is_file():
                log.info("quantizing the backbone to %s (once per weights)", path)
                quantize(fp32, path)
        self.session = open_session(path, threads)
        super().__init__(net, "cpu", batch_size)
        self.path = path

    def _unit_vectors(self, crops: torch.Tensor) -> np.ndarray:
        (vectors,) = self.session.run(None, {"crops": standardize(crops).numpy()})
        return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)
