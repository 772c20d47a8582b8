"""MTCNN's three-stage cascade (Zhang et al. 2016) over facenet-pytorch's trained PNet, RNet
and ONet, driven here so that each step costs what it must.

The arithmetic is MTCNN's as facenet-pytorch runs it (the pyramid, box generation,
regression, squaring, the thresholds, the three NMS passes and torch's area resampling), so
the boxes are the ones the shipped model was trained and evaluated on (tests/test_mtcnn.py).
What changes is the cost:
- the nets run on OpenVINO on the CPU, on torch elsewhere (core/faces/mtcnn_nets.py);
- every resampling, the pyramid's levels and the RNet/ONet crops alike, is read off one
  summed-area table of the batch (`AreaSampler`), a gather per stage;
- each stage handles the whole batch at once (candidates carry their image's index, NMS
  is torchvision's batched one), so a GPU gets few large launches instead of a Python loop
  per image, and the CPU does the glue in a few vector operations.
On 2 cores this took about two thirds of facenet-pytorch's own driver's time with torch's nets
(docs/design.md).
Resampling with Pillow instead would be cheaper still on the CPU, but moved boxes by ~2% of
their width and cost the shipped model 0.6 points of top-1 on the validation people.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchvision.ops import batched_nms

from core.faces.mtcnn_nets import NetsRuntime, load_nets

# MTCNN's published settings, as facenet-pytorch uses them.
THRESHOLDS = (0.6, 0.7, 0.7)  # face probability to pass PNet, RNet, ONet
PYRAMID_FACTOR = 0.709
STRIDE, CELL = 2, 12  # PNet sees 12×12 windows every 2 pixels
# What PNet's call on one pyramid level costs beyond its pixels, counted in pixels (measured on
# the 2-core Xeon of docs/benchmarks.md): it decides how the levels are shared with a helper.
LEVEL_OVERHEAD_PIXELS = 4000
# Caches of detections key on this: change it whenever the boxes this module finds change.
VERSION = "1"

Net = Callable[[torch.Tensor], list[torch.Tensor]]  # N×3×H×W standardised → the net's outputs (mtcnn_nets.Net, threads bound)


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


def _nms_per_image(boxes: torch.Tensor, image: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by IoU NMS within each image, on the boxes' device."""
    return batched_nms(boxes[:, :4], boxes[:, 4], image, threshold)


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box (x1, y1, x2, y2, …) grown to a square about its centre: the next net's input is square."""
    out = boxes.clone()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _regress(boxes: torch.Tensor, offsets: torch.Tensor, inclusive: bool = True) -> torch.Tensor:
    """Move boxes by a net's offsets, fractions of the box's size (counted inclusively after
    PNet, as the reference does)."""
    one = 1.0 if inclusive else 0.0
    out = boxes.clone()
    w = boxes[:, 2] - boxes[:, 0] + one
    h = boxes[:, 3] - boxes[:, 1] + one
    out[:, :4] = boxes[:, :4] + offsets * torch.stack([w, h, w, h], dim=1)
    return out


def pyramid_scales(width: int, height: int, min_face_size: float) -> list[float]:
    """Scales at which a min_face_size face fills PNet's 12-px window, down to a 12-px image."""
    scale, shorter, scales = 12.0 / min_face_size, min(width, height), []
    while shorter * scale >= 12:
        scales.append(scale)
        scale *= PYRAMID_FACTOR
    return scales


class AreaSampler:
    """Area resampling (torch's `interpolate(mode="area")`, i.e. adaptive average pooling) of
    rectangles of a batch of images: the pyramid's levels and the RNet/ONet crops.

    Every average is read off a summed-area table of the batch, four lookups per output pixel
    and every rectangle of a stage in one gather, then divided as torch's pooling divides (by
    the window's height, then its width). Pixel sums are integers, so the averages are torch's
    to the bit (tests/test_mtcnn.py). On a GPU the table is torch's, so a stage is one launch
    instead of one per crop. On the CPU it is numpy's: there torch's pooling, a call per crop,
    was a fifth of MTCNN's time, and torch's gathers cost three times numpy's.
    """

    def __init__(self, pixels: torch.Tensor, in_torch: bool | None = None) -> None:  # N×H×W×3 uint8
        self.in_torch = pixels.device.type != "cpu" if in_torch is None else in_torch  # None: torch on a GPU
        n, h, w, _ = pixels.shape
        self.height, self.width = h + 1, w + 1  # the table's: a zero first row and column
        narrow = 255 * h * w < 2**31  # a plane's whole sum fits 32 bits
        if self.in_torch:
            table = nn.functional.pad(pixels.to(torch.int32 if narrow else torch.int64).cumsum(1).cumsum(2), (0, 0, 1, 0, 1, 0))
            self.cells: Any = table.view(-1, 3)  # one row per (image, y, x): torch or numpy, as in_torch
        else:
            sums = np.zeros((n, h + 1, w + 1, 3), dtype=np.int32 if narrow else np.int64)
            np.cumsum(pixels.numpy(), axis=1, dtype=sums.dtype, out=sums[:, 1:, 1:])
            np.cumsum(sums[:, 1:, 1:], axis=2, out=sums[:, 1:, 1:])
            self.cells = sums.reshape(-1, 3)

    def __call__(self, image: torch.Tensor, regions: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
        """K rectangles (x1, y1, x2, y2, integer, end-exclusive) of images `image` (K) →
        K×3×out_h×out_w float32 (a channels-last view)."""
        if self.in_torch:
            device = self.cells.device
            return self._average(torch, image.to(device), regions.to(device=device, dtype=torch.int64), out_h, out_w)
        return self._average(np, image.numpy(), regions.numpy().astype(np.int64), out_h, out_w)

    def _average(self, xp: Any, image: Any, regions: Any, out_h: int, out_w: int) -> torch.Tensor:
        """The averages with `xp` (numpy or torch) on the table's arrays."""
        top, bottom = _windows(xp, regions[:, 1], regions[:, 3], out_h)  # K×out_h each
        left, right = _windows(xp, regions[:, 0], regions[:, 2], out_w)  # K×out_w each
        k = len(regions)

        def corners(rows: Any, columns: Any) -> Any:  # K×out_h×out_w×3 table cells
            cells = ((image[:, None] * self.height + rows) * self.width)[:, :, None] + columns[:, None, :]
            flat = cells.reshape(-1)  # take and index_select: a third of indexing's time
            found = self.cells.take(flat, axis=0) if xp is np else self.cells.index_select(0, flat)
            return found.reshape(k, out_h, out_w, 3)

        sums = corners(bottom, right) - corners(bottom, left) - corners(top, right) + corners(top, left)
        h, w = (bottom - top)[:, :, None, None], (right - left)[:, None, :, None]
        if xp is np:
            averages = torch.from_numpy(sums.astype(np.float32) / h.astype(np.float32) / w.astype(np.float32))
        else:
            averages = sums.float() / h.float() / w.float()
        return averages.permute(0, 3, 1, 2)


def _windows(xp: Any, start: Any, end: Any, size: int) -> tuple[Any, Any]:
    """Adaptive pooling's windows over [start, end) into `size` bins: [floor(i·n/size),
    ceil((i+1)·n/size)) from start, for each of K spans → (K×size first, K×size past-the-end)."""
    steps = xp.arange(size) if xp is np else torch.arange(size, device=start.device)
    n = (end - start)[:, None]
    return start[:, None] + (steps * n) // size, start[:, None] + ((steps + 1) * n + size - 1) // size


class Mtcnn:
    """Faces in same-sized RGB images, as boxes with MTCNN's probability and five landmarks.
    Every stage runs on the whole batch at once, so a GPU sees few, large launches."""

    def __init__(self, min_face_size: float = 20, device: str | torch.device = "cpu", runtime: NetsRuntime = "auto") -> None:
        self.min_face_size = min_face_size
        self.device = torch.device(device)  # where the pixels are
        self.runtime = runtime  # as asked: detection processes load theirs alike
        *nets, self.nets_spread_themselves = load_nets(self.device, runtime)
        self.nets = tuple(nets)  # PNet, RNet, ONet
        self.sample_in_torch: bool | None = None  # None: by device (see AreaSampler)

    def detect(self, images: Sequence[Image.Image], helper: Executor | None = None) -> list[list[Detection]]:
        """`helper`: a thread that takes half of the nets' work meanwhile (a lone photo on a CPU
        with a core to spare: torch's ops release the GIL); nets that spread themselves take a
        thread more per call instead. The boxes agree to float rounding (1e-4 px), as a batch's
        do with each image's detected alone."""
        threads = torch.get_num_threads() + (helper is not None)
        pnet, rnet, onet = (partial(net, threads=threads) for net in self.nets)
        if self.nets_spread_themselves:
            helper = None
        stacked = torch.from_numpy(np.stack([np.asarray(img) for img in images])).to(self.device)
        area = AreaSampler(stacked, self.sample_in_torch)
        height, width = stacked.shape[1:3]
        boxes, image = self._propose(area, pnet, len(images), width, height, helper)
        boxes, image = self._refine(area, boxes, image, width, height, 24, _halved(rnet, helper), THRESHOLDS[1])
        rows, image = self._refine(area, boxes, image, width, height, 48, _halved(onet, helper), THRESHOLDS[2])
        found: list[list[Detection]] = [[] for _ in images]
        for row, i in zip(rows.tolist(), image.tolist()):
            box = (row[0], row[1], row[2], row[3])
            found[i].append(Detection(box, row[4], tuple((row[5 + k], row[10 + k]) for k in range(5))))
        return found

    def _propose(self, area: AreaSampler, pnet: Net, n: int, width: int, height: int,
                 helper: Executor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: PNet over the pyramid; squared candidate boxes (x1, y1, x2, y2, score) and
        the image each is in."""
        whole = torch.tensor([[0, 0, width, height]] * n)
        every = torch.arange(n)
        scales = pyramid_scales(width, height, self.min_face_size)
        levels = [_standardise(area(every, whole, int(height * s + 1), int(width * s + 1))) for s in scales]
        boxes, image = [], []
        here = _levels_here([level.shape[2] * level.shape[3] for level in levels])
        for scale, (offsets, probs) in zip(scales, _each(pnet, levels, helper, here)):
            i, ys, xs = torch.nonzero(probs[:, 1] >= THRESHOLDS[0], as_tuple=True)
            corner = torch.stack([xs, ys], dim=1).float() * STRIDE
            found = torch.cat([torch.floor((corner + 1) / scale), torch.floor((corner + CELL) / scale),
                               probs[i, 1, ys, xs][:, None], offsets[i, :, ys, xs]], dim=1)
            keep = _nms_per_image(found, i, 0.5)
            boxes.append(found[keep])
            image.append(i[keep])
        if not boxes:  # smaller than PNet's window: no pyramid at all
            return torch.zeros((0, 5), device=self.device), torch.zeros(0, dtype=torch.int64, device=self.device)
        found, i = torch.cat(boxes), torch.cat(image)
        keep = _nms_per_image(found, i, 0.7)
        found, i = found[keep], i[keep]
        moved = _regress(found[:, :5], found[:, 5:9], inclusive=False)
        return _square(moved), i

    def _refine(self, area: AreaSampler, boxes: torch.Tensor, image: torch.Tensor, width: int, height: int,
                size: int, net: Net, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Stages 2 and 3: re-score each candidate's crop at `size` px and move its box; ONet's
        pass (size 48) also places the landmarks and ends with the "min" NMS."""
        regions = _crop_regions(boxes, width, height)
        valid = (regions[:, 2] > regions[:, 0]) & (regions[:, 3] > regions[:, 1])
        boxes, regions, image = boxes[valid], regions[valid], image[valid]
        if not len(boxes):
            return torch.zeros((0, 15), device=boxes.device), image
        outputs = net(_standardise(area(image, regions, size, size)))
        offsets, probs = outputs[0], outputs[-1]
        keep = probs[:, 1] > threshold
        scored = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
        offsets, image = offsets[keep], image[keep]
        if size == 24:
            picked = _nms_per_image(scored, image, 0.7)
            return _square(_regress(scored[picked], offsets[picked])), image[picked]
        marks = outputs[1][keep]
        w = (scored[:, 2] - scored[:, 0] + 1)[:, None]
        h = (scored[:, 3] - scored[:, 1] + 1)[:, None]
        xs = w * marks[:, :5] + scored[:, 0:1] - 1
        ys = h * marks[:, 5:] + scored[:, 1:2] - 1
        scored = _regress(scored, offsets)
        rows = torch.cat([scored, xs, ys], dim=1).cpu().numpy()
        # Within each image: shift the images' boxes apart so one NMS pass keeps them separate.
        shifted = rows[:, :4] + image.cpu().numpy()[:, None] * (rows[:, :4].max(initial=0) + 1)
        picked = torch.from_numpy(nms(shifted, rows[:, 4], 0.7, mode="min"))
        return torch.from_numpy(rows)[picked], image.cpu()[picked]


def _each(net: Net, inputs: list[torch.Tensor], helper: Executor | None, here: int = 1) -> list[list[torch.Tensor]]:
    """`net` on each input, in order; with a helper, the first `here` inputs on this thread
    while the helper runs the rest."""
    if helper is None or not 0 < here < len(inputs):
        return [net(x) for x in inputs]
    rest = helper.submit(lambda: [net(x) for x in inputs[here:]])
    first = [net(x) for x in inputs[:here]]
    return [*first, *rest.result()]


def _levels_here(pixels: Sequence[int]) -> int:
    """How many of the pyramid's largest levels (of these sizes) PNet runs on this thread while
    the helper runs the smaller ones: as many as leave the two about even. A level costs its
    pixels and a fixed share (the calls around the net), so the many small levels weigh about
    as much as the largest one or two."""
    cost = [p + LEVEL_OVERHEAD_PIXELS for p in pixels]
    here, taken = 0, 0.0
    while here < len(cost) - 1 and taken + cost[here] / 2 < sum(cost) / 2:
        taken += cost[here]
        here += 1
    return max(here, 1)


def _halved(net: Net, helper: Executor | None) -> Net:
    """`net` on a batch of crops, each half on a thread of its own when there is a helper."""
    if helper is None:
        return net

    def run(batch: torch.Tensor) -> list[torch.Tensor]:
        if len(batch) < 2:
            return net(batch)
        half = (len(batch) + 1) // 2
        first, second = _each(net, [batch[:half], batch[half:]], helper)
        return [torch.cat(pair) for pair in zip(first, second)]

    return run


def _crop_regions(boxes: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The part of each box inside the image, in whole pixels (x1, y1, x2, y2, end-exclusive;
    MTCNN's 1-based truncation)."""
    whole = torch.trunc(boxes[:, :4]).to(torch.int64)
    x1 = whole[:, 0].clamp(min=1) - 1
    y1 = whole[:, 1].clamp(min=1) - 1
    x2 = whole[:, 2].clamp(max=width)
    y2 = whole[:, 3].clamp(max=height)
    return torch.stack([x1, y1, x2, y2], dim=1)

