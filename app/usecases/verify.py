"""1:1 verification: are the subjects of two photos, or of a photo and an enrolled person, one
person?

The subject face of each photo is compared (core/faces/subject.py: the large face nearest the
centre). Face evidence says "same" when the cosine reaches the 1:1 threshold (chosen for pairs,
not for a search among many: see docs/results.md) and neither face is gone to glare or darkness,
as /identify never names such a face by its looks. Photo evidence says "same" when one photo is
a copy of the other (or of one of the person's enrolled photos) at the same face; it decides
where face evidence cannot, as in /identify.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.engine import Engine, Seen
from app.errors import BadRequestField, PersonNotFound
from app.gallery.gallery import Gallery, PhotoCandidate
from app.http.audit import Trail
from app.schemas import PhotoMatch, QualityPublic, VerifiedFace, VerifyResponse, rounded_box
from app.usecases.enrol import Photo
from app.usecases.evidence import photo_match
from app.usecases.persons import public
from core.embedding.templates import template
from core.errors import NoFaceFound
from core.faces.geometry import OVERLAPS_FACE_IOU, fractions_of, iou
from core.faces.pipeline import Face
from core.faces.subject import subject
from core.photos.descriptor import describe, rerank


@dataclass(frozen=True)
class Read:
    """A photo sent, read."""

    name: str
    data: bytes


def subject_of(seen: Seen, source: str) -> Face | None:
    return subject(seen.faces, seen.size, source) if seen.faces else None


def verified(source: str, face: Face | None) -> VerifiedFace:
    if face is None:
        return VerifiedFace(photo=source, box=None, detection_score=None, quality=None)
    return VerifiedFace(photo=source, box=rounded_box(face.box), detection_score=face.score,
                        quality=QualityPublic(score=face.quality.score, reasons=list(face.quality.reasons)))


def same_place(a: Face | None, a_size: tuple[int, int], box: tuple[float, float, float, float]) -> bool:
    """Whether a copy's face (`box`, fractions of its photo) is where this photo's subject is (or
    no subject was found here, so the place itself is the answer)."""
    return a is None or iou(fractions_of(a.box, a_size), box) >= OVERLAPS_FACE_IOU


def two_photos(engine: Engine, settings: Settings, a: Read, b: Read, threshold: float) -> VerifyResponse:
    """Blocking: one worker thread for both photos."""
    photo_evidence = settings.photo_evidence
    seen_a, seen_b = engine.see(a.data, a.name, thumb=photo_evidence), engine.see(b.data, b.name, thumb=photo_evidence)
    face_a, face_b = subject_of(seen_a, a.name), subject_of(seen_b, b.name)
    photo_sim = None
    if photo_evidence and face_b is not None and seen_a.thumb is not None and seen_b.thumb is not None:
        box_b = fractions_of(face_b.box, seen_b.size)
        if same_place(face_a, seen_a.size, box_b):
            photo_sim = float(rerank(seen_a.thumb, [seen_b.thumb], [box_b])[0])
    similarity = None
    if face_a is not None and face_b is not None:
        vectors = engine.embed([face_a.crop, face_b.crop])
        similarity = float(vectors[0] @ vectors[1])
    elif photo_sim is None or photo_sim < settings.photo_threshold:  # nothing left to decide with
        raise NoFaceFound(a.name if face_a is None else b.name, "no face found")
    by_face = similarity is not None and similarity >= threshold and not _gone(face_a) and not _gone(face_b)
    return _answer(settings, engine.model_id, threshold, by_face, similarity, photo_sim, [verified(a.name, face_a), verified(b.name, face_b)])


def against_person(engine: Engine, gallery: Gallery, settings: Settings, a: Read, person_id: str, threshold: float) -> VerifyResponse:
    """Blocking: one worker thread; the gallery checked once."""
    lookup = gallery.lookup()
    found = lookup.person(person_id)
    if found is None:
        raise PersonNotFound(person_id)
    person, enrolled = found
    seen = engine.see(a.data, a.name, thumb=settings.photo_evidence)
    face = subject_of(seen, a.name)
    copy: PhotoCandidate | None = None
    if seen.thumb is not None:
        mine = [c for c in lookup.photos(seen.thumb, describe(seen.thumb)) if c.person_id == person_id and same_place(face, seen.size, c.box)]
        copy = mine[0] if mine else None
    if face is None and (copy is None or copy.similarity < settings.photo_threshold):
        raise NoFaceFound(a.name, "no face found")
    # Their template, as /identify scores them: the best of several faces accepts more of other people (docs/results.md).
    similarity = float(template(enrolled) @ engine.embed([face.crop])[0]) if face is not None and len(enrolled) else None
    by_face = similarity is not None and similarity >= threshold and not _gone(face)
    match: PhotoMatch | None = photo_match(copy) if copy is not None and copy.similarity >= settings.photo_threshold else None
    answer = _answer(settings, engine.model_id, threshold, by_face, similarity, copy.similarity if copy is not None else None, [verified(a.name, face)])
    return answer.model_copy(update={"person": public(person), "photo_match": match})


def _gone(face: Face | None) -> bool:
    return face is not None and bool(face.quality.gone)


def _answer(settings: Settings, model_id: str, threshold: float, by_face: bool, similarity: float | None, photo_sim: float | None,
            faces: list[VerifiedFace]) -> VerifyResponse:
    by_photo = photo_sim is not None and photo_sim >= settings.photo_threshold
    evidence = (["face"] if by_face else []) + (["photo"] if by_photo else [])
    return VerifyResponse(same=bool(evidence), similarity=None if similarity is None else round(similarity, 6), threshold=threshold,
                          evidence=evidence, faces=faces, photo_similarity=None if photo_sim is None else round(photo_sim, 6),
                          photo_threshold=settings.photo_threshold if settings.photo_evidence else None, model_id=model_id)


async def verify(engine: Engine, gallery: Gallery, settings: Settings, a: Photo, b: Photo | None, person_id: str | None,
                 threshold: float | None = None, trail: Trail | None = None) -> VerifyResponse:
    """Two photos, or a photo and an enrolled person: one person?"""
    if (b is None) == (person_id is None):
        raise BadRequestField("send either image2 (a second photo) or person_id (an enrolled person), not both or neither")
    limit = settings.pair_threshold() if threshold is None else threshold
    first = Read(a.name, await a.read())
    if b is not None:
        second = Read(b.name, await b.read())
        answer = await engine.admission.run(first.name, two_photos, engine, settings, first, second, limit)
    else:
        assert person_id is not None
        answer = await engine.admission.run(first.name, against_person, engine, gallery, settings, first, person_id, limit)
    if trail is not None:
        trail.persons = [person_id] if person_id is not None else []
        trail.detail = ("same by " + " and ".join(answer.evidence)) if answer.same else "different"
    return answer
