"""Benchmark inputs: a data set photo re-encoded as the JPEG a client would send."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image


def jpeg_at(path: Path, long_side: int | None) -> bytes:
    """`path` as a quality-90 JPEG, its longer side scaled to `long_side` (None: as it is)."""
    img = Image.open(path).convert("RGB")
    if long_side:
        img = img.resize((round(img.width * long_side / max(img.size)), round(img.height * long_side / max(img.size))))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()
