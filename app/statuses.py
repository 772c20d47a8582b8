"""Errors → HTTP statuses, mapped once, and documented once. Every error body is
{"detail": "..."}; `responses(...)` puts each status a route can return into the OpenAPI
document with that shape."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app.engine import Overloaded
from app.errors import (
    BadRequestField,
    CopyOfAnotherPerson,
    ExportOfAnotherModel,
    FaceNotFound,
    PersonNotFound,
    TooManyUploads,
    UnknownClusterNotFound,
    UnknownsOff,
    UploadTooLarge,
)
from app.gallery.collections import CollectionNotFound, DefaultCollection
from app.gallery.gallery import ModelMismatch
from app.gallery.portable import InvalidExport
from app.gallery.records import (
    CollectionExists,
    StorageFull,
    StoreBusy,
    StoreError,
    StoreReadOnly,
    StoreUnavailable,
)
from app.gallery.sealing import SealError
from app.http.guard import KEY_REFUSED
from app.schemas import Problem
from core.errors import (
    FaceIdError,
    ImageTooLarge,
    InvalidImage,
    NoFaceFound,
    TooManyFaces,
    UnsupportedFormat,
    UnusableFace,
)

log = logging.getLogger(__name__)


STATUS: dict[type[Exception], int] = {
    UnsupportedFormat: 415,
    InvalidImage: 400,
    ImageTooLarge: 413,
    UploadTooLarge: 413,
    TooManyUploads: 413,
    NoFaceFound: 422,
    TooManyFaces: 422,
    UnusableFace: 422,
    BadRequestField: 422,
    PersonNotFound: 404,
    FaceNotFound: 404,
    CollectionNotFound: 404,
    UnknownsOff: 404,
    UnknownClusterNotFound: 404,
    CopyOfAnotherPerson: 409,
    CollectionExists: 409,
    ExportOfAnotherModel: 409,
    InvalidExport: 400,
    DefaultCollection: 409,
    ModelMismatch: 503,
    Overloaded: 503,
    StorageFull: 507,
    StoreReadOnly: 503,
    StoreBusy: 503,
    StoreUnavailable: 503,
    StoreError: 503,
    SealError: 503,
}
RETRY_AFTER_S = {Overloaded: 1, StoreBusy: 1, StoreUnavailable: 2}  # the database restarting, or unreachable

DESCRIPTIONS = {
    400: "a body that cannot be read: not an image, a corrupt one, not JSON, or not a gallery export",
    401: KEY_REFUSED,
    403: "the key's role or collection does not allow this request",
    404: ("no such person, face of that person (or one stored without its crop), collection (X-Collection), or unknown cluster "
          "or face (or the unknown-faces log is off)"),
    409: ("an enrolment photo is a copy of a photo enrolled for another person (send confirm_copy=true to enrol it anyway); "
          "a collection of that name exists; the default collection is not deleted; "
          "a gallery export made by another model without its crops"),
    413: "an upload, the request body or the image's pixel count is over its limit",
    415: "an image format the service does not read",
    422: "a missing or invalid field; no face found; several comparable faces, or a blown-out or black face, in an enrolment photo",
    503: ("not ready: the gallery was made with another model, the store is read-only (or FACEID_READ_ONLY), busy or "
          "(PostgreSQL) unreachable, or the service is overloaded (see Retry-After)"),
    507: "the disk is full; nothing was stored",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses a route can return, each with the error body (a
    route that needs a key can also answer 403: the key's role or collection)."""
    listed = sorted(set(codes) | ({403} if 401 in codes else set()))
    return {code: {"model": Problem, "description": DESCRIPTIONS[code]} for code in listed}


def _sanitised(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation errors without the echoed input: it may hold NaN or bytes, which JSON cannot carry."""
    return [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))} for e in errors]


def allowed_methods(request: Request) -> list[str] | None:
    """The methods the OpenAPI document gives this request's path (HEAD with GET), or None for
    a path it does not list."""
    for template, operations in request.app.openapi()["paths"].items():
        if compile_path(template)[0].match(request.url.path):
            methods = {method.upper() for method in operations}
            return sorted(methods | ({"HEAD"} if "GET" in methods else set()))
    return None


def install(app: FastAPI) -> None:
    async def known(request: Request, exc: Exception) -> JSONResponse:
        cls = next(cls for cls in STATUS if isinstance(exc, cls))
        headers = {"Retry-After": str(RETRY_AFTER_S[cls])} if cls in RETRY_AFTER_S else None
        if STATUS[cls] >= 500:
            log.warning("%s on %s %s: %s", cls.__name__, request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=STATUS[cls], headers=headers)

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # the handler is registered for it alone
        return JSONResponse({"detail": _sanitised(list(exc.errors()))}, status_code=422)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Logged in full for operators; the client gets no internals.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # the handler is registered for it alone
        headers = dict(exc.headers or {})
        if exc.status_code == 405 and (methods := allowed_methods(request)) is not None:
            headers["Allow"] = ", ".join(methods)  # every method the path takes, not only the first route's
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    for cls in STATUS:
        app.add_exception_handler(cls, known)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(FaceIdError, unexpected)
    app.add_exception_handler(Exception, unexpected)
