"""A collection in one file: export it, import one (admin keys). For galleries larger than a
request body may be, `faceid gallery export` and `faceid gallery import` do the same."""

from __future__ import annotations

import os
import tempfile
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from app.deps import CollectionDep, EngineDep, GalleryDep, TrailDep, require_api_key
from app.schemas import ImportResult
from app.statuses import responses
from app.usecases.portable import export_collection, import_file

router = APIRouter(tags=["collections"], dependencies=[Depends(require_api_key)])
MEDIA = "application/gzip"


@router.get("/export", response_class=FileResponse, summary="The collection in one file: persons, faces, embeddings, photo evidence",
            responses={200: {"content": {MEDIA: {}}, "description": "a gzip-compressed JSON-lines gallery export"}, **responses(401, 404, 422, 503)})
async def export(collection: CollectionDep, trail: TrailDep, crops: Annotated[bool, Query(description="also the face crops (needed to import "
                                                                                        "into a service running another model)")] = False):
    out = tempfile.NamedTemporaryFile(prefix="faceid-export-", suffix=".jsonl.gz", delete=False)
    try:
        await run_in_threadpool(export_collection, collection, out, crops, trail)
    finally:
        out.close()
    remove = BackgroundTask(os.unlink, out.name)
    return FileResponse(out.name, media_type=MEDIA, filename=f"faceid-{collection.name}.jsonl.gz", background=remove)


@router.post("/import", response_model=ImportResult, summary="Add a gallery export to the collection",
             responses=responses(400, 401, 404, 409, 413, 422, 503, 507))
async def import_export(engine: EngineDep, gallery: GalleryDep, trail: TrailDep,
                        file: Annotated[UploadFile, File(description="a file /export made")]) -> ImportResult:
    done = await run_in_threadpool(import_file, engine, gallery, file.file, trail)
    return ImportResult(persons=done.persons, faces=done.faces, reembedded=done.reembedded, models=done.models)
