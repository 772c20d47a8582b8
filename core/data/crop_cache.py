"""Face crops for a list of images, with detections cached on disk by file content.

Detection dominates the cost, so its result (box, score, path) is cached per image, keyed
by the file's sha1 and the pipeline's configuration; crops are re-cut from the cached box.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from core.constants import CROP_SIZE
from core.faces.mtcnn import VERSION as MTCNN_VERSION
from core.faces.pipeline import ENHANCEMENTS, GLARE_SHARE, DetectedFace, FacePipeline
from core.faces.subject import subject
from core.images import load_image

DEFAULT_CACHE_DIR = Path(".cache")


def content_key(path: Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def pipeline_key(pipeline: FacePipeline) -> str:
    regressor = pipeline.regressor.sha256 if pipeline.regressor is not None else None
    retries = [name for name, _ in ENHANCEMENTS]
    config = json.dumps({**dataclasses.asdict(pipeline.config), "detector": MTCNN_VERSION, "retries": retries, "retries_skip_glared": True,
                         "box_regressor": regressor, "glare_share": GLARE_SHARE}, sort_keys=True)
    return hashlib.sha1(config.encode()).hexdigest()[:12]


class DetectionCache:
    """Append-only JSON-lines file of content key → chosen face, one file per pipeline config."""

    def __init__(self, cache_dir: Path, pipeline: FacePipeline) -> None:
        self.path = Path(cache_dir) / "detections" / f"{pipeline_key(pipeline)}.jsonl"
        self.entries: dict[str, DetectedFace] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    points = row.get("landmarks")
                    landmarks = tuple((float(x), float(y)) for x, y in points) if points else None
                    self.entries[row["key"]] = DetectedFace(tuple(row["box"]), row["score"], row["path"], landmarks)
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by an interrupted run: detect that image again

    def add(self, key: str, face: DetectedFace) -> None:
        self.entries[key] = face
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps({"key": key, **dataclasses.asdict(face)}) + "\n")


def face_crops(
    paths: Sequence[Path],
    pipeline: FacePipeline,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    batch_size: int = 32,
    progress: bool = True,
    keys: Sequence[str] | None = None,
) -> tuple[torch.Tensor, list[DetectedFace]]:
    """uint8 crops N×3×160×160 of each image's subject (core.faces.subject), and the face each came from.
    `keys` are the files' content keys when the caller already has them."""
    cache = DetectionCache(cache_dir, pipeline)
    keys = list(keys) if keys is not None else [content_key(p) for p in paths]
    todo = [i for i, k in enumerate(keys) if k not in cache.entries]
    for start in tqdm(range(0, len(todo), batch_size), desc="detect", disable=not progress or not todo):
        chunk = todo[start : start + batch_size]
        images = [load_image(paths[i]) for i in chunk]
        for i, img, faces in zip(chunk, images, pipeline.detect_batch(images)):
            if faces:
                cache.add(keys[i], subject(faces, img.size, str(paths[i])))
    faces, crops = [], []
    for path, key in tqdm(list(zip(paths, keys)), desc="crop", disable=not progress):
        face = cache.entries.get(key)
        img = load_image(path)
        if face is None:  # nothing detected and no fallback box: the naive whole-image crop
            face = DetectedFace((0.0, 0.0, float(img.size[0]), float(img.size[1])), None, "whole-image")
        crops.append(pipeline.crop(img, face.box))
        faces.append(face)
    return torch.stack(crops) if crops else torch.zeros(0, 3, CROP_SIZE, CROP_SIZE, dtype=torch.uint8), faces
