"""The FastAPI application: heavy state is built in the lifespan and hung on app.state.

Routes (app/routes/) parse and answer; the use cases (app/usecases/) decide; the engine
(app/engine.py) and the gallery (app/gallery/) do the work; core/ holds the models and the
pixels. Settings become parts in one place, app/wiring.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import openapi, statuses, wiring
from app.config import Settings
from app.engine import FaceFinder
from app.gallery.collections import Collections
from app.gallery.records import StoreError
from app.gallery.store import Store
from app.http import metrics
from app.http.audit import AuditRecorder
from app.http.guard import RequestGuard
from app.http.keys import KeyRing
from app.http.security_headers import SecurityHeaders
from app.routes import audit, collections, console, detect, health, identify, persons, portable, unknowns, verify
from app.usecases.retention import Clock, purge_due

log = logging.getLogger("faceid")


async def _retain(collections: Collections, settings: Settings, clock: Clock) -> None:
    """Retention, now and every FACEID_RETENTION_CHECK_S (app/usecases/retention.py)."""
    while True:
        try:
            await run_in_threadpool(purge_due, collections, settings, clock())
        except StoreError as exc:  # a store that cannot be written now: the next round tries again
            log.warning("retention: %s", exc)
        except Exception:
            log.exception("retention failed; the next round tries again")
        await asyncio.sleep(settings.retention_check_s)


def create_app(settings: Settings | None = None, *, pipeline: FaceFinder | None = None, store: Store | None = None,
               clock: Clock | None = None) -> FastAPI:
    """The service. `pipeline`, `store` and `clock` replace the parts the settings would build:
    the doors tests use to hold detection, give the store limits (the app closes a store it is
    given) or move retention's time."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        s = settings or Settings()
        engine = await run_in_threadpool(wiring.build_engine, s, pipeline)
        if s.threshold is None:  # the model's own: chosen for identification among many
            s = s.model_copy(update={"threshold": engine.default_threshold()})
        if s.verify_threshold is None:  # and for 1:1 pairs
            s = s.model_copy(update={"verify_threshold": engine.default_pair_threshold()})
        engine.on_batch = app.state.metrics.batch.observe
        keys = KeyRing.load(s.api_key.get_secret_value() if s.api_key is not None else None, s.api_keys_file)
        collections = await run_in_threadpool(wiring.open_collections, s, engine.model_id, store)
        gallery = collections.default.gallery
        if gallery.mismatch:
            log.error("gallery not usable: %s", gallery.mismatch)
        app.state.settings, app.state.engine, app.state.collections, app.state.keys = s, engine, collections, keys
        engine.start()
        collections.follow()
        retain = s.retention_days is not None or s.unknowns
        retention = asyncio.create_task(_retain(collections, s, clock or (lambda: datetime.now(UTC)))) if retain else None
        status = gallery.status()
        log.info("ready: model %s on %s, %d persons, %d faces, %s index on %s, threshold %.3f, %d API keys",
                 engine.model_id, engine.embedder.device, status.persons, status.faces, s.index, status.store, s.threshold,
                 len(keys.keys))
        try:
            yield
        finally:
            if retention is not None:
                retention.cancel()
            engine.stop()
            # the next start loads them instead of rebuilding (a 1M-face IVF index: seconds, not minutes)
            await run_in_threadpool(collections.save_snapshots)
            collections.close()

    app = FastAPI(
        title="faceid",
        summary="Face identification that holds up on blurred, foggy, dark, noisy, rainy, small and over-exposed photos.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.metrics = metrics.Metrics()
    app.add_middleware(RequestGuard)  # the key and the body size, before any body is read
    app.add_middleware(AuditRecorder)  # outside the guard: refusals are recorded too
    app.add_middleware(metrics.RequestMetrics, metrics=app.state.metrics)  # refusals are counted too
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries them
    statuses.install(app)
    openapi.install(app)
    for module in (health, identify, persons, verify, detect, collections, portable, audit, unknowns, console):
        app.include_router(module.router)
    return app
