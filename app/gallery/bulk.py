"""Bulk gallery work from the command line: import a folder, re-embed with a new model.

Both go through the service's own `Engine` and `Gallery`, built from the same settings, so
an imported face is detected, chosen, cropped, embedded and indexed as `/enroll` would.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from app.config import Settings
from app.engine import Engine, Seen
from app.gallery.gallery import Gallery, open_store
from app.gallery.store import Entry, NewFace, PhotoRecord
from core.data.dataset import Sample, scan
from core.errors import FaceIdError
from core.faces.pipeline import Face
from core.faces.subject import reference
from core.images import read_file


@dataclass
class ImportResult:
    added: int = 0
    skipped: int = 0  # already in the gallery
    described: int = 0  # faces stored before photo evidence, given it from their photos here
    refused: list[str] = field(default_factory=list)  # one "<file>: <reason>" per photo


def import_folder(settings: Settings, root: Path, batch: int = 32) -> ImportResult:
    """Enrol each person's clean photos; photos already stored for that person are skipped,
    so an interrupted import resumes where it stopped. One transaction per batch. Faces stored
    before photo evidence existed get it from their photo in the folder (same person, same file
    name), which a gallery made earlier can only get this way."""
    engine = Engine.from_settings(settings)
    gallery = Gallery.from_settings(settings, engine.model_id)
    try:
        gallery.check_usable()
        clean = [s for s in scan(root) if s.is_clean]
        todo = [s for s in clean if not gallery.store.has_source(s.identity, s.path.name)]
        result = ImportResult(skipped=len(clean) - len(todo))
        for start in tqdm(range(0, len(todo), batch), desc="import"):
            result.added += _import_batch(engine, gallery, todo[start : start + batch], result.refused)
        by_source = {(s.identity, s.path.name): s for s in clean}
        missing = [(face_id, by_source[(p, source)]) for face_id, p, source in gallery.store.faces_without_photos() if (p, source) in by_source]
        for start in tqdm(range(0, len(missing), batch), desc="describe", disable=not missing):
            result.described += _describe_batch(engine, gallery, missing[start : start + batch], result.refused)
        return result
    finally:
        gallery.close()


def _references(engine: Engine, samples: list[Sample], refused: list[str]) -> list[tuple[Sample, Face, PhotoRecord]]:
    """Each photo's enrolment face and photo evidence, as /enroll chooses them; refusals noted."""
    decoded = []
    for sample in samples:
        try:
            decoded.append((sample, engine.decode(read_file(sample.path), str(sample.path))))
        except FaceIdError as exc:
            refused.append(str(exc))
    ready = []
    for (sample, photo), faces in zip(decoded, engine.detect_images([img for _, img in decoded])):
        try:
            face = reference(faces, str(sample.path))
        except FaceIdError as exc:
            refused.append(str(exc))
            continue
        ready.append((sample, face, Seen.of(faces, photo.image, photo.original_size).photo_record(face)))
    return ready


def _import_batch(engine: Engine, gallery: Gallery, samples: list[Sample], refused: list[str]) -> int:
    ready = _references(engine, samples, refused)
    if not ready:
        return 0
    vectors = engine.embed_blocking([face.crop for _, face, _ in ready])
    entries: list[Entry] = [(s.identity, None, [NewFace(s.path.name, v, face.png(), record)]) for (s, face, record), v in zip(ready, vectors)]
    return gallery.enroll_many(entries)


def _describe_batch(engine: Engine, gallery: Gallery, faces: list[tuple[int, Sample]], refused: list[str]) -> int:
    face_of = {id(sample): face_id for face_id, sample in faces}
    updates = [(face_of[id(sample)], record) for sample, _, record in _references(engine, [s for _, s in faces], refused)]
    if updates:
        gallery.set_photos(updates)
    return len(updates)


def reembed(settings: Settings) -> int:
    """Recompute every stored embedding from its stored face crop with the configured model."""
    engine = Engine.from_settings(settings)
    store = open_store(settings)
    try:
        stored = store.crops()
        rows = [(face_id, png) for face_id, png in stored if png is not None]
        if len(rows) < len(stored):
            raise FaceIdError(str(settings.data_dir), "some faces have no stored crop; re-enrol them from their photos")
        updates = []
        for start in tqdm(range(0, len(rows), 256), desc="re-embed"):
            chunk = rows[start : start + 256]
            crops = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB"))).permute(2, 0, 1) for _, png in chunk])
            updates += list(zip([i for i, _ in chunk], engine.embed_blocking(crops)))
        store.replace_embeddings(updates, engine.model_id)
        return len(updates)
    finally:
        store.close()
