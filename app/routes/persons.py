"""Enrolment and the persons resource."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.deps import EngineDep, GalleryDep, SettingsDep, require_api_key
from app.engine import Seen
from app.errors import BadRequestField, CopyOfAnotherPerson, FaceNotFound, PersonNotFound, TooManyUploads, responses
from app.gallery.gallery import Gallery
from app.gallery.store import NewFace, Person, PhotoRecord
from app.routes.uploads import read_limited
from app.schemas import (
    BOX_PATTERN,
    PERSON_ID_PATTERN,
    EnrolledFace,
    EnrollResponse,
    FacePublic,
    FacesPage,
    PersonPublic,
    PersonsPage,
    PhotoMatch,
    rounded_box,
)
from core.faces.geometry import OVERLAPS_FACE_IOU, iou
from core.faces.pipeline import Face
from core.faces.subject import reference

router = APIRouter(tags=["persons"], dependencies=[Depends(require_api_key)])
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer
CROP_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "the 160×160 face crop the embedding was made from"}}


def public(person: Person) -> PersonPublic:
    return PersonPublic(person_id=person.person_id, name=person.name, n_faces=person.n_faces, created_at=person.created_at)


@router.post("/enroll", response_model=EnrollResponse, summary="Add one or more photos of a person",
             responses=responses(400, 401, 409, 413, 415, 422, 503, 507))
async def enroll(
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    person_id: Annotated[str, Form(pattern=PERSON_ID_PATTERN, description="your id for the person")],
    images: Annotated[list[UploadFile], File(min_length=1, description="photos of the person; in each, the dominant face is enrolled")],
    name: Annotated[str | None, Form(max_length=256)] = None,
    box: Annotated[str | None, Form(pattern=BOX_PATTERN, description="x1,y1,x2,y2 of the face to enrol, when a photo shows "
                                    "several faces of comparable size (one image only)")] = None,
    confirm_copy: Annotated[bool, Form(description="enrol a photo even though it is a copy of one enrolled for another person")] = False,
) -> EnrollResponse:
    if len(images) > settings.max_images_per_enroll:
        raise TooManyUploads(len(images), settings.max_images_per_enroll)
    if box is not None and len(images) != 1:
        raise BadRequestField(f"box: names a face in one photo, but {len(images)} were sent; enrol them one at a time")
    await run_in_threadpool(gallery.check_usable)
    chosen_box = [float(v) for v in box.split(",")] if box else None
    # Every image must pass before anything is stored: an enrolment is all or nothing.
    chosen: list[tuple[str, Face, list[Face], PhotoRecord, PhotoMatch | None]] = []
    for upload in images:
        source = upload.filename or "image"
        seen = await engine.see(await read_limited(upload, settings.max_upload_bytes), source)
        face = reference(seen.faces, source, chosen_box)
        record = seen.photo_record(face)
        copy = await run_in_threadpool(copy_of, gallery, seen, record, person_id, settings.photo_threshold) if settings.photo_evidence else None
        if copy is not None and copy.person_id != person_id and not confirm_copy:
            raise CopyOfAnotherPerson(source, copy, person_id)
        chosen.append((source, face, [f for f in seen.faces if f is not face], record, copy))
    vectors = await engine.embed([face.crop for _, face, _, _, _ in chosen])
    new = [NewFace(source, vector, face.png(), record) for (source, face, _, record, _), vector in zip(chosen, vectors)]
    person, added, created = await run_in_threadpool(gallery.enroll, person_id, name, new)
    return EnrollResponse(
        person=public(person), faces_added=added, created=created,
        faces=[EnrolledFace(source=s, box=rounded_box(f.box), ignored=[rounded_box(o.box) for o in ignored], copy_of=copy)
               for s, f, ignored, _, copy in chosen],
    )


def copy_of(gallery: Gallery, seen: Seen, record: PhotoRecord, person_id: str, threshold: float) -> PhotoMatch | None:
    """The enrolled photo this one is a copy of, at the same face (the same photo enrolled for its
    other person is not one), or None: one of `person_id`'s own where there is one (a photo
    confirmed for two people is no conflict for either), else the most similar."""
    copies = [c for c in gallery.search_photos(seen.thumb, seen.descriptor) if c.similarity >= threshold and iou(c.box, record.box) >= OVERLAPS_FACE_IOU]
    if not copies:
        return None
    best = next((c for c in copies if c.person_id == person_id), copies[0])
    return PhotoMatch(person_id=best.person_id, name=best.name, photo=best.source, similarity=round(best.similarity, 6))


@router.get("/persons", response_model=PersonsPage, summary="List enrolled persons", responses=responses(401, 422))
async def list_persons(
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    q: Annotated[str | None, Query(max_length=256, description="only persons whose id or name contains this (ASCII letters in any case)")] = None,
) -> PersonsPage:
    persons, total = await run_in_threadpool(gallery.store.list_persons, offset, limit, q)
    return PersonsPage(items=[public(p) for p in persons], total=total, offset=offset, limit=limit)


@router.get("/persons/{person_id}", response_model=PersonPublic, summary="One enrolled person", responses=responses(401, 404))
async def get_person(gallery: GalleryDep, person_id: str) -> PersonPublic:
    person = await run_in_threadpool(gallery.store.get_person, person_id)
    if person is None:
        raise PersonNotFound(person_id)
    return public(person)


@router.get("/persons/{person_id}/faces", response_model=FacesPage, summary="A person's stored faces, oldest first",
            responses=responses(401, 404, 422))
async def list_faces(
    gallery: GalleryDep,
    person_id: str,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FacesPage:
    page = await run_in_threadpool(gallery.store.faces_of, person_id, offset, limit)
    if page is None:
        raise PersonNotFound(person_id)
    rows, total = page
    items = [FacePublic(face_id=r.face_id, source=r.source, model_id=r.model_id, created_at=r.created_at, has_crop=r.has_crop,
                        photo_evidence=r.has_photo) for r in rows]
    return FacesPage(person_id=person_id, items=items, total=total, offset=offset, limit=limit)


@router.get("/persons/{person_id}/faces/{face_id}/crop", response_class=Response, summary="A stored face's aligned crop (PNG)",
            responses={**CROP_PNG, **responses(401, 404, 422)})
async def face_crop(gallery: GalleryDep, person_id: str, face_id: Annotated[int, Path(ge=1, le=MAX_OFFSET)]) -> Response:
    found, png = await run_in_threadpool(gallery.store.crop_of, person_id, face_id)
    if not found:
        raise FaceNotFound(person_id, face_id)
    if png is None:
        raise FaceNotFound(person_id, face_id, "was stored without its crop")
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.delete("/persons/{person_id}", status_code=204, summary="Delete a person and all their faces",
               responses=responses(401, 404, 503, 507))
async def delete_person(gallery: GalleryDep, person_id: str) -> None:
    if not await run_in_threadpool(gallery.delete, person_id):
        raise PersonNotFound(person_id)
