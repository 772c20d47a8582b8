"""1:1 verification: parse, call the use case (app/usecases/verify.py), answer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from app.deps import EngineDep, GalleryDep, SettingsDep, TrailDep, require_api_key
from app.routes.persons import Upload
from app.schemas import PERSON_ID_PATTERN, VerifyResponse
from app.statuses import responses
from app.usecases.verify import verify as verify_pair

router = APIRouter(tags=["verify"], dependencies=[Depends(require_api_key)])


@router.post("/verify", response_model=VerifyResponse, summary="Are two photos, or a photo and an enrolled person, one person?",
             responses=responses(400, 401, 404, 413, 415, 422, 503))
async def verify(
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    trail: TrailDep,
    image: Annotated[UploadFile, File(description="a photo; its subject (the large face nearest the centre) is verified")],
    image2: Annotated[UploadFile | None, File(description="a second photo; or send person_id instead")] = None,
    person_id: Annotated[str | None, Form(pattern=PERSON_ID_PATTERN, description="an enrolled person; or send image2 instead")] = None,
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0, description="the cosine from which faces are one person "
                                            "(default: the model's 1:1 threshold)")] = None,
) -> VerifyResponse:
    limit = settings.max_upload_bytes
    second = Upload(image2, limit) if image2 is not None else None
    return await verify_pair(engine, gallery, settings, Upload(image, limit), second, person_id, threshold, trail)
