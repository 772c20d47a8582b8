"""Domain errors → HTTP statuses, mapped once. Every error body is {"detail": "..."}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from app.gallery.gallery import ModelMismatch
from core.errors import (
    FaceIdError,
    ImageTooLarge,
    InvalidImage,
    NoFaceFound,
    TooManyFaces,
    UnsupportedFormat,
)

log = logging.getLogger(__name__)


class UploadTooLarge(Exception):
    def __init__(self, source: str, limit: int) -> None:
        super().__init__(f"{source}: upload larger than {limit} bytes")


class PersonNotFound(Exception):
    def __init__(self, person_id: str) -> None:
        super().__init__(f"person {person_id!r} not found")


STATUS: dict[type[Exception], int] = {
    UnsupportedFormat: 415,
    InvalidImage: 400,
    ImageTooLarge: 413,
    UploadTooLarge: 413,
    NoFaceFound: 422,
    TooManyFaces: 422,
    PersonNotFound: 404,
    ModelMismatch: 503,
}


def install(app: FastAPI) -> None:
    async def known(request: Request, exc: Exception) -> JSONResponse:
        status = next(code for cls, code in STATUS.items() if isinstance(exc, cls))
        return JSONResponse({"detail": str(exc)}, status_code=status)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged in full for operators; the client gets no internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    for cls in (*STATUS, FaceIdError):
        app.add_exception_handler(cls, known if cls in STATUS else unexpected)
    app.add_exception_handler(Exception, unexpected)
