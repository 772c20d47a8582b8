"""Identification routes: parse, call the use case (app/usecases/identify.py), answer."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.deps import EngineDep, GalleryDep, SettingsDep, TrailDep, require_api_key
from app.http.upload_limit import read_limited
from app.schemas import EmbeddingQuery, EmbeddingResult, IdentifyResponse
from app.statuses import responses
from app.usecases import identify as identification
from app.usecases.identify import Options

router = APIRouter(tags=["identify"], dependencies=[Depends(require_api_key)])


@router.post("/identify", response_model=IdentifyResponse, summary="Identify every face in a photo",
             responses=responses(400, 401, 404, 413, 415, 422, 503))
async def identify(
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    trail: TrailDep,
    response: Response,
    image: Annotated[UploadFile, File(description="a photo")],
    top_k: Annotated[int | None, Form(ge=1, le=100)] = None,
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
    max_faces: Annotated[int | None, Form(ge=1, le=100)] = None,
) -> IdentifyResponse:
    source = image.filename or "image"
    data = await read_limited(image, settings.max_upload_bytes)
    started = time.perf_counter()
    answer = await identification.identify_photo(engine, gallery, settings, data, source, Options(top_k, threshold, max_faces), trail)
    # The face work's share of the answer (decode, detect, embed, search, and its wait for a worker):
    # what benchmarks subtract from a client's time to see what the HTTP path costs.
    response.headers["Server-Timing"] = f"faces;dur={1000 * (time.perf_counter() - started):.1f}"
    return answer


@router.post("/identify/embedding", response_model=EmbeddingResult, summary="Identify a precomputed 512-d embedding",
             responses=responses(400, 401, 404, 413, 422, 503))
async def identify_embedding(gallery: GalleryDep, settings: SettingsDep, trail: TrailDep, query: EmbeddingQuery) -> EmbeddingResult:
    return await run_in_threadpool(identification.identify_embedding, gallery, settings, query.unit_vector(), Options(query.top_k, query.threshold),
                                   trail)
