"""SQLite store of persons and their faces: the gallery's source of truth.

WAL mode lets readers run beside the single writer; every enrolment is one transaction,
committed (and so durable) before the service answers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from app.gallery.index import Cells
from core.constants import EMBEDDING_DIM
from core.errors import FaceIdError
from core.photos.descriptor import PROJECTED_DIM, THUMB_SIDE

SCHEMA = """
CREATE TABLE IF NOT EXISTS persons (
    person_id  TEXT PRIMARY KEY,
    name       TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    face_id    INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id  TEXT NOT NULL REFERENCES persons(person_id) ON DELETE CASCADE,
    source     TEXT NOT NULL,      -- file name or content key the face came from
    model_id   TEXT NOT NULL,      -- the backbone that made the embedding
    embedding  BLOB NOT NULL,      -- float32 × 512, unit norm
    crop       BLOB,               -- the aligned 160×160 face (PNG), so the gallery can be re-embedded
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
CREATE INDEX IF NOT EXISTS faces_source ON faces(person_id, source);
-- 'generation' counts committed writes: a saved index built at another generation is stale
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
# Forward migrations, by the schema version they lead to (PRAGMA user_version). Version 1 is
# SCHEMA above; each later one runs once, in a transaction, on a store at the version before.
MIGRATIONS: dict[int, str] = {
    # Photo evidence (core/photos): each face's photo, described, and where in it the face was.
    # Faces enrolled before have none; `faceid gallery import` fills them in from the photos.
    2: """
ALTER TABLE faces ADD COLUMN photo_thumb BLOB;   -- the photo's THUMB_SIDE² grey thumbnail
ALTER TABLE faces ADD COLUMN photo_vector BLOB;  -- its projected descriptor, float32 × PROJECTED_DIM
ALTER TABLE faces ADD COLUMN photo_box TEXT;     -- the face's box as fractions of the photo: x1,y1,x2,y2
""",
    # An IVF index's trained cells (app/gallery/index.py, Cells), per vector space: a cache the
    # next build adds its vectors to instead of training anew. Not gallery data: writing it
    # leaves the generation alone (`faceid gallery migrate` copies it after the faces).
    3: """
CREATE TABLE index_cells (
    space      TEXT PRIMARY KEY,  -- 'faces <model id>' or 'photos'
    lists      INTEGER NOT NULL,
    dim        INTEGER NOT NULL,
    trained_on INTEGER NOT NULL,  -- vectors the cells were trained on
    centroids  BLOB NOT NULL,     -- float32 × lists × dim
    created_at TEXT NOT NULL
);
""",
}
SCHEMA_VERSION = max(MIGRATIONS)


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str | None
    n_faces: int
    created_at: str


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


# Every column of a face, as `faceid gallery migrate` copies them between stores, ids kept.
FACE_COLUMNS = ("face_id", "person_id", "source", "model_id", "embedding", "crop", "created_at", "photo_thumb", "photo_vector", "photo_box")
PersonRow = tuple[str, str | None, str]  # person id, name, created at
Entry = tuple[str, str | None, list[NewFace]]  # person id, name (None keeps the stored one), faces


class StoreError(FaceIdError):
    """The store cannot do what was asked; nothing was changed."""


class StoreUnavailable(StoreError):
    """The store cannot be opened (a missing or read-only data directory, a corrupt file)."""


class StoreReadOnly(StoreError):
    """The database file or its folder is read-only: identification works, changes do not."""


class StorageFull(StoreError):
    """The disk is full; nothing was lost, and writes work again once space is freed."""


class StoreBusy(StoreError):
    """Another process held the write lock for longer than the busy timeout."""


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    if code == sqlite3.SQLITE_FULL:
        return StorageFull(str(path), "the disk is full; nothing was stored")
    if code == sqlite3.SQLITE_READONLY or code == sqlite3.SQLITE_CANTOPEN:
        return StoreReadOnly(str(path), "the gallery store is read-only; nothing was changed")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusy(str(path), "the gallery store is busy with another writer; try again")
    return StoreError(str(path), f"the gallery store failed ({exc}); nothing was changed")


def check_data_dir(data_dir: Path) -> None:
    """Refuse, in one sentence, a data directory the store cannot live in."""
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(str(data_dir), f"cannot create the gallery's data directory ({exc.strerror}); set FACEID_DATA_DIR") from exc
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise StoreUnavailable(str(data_dir), "the gallery's data directory is not writable; set FACEID_DATA_DIR to one that is")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Writer:
    """The writes one transaction may make."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def add_faces(self, entries: list[Entry], model_id: str) -> list[tuple[list[int], bool]]:
        """Per entry: (new face ids, whether the person was created)."""
        cur, at, out = self._cur, now(), []
        for person_id, name, faces in entries:
            created = cur.execute("SELECT 1 FROM persons WHERE person_id = ?", (person_id,)).fetchone() is None
            if created:
                cur.execute("INSERT INTO persons VALUES (?, ?, ?)", (person_id, name, at))
            elif name is not None:
                cur.execute("UPDATE persons SET name = ? WHERE person_id = ?", (name, person_id))
            ids = []
            for face in faces:
                photo = photo_columns(face.photo)
                cur.execute(
                    "INSERT INTO faces (person_id, source, model_id, embedding, crop, created_at, photo_thumb, photo_vector, photo_box) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (person_id, face.source, model_id, blob(face.embedding), face.crop_png, at, *photo),
                )
                assert cur.lastrowid is not None  # an INSERT always sets it
                ids.append(cur.lastrowid)
            out.append((ids, created))
        return out

    def delete_person(self, person_id: str) -> list[int] | None:
        """The person's face ids, deleted with them; None if there was no such person."""
        ids = [r[0] for r in self._cur.execute("SELECT face_id FROM faces WHERE person_id = ?", (person_id,))]
        deleted = self._cur.execute("DELETE FROM persons WHERE person_id = ?", (person_id,)).rowcount
        return ids if deleted else None

    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None:
        self._cur.executemany("UPDATE faces SET embedding = ?, model_id = ? WHERE face_id = ?", [(blob(e), model_id, i) for i, e in updates])

    def set_photos(self, updates: list[tuple[int, PhotoRecord]]) -> None:
        """Photo evidence for faces stored without it (a gallery enrolled before it existed)."""
        self._cur.executemany("UPDATE faces SET photo_thumb = ?, photo_vector = ?, photo_box = ? WHERE face_id = ?",
                              [(*photo_columns(p), i) for i, p in updates])

    def copy_in(self, persons: list[PersonRow], faces: list[tuple]) -> None:
        """Persons (kept if there) and faces with their ids, as another store holds them."""
        self._cur.executemany("INSERT INTO persons VALUES (?, ?, ?) ON CONFLICT(person_id) DO NOTHING", persons)
        self._cur.executemany(f"INSERT INTO faces ({', '.join(FACE_COLUMNS)}) VALUES ({', '.join('?' * len(FACE_COLUMNS))})", faces)


class Writes(Protocol):
    """What one write transaction may do, in either store."""

    def add_faces(self, entries: list[Entry], model_id: str) -> list[tuple[list[int], bool]]: ...
    def delete_person(self, person_id: str) -> list[int] | None: ...
    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None: ...
    def set_photos(self, updates: list[tuple[int, PhotoRecord]]) -> None: ...
    def copy_in(self, persons: list[PersonRow], faces: list[tuple]) -> None: ...


class GalleryStore(Protocol):
    """The gallery's source of truth: SQLite (Store, the default) or PostgreSQL (PostgresStore)."""

    location: str

    def write(self) -> AbstractContextManager[Writes]: ...
    def generation(self) -> int: ...
    def data_version(self) -> int: ...
    def writable(self) -> bool: ...
    def close(self) -> None: ...
    def schema_version(self) -> int: ...
    def get_person(self, person_id: str) -> Person | None: ...
    def list_persons(self, offset: int, limit: int, containing: str | None = None) -> tuple[list[Person], int]: ...
    def faces_of(self, person_id: str, offset: int, limit: int) -> tuple[list[FaceRow], int] | None: ...
    def crop_of(self, person_id: str, face_id: int) -> tuple[bool, bytes | None]: ...
    def names(self, person_ids: set[str]) -> dict[str, str | None]: ...
    def has_source(self, person_id: str, source: str) -> bool: ...
    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]: ...
    def index_cells(self, space: str) -> Cells | None: ...
    def keep_index_cells(self, space: str, cells: Cells) -> None: ...
    def face_persons(self) -> tuple[np.ndarray, list[str]]: ...
    def embeddings_of(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]: ...
    def photo_vectors(self) -> tuple[np.ndarray, np.ndarray]: ...
    def photos_of(self, face_ids: list[int]) -> list[StoredPhoto]: ...
    def faces_without_photos(self) -> list[tuple[int, str, str]]: ...
    def model_ids(self) -> dict[str, int]: ...
    def crops(self) -> list[tuple[int, bytes | None]]: ...
    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None: ...
    def counts(self) -> tuple[int, int]: ...
    def all_persons(self) -> list[PersonRow]: ...
    def face_rows(self, after: int, limit: int) -> list[tuple]: ...


class Store:
    """The SQLite store, the embedded default (PostgresStore, app/gallery/postgres.py, is the
    shared one; both answer the methods the gallery calls)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)  # what messages show: a path here, a URL without password there
        self._lock = threading.Lock()  # one connection shared by the threadpool; sqlite serialises anyway
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an answered enrolment survives power loss
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(str(path), f"cannot open the gallery store ({exc}); check that its folder exists and is writable") from exc

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one transaction per step (a store made before
        versions were recorded is at 1)."""
        version = max(1, int(self._db.execute("PRAGMA user_version").fetchone()[0]))
        for target in sorted(v for v in MIGRATIONS if v > version):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                code = "\n".join(line.split("--")[0] for line in MIGRATIONS[target].splitlines())
                for statement in filter(None, (s.strip() for s in code.split(";"))):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback()
                raise

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def write(self) -> Iterator[Writer]:
        """One writer at a time; the block's writes commit together when it ends, or not at all
        if it raises (a failed COMMIT included)."""
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield Writer(cur)
                cur.execute("INSERT INTO meta VALUES ('generation', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1")
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(self.path, exc) from exc
                raise

    def generation(self) -> int:
        """How many write transactions have committed to this store, by any process."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def face_persons(self) -> tuple[np.ndarray, list[str]]:
        """(face ids, person id per face), without the embeddings: what a saved index lacks."""
        with self._lock:
            rows = self._db.execute("SELECT face_id, person_id FROM faces ORDER BY face_id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def data_version(self) -> int:
        """Changes whenever another connection (another process) commits to the store."""
        with self._lock:
            return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    def writable(self) -> bool:
        with self._lock:
            query_only = self._db.execute("PRAGMA query_only").fetchone()[0]
        return not query_only and os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get_person(self, person_id: str) -> Person | None:
        with self._lock:
            row = self._db.execute(
                "SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at FROM persons p "
                "LEFT JOIN faces f ON f.person_id = p.person_id WHERE p.person_id = ? GROUP BY p.person_id",
                (person_id,),
            ).fetchone()
        return Person(*row) if row else None

    def list_persons(self, offset: int, limit: int, containing: str | None = None) -> tuple[list[Person], int]:
        """A page of persons by id; with `containing`, those whose id or name holds it (ASCII letters in any case)."""
        where, args = "", tuple[str, ...]()
        if containing:
            pattern = like_pattern(containing)
            where, args = "WHERE p.person_id LIKE ? ESCAPE '\\' OR p.name LIKE ? ESCAPE '\\' ", (pattern, pattern)
        with self._lock:
            rows = self._db.execute(
                "SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at FROM persons p "
                f"LEFT JOIN faces f ON f.person_id = p.person_id {where}GROUP BY p.person_id ORDER BY p.person_id LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            total = self._db.execute(f"SELECT COUNT(*) FROM persons p {where}", args).fetchone()[0]
        return [Person(*r) for r in rows], int(total)

    def faces_of(self, person_id: str, offset: int, limit: int) -> tuple[list[FaceRow], int] | None:
        """A page of a person's faces, oldest first, and how many they have; None for no such person."""
        with self._lock:
            if self._db.execute("SELECT 1 FROM persons WHERE person_id = ?", (person_id,)).fetchone() is None:
                return None
            rows = self._db.execute(
                "SELECT face_id, source, model_id, created_at, crop IS NOT NULL, photo_vector IS NOT NULL FROM faces "
                "WHERE person_id = ? ORDER BY face_id LIMIT ? OFFSET ?", (person_id, limit, offset)).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM faces WHERE person_id = ?", (person_id,)).fetchone()[0]
        return [FaceRow(r[0], r[1], r[2], r[3], bool(r[4]), bool(r[5])) for r in rows], int(total)

    def crop_of(self, person_id: str, face_id: int) -> tuple[bool, bytes | None]:
        """(whether the person has this face, its stored crop PNG if any)."""
        with self._lock:
            row = self._db.execute("SELECT crop FROM faces WHERE person_id = ? AND face_id = ?", (person_id, face_id)).fetchone()
        return (False, None) if row is None else (True, row[0])

    def names(self, person_ids: set[str]) -> dict[str, str | None]:
        if not person_ids:
            return {}
        marks = ",".join("?" * len(person_ids))
        with self._lock:
            rows = self._db.execute(f"SELECT person_id, name FROM persons WHERE person_id IN ({marks})", tuple(person_ids)).fetchall()
        return dict(rows)

    def has_source(self, person_id: str, source: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM faces WHERE person_id = ? AND source = ?", (person_id, source)).fetchone() is not None

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(face ids, N×512 matrix, person id per face) for building the index."""
        with self._lock:
            rows = self._db.execute("SELECT face_id, person_id, embedding FROM faces ORDER BY face_id").fetchall()
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        matrix = np.frombuffer(b"".join(r[2] for r in rows), dtype=np.float32).reshape(len(rows), EMBEDDING_DIM)
        return ids, matrix, [r[1] for r in rows]

    def index_cells(self, space: str) -> Cells | None:
        """The IVF cells kept for this vector space, if any."""
        with self._lock:
            row = self._db.execute("SELECT lists, dim, trained_on, centroids FROM index_cells WHERE space = ?", (space,)).fetchone()
        return None if row is None else cells_of(*row)

    def keep_index_cells(self, space: str, cells: Cells) -> None:
        """Keep freshly trained cells, unless cells trained on more vectors are kept already."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO index_cells VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (space) DO UPDATE SET lists = excluded.lists, "
                    "dim = excluded.dim, trained_on = excluded.trained_on, centroids = excluded.centroids, created_at = excluded.created_at "
                    "WHERE excluded.trained_on >= index_cells.trained_on", cells_row(space, cells))
            except sqlite3.Error as exc:
                raise _store_error(self.path, exc) from exc

    def embeddings_of(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(face ids found, their embeddings) for some faces."""
        marks = ",".join("?" * len(face_ids))
        with self._lock:
            rows = self._db.execute(f"SELECT face_id, embedding FROM faces WHERE face_id IN ({marks})", tuple(face_ids)).fetchall()
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), EMBEDDING_DIM)
        return np.array([r[0] for r in rows], dtype=np.int64), matrix

    def photo_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(face ids, N×PROJECTED_DIM) of the faces that have photo evidence, for its index."""
        with self._lock:
            rows = self._db.execute("SELECT face_id, photo_vector FROM faces WHERE photo_vector IS NOT NULL ORDER BY face_id").fetchall()
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), PROJECTED_DIM)
        return np.array([r[0] for r in rows], dtype=np.int64), matrix

    def photos_of(self, face_ids: list[int]) -> list[StoredPhoto]:
        """The stored photos of some faces (those that have one), in the order asked."""
        if not face_ids:
            return []
        marks = ",".join("?" * len(face_ids))
        with self._lock:
            rows = self._db.execute(f"SELECT face_id, person_id, source, photo_thumb, photo_box FROM faces "
                                    f"WHERE photo_thumb IS NOT NULL AND face_id IN ({marks})", tuple(face_ids)).fetchall()
        found = {r[0]: StoredPhoto(r[0], r[1], r[2], np.frombuffer(r[3], dtype=np.uint8).reshape(THUMB_SIDE, THUMB_SIDE),
                                   box_of(r[4])) for r in rows}
        return [found[i] for i in face_ids if i in found]

    def faces_without_photos(self) -> list[tuple[int, str, str]]:
        """(face id, person id, source) of the faces stored without photo evidence."""
        with self._lock:
            return self._db.execute("SELECT face_id, person_id, source FROM faces WHERE photo_vector IS NULL ORDER BY face_id").fetchall()

    def model_ids(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT model_id, COUNT(*) FROM faces GROUP BY model_id").fetchall())

    def crops(self) -> list[tuple[int, bytes | None]]:
        with self._lock:
            return self._db.execute("SELECT face_id, crop FROM faces ORDER BY face_id").fetchall()

    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None:
        with self.write() as w:
            w.replace_embeddings(updates, model_id)

    def all_persons(self) -> list[PersonRow]:
        with self._lock:
            return self._db.execute("SELECT person_id, name, created_at FROM persons ORDER BY person_id").fetchall()

    def face_rows(self, after: int, limit: int) -> list[tuple]:
        """Up to `limit` faces with ids above `after`, every column (FACE_COLUMNS), by id."""
        with self._lock:
            return self._db.execute(f"SELECT {', '.join(FACE_COLUMNS)} FROM faces WHERE face_id > ? ORDER BY face_id LIMIT ?",
                                    (after, limit)).fetchall()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            persons = self._db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
            faces = self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        return int(persons), int(faces)


def photo_columns(photo: PhotoRecord | None) -> tuple[bytes | None, bytes | None, str | None]:
    if photo is None:
        return None, None, None
    thumb = np.ascontiguousarray(photo.thumb, dtype=np.uint8)
    vector = np.asarray(photo.vector, dtype=np.float32).reshape(-1)
    if thumb.shape != (THUMB_SIDE, THUMB_SIDE) or vector.shape != (PROJECTED_DIM,):
        raise ValueError(f"photo evidence must be a {THUMB_SIDE}² thumbnail and {PROJECTED_DIM} values")
    return thumb.tobytes(), vector.tobytes(), ",".join(f"{v:.5f}" for v in photo.box)


def cells_row(space: str, cells: Cells) -> tuple[str, int, int, int, bytes, str]:
    centroids = np.ascontiguousarray(cells.centroids, dtype=np.float32)
    return space, centroids.shape[0], centroids.shape[1], cells.trained_on, centroids.tobytes(), now()


def cells_of(lists: int, dim: int, trained_on: int, centroids: bytes) -> Cells:
    return Cells(np.frombuffer(centroids, dtype=np.float32).reshape(int(lists), int(dim)).copy(), int(trained_on))


def like_pattern(text: str) -> str:
    """A LIKE pattern matching values that contain `text` literally (backslash escapes)."""
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def box_of(text: str) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in text.split(","))
    return x1, y1, x2, y2


def blob(embedding: np.ndarray) -> bytes:
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vector.shape != (EMBEDDING_DIM,):
        raise ValueError(f"embedding must have {EMBEDDING_DIM} values, got {vector.shape[0]}")
    return vector.tobytes()
