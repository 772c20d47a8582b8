"""Export a collection to one file, and import such a file into a collection.

An import keeps what the file holds: persons, their faces and embeddings, photo evidence,
crops, and when each was created (faces get new ids). Embeddings made by another model than
the service's are made again from the exported crops; without crops such a file is refused,
naming both models. An import is not an enrolment: the photos passed enrolment's rules where
they were first enrolled.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from typing import IO

import numpy as np
import torch
from PIL import Image

from app.engine import Engine
from app.errors import ExportOfAnotherModel
from app.gallery.collections import Collection
from app.gallery.gallery import Gallery
from app.gallery.portable import BATCH, ExportedFace, Header, read_export, write_export
from app.gallery.records import AuditEvent, Entry, PersonRow
from app.http.audit import Trail


@dataclass(frozen=True)
class Imported:
    persons: int
    faces: int
    reembedded: int  # faces whose embedding was made again from their crop
    models: dict[str, int]  # the models that made the file's embeddings


def export_collection(collection: Collection, out: IO[bytes], crops: bool, trail: Trail | None = None) -> Header:
    header = write_export(collection.gallery.store, out, collection.name, crops)
    if trail is not None:
        trail.detail = f"persons {header.persons}, faces {header.faces}{', with crops' if crops else ''}"
    return header


def import_file(engine: Engine, gallery: Gallery, stream: IO[bytes], trail: Trail | None = None) -> Imported:
    """Blocking: the whole file, a batch of faces per transaction, each with its audit event
    (the persons it wrote)."""
    header, records = read_export(stream)
    foreign = sorted(m for m in header.models if m != gallery.model_id)
    if foreign and not header.crops:
        raise ExportOfAnotherModel(foreign, gallery.model_id)
    gallery.check_usable()
    persons: dict[str, PersonRow] = {}
    pending: list[ExportedFace] = []
    faces = reembedded = 0
    for record in records:
        if isinstance(record, ExportedFace):
            pending.append(record)
            if len(pending) >= BATCH:
                faces, reembedded = faces + len(pending), reembedded + _store(engine, gallery, persons, pending, trail)
                pending = []
        else:
            persons[record[0]] = record
    faces, reembedded = faces + len(pending), reembedded + _store(engine, gallery, persons, pending, trail)
    faceless: list[Entry] = [(pid, name, []) for pid, name, *_ in persons.values() if gallery.store.get_person(pid) is None]
    if faceless:
        gallery.enroll_many(faceless, _audit(trail, [pid for pid, _, _ in faceless], "persons without faces"), _consents(persons, faceless))
    if trail is not None:
        trail.recorded = True
    return Imported(len(persons), faces, reembedded, header.models)


def _audit(trail: Trail | None, persons: list[str], detail: str) -> AuditEvent | None:
    if trail is None:
        return None
    return replace(trail.event(detail=detail), persons=tuple(sorted(set(persons))))


def _store(engine: Engine, gallery: Gallery, persons: dict[str, PersonRow], batch: list[ExportedFace], trail: Trail | None) -> int:
    """One transaction: the batch's faces, re-embedded where another model made them."""
    if not batch:
        return 0
    again = [i for i, f in enumerate(batch) if f.model_id != gallery.model_id]
    if again:
        missing = [batch[i].face.source for i in again if batch[i].face.crop_png is None]
        if missing:
            raise ExportOfAnotherModel([batch[again[0]].model_id], gallery.model_id)
        crops = torch.stack([_crop(batch[i].face.crop_png) for i in again])
        for i, vector in zip(again, engine.embed(crops)):
            batch[i] = replace(batch[i], face=replace(batch[i].face, embedding=vector))
    by_person: dict[str, Entry] = {}
    for f in batch:
        name = persons[f.person_id][1] if f.person_id in persons else None
        by_person.setdefault(f.person_id, (f.person_id, name, []))[2].append(f.face)
    entries = list(by_person.values())
    gallery.enroll_many(entries, _audit(trail, list(by_person), f"faces {len(batch)}"), _consents(persons, entries))
    return len(again)


def _consents(persons: dict[str, PersonRow], entries: list[Entry]) -> dict[str, str]:
    """The consent references the file holds for these entries' persons."""
    return {pid: consent for pid, *_ in entries if pid in persons and (consent := persons[pid][3]) is not None}


def _crop(png: bytes | None) -> torch.Tensor:
    assert png is not None
    return torch.from_numpy(np.array(Image.open(io.BytesIO(png)).convert("RGB"))).permute(2, 0, 1)
