"""Enrolment and the persons resource: parse, call the use case (app/usecases/enrol.py,
app/usecases/persons.py), answer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Path, Query, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.deps import EngineDep, GalleryDep, SettingsDep, TrailDep, require_api_key
from app.http.upload_limit import read_limited
from app.schemas import BOX_PATTERN, PERSON_ID_PATTERN, EnrollResponse, ErasureReceipt, FacesPage, PersonPublic, PersonsPage
from app.statuses import responses
from app.usecases import persons
from app.usecases.enrol import Box, enrol

router = APIRouter(tags=["persons"], dependencies=[Depends(require_api_key)])
MAX_OFFSET = 2**63 - 1  # SQLite's largest integer
CROP_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "the 160×160 face crop the embedding was made from"}}


@dataclass(frozen=True)
class Upload:
    """An uploaded photo, read with the size limit when the use case asks for it."""

    file: UploadFile
    limit: int

    @property
    def name(self) -> str:
        return self.file.filename or "image"

    async def read(self) -> bytes:
        return await read_limited(self.file, self.limit)


def parse_box(box: str | None) -> Box | None:
    if box is None:
        return None
    x1, y1, x2, y2 = (float(v) for v in box.split(","))
    return x1, y1, x2, y2


@router.post("/enroll", response_model=EnrollResponse, summary="Add one or more photos of a person",
             responses=responses(400, 401, 404, 409, 413, 415, 422, 503, 507))
async def enroll(
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    trail: TrailDep,
    person_id: Annotated[str, Form(pattern=PERSON_ID_PATTERN, description="your id for the person")],
    images: Annotated[list[UploadFile], File(min_length=1, description="photos of the person; in each, the dominant face is enrolled")],
    name: Annotated[str | None, Form(max_length=256)] = None,
    box: Annotated[str | None, Form(pattern=BOX_PATTERN, description="x1,y1,x2,y2 of the face to enrol, when a photo shows "
                                    "several faces of comparable size (one image only)")] = None,
    confirm_copy: Annotated[bool, Form(description="enrol a photo even though it is a copy of one enrolled for another person")] = False,
    consent: Annotated[str | None, Form(min_length=1, max_length=256, description="a reference to the person's consent (free text or an id), "
                                        "kept with the person and in the audit log")] = None,
) -> EnrollResponse:
    photos = [Upload(image, settings.max_upload_bytes) for image in images]
    return await enrol(engine, gallery, settings, person_id, name, photos, parse_box(box), confirm_copy, consent, trail)


@router.get("/persons", response_model=PersonsPage, summary="List enrolled persons", responses=responses(401, 404, 422))
async def list_persons(
    gallery: GalleryDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    q: Annotated[str | None, Query(max_length=256, description="only persons whose id or name contains this (ASCII letters in any case)")] = None,
) -> PersonsPage:
    return await run_in_threadpool(persons.list_persons, gallery, offset, limit, q)


@router.get("/persons/{person_id}", response_model=PersonPublic, summary="One enrolled person", responses=responses(401, 404, 422))
async def get_person(gallery: GalleryDep, person_id: str) -> PersonPublic:
    return await run_in_threadpool(persons.get_person, gallery, person_id)


@router.get("/persons/{person_id}/faces", response_model=FacesPage, summary="A person's stored faces, oldest first",
            responses=responses(401, 404, 422))
async def list_faces(
    gallery: GalleryDep,
    person_id: str,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FacesPage:
    return await run_in_threadpool(persons.list_faces, gallery, person_id, offset, limit)


@router.get("/persons/{person_id}/faces/{face_id}/crop", response_class=Response, summary="A stored face's aligned crop (PNG)",
            responses={**CROP_PNG, **responses(401, 404, 422)})
async def face_crop(gallery: GalleryDep, person_id: str, face_id: Annotated[int, Path(ge=1, le=MAX_OFFSET)]) -> Response:
    png = await run_in_threadpool(persons.face_crop, gallery, person_id, face_id)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.delete("/persons/{person_id}", response_model=ErasureReceipt, summary="Delete a person and every trace of them; the receipt",
               responses=responses(401, 404, 422, 503, 507))
async def delete_person(gallery: GalleryDep, trail: TrailDep, person_id: str) -> ErasureReceipt:
    return await run_in_threadpool(persons.delete_person, gallery, person_id, trail)
