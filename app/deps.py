"""Typed dependencies: routes read like sentences and tests swap parts with dependency_overrides.

They are coroutines because FastAPI runs a plain function dependency in a worker thread: a
thread hop each, several per request, for what is an attribute read. Only another collection's
row, read from the store, goes to a thread.

The collection a request is about comes from the X-Collection header (the default collection
without it); the gallery and the settings a route gets are that collection's (its thresholds,
where it sets its own)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.engine import Engine
from app.gallery.collections import DEFAULT, NAME_PATTERN, Collection, Collections
from app.gallery.gallery import Gallery
from app.http.audit import Trail
from app.http.guard import KEY_REFUSED
from app.http.keys import Key, KeyRing
from app.http.metrics import Metrics


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_collections(request: Request) -> Collections:
    return request.app.state.collections


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_collection(collections: Annotated[Collections, Depends(get_collections)],
                         x_collection: Annotated[str, Header(alias="X-Collection", pattern=NAME_PATTERN,
                                                             description="the collection the request is about (default: `default`)")] = DEFAULT
                         ) -> Collection:
    if x_collection == DEFAULT:
        return collections.default
    return await run_in_threadpool(collections.get, x_collection)  # another collection's row is read from the store


CollectionDep = Annotated[Collection, Depends(get_collection)]


async def get_gallery(collection: CollectionDep) -> Gallery:
    return collection.gallery


async def get_settings(request: Request, collection: CollectionDep) -> Settings:
    """The service's settings, with the thresholds the request's collection sets for itself."""
    settings: Settings = request.app.state.settings
    row = collection.row
    own = {k: v for k, v in (("threshold", row.threshold), ("verify_threshold", row.verify_threshold),
                             ("photo_threshold", row.photo_threshold)) if v is not None}
    return settings.model_copy(update=own) if own else settings


EngineDep = Annotated[Engine, Depends(get_engine)]
CollectionsDep = Annotated[Collections, Depends(get_collections)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


async def get_key(request: Request, given: Annotated[str | None, Security(_api_key_header)]) -> Key | None:
    """The request's key (None when no key is configured). Declares the key in the OpenAPI
    document; `app.http.guard` has already enforced it, role and collection included, before
    the body was read."""
    keys: KeyRing = request.app.state.keys
    if keys.open:
        return None
    key = keys.find(given)
    if key is None:
        raise HTTPException(status_code=401, detail=KEY_REFUSED, headers={"WWW-Authenticate": "APIKey"})
    return key


KeyDep = Annotated[Key | None, Depends(get_key)]


async def require_api_key(key: KeyDep) -> None:
    """For routers whose every route needs a key."""


async def get_trail(request: Request) -> Trail | None:
    """This request's audit event, which the use case fills in (None outside the service)."""
    return getattr(request.state, "audit", None)


TrailDep = Annotated[Trail | None, Depends(get_trail)]
