"""Checks made before any route runs, and before a byte of the body is read.

A pure ASGI middleware, because Starlette's form parser spools a whole upload to disk before
a route's dependencies run: a stranger without the key could otherwise fill the disk with a
chunked body (no Content-Length), and be told 401 only afterwards.
- The API key, for every path but the open ones: known (else 401), and of a role and collection
  that may do what the request asks (else 403; app/http/keys.py).
- The body size: refused from Content-Length when it is sent, and otherwise counted as it
  streams in, reading stops at the limit.
- Overload: a photo route answers 503 with Retry-After while as many photos as the engine
  admits are already waiting, before the upload is read (reading it first halved the
  identifies/s the others got under 32 clients). The rest of the body is then read and dropped
  by the server, so the client reads the answer instead of a reset.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.gallery.collections import DEFAULT as DEFAULT_COLLECTION
from app.http.keys import ANY_COLLECTION, KeyRing, collection_of, required_role

MULTIPART_OVERHEAD = 1 << 20  # form fields and part headers beside the images
ALWAYS_OPEN = frozenset({"/", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
CONSOLE = "/console"  # static files; the page asks for the key and sends it with each API call
PROBES = frozenset({"/readyz", "/metrics"})
KEY_REFUSED = "missing or wrong X-API-Key"
PHOTO_ROUTES = frozenset({"/identify", "/enroll", "/detect", "/verify"})  # the ones whose work the engine bounds


def needs_key(settings: Settings, keys: KeyRing, path: str) -> bool:
    if keys.open or path in ALWAYS_OPEN or path.startswith(CONSOLE):
        return False
    return not (settings.open_probes and path in PROBES)


def refusal(settings: Settings, keys: KeyRing, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
    """Why the key does not let this request through (401 or 403, with a sentence), or None."""
    if not needs_key(settings, keys, path):
        return None
    key = keys.find(headers.get("x-api-key"))
    if key is None:
        return 401, KEY_REFUSED
    collection = collection_of(method, path, headers.get("x-collection"), DEFAULT_COLLECTION)
    role = required_role(method, path)
    if collection is not None and not key.allows(role, collection):
        where = "every collection" if collection == ANY_COLLECTION else f"collection {collection!r}"
        scope = "every collection" if key.collection == ANY_COLLECTION else f"collection {key.collection!r}"
        return 403, f"key {key.id!r} ({key.role}, {scope}) may not do this in {where}: it needs {role}"
    return None


def body_limit(settings: Settings) -> int:
    return settings.max_upload_bytes * settings.max_images_per_enroll + MULTIPART_OVERHEAD


class _BodyTooLarge(Exception):
    pass


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state if scope["type"] == "http" else None
        settings: Settings | None = getattr(state, "settings", None)
        keys: KeyRing | None = getattr(state, "keys", None)
        if settings is None or keys is None:  # lifespan, websockets, or not started yet
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if (refused := refusal(settings, keys, scope["method"], scope["path"], headers)) is not None:
            status, detail = refused
            await _answer(send, status, detail, {"WWW-Authenticate": "APIKey"} if status == 401 else None)
            return
        limit = body_limit(settings)
        too_large = f"request body larger than {limit} bytes"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _answer(send, 413, too_large)
            return
        engine = getattr(scope["app"].state, "engine", None)
        if scope["path"] in PHOTO_ROUTES and engine is not None and (busy := engine.admission.saturation()) is not None:
            await _answer(send, 503, busy, {"Retry-After": "1"})
            return
        received, exceeded, started = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            # The body parser turns our exception into its own error answer: say what happened.
            nonlocal started
            if exceeded:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _answer(send, 413, too_large, {"Connection": "close"})
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:
                await _answer(send, 413, too_large, {"Connection": "close"})
