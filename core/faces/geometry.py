"""Boxes: x1, y1, x2, y2 in an image's pixels, and the few rules the project measures them by."""

from __future__ import annotations

from collections.abc import Sequence

Box = tuple[float, float, float, float]

# A found box is the labelled face at this overlap or more: detection recall, the box
# regressor's figures and its training all count a hit by it.
SAME_FACE_IOU = 0.5
# A box overlapping a face at least this much is taken for that face, loosely: the face a
# caller's box names, a regressor's face that MTCNN already has, a detection of a labelled face.
OVERLAPS_FACE_IOU = 0.3
# The face box grown by this share of its size each way takes the hair, ears and chin with it:
# what face-free pictures keep clear of, and what painting a face out covers.
HEAD_GROWTH = 1 / 3


def area(box: Sequence[float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two boxes."""
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def grown(box: Sequence[float], share: float = HEAD_GROWTH) -> Box:
    """The box grown by `share` of its width and height on each side."""
    x1, y1, x2, y2 = box
    gx, gy = (x2 - x1) * share, (y2 - y1) * share
    return x1 - gx, y1 - gy, x2 + gx, y2 + gy


def scaled(box: Sequence[float], factor: float) -> Box:
    """The box in pixels `factor` times larger (a reduced image's box in the photo's pixels)."""
    x1, y1, x2, y2 = box
    return x1 * factor, y1 * factor, x2 * factor, y2 * factor


def scaled_points(points: Sequence[tuple[float, float]], factor: float) -> tuple[tuple[float, float], ...]:
    """Points in pixels `factor` times larger (a reduced image's landmarks in the photo's pixels)."""
    return tuple((x * factor, y * factor) for x, y in points)


def scaled_box(fractions: Sequence[float], size: tuple[int, int]) -> Box:
    """A box given as fractions of an image's width and height, in that image's pixels."""
    w, h = size
    return fractions[0] * w, fractions[1] * h, fractions[2] * w, fractions[3] * h


def fractions_of(box: Sequence[float], size: tuple[int, int]) -> Box:
    """A box in an image's pixels as fractions of its width and height."""
    w, h = size
    return box[0] / w, box[1] / h, box[2] / w, box[3] / h


def rounded(boxes: Sequence[Sequence[float]]) -> list[list[int]]:
    """Boxes as whole pixels, for messages."""
    return [[round(v) for v in box] for box in boxes]
