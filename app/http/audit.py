"""Every request that uses the API is recorded in the audit log (app/gallery/audit.py): which key
(its id), which collection, what, about which persons, and how it ended.

The middleware opens a `Trail` for each such request (the use cases add the persons they wrote,
named or erased) and, once the status is known, records it, unless the use case already appended
it in its write's transaction. Refusals are recorded too, 401 and 403 included: a key's use,
allowed or not. The probes, the console's files and the documents are not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.gallery.collections import DEFAULT, Collections
from app.gallery.records import AuditEvent
from app.http.keys import KeyRing, collection_of

UNKNOWN_KEY = "(unknown key)"  # a key was sent that is none of the configured ones
# (method, path pattern, action): the first that matches names what a request does.
ACTIONS: tuple[tuple[str, re.Pattern[str], str], ...] = tuple((m, re.compile(p), a) for m, p, a in (
    ("POST", r"^/enroll$", "enrol"),
    ("DELETE", r"^/persons/[^/]+$", "delete"),
    ("POST", r"^/identify(/embedding)?$", "identify"),
    ("POST", r"^/verify$", "verify"),
    ("POST", r"^/detect$", "detect"),
    ("GET", r"^/persons(/.*)?$", "read_persons"),
    ("GET", r"^/export$", "export"),
    ("POST", r"^/import$", "import"),
    ("POST", r"^/collections$", "create_collection"),
    ("DELETE", r"^/collections/[^/]+$", "delete_collection"),
    ("GET", r"^/collections(/.*)?$", "read_collections"),
    ("GET", r"^/audit$", "read_audit"),
    ("GET", r"^/unknowns(/.*)?$", "read_unknowns"),
    ("POST", r"^/unknowns/\d+/enroll$", "enrol"),
    ("DELETE", r"^/unknowns/\d+$", "discard_unknowns"),
))
# Kept in the default collection's log: a collection's own log goes with it when it is deleted.
REGISTRY_ACTIONS = frozenset({"create_collection", "delete_collection"})


def action_of(method: str, path: str) -> str | None:
    return next((action for m, pattern, action in ACTIONS if m == method and pattern.match(path)), None)


@dataclass
class Trail:
    """One request's audit event, filled in as the request is served."""

    action: str
    collection: str
    key_id: str | None
    persons: list[str] = field(default_factory=list)
    detail: str | None = None
    recorded: bool = False  # appended already, with the write it records

    def event(self, outcome: str = "ok", detail: str | None = None) -> AuditEvent:
        return AuditEvent(self.action, self.collection, self.key_id, tuple(self.persons), outcome, detail or self.detail)


class AuditRecorder:
    """Pure ASGI, outside the guard, so that refusals are recorded as well."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope["app"].state if scope["type"] == "http" else None
        keys: KeyRing | None = getattr(state, "keys", None)
        collections: Collections | None = getattr(state, "collections", None)
        action = action_of(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if keys is None or collections is None or action is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-api-key")
        key = keys.find(given)
        key_id = key.id if key is not None else (UNKNOWN_KEY if given and not keys.open else None)
        collection = collection_of(scope["method"], scope["path"], headers.get("x-collection"), DEFAULT) or DEFAULT
        trail = Trail(action, collection if collection != "*" else DEFAULT, key_id)
        if action == "delete":
            trail.persons = [scope["path"].rsplit("/", 1)[1]]
        scope.setdefault("state", {})["audit"] = trail
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            if not trail.recorded:
                outcome = "ok" if status < 400 else str(status)
                self._record(collections, trail, trail.event(outcome))

    @staticmethod
    def _record(collections: Collections, trail: Trail, event: AuditEvent) -> None:
        name = DEFAULT if trail.action in REGISTRY_ACTIONS else trail.collection
        try:
            log = collections.get(name).gallery.audit
        except Exception:  # an unknown collection (CollectionNotFound), or a store that cannot be read now: the default one keeps it
            log = collections.default.gallery.audit
        log.record(event)
