"""The audit log of a collection (admin keys): who enrolled, deleted, identified, exported."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from app.deps import GalleryDep, require_api_key
from app.gallery.records import AuditQuery
from app.schemas import PERSON_ID_PATTERN, AuditEntryPublic, AuditPage
from app.statuses import responses

router = APIRouter(tags=["audit"], dependencies=[Depends(require_api_key)])
TIME = r"^\d{4}-\d{2}-\d{2}(T[0-9:.]+)?(Z|[+-]\d{2}:\d{2})?$"


@router.get("/audit", response_model=AuditPage, summary="The collection's audit log, oldest first", responses=responses(401, 404, 422, 503))
async def audit(
    gallery: GalleryDep,
    since: Annotated[str | None, Query(pattern=TIME, description="from this time on (ISO 8601, UTC)")] = None,
    until: Annotated[str | None, Query(pattern=TIME, description="before this time")] = None,
    person: Annotated[str | None, Query(pattern=PERSON_ID_PATTERN, description="only what wrote, named or erased this person")] = None,
    key: Annotated[str | None, Query(max_length=64, description="only what this key id did")] = None,
    action: Annotated[str | None, Query(max_length=32)] = None,
    offset: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    entries, total = await run_in_threadpool(gallery.audit.page, AuditQuery(since, until, person, key, action), offset, limit)
    items = [AuditEntryPublic(id=e.id, at=e.event.at, key_id=e.event.key_id, collection=e.event.collection, action=e.event.action,
                              persons=list(e.event.persons), outcome=e.event.outcome, detail=e.event.detail) for e in entries]
    return AuditPage(items=items, total=total, offset=offset, limit=limit)
