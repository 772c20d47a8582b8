"""MTCNN's three-stage cascade (Zhang et al. 2016) over facenet-pytorch's trained PNet, RNet
and ONet, driven here so that each step costs what it must.

The arithmetic is MTCNN's as facenet-pytorch runs it (the pyramid, box generation,
regression, squaring, the thresholds and the three NMS passes, torch's area resampling), so
the boxes are the ones the shipped model was trained and evaluated on (tests/test_mtcnn.py).
What changes is the cost: the image is converted once for every stage, the nets run on ONNX
Runtime on the CPU (exported once, cached beside the embedder's export; torch on CUDA), and
the glue between them is numpy. On this project's 2-core CPU a 224x336 photo took 24 ms
through facenet-pytorch's driver and takes 16 ms here. Resampling with Pillow instead would
be cheaper still, but moved boxes by ~2% of their width and cost the shipped model 0.6
points of top-1 on the validation people.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
from PIL import Image
from torch import nn

from core.onnx_runtime import export_onnx, onnx_cache_dir, open_session, require_runtime

# MTCNN's published settings, as facenet-pytorch uses them.
THRESHOLDS = (0.6, 0.7, 0.7)  # face probability to pass PNet, RNet, ONet
PYRAMID_FACTOR = 0.709
STRIDE, CELL = 2, 12  # PNet sees 12×12 windows every 2 pixels
# Caches of detections key on this: change it whenever the boxes this module finds change.
VERSION = "pillow-pyramid-1"

Net = Callable[[torch.Tensor], list[np.ndarray]]  # N×3×H×W standardised → the net's outputs


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the image's pixels
    score: float
    landmarks: tuple[tuple[float, float], ...]  # eyes, nose, mouth corners


def _standardise(pixels: torch.Tensor) -> torch.Tensor:
    """N×3×H×W float pixels → MTCNN's input, (x − 127.5) / 128."""
    return (pixels - 127.5) * 0.0078125


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best first. `mode` "min" divides the
    overlap by the smaller box (MTCNN's last pass: a box inside another goes) and counts
    pixels inclusively, as the reference code does there."""
    one = 1.0 if mode == "min" else 0.0
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(scores, kind="stable")[::-1]
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        denominator = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / denominator <= threshold]
    return np.asarray(keep, dtype=np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square about its centre (the next net's input is square)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply a net's box offsets (fractions of the box's size)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + offsets * np.stack([w, h, w, h], axis=1)
    return out


def pyramid_scales(width: int, height: int, min_face_size: int) -> list[float]:
    """Scales at which a min_face_size face fills PNet's 12-px window, down to a 12-px image."""
    scale, shorter, scales = 12.0 / min_face_size, min(width, height), []
    while shorter * scale >= 12:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
    return scales


class Mtcnn:
    """Faces in same-sized RGB images, as boxes with MTCNN's probability and five landmarks."""

    def __init__(self, min_face_size: int = 20, device: str | torch.device = "cpu", runtime: str = "auto") -> None:
        self.min_face_size = min_face_size
        nets = (PNet(), RNet(), ONet())
        if runtime not in {"auto", "torch", "onnx"}:
            raise ValueError(f"unknown runtime {runtime!r}; choose auto, torch or onnx")
        use_onnx = str(device) == "cpu" and (runtime == "onnx" or (runtime == "auto" and importlib.util.find_spec("onnxruntime")))
        self.pnet, self.rnet, self.onet = (_onnx_net(n) if use_onnx else _torch_net(n, device) for n in nets)
        self.runtime = "onnx" if use_onnx else "torch"
        self.device = torch.device(device)  # where the pixels go through the stages

    def detect(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        stacked = torch.from_numpy(np.stack([np.asarray(img) for img in images])).to(self.device)
        pixels = stacked.permute(0, 3, 1, 2).float()
        candidates = self._propose(pixels)
        for size, net, threshold in ((24, self.rnet, THRESHOLDS[1]), (48, self.onet, THRESHOLDS[2])):
            candidates = [self._refine(image, boxes, size, net, threshold) for image, boxes in zip(pixels, candidates)]
        return [[Detection(tuple(float(v) for v in row[:4]), float(row[4]), tuple(zip(row[5:10], row[10:15])))
                 for row in boxes] for boxes in candidates]

    def _propose(self, pixels: torch.Tensor) -> list[np.ndarray]:
        """Stage 1: PNet over the pyramid of N×3×H×W images; squared, NMS'd candidate boxes
        (x1, y1, x2, y2, score) per image."""
        height, width = pixels.shape[2:]
        found: list[list[np.ndarray]] = [[] for _ in pixels]
        for scale in pyramid_scales(width, height, self.min_face_size):
            level = nn.functional.interpolate(pixels, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
            offsets, probs = self.pnet(_standardise(level))
            for i in range(len(pixels)):
                ys, xs = np.nonzero(probs[i, 1] >= THRESHOLDS[0])
                if not len(ys):
                    continue
                corner = np.stack([xs, ys], axis=1).astype(np.float32) * STRIDE
                boxes = np.concatenate([np.floor((corner + 1) / scale), np.floor((corner + CELL) / scale),
                                        probs[i, 1, ys, xs][:, None], offsets[i, :, ys, xs]], axis=1)
                found[i].append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        out = []
        for boxes in found:
            if not boxes:
                out.append(np.zeros((0, 5), dtype=np.float32))
                continue
            boxes = np.concatenate(boxes)
            boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            moved = boxes[:, :4] + boxes[:, 5:9] * np.stack([w, h, w, h], axis=1)
            out.append(_square(np.concatenate([moved, boxes[:, 4:5]], axis=1)))
        return out

    @staticmethod
    def _refine(image: torch.Tensor, boxes: np.ndarray, size: int, net: Net, threshold: float) -> np.ndarray:
        """Stages 2 and 3: re-score each candidate's crop at `size` px and move its box; ONet's
        pass (size 48) also places the landmarks and ends with the "min" NMS."""
        if not len(boxes):
            return np.zeros((0, 15 if size == 48 else 5), dtype=np.float32)
        regions = _crop_regions(boxes, image.shape[2], image.shape[1])
        valid = (regions[:, 2] > regions[:, 0]) & (regions[:, 3] > regions[:, 1])
        boxes, regions = boxes[valid], regions[valid]
        outputs = net(_standardise(_area_crops(image, regions, size)))
        offsets, probs = outputs[0], outputs[-1]
        keep = probs[:, 1] > threshold
        scored = np.concatenate([boxes[keep, :4], probs[keep, 1:2]], axis=1)
        offsets = offsets[keep]
        if size == 24:
            picked = nms(scored[:, :4], scored[:, 4], 0.7)
            return _square(_regress(scored[picked], offsets[picked]))
        marks = outputs[1][keep]
        w = (scored[:, 2] - scored[:, 0] + 1)[:, None]
        h = (scored[:, 3] - scored[:, 1] + 1)[:, None]
        xs = w * marks[:, :5] + scored[:, 0:1] - 1
        ys = h * marks[:, 5:] + scored[:, 1:2] - 1
        scored = _regress(scored, offsets)
        picked = nms(scored[:, :4], scored[:, 4], 0.7, mode="min")
        return np.concatenate([scored, xs, ys], axis=1)[picked]


def _area_crops(image: torch.Tensor, regions: np.ndarray, size: int) -> torch.Tensor:
    """Each region of a 3×H×W image resized to size×size by area averaging, N×3×size×size."""
    return torch.cat([nn.functional.adaptive_avg_pool2d(image[None, :, y1:y2, x1:x2], size) for x1, y1, x2, y2 in regions.tolist()])


def _crop_regions(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """The part of each box inside the image, in whole pixels (x1, y1, x2, y2; MTCNN's
    1-based truncation), as an integer crop region."""
    whole = np.trunc(boxes[:, :4]).astype(np.int64)
    x1 = np.maximum(whole[:, 0], 1) - 1
    y1 = np.maximum(whole[:, 1], 1) - 1
    x2 = np.minimum(whole[:, 2], width)
    y2 = np.minimum(whole[:, 3], height)
    return np.stack([x1, y1, x2, y2], axis=1)


def _torch_net(net: nn.Module, device: str | torch.device) -> Net:
    net = net.to(device).eval()

    def run(batch: torch.Tensor) -> list[np.ndarray]:
        with torch.inference_mode():
            return [t.float().cpu().numpy() for t in net(batch)]

    return run


def _onnx_net(net: nn.Module) -> Net:
    """`net` on ONNX Runtime; the export is cached by a digest of its weights."""
    require_runtime()
    digest = hashlib.sha256(b"".join(t.numpy().tobytes() for t in net.state_dict().values())).hexdigest()[:16]
    name = type(net).__name__.lower()
    path: Path = onnx_cache_dir() / f"mtcnn-{name}-{digest}.onnx"
    n_out = 3 if isinstance(net, ONet) else 2
    outputs = [f"out{i}" for i in range(n_out)]
    if not path.is_file():
        side = {"pnet": 12, "rnet": 24, "onet": 48}[name]
        spatial = {2: "h", 3: "w"} if name == "pnet" else {}
        axes = {"x": {0: "n", **spatial}, **{o: {0: "n", **spatial} if name == "pnet" else {0: "n"} for o in outputs}}
        export_onnx(net, path, torch.zeros(1, 3, side, side), ["x"], outputs, axes, what=f"MTCNN's {name}")
    session = open_session(path, threads=1)  # small nets: the engine runs detections side by side instead
    return lambda batch: session.run(None, {"x": batch.contiguous().numpy()})
