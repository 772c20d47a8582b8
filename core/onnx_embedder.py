"""The embedder on ONNX Runtime: the same network, exported once from the torch weights.

On this project's 2-core CPU, ONNX Runtime runs InceptionResnetV1 at batch 1 in about a third
of eager PyTorch's time (benchmarks/embed.py), and batch 1 is what an interactive /identify
is. The ONNX file is made at first use from the loaded backbone and cached under the models
folder, keyed by the weights' sha256, so no second weights file is ever committed and a
changed model never meets a stale export. Training stays on torch.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.constants import CROP_SIZE
from core.embedder import Embedder
from core.errors import FaceIdError
from core.faces import standardize
from core.paths import models_dir

log = logging.getLogger(__name__)
OPSET = 17


class RuntimeUnavailable(FaceIdError):
    """The chosen inference runtime is not installed, or the model could not be exported to it."""


def onnx_cache_dir() -> Path:
    """models/onnx/, or a temporary folder where the models folder is read-only (an image's
    site-packages): the export then costs a second or two at each start instead of once."""
    for folder in (models_dir() / "onnx", Path(tempfile.gettempdir()) / "faceid-onnx"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise RuntimeUnavailable(str(models_dir() / "onnx"), "no writable folder for the ONNX export; set FACEID_RUNTIME=torch")


def export_onnx(net: nn.Module, path: Path) -> None:
    """Export `net` (crops N×3×160×160 standardised → N×512) with a dynamic batch, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    example = torch.zeros(1, 3, CROP_SIZE, CROP_SIZE)
    try:
        torch.onnx.export(net.cpu().eval(), example, str(tmp), input_names=["crops"], output_names=["embeddings"],
                          dynamic_axes={"crops": {0: "n"}, "embeddings": {0: "n"}}, opset_version=OPSET, dynamo=False)
        tmp.replace(path)
    except Exception as exc:  # the exporter raises many types; the caller needs one
        tmp.unlink(missing_ok=True)
        raise RuntimeUnavailable(str(path), f"could not export the backbone to ONNX ({type(exc).__name__}: {exc})") from exc


class OnnxEmbedder(Embedder):
    """`Embedder` on ONNX Runtime, on the CPU: the same batching, another forward pass."""

    def __init__(self, net: nn.Module, sha256: str, batch_size: int = 32, threads: int | None = None,
                 cache_dir: Path | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise RuntimeUnavailable("onnxruntime", "not installed: pip install onnxruntime, or set FACEID_RUNTIME=torch") from exc
        path = (cache_dir or onnx_cache_dir()) / f"{sha256}.onnx"
        if not path.is_file():
            log.info("exporting the backbone to %s (once per weights)", path)
            export_onnx(net, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # a truncated or foreign file: export again next time
            path.unlink(missing_ok=True)
            raise RuntimeUnavailable(str(path), f"ONNX Runtime cannot load the exported model ({exc})") from exc
        super().__init__(net, "cpu", batch_size)
        self.path = path

    def _unit_vectors(self, crops: torch.Tensor) -> np.ndarray:
        (vectors,) = self.session.run(None, {"crops": standardize(crops).numpy()})
        return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).astype(np.float32)
