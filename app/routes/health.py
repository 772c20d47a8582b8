"""Health checks for curl and orchestrators, and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from app.deps import GalleryDep, MetricsDep
from app.schemas import Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Ready, summary="Model loaded and index in sync with the store")
async def readyz(gallery: GalleryDep) -> JSONResponse:
    persons, faces = gallery.store.counts()
    ready = gallery.in_sync
    body = Ready(
        ready=ready, model_id=gallery.model_id, persons=persons, faces=faces, index_size=gallery.index.size,
        index=gallery.index.kind, detail=gallery.mismatch,
    )
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(metrics: MetricsDep, gallery: GalleryDep) -> Response:
    # Gallery size is read from the store when scraped, the only time the gauges are seen.
    persons, faces = gallery.store.counts()
    metrics.persons.set(persons)
    metrics.faces.set(faces)
    return metrics.render()
