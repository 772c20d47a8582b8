"""Checks made before any route runs, and before a byte of the body is read.

A pure ASGI middleware, because Starlette's form parser spools a whole upload to disk before
a route's dependencies run: a stranger without the key could otherwise fill the disk with a
chunked body (no Content-Length), and be told 401 only afterwards.
- The API key, for every path but the open ones.
- The body size: refused from Content-Length when it is sent, and otherwise counted as it
  streams in, reading stops at the limit.
- Overload: a photo route answers 503 with Retry-After while as many photos as the engine
  admits are already waiting, before the upload is read (reading it first halved the
  identifies/s the others got under 32 clients). The rest of the body is then read and dropped
  by the server, so the client reads the answer instead of a reset.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings

MULTIPART_OVERHEAD = 1 << 20  # form fields and part headers beside the images
ALWAYS_OPEN = frozenset({"/", "/healthz", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
CONSOLE = "/console"  # static files; the page asks for the key and sends it with each API call
PROBES = frozenset({"/readyz", "/metrics"})
KEY_REFUSED = "missing or wrong X-API-Key"
PHOTO_ROUTES = frozenset({"/identify", "/enroll"})  # the ones whose work the engine bounds


def key_matches(settings: Settings, given: str | None) -> bool:
    """True when no key is configured, or `given` is it (compared in constant time)."""
    if settings.api_key is None:
        return True
    return given is not None and hmac.compare_digest(given.encode(), settings.api_key.get_secret_value().encode())


def needs_key(settings: Settings, path: str) -> bool:
    if settings.api_key is None or path in ALWAYS_OPEN or path.startswith(CONSOLE):
        return False
    return not (settings.open_probes and path in PROBES)


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
        settings: Settings | None = getattr(scope["app"].state, "settings", None) if scope["type"] == "http" else None
        if settings is None:  # lifespan, websockets, or not started yet
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if needs_key(settings, scope["path"]) and not key_matches(settings, headers.get("x-api-key")):
            await _answer(send, 401, KEY_REFUSED, {"WWW-Authenticate": "APIKey"})
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
