"""Prometheus metrics, one registry per app (no process-global state)."""

from __future__ import annotations

import time

from fastapi import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Label values come from closed sets only: a label value a client chooses is a memory leak.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("faceid_requests_total", "HTTP requests", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram(
            "faceid_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch = Histogram("faceid_embed_batch_size", "faces per embedder call", registry=self.registry, buckets=(1, 2, 4, 8, 16, 32, 64, 128))
        self.persons = Gauge("faceid_gallery_persons", "persons in the gallery", registry=self.registry)
        self.faces = Gauge("faceid_gallery_faces", "faces in the gallery", registry=self.registry)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class RequestMetrics:
    """Counts and times every request by route template, method and status (pure ASGI, so it
    neither buffers nor drains request bodies)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")  # the template: ids do not explode label sets
            method = scope["method"] if scope["method"] in METHODS else "other"  # clients can invent methods
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - start)
