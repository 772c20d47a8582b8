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
from app.gallery.gallery import Status
from app.schemas import Ready
from app.statuses import responses

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def ready(status: Status, runtime: str, settings: Settings) -> Ready:
    """The gallery's own account of itself, as /readyz answers it."""
    lag = None if status.behind == 0 else f"{status.behind} change(s) behind the store: catching up"
    read_only = None if status.writable else f"{status.location} is read-only: identification works, enrolment does not"
    return Ready(ready=status.in_sync and status.writable, model_id=status.model_id, persons=status.persons, faces=status.faces,
                 index_size=status.index_size, index=status.index, runtime=runtime, writable=status.writable,
                 detail=status.mismatch or lag or read_only, store=status.store, behind=status.behind,
                 threshold=settings.answer_threshold(), photo_threshold=settings.photo_threshold if settings.photo_evidence else None)


@router.get("/readyz", response_model=Ready, summary="Model loaded, index in sync with the store, store writable",
            responses={503: {"model": Ready, "description": "not ready; `detail` says why"}, **responses(401, 404, 422)})
async def readyz(gallery: GalleryDep, engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    body = ready(await run_in_threadpool(gallery.status), engine.embedder.runtime, settings)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
                       **responses(401, 404, 422)})
async def metrics(metrics: MetricsDep, gallery: GalleryDep) -> Response:
    # Gallery size is read from the store when scraped, the only time the gauges are seen.
    persons, faces = await run_in_threadpool(gallery.store.counts)
    metrics.persons.set(persons)
    metrics.faces.set(faces)
    return metrics.render()
