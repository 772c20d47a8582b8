"""The FastAPI application: heavy state is built in the lifespan and hung on app.state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import contract, errors, metrics
from app.config import Settings
from app.engine import Engine
from app.gallery.gallery import Gallery
from app.gallery.store import StoreError
from app.guard import RequestGuard
from app.headers import SecurityHeaders
from app.routes import console, health, identify, persons

log = logging.getLogger("faceid")
WATCH_INTERVAL_S = 2.0  # how often the store is checked for writes made by another process


async def _follow_the_store(gallery: Gallery) -> None:
    """Rebuild the index when another process (`faceid gallery import`) has written to the store,
    so that readiness, which never rebuilds, catches up without waiting for a request."""
    while True:
        await asyncio.sleep(WATCH_INTERVAL_S)
        try:
            await run_in_threadpool(gallery.refresh)
        except StoreError as exc:  # a store that cannot be read now (a database restarting): the requests say so
            log.warning("could not check the gallery store for changes: %s", exc)
        except Exception:  # anything else is a bug: in full, and keep watching
            log.exception("could not check the gallery store for changes")


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or Settings()
        engine = await run_in_threadpool(Engine.from_settings, s)
        if s.threshold is None:  # the evaluated FAR-1e-3 threshold of this model
            s = s.model_copy(update={"threshold": engine.default_threshold()})
        engine.on_batch = app.state.metrics.batch.observe
        gallery = await run_in_threadpool(Gallery.from_settings, s, engine.model_id)
        if gallery.mismatch:
            log.error("gallery not usable: %s", gallery.mismatch)
        app.state.settings, app.state.engine, app.state.gallery = s, engine, gallery
        await engine.start()
        watcher = asyncio.create_task(_follow_the_store(gallery))
        persons_n, faces_n = gallery.store.counts()
        log.info("ready: model %s on %s, %d persons, %d faces, %s index, threshold %.3f",
                 engine.model_id, engine.embedder.device, persons_n, faces_n, s.index, s.threshold)
        try:
            yield
        finally:
            watcher.cancel()
            await engine.stop()
            try:  # the next start loads it instead of rebuilding (a 1M-face IVF index: seconds, not minutes)
                await run_in_threadpool(gallery.save_index)
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
    errors.install(app)
    contract.install(app)
    for module in (health, identify, persons, console):
        app.include_router(module.router)
    return app
