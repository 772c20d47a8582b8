"""The crop the network sees: a face box widened by a margin, cut from the photo, at 160×160."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from core.constants import CROP_SIZE
from core.errors import NoFaceFound

MARGIN = 32  # pixels of context around the box, in the 160-px crop (facenet-pytorch's convention)


def crop_face(img: Image.Image, box: Sequence[float], margin: int = MARGIN) -> torch.Tensor:
    """uint8 3×160×160 crop of `box` widened by `margin`, clamped to the image."""
    x1, y1, x2, y2 = box
    pad_x = margin * (x2 - x1) / (CROP_SIZE - margin) / 2
    pad_y = margin * (y2 - y1) / (CROP_SIZE - margin) / 2
    w, h = img.size
    region = (int(max(x1 - pad_x, 0)), int(max(y1 - pad_y, 0)), int(min(x2 + pad_x, w)), int(min(y2 + pad_y, h)))
    if region[2] - region[0] < 2 or region[3] - region[1] < 2:
        raise NoFaceFound("image", f"face box {tuple(round(v) for v in box)} is degenerate")
    face = img.crop(region).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(face, dtype=np.uint8).copy()).permute(2, 0, 1)
