"""Health checks for curl and orchestrators, and Prometheus metrics.

/healthz is always open. With an API key set, /readyz and /metrics need it too (they tell
the model, the gallery size and the traffic), unless FACEID_OPEN_PROBES=true.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.deps import EngineDep, GalleryDep, MetricsDep, SettingsDep
from app.errors import responses
from app.gallery.gallery import Gallery
from app.schemas import Ready

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _ready(gallery: Gallery, runtime: str, settings: Settings) -> Ready:
    in_sync, behind = gallery.in_sync, gallery.behind()
    persons, faces = gallery.store.counts()
    writable = gallery.store.writable()
    lag = None if in_sync else (f"{behind} change(s) behind the database: catching up" if behind is not None else
                                f"the index holds {gallery.index.size} faces of the store's {faces}: catching up with another process's writes")
    detail = gallery.mismatch or lag or (None if writable else f"{gallery.store.location} is read-only: identification works, enrolment does not")
    return Ready(ready=in_sync and writable, model_id=gallery.model_id, persons=persons, faces=faces,
                 index_size=gallery.index.size, index=gallery.index.kind, runtime=runtime, writable=writable, detail=detail,
                 store="postgresql" if behind is not None else "sqlite", behind=behind,
                 threshold=settings.answer_threshold(),
                 photo_threshold=settings.photo_threshold if settings.photo_evidence else None)


@router.get("/readyz", response_model=Ready, summary="Model loaded, index in sync with the store, store writable",
            responses={503: {"model": Ready, "description": "not ready; `detail` says why"}, **responses(401)})
async def readyz(gallery: GalleryDep, engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    body = await run_in_threadpool(_ready, gallery, engine.embedder.runtime, settings)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
                       **responses(401)})
async def metrics(metrics: MetricsDep, gallery: GalleryDep) -> Response:
    # Gallery size is read from the store when scraped, the only time the gauges are seen.
    persons, faces = await run_in_threadpool(gallery.store.counts)
    metrics.persons.set(persons)
    metrics.faces.set(faces)
    return metrics.render()
