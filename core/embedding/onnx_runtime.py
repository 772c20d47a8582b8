"""ONNX Runtime plumbing for the embedder: export a torch module once, cache the file under the
models folder keyed by a digest of its weights, open a session.

A session's threads spin only while a run lasts. Spinning after it, ONNX Runtime's default, took
the cores the next step needs (the face detector's, on torch): on 2 cores that doubled the
following detection (docs/design.md). Never spinning, the second thread woke too late for each of
the net's small operators and two threads embedded a face no faster than one. So the threads
spin within a run and stop the moment it returns (`session.force_spinning_stop`).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.device import cpu_cores
from core.errors import FaceIdError
from core.files import atomic_write
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


def export_onnx(net: nn.Module, path: Path, example: torch.Tensor, inputs: Sequence[str], outputs: Sequence[str],
                dynamic_axes: Mapping[str, Mapping[int, str]], what: str = "the model") -> None:
    """Export `net` to `path` atomically: a failed export leaves nothing behind."""
    try:
        with atomic_write(path) as tmp:
            torch.onnx.export(net.cpu().eval(), (example,), str(tmp), input_names=list(inputs), output_names=list(outputs),
                              dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()}, opset_version=OPSET, dynamo=False)
    except Exception as exc:  # the exporter raises many types; the caller needs one
        raise RuntimeUnavailable(str(path), f"could not export {what} to ONNX ({type(exc).__name__}: {exc})") from exc


def open_session(path: Path, threads: int | None = None) -> Any:
    """A CPU inference session over `path`; a file it cannot load is removed, to be exported again."""
    ort = require_runtime()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # a truncated or foreign file
        path.unlink(missing_ok=True)
        raise RuntimeUnavailable(str(path), f"ONNX Runtime cannot load the exported model ({exc})") from exc


def require_runtime() -> Any:
    """The onnxruntime module; a clear error when it is not installed (callers check before any
    export work)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailable("onnxruntime", "not installed: pip install onnxruntime, or set FACEID_RUNTIME=torch") from exc
    return onnxruntime
