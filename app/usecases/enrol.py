"""Enrolment: the rules a photo passes before its face joins a person, the same for `/enroll`
(and so the console) and for `faceid gallery import`.

- In each photo the subject is enrolled: the dominant face, or the one `box` names when
  several are of comparable size (core/faces/subject.py); a blown-out or black face is refused.
- A photo that is a copy of a photo enrolled for another person is refused (409) unless the
  copy is confirmed: a mislabel, most likely. A copy is photo evidence at the same face; one of
  the person's own photos enrolled again is no conflict.
- An enrolment is all or nothing: every photo passes before any face is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.engine import Engine, Seen
from app.errors import BadRequestField, CopyOfAnotherPerson, TooManyUploads
from app.gallery.gallery import Gallery, Lookup, PhotoCandidate
from app.gallery.records import NewFace, PhotoRecord
from app.http.audit import Trail
from app.schemas import EnrolledFace, EnrollResponse, PhotoMatch, rounded_box
from app.usecases.evidence import photo_match
from app.usecases.persons import advice_for, public
from app.usecases.unknowns import seen_before
from core.faces.geometry import OVERLAPS_FACE_IOU, fractions_of, iou
from core.faces.pipeline import Face
from core.faces.subject import reference
from core.photos.descriptor import Descriptor, describe, projected, rerank

Box = tuple[float, float, float, float]


class Photo(Protocol):
    """An enrolment photo as the use case reads it (an upload, a file)."""

    @property
    def name(self) -> str: ...

    async def read(self) -> bytes: ...


@dataclass(frozen=True)
class Chosen:
    """A photo that passed: the face to enrol, the other faces left out, its photo evidence,
    and the enrolled photo it copies, if any (of the same person, or confirmed)."""

    person_id: str
    source: str  # the name stored with the face
    face: Face
    ignored: list[Face]
    record: PhotoRecord
    copy: PhotoMatch | None

    def new_face(self, embedding) -> NewFace:
        return NewFace(self.source, embedding, self.face.png(), self.record)

    def public(self) -> EnrolledFace:
        return EnrolledFace(source=self.source, box=rounded_box(self.face.box), ignored=[rounded_box(o.box) for o in self.ignored],
                            copy_of=self.copy)


def photo_record(seen: Seen, face: Face, descriptor: Descriptor | None = None) -> PhotoRecord:
    """The photo evidence stored with `face`, one of the photo's faces (`descriptor`: the
    thumbnail's, when the caller has made it)."""
    assert seen.thumb is not None, "enrolment sees photos with their thumbnail"
    descriptor = describe(seen.thumb) if descriptor is None else descriptor
    return PhotoRecord(seen.thumb, projected(descriptor[0]), fractions_of(face.box, seen.size))


def copy_of(candidates: list[PhotoCandidate], record: PhotoRecord, person_id: str, threshold: float) -> PhotoMatch | None:
    """The enrolled photo this one is a copy of, at the same face (the same photo enrolled for its
    other person is not one), or None: one of `person_id`'s own where there is one (a photo
    confirmed for two people is no conflict for either), else the most similar."""
    copies = [c for c in candidates if c.similarity >= threshold and iou(c.box, record.box) >= OVERLAPS_FACE_IOU]
    if not copies:
        return None
    best = next((c for c in copies if c.person_id == person_id), copies[0])
    return photo_match(best)


def pending_candidates(record: PhotoRecord, pending: Sequence[Chosen]) -> list[PhotoCandidate]:
    """Photos chosen earlier in the same transaction, as the gallery would answer them once stored."""
    if not pending:
        return []
    scores = rerank(record.thumb, [p.record.thumb for p in pending], [p.record.box for p in pending])
    return [PhotoCandidate(0, p.person_id, None, p.source, p.record.box, float(s)) for p, s in zip(pending, scores)]


def choose(seen: Seen, source: str, person_id: str, lookup: Lookup | None, settings: Settings, box: Sequence[float] | None = None,
           confirm_copy: bool = False, stored_as: str | None = None, pending: Sequence[Chosen] = ()) -> Chosen:
    """The photo's face to enrol for `person_id`, or the error that refuses it (naming `source`).
    `lookup` is the gallery checked for this enrolment (None: photo evidence is off); `pending`
    are photos chosen before this one for the same transaction."""
    face = reference(seen.faces, source, box)
    assert seen.thumb is not None, "enrolment sees photos with their thumbnail"
    descriptor = describe(seen.thumb)  # made once: stored (projected) and searched with
    record = photo_record(seen, face, descriptor)
    copy = None
    if lookup is not None and settings.photo_evidence:
        candidates = sorted(lookup.photos(seen.thumb, descriptor) + pending_candidates(record, pending), key=lambda c: -c.similarity)
        copy = copy_of(candidates, record, person_id, settings.photo_threshold)
    if copy is not None and copy.person_id != person_id and not confirm_copy:
        raise CopyOfAnotherPerson(source, copy, person_id)
    return Chosen(person_id, stored_as or source, face, [f for f in seen.faces if f is not face], record, copy)


def see_and_choose(engine: Engine, data: bytes, source: str, person_id: str, lookup: Lookup, settings: Settings,
                   box: Sequence[float] | None, confirm_copy: bool) -> Chosen:
    """One photo, detected and chosen (blocking: one worker thread)."""
    return choose(engine.see(data, source), source, person_id, lookup, settings, box, confirm_copy)


async def enrol(engine: Engine, gallery: Gallery, settings: Settings, person_id: str, name: str | None, photos: Sequence[Photo],
                box: Box | None = None, confirm_copy: bool = False, consent: str | None = None, trail: Trail | None = None) -> EnrollResponse:
    """Add photos of a person: every photo passes the rules, then all are stored in one
    transaction, with the consent reference if one is given and the audit event."""
    if trail is not None:
        trail.persons = [person_id]
    if len(photos) > settings.max_images_per_enroll:
        raise TooManyUploads(len(photos), settings.max_images_per_enroll)
    if box is not None and len(photos) != 1:
        raise BadRequestField(f"box: names a face in one photo, but {len(photos)} were sent; enrol them one at a time")
    lookup = await run_in_threadpool(gallery.lookup)  # refused before any work if the gallery is not usable
    chosen: list[Chosen] = []
    for photo in photos:
        data = await photo.read()  # one photo's bytes at a time
        chosen.append(await engine.admission.run(photo.name, see_and_choose, engine, data, photo.name, person_id, lookup, settings,
                                                 box, confirm_copy))
    vectors = await run_in_threadpool(engine.embed, [c.face.crop for c in chosen])
    audit = trail.event(detail=f"faces {len(chosen)}" + (" (consent given)" if consent is not None else "")) if trail is not None else None
    person, added, created = await run_in_threadpool(gallery.enroll, person_id, name, [c.new_face(v) for c, v in zip(chosen, vectors)],
                                                     consent, audit)
    if trail is not None:
        trail.recorded = True
    seen = await run_in_threadpool(seen_before, gallery, settings.answer_threshold(), vectors) if settings.unknowns else []
    return EnrollResponse(person=public(person), faces_added=added, created=created, faces=[c.public() for c in chosen],
                          advice=advice_for(person), seen_before_as_unknown=seen)
