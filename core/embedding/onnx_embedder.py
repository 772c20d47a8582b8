"""The embedder on ONNX Runtime: the same network, exported once from the torch weights. Its
int8 copy runs on OpenVINO where installed (the same quantized file, on Intel's int8 kernels).

ONNX Runtime runs InceptionResnetV1 at batch 1 in about half of eager PyTorch's time on the
project's CPUs (docs/benchmarks.md gives the figure and the CPU kind), and batch 1 is what an
interactive /identify is. The ONNX file is made at first use from the loaded backbone and cached under the models
folder, keyed by the weights' sha256, so no second weights file is ever committed and a
changed model never meets a stale export. Training stays on torch.

The int8 file is ONNX Runtime's quantization (core/embedding/int8.py). OpenVINO runs that same
file faster on the project's CPUs (at batch 1, one thread, about two thirds of ONNX Runtime's
time; docs/benchmarks.md) and as close to fp32; it is checked against fp32 like ONNX Runtime's
run of it, on this CPU, before it embeds.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

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
from core.openvino_cpu import CompiledCopies

__all__ = ["OnnxEmbedder", "RuntimeUnavailable"]
log = logging.getLogger(__name__)
Int8Engine = Literal["auto", "openvino", "onnxruntime"]  # auto: OpenVINO when installed, else ONNX Runtime


class OpenVinoSession:
    """The int8 file on OpenVINO, called as an ONNX Runtime session is (`run`), on `threads`."""

    def __init__(self, copies: CompiledCopies, threads: int) -> None:
        self.copies, self.threads = copies, threads

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (batch,) = feeds.values()
        return self.copies.run(batch, self.threads)


class OnnxEmbedder(Embedder):
    """`Embedder` on ONNX Runtime, on the CPU: the same batching, another forward pass. With
    `int8`, the quantized copy (core/embedding/int8.py) on `int8_engine`, once it has passed its
    check on this CPU."""

    runtime = "onnx"

    def __init__(self, net: nn.Module, sha256: str, batch_size: int = 32, threads: int | None = None,
                 cache_dir: Path | None = None, int8: bool = False, int8_engine: Int8Engine = "auto") -> None:
        require_runtime()
        super().__init__(net, "cpu", batch_size)
        self.path = (cache_dir or onnx_cache_dir()) / f"{sha256}.onnx"
        if not self.path.is_file():
            log.info("exporting the backbone to %s (once per weights)", self.path)
            export_onnx(net, self.path, torch.zeros(1, 3, CROP_SIZE, CROP_SIZE), ["crops"], ["embeddings"],
                        {"crops": {0: "n"}, "embeddings": {0: "n"}}, what="the backbone")
        self.refusal: str | None = None  # why int8 was asked for and not used
        sessions = self._int8_sessions(sha256, threads, int8_engine) if int8 else None
        if sessions is None:
            # A second, one-threaded session over the same file, for embeddings that run beside other
            # work: a session's threads wait for each other, and a busy core made every run wait.
            session = open_session(self.path, threads)
            sessions = session, open_session(self.path, 1) if (threads or cpu_cores()) > 1 else session
        self.session: Any = sessions[0]
        self.one_core_session: Any = sessions[1]

    def _int8_sessions(self, sha256: str, threads: int | None, engine: Int8Engine) -> tuple[Any, Any] | None:
        """The int8 copy's sessions (all threads, one thread): quantized once (cached beside the
        fp32 export), trusted only once it has agreed with fp32 on the calibration faces on this
        CPU and engine (or a record says it did here); None, with the reason logged, when it
        does not."""
        from core.embedding import int8

        path = self.path.with_name(f"{sha256}-int8-{int8.CALIBRATION}.onnx")
        batch = None
        if not path.is_file():
            log.info("quantizing the backbone to %s (once per weights)", path)
            batch = int8.calibration_batch()
            int8.quantize(self.path, path, batch)
        sessions, engine_name = _open_int8(path, threads, engine)
        if not int8.trusted_here(path, engine_name):
            batch = int8.calibration_batch() if batch is None else batch
            worst, refusal = int8.check(open_session(self.path, threads), sessions[0], batch)
            if refusal is not None:
                log.error("%s; embedding with fp32 ONNX Runtime instead", refusal)
                self.refusal = refusal
                return None
            int8.record_pass(path, worst, engine_name)
        self.path, self.runtime = path, "openvino-int8" if engine_name == "openvino" else "onnx-int8"
        return sessions

    def _unit_vectors(self, crops: torch.Tensor, one_core: bool = False) -> np.ndarray:
        session = self.one_core_session if one_core else self.session
        (vectors,) = session.run(None, {"crops": network_input(crops).numpy()})
        return unit_rows(vectors).astype(np.float32)


def _open_int8(path: Path, threads: int | None, engine: Int8Engine) -> tuple[tuple[Any, Any], str]:
    """The int8 file's two sessions (all threads, one thread) and the engine running them:
    OpenVINO where asked or, for "auto", installed and able to load it; else ONNX Runtime."""
    if engine != "onnxruntime":
        try:
            copies = CompiledCopies(str(path), "f32")  # f32 for what is not int8: never bf16
            return (OpenVinoSession(copies, threads or cpu_cores()), OpenVinoSession(copies, 1)), "openvino"
        except ImportError as exc:
            if engine == "openvino":
                raise RuntimeUnavailable("openvino", "not installed: pip install openvino, or set FACEID_RUNTIME=onnx-int8") from exc
        except Exception:
            if engine == "openvino":
                raise
            log.exception("OpenVINO could not load the int8 model; embedding it with ONNX Runtime")
    session = open_session(path, threads)
    return (session, open_session(path, 1) if (threads or cpu_cores()) > 1 else session), "onnxruntime"
