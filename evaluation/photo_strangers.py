"""Photo evidence's false names on many more strangers than the evaluated people give.

    .venv/bin/python -m evaluation.photo_strangers --data ../shared/data/facecom-train \
        --split core/data/splits/facecom_val_identities.txt --cache .cache/eval --report reports/photo-strangers-val.json

The gallery is the split's people's clean photos, as `faceid evaluate` enrols them; the strangers
are every photo, clean and distorted, of the people in neither held-out split (the training
people: never enrolled here, and far more of them than 100 people's own queries). Each stranger
photo is searched as the service searches it; at each threshold of a grid, the share named and its
Clopper-Pearson 95% upper bound. The photo threshold (core/photos) was chosen on the validation
people's gallery with this: the lowest whose bound stays at or under 0.1%.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from core.data.dataset import DEFAULT_TEST_SPLIT, DEFAULT_VAL_SPLIT, identities, read_split, scan
from core.device import resolve_device
from core.embedding.runtime import make_embedder
from core.faces.geometry import fractions_of
from core.faces.pipeline import DATASET_PIPELINE, load_pipeline
from core.models.backbone import load_backbone
from core.photos.descriptor import PHOTO_THRESHOLD
from evaluation.embeddings import embed_samples, embedder_id
from evaluation.open_set import CONFIDENCE, rate_upper_bound
from evaluation.photos import best_photos, thumbnails

TARGET = 0.001  # photo evidence's false names on strangers
GRID = tuple(round(0.40 + 0.01 * i, 2) for i in range(21))


def stranger_scores(data: Path, split: Path, cache: Path) -> tuple[np.ndarray, int]:
    """(each stranger photo's best photo-evidence similarity to the split's gallery, gallery size)."""
    held_out = read_split(DEFAULT_VAL_SPLIT) | read_split(DEFAULT_TEST_SPLIT)
    gallery = [s for s in scan(data, read_split(split)) if s.is_clean]
    strangers = scan(data, set(identities(data)) - held_out - read_split(split))
    device = resolve_device("auto")
    backbone = load_backbone(None, device)
    embedder = make_embedder(backbone, device)  # the face boxes come from evaluate's detection (and its cache)
    _, faces, _ = embed_samples(gallery, load_pipeline(DATASET_PIPELINE, device), embedder,
                                embedder_id(backbone.model_id, embedder.runtime), cache)
    g_thumbs, g_sizes = thumbnails(gallery)
    boxes = [fractions_of(f.box, size) for f, size in zip(faces, g_sizes)]
    s_thumbs, _ = thumbnails(strangers)
    _, sims = best_photos(g_thumbs, boxes, s_thumbs, np.ones((len(strangers), len(gallery)), dtype=bool))
    return sims, len(gallery)


def report(sims: np.ndarray, gallery_size: int) -> dict:
    n = len(sims)
    grid = {f"{t:.2f}": {"named": int((sims >= t).sum()), "rate": float((sims >= t).mean()),
                         "ucb95": rate_upper_bound(int((sims >= t).sum()), n, CONFIDENCE)} for t in GRID}
    meets = [t for t in GRID if grid[f"{t:.2f}"]["ucb95"] <= TARGET]
    return {"strangers": n, "gallery_photos": gallery_size, "target": TARGET, "confidence": CONFIDENCE,
            "lowest_threshold_for_target": min(meets) if meets else None, "service_threshold": PHOTO_THRESHOLD,
            "at_service_threshold": grid.get(f"{PHOTO_THRESHOLD:.2f}"), "top_scores": sorted(map(float, sims), reverse=True)[:10],
            "grid": grid}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", type=Path, default=DEFAULT_VAL_SPLIT, help="the enrolled people (default: validation)")
    ap.add_argument("--cache", type=Path, default=Path(".cache"), help="faceid evaluate's --cache: its detection is reused")
    ap.add_argument("--report", type=Path, default=Path("reports/photo-strangers.json"))
    args = ap.parse_args()
    r = report(*stranger_scores(args.data, args.split, args.cache))
    at = r["at_service_threshold"]
    print(f"{r['strangers']} stranger photos against {r['gallery_photos']} enrolled photos: at {r['service_threshold']:.2f}, "
          f"{at['named']} named ({at['rate']:.4%}, 95% bound {at['ucb95']:.4%}); the lowest threshold whose bound is at most "
          f"{TARGET:.1%}: {r['lowest_threshold_for_target']}")
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
