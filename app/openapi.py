"""The OpenAPI document says the rules the routes apply, no looser and no stricter.

FastAPI writes an optional form field as "a string or null", but a multipart form cannot carry
a null (a client's `null` arrives as the text "null", which the field's pattern refuses): a form
field is either sent or left out, so the null branch is dropped. An upload must hold bytes: an
empty file is not an image (400), so file fields say `minLength: 1`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

NULL = {"type": "null"}


def _form_fields(schema: dict[str, Any]) -> None:
    for field in schema.get("properties", {}).values():
        if NULL in (choices := field.get("anyOf", [])):
            rest = [c for c in choices if c != NULL]
            del field["anyOf"]
            field.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        target = field.get("items", field)
        if target.get("contentMediaType") == "application/octet-stream":
            target["minLength"] = 1


def _multipart_bodies(document: dict[str, Any]) -> list[str]:
    """Names of the component schemas that are multipart request bodies."""
    names = []
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            content = operation.get("requestBody", {}).get("content", {})
            if ref := content.get("multipart/form-data", {}).get("schema", {}).get("$ref"):
                names.append(ref.rsplit("/", 1)[1])
    return names


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for name in _multipart_bodies(document):
                _form_fields(document["components"]["schemas"][name])
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to replace the document
