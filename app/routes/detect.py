"""Detection only: faces, landmarks and quality, without the gallery (it works while the
gallery is read-only, or made with another model)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, UploadFile

from app.deps import EngineDep, SettingsDep, TrailDep, require_api_key
from app.http.upload_limit import read_limited
from app.schemas import DetectResponse
from app.statuses import responses
from app.usecases.detect import detect as detect_faces

router = APIRouter(tags=["detect"], dependencies=[Depends(require_api_key)])


@router.post("/detect", response_model=DetectResponse, summary="Every face in a photo: box, landmarks, quality",
             responses=responses(400, 401, 404, 413, 415, 422, 503))
async def detect(
    engine: EngineDep,
    settings: SettingsDep,
    trail: TrailDep,
    image: Annotated[UploadFile, File(description="a photo")],
    max_faces: Annotated[int | None, Form(ge=1, le=100)] = None,
    crops: Annotated[bool, Form(description="also answer each face's 160×160 crop (base64 PNG)")] = False,
) -> DetectResponse:
    source = image.filename or "image"
    data = await read_limited(image, settings.max_upload_bytes)
    return await detect_faces(engine, data, source, max_faces or settings.max_faces, crops, trail)
