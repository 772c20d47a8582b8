"""Identification: who is in this photo (or behind this embedding)?"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.deps import EngineDep, GalleryDep, SettingsDep, require_api_key
from app.errors import responses
from app.evidence import answer, face_matches
from app.routes.uploads import read_limited
from app.schemas import (
    EmbeddingQuery,
    EmbeddingResult,
    IdentifyResponse,
)
from core.errors import NoFaceFound

router = APIRouter(tags=["identify"], dependencies=[Depends(require_api_key)])


@router.post("/identify", response_model=IdentifyResponse, summary="Identify every face in a photo",
             responses=responses(400, 401, 413, 415, 422, 503))
async def identify(
    engine: EngineDep,
    gallery: GalleryDep,
    settings: SettingsDep,
    response: Response,
    image: Annotated[UploadFile, File(description="a photo")],
    top_k: Annotated[int | None, Form(ge=1, le=100)] = None,
    threshold: Annotated[float | None, Form(ge=-1.0, le=1.0)] = None,
    max_faces: Annotated[int | None, Form(ge=1, le=100)] = None,
) -> IdentifyResponse:
    source = image.filename or "image"
    data = await read_limited(image, settings.max_upload_bytes)
    k = top_k or settings.top_k
    started = time.perf_counter()
    photos = gallery.search_photos if settings.photo_evidence else None
    identified = await engine.identify(data, source, max_faces or settings.max_faces, lambda v: gallery.search(v, k),
                                       gallery.check_usable, photos)
    # The face work's share of the answer (decode, detect, embed, search, and its wait for a worker):
    # what benchmarks subtract from a client's time to see what the HTTP path costs.
    response.headers["Server-Timing"] = f"faces;dur={1000 * (time.perf_counter() - started):.1f}"
    thr = settings.answer_threshold() if threshold is None else threshold
    results = answer(identified.faces, identified.found, identified.photo_size, identified.photos, thr, settings.photo_threshold)
    if not results:
        raise NoFaceFound(source, "no face found")
    return IdentifyResponse(faces=results, threshold=thr, photo_threshold=settings.photo_threshold if photos else None,
                            model_id=gallery.model_id)


@router.post("/identify/embedding", response_model=EmbeddingResult, summary="Identify a precomputed 512-d embedding",
             responses=responses(400, 401, 413, 422, 503))
async def identify_embedding(gallery: GalleryDep, settings: SettingsDep, query: EmbeddingQuery) -> EmbeddingResult:
    thr = settings.answer_threshold() if query.threshold is None else query.threshold
    (candidates,) = await run_in_threadpool(gallery.search, query.unit_vector()[None], query.top_k or settings.top_k)
    match, cands = face_matches(candidates, thr)
    return EmbeddingResult(match=match, candidates=cands, threshold=thr, model_id=gallery.model_id)
