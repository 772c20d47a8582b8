"""The embedder on ONNX Runtime: the same network, exported once from the torch weights.

ONNX Runtime runs InceptionResnetV1 at batch 1 in about half of eager PyTorch's time on the
project's CPUs (the README's Benchmarks give the figure and the CPU kind), and batch 1 is what an
interactive /identify is. The ONNX file is made at first use from the loaded backbone and cached under the models
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
    """`Embedder` on ONNX Runtime, on the CPU: the same batching, another forward pass. With
    `int8`, the quantized copy (core/embedding/int8.py), once it has passed its check on this CPU."""

    runtime = "onnx"

    def __init__(self, net: nn.Module, sha256: str, batch_size: int = 32, threads: int | None = None,
                 cache_dir: Path | None = None, int8: bool = False) -> None:
        require_runtime()
        super().__init__(net, "cpu", batch_size)
        self.path = (cache_dir or onnx_cache_dir()) / f"{sha256}.onnx"
        if not self.path.is_file():
            log.info("exporting the backbone to %s (once per weights)", self.path)
            export_onnx(net, self.path, torch.zeros(1, 3, CROP_SIZE, CROP_SIZE), ["crops"], ["embeddings"],
                        {"crops": {0: "n"}, "embeddings": {0: "n"}}, what="the backbone")
        self.session = open_session(self.path, threads)
        self.refusal: str | None = None  # why int8 was asked for and not used
        if int8:
            self._use_int8(sha256, threads)

    def _use_int8(self, sha256: str, threads: int | None) -> None:
        """Quantize once (cached beside the fp32 export), then trust the file only if it agrees
        with fp32 on the calibration faces on this CPU; otherwise keep fp32 and say why."""
        from core.embedding import int8

        path = self.path.with_name(f"{sha256}-int8-{int8.CALIBRATION}.onnx")
        batch = int8.network_input(int8.calibration_crops())
        if not path.is_file():
            log.info("quantizing the backbone to %s (once per weights)", path)
            int8.quantize(self.path, path, batch)
        session = open_session(path, threads)
        if (refusal := int8.check(self.session, session, batch)) is not None:
            log.error("%s; embedding with fp32 ONNX Runtime instead", refusal)
            self.refusal = refusal
            return
        self.session, self.path, self.runtime = session, path, "onnx-int8"

    def _unit_vectors(self, crops: torch.Tensor) -> np.ndarray:
        (vectors,) = self.session.run(None, {"crops": standardize(crops).numpy()})
        return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)
