"""Retention: source material is kept for FACEID_RETENTION_DAYS, then only the embeddings remain
(or, with FACEID_RETENTION_EXPIRE_PERSONS, the person goes entirely). The service runs it every
FACEID_RETENTION_CHECK_S over every collection; each purge is in that collection's audit log."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from app.config import Settings
from app.gallery.collections import Collections
from app.gallery.gallery import Purge
from app.gallery.records import AuditEvent

RETENTION = "(retention)"  # the audit log's key id for what the service does by itself
Clock = Callable[[], datetime]
log = logging.getLogger(__name__)


def purge_due(collections: Collections, settings: Settings, now: datetime) -> dict[str, Purge]:
    """Purge what every collection holds past the retention periods; what went, by collection."""
    if settings.unknowns:
        purge_unknowns(collections, settings, now)
    if settings.retention_days is None:
        return {}
    before = (now - timedelta(days=settings.retention_days)).isoformat(timespec="seconds")
    done = {}
    for row in collections.rows():
        gallery = collections.get(row.name).gallery
        action = "expire" if settings.retention_expire_persons else "purge"
        purge = gallery.purge(before, settings.retention_expire_persons, AuditEvent(action, row.name, RETENTION))
        if purge.faces or purge.expired:
            log.info("retention: collection %s: crops and photos of %d faces purged, %d persons expired", row.name, purge.faces, len(purge.expired))
        done[row.name] = purge
    return done


def purge_unknowns(collections: Collections, settings: Settings, now: datetime) -> None:
    """The unknown faces older than their own retention period, in every collection."""
    before = (now - timedelta(days=settings.unknowns_retention_days)).isoformat(timespec="milliseconds")
    for row in collections.rows():
        gallery = collections.get(row.name).gallery
        if removed := gallery.store.purge_unknowns(before):
            gallery.audit.record(AuditEvent("purge_unknowns", row.name, RETENTION, detail=f"unknown faces {removed} before {before}"))
