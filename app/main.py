"""The FastAPI application: heavy state is built in the lifespan and hung on app.state.

Routes (app/routes/) parse and answer; the use cases (app/usecases/) decide; the engine
(app/engine.py) and the gallery (app/gallery/) do the work; core/ holds the models and the
pixels. Settings become parts in one place, app/wiring.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import openapi, statuses, wiring
from app.config import Settings
from app.engine import FaceFinder
from app.gallery.store import Store
from app.http import metrics
from app.http.guard import RequestGuard
from app.http.security_headers import SecurityHeaders
from app.routes import console, health, identify, persons

log = logging.getLogger("faceid")


def create_app(settings: Settings | None = None, *, pipeline: FaceFinder | None = None, store: Store | None = None) -> FastAPI:
    """The service. `pipeline` and `store` replace the parts the settings would build: the doors
    tests use to hold detection or give the store limits (the app closes a store it is given)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or Settings()
        engine = await run_in_threadpool(wiring.build_engine, s, pipeline)
        if s.threshold is None:  # the evaluated FAR-1e-3 threshold of this model
            s = s.model_copy(update={"threshold": engine.default_threshold()})
        engine.on_batch = app.state.metrics.batch.observe
        gallery = await run_in_threadpool(wiring.open_gallery, s, engine.model_id, store)
        if gallery.mismatch:
            log.error("gallery not usable: %s", gallery.mismatch)
        app.state.settings, app.state.engine, app.state.gallery = s, engine, gallery
        engine.start()
        gallery.follow()
        status = gallery.status()
        log.info("ready: model %s on %s, %d persons, %d faces, %s index on %s, threshold %.3f",
                 engine.model_id, engine.embedder.device, status.persons, status.faces, s.index, status.store, s.threshold)
        try:
            yield
        finally:
            engine.stop()
            try:  # the next start loads it instead of rebuilding (a 1M-face IVF index: seconds, not minutes)
                await run_in_threadpool(gallery.save_snapshot)
            except OSError as exc:
                log.warning("index not saved (%s): the next start rebuilds it from the store", exc)
            gallery.close()

    app = FastAPI(
        title="faceid",
        summary="Face identification that holds up on blurred, foggy, dark, noisy, rainy, small and over-exposed photos.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.metrics = metrics.Metrics()
    app.add_middleware(RequestGuard)  # the key and the body size, before any body is read
    app.add_middleware(metrics.RequestMetrics, metrics=app.state.metrics)  # refusals are counted too
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries them
    statuses.install(app)
    openapi.install(app)
    for module in (health, identify, persons, console):
        app.include_router(module.router)
    return app
