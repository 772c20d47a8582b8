"""A teacher: a stronger face embedder whose sense of which faces look alike the served
backbone's head is taught (training/head_refit.py).

A teacher is an ONNX file kept outside the project (`../shared/teachers/`; nothing of it is
committed, and the weights trained from it are the project's own). It takes 112-px chips
aligned on ArcFace's five-point template from MTCNN's landmarks (core/faces/alignment.py), RGB
scaled to [-1, 1], and gives one vector per chip. Its name and sha256 go into the model card.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.data.crop_cache import face_crops
from core.data.people import carve, folder_people
from core.embedding.onnx_runtime import require_runtime
from core.faces.alignment import aligned_chip
from core.faces.pipeline import SERVICE_PIPELINE, Landmarks, load_pipeline
from core.files import sha256_of
from core.images import load_image
from core.models.model_card import ModelCard, is_model_folder


@dataclass(frozen=True)
class Teacher:
    session: Any
    input_name: str
    name: str
    sha256: str


def load_teacher(path: Path) -> Teacher:
    """The teacher's session; a FileNotFoundError or ValueError naming the file when it cannot be had."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no teacher model there (an ONNX file, e.g. ../shared/teachers/MobileFaceNet.onnx)")
    ort = require_runtime()
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a foreign or truncated file
        raise ValueError(f"{path}: not an ONNX model onnxruntime can load ({exc})") from exc
    return Teacher(session, session.get_inputs()[0].name, path.stem, sha256_of(path))


def teacher_input(chip: np.ndarray) -> np.ndarray:
    """uint8 H×W×3 RGB chip → 1×3×H×W float32 in [-1, 1]."""
    return ((chip.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None]


def teacher_embeddings(teacher: Teacher, paths: Sequence[Path], landmarks: Sequence[Landmarks | None]) -> np.ndarray:
    """Unit vectors, one per photo; a row of zeros where no landmarks were found (no target).
    Photos are decoded as detection decoded them (core/images.py, EXIF-upright), so the
    landmarks fall where they were found."""
    vectors: dict[int, np.ndarray] = {}
    for i, (path, points) in enumerate(zip(paths, landmarks)):
        if points is not None:
            chip = aligned_chip(load_image(path), points)
            vector = np.asarray(teacher.session.run(None, {teacher.input_name: teacher_input(chip)})[0][0], np.float32)
            vectors[i] = vector / max(float(np.linalg.norm(vector)), 1e-12)
    dim = len(next(iter(vectors.values()))) if vectors else 0
    out = np.zeros((len(paths), dim), np.float32)
    for i, vector in vectors.items():
        out[i] = vector
    return out


@dataclass(frozen=True)
class TeacherSet:
    """What distillation trains on: the train people's photos, their crops as the service cuts
    them, and the teacher's unit vector for each (a row of zeros: no target)."""

    names: list[str]
    paths: list[Path]
    crops: torch.Tensor  # uint8 N×3×160×160
    targets: torch.Tensor  # N×teacher width


def teacher_set(data: Path, teacher: Teacher, exclude: Set[str] = frozenset(), cache: Path = Path(".cache")) -> TeacherSet:
    """The `train` people of the folder-per-person set `data` (core/data/people.py), less
    `exclude`; faces found by the service's own pipeline. Only MTCNN places landmarks: a box
    from the regressor or the whole image gets no target."""
    people = folder_people(data)
    names = carve(list(people), exclude)["train"]
    paths = [p for n in names for p in people[n]]
    if not paths:
        raise ValueError(f"{data}: no train people's photos there (a folder per person)")
    crops, faces = face_crops(paths, load_pipeline(SERVICE_PIPELINE), cache, progress=True)
    targets = torch.from_numpy(teacher_embeddings(teacher, paths, [f.landmarks for f in faces]))
    return TeacherSet(names, paths, crops, targets)


def run_record(stage: str, data: Path, base: str, base_sha256: str, teacher: Teacher, photos: TeacherSet) -> dict[str, Any]:
    """What a model trained on a teacher keeps of its making in the card's `config` (its
    settings go beside): the start, the teacher, the photos."""
    card = ModelCard.read(Path(base)) if is_model_folder(Path(base)) else None
    return {"stage": stage, "data": str(data), "base": base, "base_sha256": base_sha256,
            "base_soup": card.soup if card else None, "base_config": card.config if card else None,
            "teacher": teacher.name, "teacher_sha256": teacher.sha256, "photos": len(photos.paths),
            "photos_with_target": int((photos.targets.abs().sum(1) > 0).sum())}
