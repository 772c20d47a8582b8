"""Benchmark inputs: data set photos re-encoded as the JPEG a client would send, clean and
distorted, each kind apart and mixed (what the service's users send)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from core.data.dataset import CLEAN, DEFAULT_TEST_SPLIT, read_split, scan

MIXED = "distorted_mix"


def jpeg_at(path: Path, long_side: int | None) -> bytes:
    """`path` as a quality-90 JPEG, its longer side scaled to `long_side` (None: as it is)."""
    img = Image.open(path).convert("RGB")
    if long_side:
        img = img.resize((round(img.width * long_side / max(img.size)), round(img.height * long_side / max(img.size))))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def photos_by_kind(data: Path, per_kind: int, split: Path = DEFAULT_TEST_SPLIT) -> dict[str, list[Path]]:
    """Up to `per_kind` photos of each kind ("clean", then each distortion the data set holds,
    then MIXED: the distortions in turn) of the split's people, spread evenly over them, so
    that studio portraits and LFW-style photos come in the data set's proportion."""
    samples = scan(data, read_split(split))
    kinds = sorted({s.kind for s in samples} - {CLEAN})
    out = {}
    for kind in (CLEAN, *kinds):
        paths = [s.path for s in samples if s.kind == kind]
        step = max(1, len(paths) // per_kind)
        out[kind] = paths[::step][:per_kind]
    out[MIXED] = [out[kinds[i % len(kinds)]][i // len(kinds)] for i in range(per_kind)
                  if i // len(kinds) < len(out[kinds[i % len(kinds)]])]
    return out
