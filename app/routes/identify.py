"""Identification: who is in this photo (or behind this embedding)?"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from app.deps import EngineDep, GalleryDep, SettingsDep, require_api_key
from app.errors import responses
from app.gallery.gallery import Candidate
from app.routes.uploads import read_limited
from app.schemas import (
    EmbeddingQuery,
    EmbeddingResult,
    FaceResult,
    IdentifyResponse,
    Match,
    QualityPublic,
    rounded_box,
)

router = APIRouter(tags=["identify"], dependencies=[Depends(require_api_key)])


def _answer(candidates: list[Candidate], threshold: float) -> tuple[Match | None, list[Match]]:
    matches = [Match(person_id=c.person_id, name=c.name, similarity=round(c.similarity, 6)) for c in candidates]
    best = matches[0] if matches and matches[0].similarity >= threshold else None
    return best, matches


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
    faces, _, found = await engine.identify(data, source, max_faces or settings.max_faces, lambda v: gallery.search(v, k), gallery.check_usable)
    # The face work's share of the answer (decode, detect, embed, search, and its wait for a worker):
    # what benchmarks subtract from a client's time to see what the HTTP path costs.
    response.headers["Server-Timing"] = f"faces;dur={1000 * (time.perf_counter() - started):.1f}"
    thr = settings.answer_threshold() if threshold is None else threshold
    results = []
    for face, candidates in zip(faces, found):
        match, cands = _answer(candidates, thr)
        quality = QualityPublic(score=face.quality.score, reasons=list(face.quality.reasons))
        results.append(FaceResult(box=rounded_box(face.box), detection_score=face.score, quality=quality,
                                  match=match, candidates=cands))
    return IdentifyResponse(faces=results, threshold=thr, model_id=gallery.model_id)


@router.post("/identify/embedding", response_model=EmbeddingResult, summary="Identify a precomputed 512-d embedding",
             responses=responses(400, 401, 413, 422, 503))
async def identify_embedding(gallery: GalleryDep, settings: SettingsDep, query: EmbeddingQuery) -> EmbeddingResult:
    thr = settings.answer_threshold() if query.threshold is None else query.threshold
    (candidates,) = await run_in_threadpool(gallery.search, query.unit_vector()[None], query.top_k or settings.top_k)
    match, cands = _answer(candidates, thr)
    return EmbeddingResult(match=match, candidates=cands, threshold=thr, model_id=gallery.model_id)
