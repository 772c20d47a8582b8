"""The web console (`/console`): static files shipped in the package, served by the service
itself, so it works air-gapped. The page is open; the API calls it makes carry the key."""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

router = APIRouter(include_in_schema=False)

FILES = {"index.html": "text/html; charset=utf-8", "console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}
# Everything from this origin, nothing from elsewhere; photos are shown from blob: URLs.
POLICY = "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"


def _file(name: str) -> Response:
    body = resources.files("app").joinpath("console", name).read_bytes()
    return Response(body, media_type=FILES[name], headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"})


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/console", status_code=307)


@router.get("/console")
async def console() -> Response:
    return _file("index.html")


@router.get("/console/{name}")
async def console_file(name: str) -> Response:
    if name not in FILES:
        raise HTTPException(404, f"no console file {name!r}")
    return _file(name)
