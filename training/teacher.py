"""A teacher: a stronger face embedder whose sense of which faces look alike the served
backbone's head is taught (training/head_refit.py).

A teacher is an ONNX file kept outside the project (`../shared/teachers/`; nothing of it is
committed, and the weights trained from it are the project's own). It takes 112-px chips
aligned on ArcFace's five-point template from MTCNN's landmarks (core/faces/alignment.py), RGB
scaled to [-1, 1], and gives one vector per chip. Its name and sha256 go into the model card.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import dataclass, field
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
    lookalikes: list[str] = field(default_factory=list)  # people of `also` left out: they may be people reported on


# A person of an extra folder whose photos the teacher finds this alike, on average, to the
# photos of someone chosen or reported on may be that person under another name: never trained
# on. For two photos of one LFW person that mean is 0.67 (median), above 0.45 for 95% of
# people; no CelebA identity reaches 0.39 against the LFW development people.
LOOKALIKE = 0.4


def _photos(paths: list[Path], teacher: Teacher, cache: Path) -> tuple[torch.Tensor, np.ndarray]:
    """Crops as the service cuts them and the teacher's vectors. Only MTCNN places landmarks:
    a box from the regressor or the whole image gets no target."""
    crops, faces = face_crops(paths, load_pipeline(SERVICE_PIPELINE), cache, progress=True)
    return crops, teacher_embeddings(teacher, paths, [f.landmarks for f in faces])


def _mean_vectors(people: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Each person's mean photo vector: the dot of two is the mean cosine between their photos."""
    names = [n for n, v in people.items() if len(v)]
    return names, np.array([people[n].mean(0) for n in names])


def lookalikes(extra: dict[str, np.ndarray], held: dict[str, np.ndarray]) -> set[str]:
    """The extra people whose photos are, on average, at least LOOKALIKE alike to one held
    person's (each a person's teacher vectors, one row a photo)."""
    names, mine = _mean_vectors(extra)
    theirs = _mean_vectors(held)[1]
    if not len(names) or not len(theirs):
        return set()
    return {n for n, best in zip(names, (mine @ theirs.T).max(1)) if best >= LOOKALIKE}


def teacher_set(data: Path, teacher: Teacher, exclude: Set[str] = frozenset(), cache: Path = Path(".cache"),
                also: Sequence[Path] = ()) -> TeacherSet:
    """The `train` people of the folder-per-person set `data` (core/data/people.py), less
    `exclude`, and every person of the folders `also` (more people to learn from, never
    reported on), less their lookalikes of `data`'s chosen and reported people."""
    people = folder_people(data)
    sets = carve(list(people), exclude)
    names = list(sets["train"])
    paths = [p for n in names for p in people[n]]
    if not paths:
        raise ValueError(f"{data}: no train people's photos there (a folder per person)")
    crops, targets = _photos(paths, teacher, cache)
    photos = TeacherSet(names, paths, crops, torch.from_numpy(targets))
    if not also:
        return photos
    held = {n: people[n] for s in ("choose", "report") for n in sets[s]}
    held_paths = [p for ps in held.values() for p in ps]
    return _with_extra(photos, also, _by_person(held, _photos(held_paths, teacher, cache)[1]) if held_paths else {}, teacher, cache)


def _by_person(people: dict[str, list[Path]], vectors: np.ndarray) -> dict[str, np.ndarray]:
    """Each person's rows of `vectors` (one per photo, in `people`'s order), photos without a
    target left out."""
    owner = np.array([n for n, ps in people.items() for _ in ps])
    return {n: vectors[(owner == n) & vectors.any(1)] for n in people}


def _with_extra(photos: TeacherSet, also: Sequence[Path], held: dict[str, np.ndarray], teacher: Teacher, cache: Path) -> TeacherSet:
    """`photos` and those of every person in the folders `also`, less the lookalikes of `held`
    (the teacher's vectors of the people chosen and reported on)."""
    extra: dict[str, list[Path]] = {}
    for folder in also:
        found = folder_people(folder)
        if not found:
            raise ValueError(f"{folder}: no photos there (a folder per person)")
        extra.update({f"{folder.name}/{n}": ps for n, ps in found.items()})
    paths = [p for ps in extra.values() for p in ps]
    crops, targets = _photos(paths, teacher, cache)
    dropped = lookalikes(_by_person(extra, targets), held)
    keep = np.flatnonzero([n not in dropped for n, ps in extra.items() for _ in ps])
    return TeacherSet(photos.names + [n for n in extra if n not in dropped], photos.paths + [paths[i] for i in keep],
                      torch.cat([photos.crops, crops[torch.from_numpy(keep)]]),
                      torch.cat([photos.targets, torch.from_numpy(targets[keep])]), sorted(dropped))


def run_record(stage: str, data: Path, base: str, base_sha256: str, teacher: Teacher, photos: TeacherSet,
               also: Sequence[Path] = ()) -> dict[str, Any]:
    """What a model trained on a teacher keeps of its making in the card's `config` (its
    settings go beside): the start, the teacher, the photos."""
    card = ModelCard.read(Path(base)) if is_model_folder(Path(base)) else None
    return {"stage": stage, "data": str(data), "base": base, "base_sha256": base_sha256,
            "base_soup": card.soup if card else None, "base_config": card.config if card else None,
            "teacher": teacher.name, "teacher_sha256": teacher.sha256, "photos": len(photos.paths),
            "photos_with_target": int((photos.targets.abs().sum(1) > 0).sum()),
            "also": [str(a) for a in also], "lookalikes_left_out": photos.lookalikes}
