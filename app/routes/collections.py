"""Collections: several independent galleries in one service, each with its own persons, faces,
index and (if set) thresholds; requests name one in the X-Collection header."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool

from app.deps import CollectionsDep, KeyDep
from app.schemas import COLLECTION_PATTERN, CollectionCreate, CollectionPublic
from app.statuses import responses
from app.usecases import collections as use

router = APIRouter(tags=["collections"])
Name = Annotated[str, Path(pattern=COLLECTION_PATTERN)]


@router.get("/collections", response_model=list[CollectionPublic], summary="The collections this key may use",
            responses=responses(401))
async def list_collections(collections: CollectionsDep, key: KeyDep) -> list[CollectionPublic]:
    return await run_in_threadpool(use.list_collections, collections, key)


@router.post("/collections", response_model=CollectionPublic, status_code=201, summary="Create a collection (an admin key for every collection)",
             responses=responses(400, 401, 409, 422, 503, 507))
async def create_collection(collections: CollectionsDep, key: KeyDep, body: CollectionCreate) -> CollectionPublic:
    return await run_in_threadpool(use.create_collection, collections, body)


@router.get("/collections/{name}", response_model=CollectionPublic, summary="One collection, with its size",
            responses=responses(401, 404, 422, 503))
async def get_collection(collections: CollectionsDep, key: KeyDep, name: Name) -> CollectionPublic:
    return await run_in_threadpool(use.get_collection, collections, name, key)


@router.delete("/collections/{name}", status_code=204, summary="Delete a collection: its persons, faces, index and files, for good",
               responses=responses(401, 404, 409, 422, 503))
async def delete_collection(collections: CollectionsDep, key: KeyDep, name: Name) -> None:
    await run_in_threadpool(use.delete_collection, collections, name)
