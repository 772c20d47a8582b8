"""The persons resource: reading who is enrolled, and deleting a person with all their faces."""

from __future__ import annotations

from app.errors import FaceNotFound, PersonNotFound
from app.gallery.gallery import Gallery
from app.gallery.records import Person
from app.http.audit import Trail
from app.schemas import ErasureReceipt, FacePublic, FacesPage, PersonPublic, PersonsPage

# The figures are the shipped model's on real photos of people never trained on, the same queries
# with one and two photos enrolled (docs/results.md, "A second photo"): measure again with a new model.
ONE_PHOTO = ("this person has one photo enrolled; enrol a second, different photo of them (another day, another camera): "
             "their other photos are then named correctly far more often (on real photos, 86% of them with two "
             "photos enrolled against 65% with one)")


def advice_for(person: Person) -> str | None:
    return ONE_PHOTO if person.n_faces == 1 else None


def public(person: Person) -> PersonPublic:
    return PersonPublic(person_id=person.person_id, name=person.name, n_faces=person.n_faces, created_at=person.created_at,
                        consent=person.consent)


def list_persons(gallery: Gallery, offset: int, limit: int, containing: str | None) -> PersonsPage:
    persons, total = gallery.store.list_persons(offset, limit, containing)
    return PersonsPage(items=[public(p) for p in persons], total=total, offset=offset, limit=limit)


def get_person(gallery: Gallery, person_id: str) -> PersonPublic:
    person = gallery.store.get_person(person_id)
    if person is None:
        raise PersonNotFound(person_id)
    return public(person)


def list_faces(gallery: Gallery, person_id: str, offset: int, limit: int) -> FacesPage:
    page = gallery.store.faces_of(person_id, offset, limit)
    if page is None:
        raise PersonNotFound(person_id)
    rows, total = page
    items = [FacePublic(face_id=r.face_id, source=r.source, model_id=r.model_id, created_at=r.created_at, has_crop=r.has_crop,
                        photo_evidence=r.has_photo) for r in rows]
    return FacesPage(person_id=person_id, items=items, total=total, offset=offset, limit=limit)


def face_crop(gallery: Gallery, person_id: str, face_id: int) -> bytes:
    """The stored 160×160 crop (PNG) the face's embedding was made from."""
    found, png = gallery.store.crop_of(person_id, face_id)
    if not found:
        raise FaceNotFound(person_id, face_id)
    if png is None:
        raise FaceNotFound(person_id, face_id, "was stored without its crop")
    return png


def delete_person(gallery: Gallery, person_id: str, trail: Trail | None = None) -> ErasureReceipt:
    """The person and every trace of them (gallery.py's `delete`), with the audit event; the receipt."""
    erasure = gallery.delete(person_id, trail.event() if trail is not None else None)
    if erasure is None:
        raise PersonNotFound(person_id)
    if trail is not None:
        trail.recorded = True
    return ErasureReceipt(person_id=erasure.person_id, erased_at=erasure.at, faces=erasure.faces, crops=erasure.crops, photos=erasure.photos,
                          unknowns=erasure.unknowns,
                          index_entries=erasure.index_entries, snapshot_removed=erasure.snapshot_removed, store=erasure.store)
