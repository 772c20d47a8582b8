"""Photo sets with a folder per person (LFW's layout: `<Person>/<Person>_NNNN.jpg`), carved by
person into the people trained on, the people thresholds are chosen on, and the people reported
on, so that nobody is ever both trained on and reported on."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence, Set
from pathlib import Path

import numpy as np

from core.data.dataset import IMAGE_SUFFIXES

SETS = ("train", "choose", "report")
SHARES = (4, 3, 3)  # tenths of the people in each set


def folder_people(root: Path) -> dict[str, list[Path]]:
    """Person → their photos, sorted, from a folder per person."""
    people = {}
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            people[folder.name] = photos
    return people


def carve(names: Sequence[str], exclude: Set[str] = frozenset()) -> dict[str, list[str]]:
    """Each name (but those excluded) into one set, by a hash of the name: the same person always
    lands in the same set, whatever else the folder holds."""
    out: dict[str, list[str]] = {s: [] for s in SETS}
    bounds = np.cumsum(SHARES)
    for name in sorted(set(names) - set(exclude)):
        tenth = int(hashlib.sha1(name.encode()).hexdigest(), 16) % 10
        out[SETS[int(np.searchsorted(bounds, tenth, side="right"))]].append(name)
    return out
