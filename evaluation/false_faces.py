"""False faces: what the service's detection reports where there is no face.

Two measurements on a FACECOM-layout data set, with the service's pipeline (no fallback box):
- on the background of photos that have a face: detections that overlap none of the photo's
  labelled face (IoU < 0.3 with the face found in its clean source, which every distorted
  copy is pixel-aligned with);
- on photos without a face: the largest strip of each photo that lies clear of its face (the
  box grown by a third on each side), when at least 64 px on its shorter side; per kind, since
  the distorted copies are where the box regressor is asked.

    .venv/bin/python -m evaluation.false_faces --data DIR [--split FILE] [--out reports/false_faces.json]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from core.data.dataset import read_split, scan
from core.faces.geometry import OVERLAPS_FACE_IOU, grown, iou
from core.faces.pipeline import SERVICE_PIPELINE, DetectedFace, FacePipeline, load_pipeline
from core.faces.subject import subject
from core.images import load_image

MIN_STRIP = 64


def background_strip(size: tuple[int, int], box: Sequence[float]) -> tuple[int, int, int, int] | None:
    """The largest of the four strips (left, right, above, below) clear of the face box grown
    by a third on each side; None when none is at least MIN_STRIP px on its shorter side."""
    w, h = size
    gx1, gy1, gx2, gy2 = grown(box)
    left, top = max(0, int(gx1)), max(0, int(gy1))
    right, bottom = min(w, int(gx2) + 1), min(h, int(gy2) + 1)
    strips = [(0, 0, left, h), (right, 0, w, h), (0, 0, w, top), (0, bottom, w, h)]
    strips = [s for s in strips if min(s[2] - s[0], s[3] - s[1]) >= MIN_STRIP]
    return max(strips, key=lambda s: (s[2] - s[0]) * (s[3] - s[1]), default=None)


def count_false(faces: Sequence[DetectedFace], label: Sequence[float]) -> int:
    return sum(1 for f in faces if iou(f.box, label) < OVERLAPS_FACE_IOU)


def measure(data: Path, split: Path | None, pipeline: FacePipeline) -> dict:
    samples = scan(data, read_split(split) if split else None)
    labels: dict[tuple[str, str | None], tuple[float, ...]] = {}
    found: list[tuple[str, list[DetectedFace], tuple[float, ...] | None]] = []
    strips: list[tuple[str, Image.Image]] = []
    for sample in sorted(samples, key=lambda s: not s.is_clean):  # clean photos first: they label the rest
        img = load_image(sample.path)
        faces = pipeline.detect_all(img)
        if sample.is_clean and faces:
            labels[(sample.identity, sample.source)] = subject(faces, img.size).box
        label = labels.get((sample.identity, sample.source))
        if label is not None and (strip := background_strip(img.size, label)) is not None:
            strips.append((sample.kind, img.crop(strip)))
        found.append((sample.kind, faces, label))
    per_kind: dict[str, dict[str, float]] = defaultdict(lambda: {"photos": 0, "with_false_face": 0, "false_faces": 0})
    for kind, faces, label in found:
        if label is None:
            continue
        row = per_kind[kind]
        n = count_false(faces, label)
        row["photos"] += 1
        row["with_false_face"] += n > 0
        row["false_faces"] += n
    background = {kind: {"photos": int(r["photos"]), "share_with_false_face": round(r["with_false_face"] / r["photos"], 4),
                         "false_faces_per_photo": round(r["false_faces"] / r["photos"], 4)} for kind, r in sorted(per_kind.items())}
    by_kind: dict[str, list[Image.Image]] = defaultdict(list)
    for kind, picture in strips:
        by_kind[kind].append(picture)
    without = {}
    for kind, images in sorted(by_kind.items()):
        no_face = [pipeline.detect_all(strip) for strip in images]
        without[kind] = {"photos": len(images), "share_with_a_face_found": round(sum(bool(f) for f in no_face) / len(images), 4),
                         "faces_found": sum(len(f) for f in no_face),
                         "regressed": sum(f.path == "regressed" for faces in no_face for f in faces),
                         "median_size": list(sorted(s.size for s in images)[len(images) // 2])}
    return {"background_of_face_photos": background, "photos_without_a_face": without}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reports/false_faces.json"))
    args = parser.parse_args()
    report = measure(args.data, args.split, load_pipeline(SERVICE_PIPELINE))
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
