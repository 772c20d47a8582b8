"""The embedder on ONNX Runtime: the same network, exported once from the torch weights.

ONNX Runtime runs InceptionResnetV1 at batch 1 in about half of eager PyTorch's time on the
project's CPUs (docs/benchmarks.md gives the figure and the CPU kind), and batch 1 is what an
interactive /identify is. The ONNX file is made at first use from the loaded backbone and cached under the models
folder, keyed by the weights' sha256, so no second weights file is ever committed and a
changed model never meets a stale export. Training stays on torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from core.constants import CROP_SIZE
from core.device import cpu_cores
from core.embedding.embedder import Embedder
from core.embedding.onnx_runtime import (
    RuntimeUnavailable,
    export_onnx,
    onnx_cache_dir,
    open_session,
    require_runtime,
)
from core.embedding.standardize import network_input
from core.embedding.templates import unit_rows

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
        self.refusal: str | None = None  # why int8 was asked for and not used
        session = self._int8_session(sha256, threads) if int8 else None
        self.session: Any = session if session is not None else open_session(self.path, threads)
        # A second, one-threaded session over the same file, for embeddings that run beside other
        # work: a session's threads wait for each other, and a busy core made every run wait.
        self.one_core_session: Any = open_session(self.path, 1) if (threads or cpu_cores()) > 1 else self.session

    def _int8_session(self, sha256: str, threads: int | None) -> Any:
        """The int8 copy's session: quantized once (cached beside the fp32 export), trusted only
        once it has agreed with fp32 on the calibration faces on this CPU (or a record says it
        did here); None, with the reason logged, when it does not."""
        from core.embedding import int8

        path = self.path.with_name(f"{sha256}-int8-{int8.CALIBRATION}.onnx")
        batch = None
        if not path.is_file():
            log.info("quantizing the backbone to %s (once per weights)", path)
            batch = int8.calibration_batch()
            int8.quantize(self.path, path, batch)
        session = open_session(path, threads)
        if not int8.trusted_here(path):
            batch = int8.calibration_batch() if batch is None else batch
            worst, refusal = int8.check(open_session(self.path, threads), session, batch)
            if refusal is not None:
                log.error("%s; embedding with fp32 ONNX Runtime instead", refusal)
                self.refusal = refusal
                return None
            int8.record_pass(path, worst)
        self.path, self.runtime = path, "onnx-int8"
        return session

    def _unit_vectors(self, crops: torch.Tensor, one_core: bool = False) -> np.ndarray:
        session = self.one_core_session if one_core else self.session
        (vectors,) = session.run(None, {"crops": network_input(crops).numpy()})
        return unit_rows(vectors).astype(np.float32)
