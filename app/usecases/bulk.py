"""Bulk gallery work from the command line: import a folder, re-embed with a new model.

An imported photo passes exactly `/enroll`'s rules (enrol.py's `choose`): the subject's face,
refused when blown out, black or one of several comparable faces, and refused when it copies a
photo enrolled for another person (also one earlier in the same batch) unless copies are
confirmed. Photos are detected and embedded in batches, one transaction per batch.
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
from app.errors import CopyOfAnotherPerson
from app.gallery.audit import COMMAND_LINE
from app.gallery.collections import DEFAULT
from app.gallery.gallery import Gallery, Lookup
from app.gallery.records import AuditEvent, PhotoRecord
from app.gallery.store import Store
from app.usecases.enrol import Chosen, choose, photo_record
from core.data.dataset import Sample, scan
from core.errors import FaceIdError
from core.faces.subject import reference
from core.images import read_file
from core.photos.descriptor import thumbnail


@dataclass
class ImportResult:
    added: int = 0
    skipped: int = 0  # already in the gallery
    described: int = 0  # faces stored before photo evidence, given it from their photos here
    refused: list[str] = field(default_factory=list)  # one "<file>: <reason>" per photo


def import_folder(engine: Engine, gallery: Gallery, settings: Settings, root: Path, batch: int = 32, confirm_copies: bool = False,
                  collection: str = DEFAULT) -> ImportResult:
    """Enrol each person's clean photos; photos already stored for that person are skipped,
    so an interrupted import resumes where it stopped. Faces stored before photo evidence
    existed get it from their photo in the folder (same person, same file name), which a
    gallery made earlier can only get this way."""
    gallery.check_usable()
    clean = [s for s in scan(root) if s.is_clean]
    todo = [s for s in clean if not gallery.store.has_source(s.identity, s.path.name)]
    result = ImportResult(skipped=len(clean) - len(todo))
    for start in tqdm(range(0, len(todo), batch), desc="import"):
        result.added += _import_batch(engine, gallery, settings, todo[start : start + batch], confirm_copies, result.refused, collection)
    by_source = {(s.identity, s.path.name): s for s in clean}
    missing = [(face_id, by_source[(p, source)]) for face_id, p, source in gallery.store.faces_without_photos() if (p, source) in by_source]
    for start in tqdm(range(0, len(missing), batch), desc="describe", disable=not missing):
        result.described += _describe_batch(engine, gallery, missing[start : start + batch], result.refused, collection)
    return result


def _seen(engine: Engine, samples: list[Sample], refused: list[str]) -> list[tuple[Sample, Seen]]:
    """Each readable photo's faces, thumbnail and size; same-sized photos share detection passes."""
    decoded = []
    for sample in samples:
        try:
            decoded.append((sample, engine.decode(read_file(sample.path), str(sample.path))))
        except FaceIdError as exc:
            refused.append(str(exc))
    found = engine.detect([photo for _, photo in decoded])
    return [(sample, Seen(faces, thumbnail(photo.image), photo.original_size)) for (sample, photo), faces in zip(decoded, found)]


def _import_batch(engine: Engine, gallery: Gallery, settings: Settings, samples: list[Sample], confirm_copies: bool, refused: list[str],
                  collection: str) -> int:
    lookup: Lookup = gallery.lookup()
    chosen: list[Chosen] = []
    for sample, seen in _seen(engine, samples, refused):
        try:
            chosen.append(choose(seen, str(sample.path), sample.identity, lookup, settings, confirm_copy=confirm_copies,
                                 stored_as=sample.path.name, pending=chosen))
        except (FaceIdError, CopyOfAnotherPerson) as exc:
            refused.append(str(exc))
    if not chosen:
        return 0
    vectors = engine.embed([c.face.crop for c in chosen])
    audit = AuditEvent("enrol", collection, COMMAND_LINE, tuple(sorted({c.person_id for c in chosen})),
                       detail=f"faceid gallery import: faces {len(chosen)}")
    return gallery.enroll_many([(c.person_id, None, [c.new_face(v)]) for c, v in zip(chosen, vectors)], audit)


def _describe_batch(engine: Engine, gallery: Gallery, faces: list[tuple[int, Sample]], refused: list[str], collection: str) -> int:
    face_of = {id(sample): face_id for face_id, sample in faces}
    updates: list[tuple[int, PhotoRecord]] = []
    for sample, seen in _seen(engine, [s for _, s in faces], refused):
        try:
            updates.append((face_of[id(sample)], photo_record(seen, reference(seen.faces, str(sample.path)))))
        except FaceIdError as exc:
            refused.append(str(exc))
    if updates:
        persons = tuple(sorted({s.identity for _, s in faces}))
        gallery.set_photos(updates, AuditEvent("describe", collection, COMMAND_LINE, persons, detail=f"photo evidence for faces {len(updates)}"))
    return len(updates)


def reembed(engine: Engine, store: Store, collection: str = DEFAULT) -> int:
    """Recompute every stored embedding from its stored face crop with the engine's model."""
    stored = store.crops()
    rows = [(face_id, png) for face_id, png in stored if png is not None]
    if len(rows) < len(stored):
        raise FaceIdError(store.location, "some faces have no stored crop; re-enrol them from their photos")
    updates = []
    for start in tqdm(range(0, len(rows), 256), desc="re-embed"):
        chunk = rows[start : start + 256]
        crops = torch.stack([torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB"))).permute(2, 0, 1) for _, png in chunk])
        updates += list(zip([i for i, _ in chunk], engine.embed(crops)))
    with store.write() as w:
        w.replace_embeddings(updates, engine.model_id)
        w.audit(AuditEvent("reembed", collection, COMMAND_LINE, detail=f"faces {len(updates)} with {engine.model_id}"))
    return len(updates)
