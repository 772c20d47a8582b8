"""What both stores hold and answer, and how they fail: the value types, the store errors, and
the byte encodings of embeddings, photo evidence and IVF cells (the same in SQLite and PostgreSQL,
so `faceid gallery migrate` copies rows as they are)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import numpy as np

from core.constants import EMBEDDING_DIM
from core.errors import FaceIdError
from core.photos.descriptor import PROJECTED_DIM, THUMB_SIDE

StoreKind = Literal["sqlite", "postgresql"]


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str | None
    n_faces: int
    created_at: str
    consent: str | None = None  # the consent reference enrolment gave, if any


@dataclass(frozen=True)
class PhotoRecord:
    """A face's photo as photo evidence keeps it (core/photos/descriptor.py)."""

    thumb: np.ndarray  # uint8 THUMB_SIDE×THUMB_SIDE
    vector: np.ndarray  # float32 PROJECTED_DIM, unit
    box: tuple[float, float, float, float]  # the face, as fractions of the photo's width and height


@dataclass(frozen=True)
class NewFace:
    source: str
    embedding: np.ndarray
    crop_png: bytes | None = None
    photo: PhotoRecord | None = None
    created_at: str | None = None  # kept as given (a gallery imported from its export); None: now


PERSON_COLUMNS = ("person_id", "name", "created_at", "consent")  # as `faceid gallery migrate` copies them


def created(faces: list[NewFace], at: str) -> str:
    """When a person made of these faces was created: their earliest given time, else `at`."""
    return min((f.created_at for f in faces if f.created_at is not None), default=at)


@dataclass(frozen=True)
class StoredPhoto:
    face_id: int
    person_id: str
    source: str
    thumb: np.ndarray
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class FaceRow:
    """A stored face as the API lists it: no embedding, no pixels."""

    face_id: int
    source: str
    model_id: str
    created_at: str
    has_crop: bool
    has_photo: bool  # its photo is described: photo evidence can name copies of it


@dataclass(frozen=True)
class IndexedFace:
    """What the vector indexes need of a face: its person, the model that embedded it, its
    embedding and its projected photo descriptor (None without photo evidence)."""

    face_id: int
    person_id: str
    model_id: str
    embedding: np.ndarray
    photo_vector: np.ndarray | None


@dataclass(frozen=True)
class CollectionRow:
    """A collection as the registry (in the default collection's store) keeps it: its name, and
    the thresholds it sets for itself (None: the service's)."""

    name: str
    created_at: str
    threshold: float | None = None
    verify_threshold: float | None = None
    photo_threshold: float | None = None


@dataclass(frozen=True)
class Erased:
    """What deleting a person removed from the store."""

    face_ids: list[int]
    crops: int  # aligned face crops
    photos: int  # photo thumbnails and their descriptors
    unknowns: int = 0  # unknown faces kept before they were enrolled as this person


@dataclass(frozen=True)
class NewUnknown:
    """A face /identify answered as unknown, worth keeping (FACEID_UNKNOWNS)."""

    embedding: np.ndarray
    crop_png: bytes | None
    quality: float
    key_id: str | None
    at: str = field(default_factory=lambda: now_precise())


@dataclass(frozen=True)
class Unknown:
    id: int
    at: str
    key_id: str | None
    embedding: np.ndarray
    quality: float


@dataclass(frozen=True)
class AuditEvent:
    """One thing done, as the audit log keeps it: when, by which key (its id, never the key),
    in which collection, what, to or about which persons, and how it ended ('ok', or the status
    it was refused with). Never an image or an embedding; `detail` holds counts and short facts."""

    action: str
    collection: str
    key_id: str | None
    persons: tuple[str, ...] = ()
    outcome: str = "ok"
    detail: str | None = None
    at: str = field(default_factory=lambda: now_precise())


@dataclass(frozen=True)
class AuditEntry:
    id: int
    event: AuditEvent


@dataclass(frozen=True)
class AuditQuery:
    since: str | None = None
    until: str | None = None
    person: str | None = None
    key_id: str | None = None
    action: str | None = None


ChangeOp = Literal["add", "delete", "embed", "photo"]


@dataclass(frozen=True)
class Change:
    """One committed write, as a store that keeps a change log reports it: the faces it added,
    deleted, re-embedded (`faceid gallery reembed`) or gave photo evidence."""

    version: int
    op: ChangeOp
    face_ids: list[int]


@dataclass(frozen=True)
class Committed:
    """A write transaction's place in the store's history: the store's version when it began
    (inside its lock, so no other write came between) and the version it committed."""

    before: int
    after: int


@dataclass(frozen=True)
class Cells:
    """An IVF index's trained cells: its centroids (lists × dim) and how many vectors they
    were trained on. Kept in the store, so every later build over the same gallery (another
    replica, a restart without a snapshot) adds its vectors to them instead of training anew:
    at 1M faces training is most of a cold start (docs/deployment.md)."""

    centroids: np.ndarray
    trained_on: int

    def fit(self, n_vectors: int, dim: int) -> bool:
        """Whether an index over n vectors may use these cells: the same dimension, and a size
        the retraining rule (`VectorIndex.needs_training`) would not retrain at."""
        return self.centroids.ndim == 2 and self.centroids.shape[1] == dim and self.trained_on / 4 <= n_vectors < 4 * self.trained_on


# Every column of a face, as `faceid gallery migrate` copies them between stores, ids kept.
FACE_COLUMNS = ("face_id", "person_id", "source", "model_id", "embedding", "crop", "created_at", "photo_thumb", "photo_vector", "photo_box")
PersonRow = tuple[str, str | None, str, str | None]  # person id, name, created at, consent
Entry = tuple[str, str | None, list[NewFace]]  # person id, name (None keeps the stored one), faces


# -- errors: each maps to one HTTP status (app/statuses.py) ------------------------------------
class StoreError(FaceIdError):
    """The store cannot do what was asked; nothing was changed."""


class StoreUnavailable(StoreError):
    """The store cannot be opened or reached (a missing or read-only data directory, a corrupt
    file, a database that is down)."""


class StoreReadOnly(StoreError):
    """The store takes no writes (a read-only file or database, or FACEID_READ_ONLY): identification works, changes do not."""


class StorageFull(StoreError):
    """The disk is full; nothing was lost, and writes work again once space is freed."""


class StoreBusy(StoreError):
    """Another process held the write lock for longer than the busy timeout."""


class CollectionExists(StoreError):
    """A collection of that name is already registered."""


# -- encodings ---------------------------------------------------------------------------------
def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def now_precise() -> str:
    """Audit times: milliseconds, so the order of a busy second is kept."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def audit_row(event: AuditEvent) -> tuple[str, str | None, str, str, str, str, str | None]:
    """(at, key_id, collection, action, persons as JSON, outcome, detail), as both stores keep it."""
    return event.at, event.key_id, event.collection, event.action, json.dumps(list(event.persons)), event.outcome, event.detail


def audit_entry(row: tuple) -> AuditEntry:
    entry_id, at, key_id, collection, action, persons, outcome, detail = row
    return AuditEntry(int(entry_id), AuditEvent(action, collection, key_id, tuple(json.loads(persons)), outcome, detail, at))


def audit_where(query: AuditQuery, mark: str) -> tuple[str, list[str]]:
    """A WHERE clause (with `mark` as the placeholder, ? or %s) and its arguments."""
    clauses, args = [], []
    if query.since:
        clauses.append(f"at >= {mark}")
        args.append(query.since)
    if query.until:
        clauses.append(f"at < {mark}")
        args.append(query.until)
    if query.person:
        clauses.append(f"persons LIKE {mark} ESCAPE '\\'")
        args.append(like_pattern(json.dumps(query.person)))
    if query.key_id:
        clauses.append(f"key_id = {mark}")
        args.append(query.key_id)
    if query.action:
        clauses.append(f"action = {mark}")
        args.append(query.action)
    return ("WHERE " + " AND ".join(clauses) + " ") if clauses else "", args


def blob(embedding: np.ndarray) -> bytes:
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vector.shape != (EMBEDDING_DIM,):
        raise ValueError(f"embedding must have {EMBEDDING_DIM} values, got {vector.shape[0]}")
    return vector.tobytes()


def embeddings_of(blobs: list[bytes]) -> np.ndarray:
    """N×512 float32 from N stored embeddings."""
    return np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=np.float32).reshape(len(blobs), EMBEDDING_DIM)


def photo_vectors_of(blobs: list[bytes]) -> np.ndarray:
    """N×PROJECTED_DIM float32 from N stored photo vectors."""
    return np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=np.float32).reshape(len(blobs), PROJECTED_DIM)


def photo_columns(photo: PhotoRecord | None) -> tuple[bytes | None, bytes | None, str | None]:
    if photo is None:
        return None, None, None
    thumb = np.ascontiguousarray(photo.thumb, dtype=np.uint8)
    vector = np.asarray(photo.vector, dtype=np.float32).reshape(-1)
    if thumb.shape != (THUMB_SIDE, THUMB_SIDE) or vector.shape != (PROJECTED_DIM,):
        raise ValueError(f"photo evidence must be a {THUMB_SIDE}² thumbnail and {PROJECTED_DIM} values")
    return thumb.tobytes(), vector.tobytes(), ",".join(f"{v:.5f}" for v in photo.box)


def stored_photo(face_id: int, person_id: str, source: str, thumb: bytes, box: str) -> StoredPhoto:
    return StoredPhoto(int(face_id), person_id, source, np.frombuffer(bytes(thumb), dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE), box_of(box))


def indexed_face(face_id: int, person_id: str, model_id: str, embedding: bytes, photo_vector: bytes | None) -> IndexedFace:
    return IndexedFace(int(face_id), person_id, model_id, np.frombuffer(bytes(embedding), dtype=np.float32),
                       None if photo_vector is None else np.frombuffer(bytes(photo_vector), dtype=np.float32))


def cells_row(space: str, cells: Cells) -> tuple[str, int, int, int, bytes, str]:
    centroids = np.ascontiguousarray(cells.centroids, dtype=np.float32)
    return space, centroids.shape[0], centroids.shape[1], cells.trained_on, centroids.tobytes(), now()


def cells_of(lists: int, dim: int, trained_on: int, centroids: bytes) -> Cells:
    return Cells(np.frombuffer(bytes(centroids), dtype=np.float32).reshape(int(lists), int(dim)).copy(), int(trained_on))


def like_pattern(text: str) -> str:
    """A LIKE pattern matching values that contain `text` literally (backslash escapes)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def box_of(text: str) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in text.split(","))
    return x1, y1, x2, y2


def sql_statements(code: str) -> list[str]:
    """A migration's statements, its `--` comments dropped; a trigger's BEGIN ... END body and
    a $$-quoted function body are kept whole, semicolons and all."""
    code = "\n".join(line.split("--")[0] for line in code.splitlines())
    statements, current = [], ""
    for piece in code.split(";"):
        current = f"{current};{piece}" if current else piece
        in_dollars = current.count("$$") % 2 == 1
        in_trigger = current.lstrip().upper().startswith("CREATE TRIGGER") and " BEGIN" in current.upper() and not current.rstrip().upper().endswith("END")
        if not in_dollars and not in_trigger:
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
