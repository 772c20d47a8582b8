"""Typed dependencies: routes read like sentences and tests swap parts with dependency_overrides."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from app.config import Settings
from app.engine import Engine
from app.gallery.gallery import Gallery
from app.http.guard import KEY_REFUSED, key_matches
from app.http.metrics import Metrics


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_gallery(request: Request) -> Gallery:
    return request.app.state.gallery


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
GalleryDep = Annotated[Gallery, Depends(get_gallery)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """Declares the key in the OpenAPI document; `app.http.guard` has already enforced it before
    the body was read, with the same comparison."""
    if not key_matches(settings, key):
        raise HTTPException(status_code=401, detail=KEY_REFUSED, headers={"WWW-Authenticate": "APIKey"})
