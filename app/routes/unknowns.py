"""The unknown-faces log (FACEID_UNKNOWNS): parse, call the use case (app/usecases/unknowns.py), answer."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from app.deps import GalleryDep, SettingsDep, TrailDep, require_api_key
from app.schemas import PERSON_ID_PATTERN, EnrollResponse, UnknownsPage
from app.statuses import responses
from app.usecases import unknowns as use

router = APIRouter(tags=["unknowns"], dependencies=[Depends(require_api_key)])
MAX_ID = 2**63 - 1
CROP_PNG: dict[int | str, dict[str, Any]] = {200: {"content": {"image/png": {}}, "description": "the unknown face's 160×160 crop"}}


@router.get("/unknowns", response_model=UnknownsPage, summary="Faces answered as unknown, grouped: one person per cluster as far as can be told",
            responses=responses(401, 404, 422, 503))
async def list_unknowns(gallery: GalleryDep, settings: SettingsDep, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
                        limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> UnknownsPage:
    return await run_in_threadpool(use.list_clusters, gallery, settings, offset, limit)


@router.get("/unknowns/faces/{unknown_id}/crop", response_class=Response, summary="An unknown face's crop (PNG)",
            responses={**CROP_PNG, **responses(401, 404, 422)})
async def unknown_crop(gallery: GalleryDep, settings: SettingsDep, unknown_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    png = await run_in_threadpool(use.unknown_crop, gallery, settings, unknown_id)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.post("/unknowns/{cluster}/enroll", response_model=EnrollResponse, summary="Enrol a cluster as a person: its best faces as references",
             responses=responses(401, 404, 422, 503, 507))
async def enroll_cluster(
    gallery: GalleryDep,
    settings: SettingsDep,
    trail: TrailDep,
    cluster: Annotated[int, Path(ge=1, le=MAX_ID)],
    person_id: Annotated[str, Form(pattern=PERSON_ID_PATTERN)],
    name: Annotated[str | None, Form(max_length=256)] = None,
    consent: Annotated[str | None, Form(min_length=1, max_length=256)] = None,
) -> EnrollResponse:
    return await run_in_threadpool(use.enrol_cluster, gallery, settings, cluster, person_id, name, consent, trail)


@router.delete("/unknowns/{cluster}", status_code=204, summary="Discard a cluster's faces", responses=responses(401, 404, 422, 503))
async def discard_cluster(gallery: GalleryDep, settings: SettingsDep, trail: TrailDep, cluster: Annotated[int, Path(ge=1, le=MAX_ID)]) -> None:
    await run_in_threadpool(use.discard_cluster, gallery, settings, cluster, trail)
