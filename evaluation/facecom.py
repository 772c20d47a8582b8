"""The FACECOM folder layout: `<id>/<stem>.jpg` clean, `<id>/distortion/<stem>_<kind>.jpg` distorted."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from models.faces import PipelineConfig

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
CLEAN = "clean"
SPLITS_DIR = Path(__file__).resolve().parent / "splits"
DEFAULT_VAL_SPLIT = SPLITS_DIR / "facecom_val_identities.txt"
# FACECOM images are face photos, so the fallback box applies where MTCNN finds nothing.
# Training and evaluation both use this configuration.
DATASET_PIPELINE = PipelineConfig(use_fallback=True)


class LayoutError(ValueError):
    """A folder that is not in the FACECOM layout."""


@dataclass(frozen=True)
class Sample:
    identity: str
    path: Path
    kind: str  # "clean" or the distortion's name
    source: str  # stem of the clean photo this image was made from

    @property
    def is_clean(self) -> bool:
        return self.kind == CLEAN


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _identity_dirs(root: Path) -> list[Path]:
    return sorted(d for d in Path(root).iterdir() if d.is_dir() and not d.name.startswith("."))


def scan(root: Path, identities: set[str] | None = None) -> list[Sample]:
    """Every image under `root`, clean first within each identity; raises LayoutError naming the problem."""
    root = Path(root)
    if not root.is_dir():
        raise LayoutError(f"{root}: not a folder")
    samples: list[Sample] = []
    for id_dir in _identity_dirs(root):
        if identities is not None and id_dir.name not in identities:
            continue
        clean = _images(id_dir)
        samples += [Sample(id_dir.name, p, CLEAN, p.stem) for p in clean]
        stems = {p.stem for p in clean}
        distortion_dir = id_dir / "distortion"
        for p in _images(distortion_dir) if distortion_dir.is_dir() else []:
            source, _, kind = p.stem.rpartition("_")
            if source not in stems:
                raise LayoutError(f"{p}: expected <clean-stem>_<kind> with a clean photo {source}.* in {id_dir}")
            samples.append(Sample(id_dir.name, p, kind, source))
    if not any(s.is_clean for s in samples):
        raise LayoutError(f"{root}: no <identity>/<photo>.jpg found; expected the FACECOM layout")
    if identities is not None and (missing := identities - {s.identity for s in samples}):
        raise LayoutError(f"{root}: identities of the split not found, e.g. {sorted(missing)[:3]}")
    return samples


def split_identities(root: Path, n_val: int, seed: int = 0) -> list[str]:
    """A seeded choice of validation identities: people the model is never trained on."""
    ids = [d.name for d in _identity_dirs(root)]
    if n_val >= len(ids):
        raise LayoutError(f"{root}: {len(ids)} identities, cannot hold out {n_val}")
    return sorted(random.Random(seed).sample(ids, n_val))


def read_split(path: Path) -> set[str]:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise LayoutError(f"{path}: cannot read split file ({exc.strerror})") from exc
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def write_split(path: Path, identities: list[str], header: str) -> None:
    Path(path).write_text(f"# {header}\n" + "\n".join(identities) + "\n")
