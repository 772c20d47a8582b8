"""Enrolment and the persons resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, UploadFile

from app.deps import EngineDep, GalleryDep, SettingsDep, require_api_key
from app.errors import PersonNotFound
from app.gallery.store import NewFace, Person
from app.routes.uploads import read_limited
from app.schemas import PERSON_ID_PATTERN, EnrollResponse, PersonPublic, PersonsPage

router = APIRouter(tags=["persons"], dependencies=[Depends(require_api_key)])


def public(person: Person) -> PersonPublic:
    return PersonPublic(person_id=person.person_id, name=person.name, n_faces=person.n_faces, created_at=person.created_at)


@router.post("/enroll", response_model=EnrollResponse, summary="Add one or more photos of a person")
async def enroll(
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    person_id: Annotated[str, Form(pattern=PERSON_ID_PATTERN, description="your id for the person")],
    images: Annotated[list[UploadFile], File(description="photos showing exactly one face each")],
    name: Annotated[str | None, Form(max_length=256)] = None,
) -> EnrollResponse:
    if len(images) > settings.max_images_per_enroll:
        raise HTTPException(413, f"at most {settings.max_images_per_enroll} images per enrolment")
    gallery.check_usable()
    # Every image must pass before anything is stored: an enrolment is all or nothing.
    crops, sources = [], []
    for upload in images:
        source = upload.filename or "image"
        data = await read_limited(upload, settings.max_upload_bytes)
        crops.append(await engine.enrolment_face(data, source))
        sources.append(source)
    vectors = await engine.embed([c.crop for c in crops])
    new = [NewFace(source, vector, crop.png()) for source, vector, crop in zip(sources, vectors, crops)]
    person, added, created = gallery.enroll(person_id, name, new)
    return EnrollResponse(person=public(person), faces_added=added, created=created)


@router.get("/persons", response_model=PersonsPage, summary="List enrolled persons")
async def list_persons(
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PersonsPage:
    persons, total = gallery.store.list_persons(offset, limit)
    return PersonsPage(items=[public(p) for p in persons], total=total, offset=offset, limit=limit)


@router.get("/persons/{person_id}", response_model=PersonPublic)
async def get_person(gallery: GalleryDep, person_id: str) -> PersonPublic:
    person = gallery.store.get_person(person_id)
    if person is None:
        raise PersonNotFound(person_id)
    return public(person)


@router.delete("/persons/{person_id}", status_code=204, summary="Delete a person and all their faces")
async def delete_person(gallery: GalleryDep, person_id: str) -> None:
    if not gallery.delete(person_id):
        raise PersonNotFound(person_id)
