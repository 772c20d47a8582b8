"""Five-point alignment: a face warped by its landmarks onto a fixed template.

The served FaceNet sees a box crop (crop.py), as it was trained; ArcFace-family nets (the
teachers training distils from) expect the eyes, nose and mouth corners at set places in a
112-px chip, so they get this instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# Where ArcFace-family nets expect the eyes, nose tip and mouth corners in a 112×112 chip
# (InsightFace's template; MTCNN gives the same five points in the same order).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]])
ARCFACE_SIZE = 112


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 rotation + uniform scale + shift taking `src` points closest to `dst` in least
    squares (Umeyama 1991): no shear, so a face keeps its proportions."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching lists of 2-d points, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    src0, dst0 = src - mu_src, dst - mu_dst
    spread = (src0**2).sum(1).mean()
    if spread == 0:
        raise ValueError("the source points all coincide")
    u, s, vt = np.linalg.svd(dst0.T @ src0 / len(src))
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection is no face pose
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(s) @ d)) / spread
    return np.hstack([scale * rotation, (mu_dst - scale * rotation @ mu_src)[:, None]])


def aligned_chip(img: Image.Image, landmarks: Sequence[Sequence[float]], template: np.ndarray = ARCFACE_TEMPLATE,
                 size: int = ARCFACE_SIZE) -> np.ndarray:
    """uint8 size×size×3 RGB chip with the face's landmarks moved onto the template's."""
    forward = np.vstack([similarity_transform(np.asarray(landmarks), template), [0.0, 0.0, 1.0]])
    inverse = np.linalg.inv(forward)[:2]  # PIL maps each output pixel back into the photo
    chip = img.convert("RGB").transform((size, size), Image.Transform.AFFINE, inverse.flatten().tolist(),
                                        resample=Image.Resampling.BILINEAR)
    return np.asarray(chip, dtype=np.uint8)
