"""What a model uses on one kind of distorted query: top-1 when parts of the crop are painted white.

On sunny photos the face is blown out to white. Painting other parts of the crop white as
well (the hair above the face, the head's outline, what is left of the face's centre, the
chin and collar below) and counting which right answers survive says what those answers
rest on. Gallery and protocol are `faceid evaluate`'s (clean photos, one template per person,
the data-set pipeline); only the queries are painted.

    .venv/bin/python -m evaluation.occlusion --data DIR [--split FILE] [--kind sunny] [--weights DIR] \
        [--out reports/occlusion.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from core.constants import CROP_SIZE
from core.data.crop_cache import face_crops
from core.data.dataset import read_split, scan
from core.embedding.runtime import make_embedder
from core.embedding.templates import templates
from core.faces.pipeline import DATASET_PIPELINE, load_pipeline
from core.models.backbone import load_backbone
from evaluation.embeddings import embed_samples

RING = 24  # px of a 160-px crop: about the margin the crop adds around the face box
HAIR_ROWS = 48  # the top 30% of the crop
CHIN_ROWS = 48  # the bottom 30%


def region_masks(size: int = CROP_SIZE) -> dict[str, torch.Tensor]:
    """name → boolean size×size mask of the pixels painted white."""
    top, bottom, centre = (torch.zeros(size, size, dtype=torch.bool) for _ in range(3))
    top[:HAIR_ROWS] = True
    bottom[size - CHIN_ROWS :] = True
    centre[RING : size - RING, RING : size - RING] = True
    return {"hair (top 30%)": top, "outline (outer 24 px)": ~centre, "centre": centre, "chin and collar (bottom 30%)": bottom}


def paint(crops: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W crops with the `mask` pixels set to white."""
    out = crops.clone()
    out[:, :, mask] = 255
    return out


def occlusion_report(
    crops: torch.Tensor, labels: Sequence[str], answer: Callable[[torch.Tensor], np.ndarray],
    masks: dict[str, torch.Tensor] | None = None,
) -> dict:
    """`answer(crops)` gives each crop's top-1 person. Per painted region: top-1, and the share
    of the unpainted crops' right answers that stay right."""
    truth = np.asarray(labels)
    right = answer(crops) == truth
    out: dict = {"n": int(len(truth)), "top1": float(right.mean()) if len(truth) else float("nan"), "painted": {}}
    for name, mask in (masks or region_masks(crops.shape[-1])).items():
        still = answer(paint(crops, mask)) == truth
        out["painted"][name] = {"top1": float(still.mean()) if len(truth) else float("nan"),
                                "right_answers_kept": float(still[right].mean()) if right.any() else float("nan")}
    return out


def measure(data: Path, split: Path | None, kind: str, weights: str | None, cache_dir: Path = Path(".cache")) -> dict:
    samples = scan(data, read_split(split) if split else None)
    clean = [s for s in samples if s.is_clean]
    queries = [s for s in samples if s.kind == kind]
    if not queries:
        raise ValueError(f"{data}: no {kind!r} photos")
    backbone = load_backbone(weights, "cpu")
    embedder = make_embedder(backbone, "cpu")
    pipeline = load_pipeline(DATASET_PIPELINE, "cpu")
    gallery, _, _ = embed_samples(clean, pipeline, embedder, backbone.model_id, cache_dir, progress=False)
    crops, _ = face_crops([s.path for s in queries], pipeline, cache_dir, progress=False)  # embedded by `answer`
    tmpl, names = templates(gallery, [s.identity for s in clean])
    answer = lambda x: np.asarray(names)[(embedder.embed(x) @ tmpl.T).argmax(axis=1)]
    return {"kind": kind, "model_id": backbone.model_id} | occlusion_report(crops, [s.identity for s in queries], answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, default=None)
    parser.add_argument("--kind", default="sunny")
    parser.add_argument("--weights", default=None, help="default: the service's backbone")
    parser.add_argument("--out", type=Path, default=Path("reports/occlusion.json"))
    args = parser.parse_args()
    report = measure(args.data, args.split, args.kind, args.weights)
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
