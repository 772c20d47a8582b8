"""Detection recall against free labels: a distorted FACECOM photo is pixel-aligned with its
clean source, so the face found in the clean photo says where the face is in every copy."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from core.data.dataset import Sample
from core.faces.geometry import SAME_FACE_IOU, iou
from core.faces.pipeline import DetectedFace
from evaluation.open_set import UNDETECTED_PATHS


def detected(face: DetectedFace) -> bool:
    return face.path not in UNDETECTED_PATHS


def recall(samples: Sequence[Sample], faces: Sequence[DetectedFace]) -> dict:
    """Per distortion: the share of photos whose chosen face overlaps the clean photo's face
    (IoU ≥ 0.5), whose chosen face is somewhere else ("wrong_face"), or where none was found.
    Photos whose clean source has no detected face carry no label and are left out."""
    labels = {(s.identity, s.source): f.box for s, f in zip(samples, faces) if s.is_clean and detected(f)}
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"n": 0, "found": 0, "wrong_face": 0, "missed": 0})
    for sample, face in zip(samples, faces):
        if sample.is_clean or (box := labels.get((sample.identity, sample.source))) is None:
            continue
        row = counts[sample.kind]
        row["n"] += 1
        if not detected(face):
            row["missed"] += 1
        elif iou(face.box, box) >= SAME_FACE_IOU:
            row["found"] += 1
        else:
            row["wrong_face"] += 1
    return {kind: {"n": c["n"], **{k: c[k] / c["n"] for k in ("found", "wrong_face", "missed")}} for kind, c in sorted(counts.items())}
