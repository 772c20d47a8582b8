"""SQLite store of persons and their faces: the gallery's source of truth.

WAL mode lets readers run beside the single writer; every enrolment is one transaction,
committed (and so durable) before the service answers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from core.constants import EMBEDDING_DIM
from core.errors import FaceIdError

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


@dataclass(frozen=True)
class Person:
    person_id: str
    name: str | None
    n_faces: int
    created_at: str


@dataclass(frozen=True)
class NewFace:
    source: str
    embedding: np.ndarray
    crop_png: bytes | None = None


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


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Writer:
    """The writes one transaction may make."""

    def __init__(self, cur: sqlite3.Cursor) -> None:
        self._cur = cur

    def add_faces(self, entries: list[Entry], model_id: str) -> list[tuple[list[int], bool]]:
        """Per entry: (new face ids, whether the person was created)."""
        cur, now, out = self._cur, _now(), []
        for person_id, name, faces in entries:
            created = cur.execute("SELECT 1 FROM persons WHERE person_id = ?", (person_id,)).fetchone() is None
            if created:
                cur.execute("INSERT INTO persons VALUES (?, ?, ?)", (person_id, name, now))
            elif name is not None:
                cur.execute("UPDATE persons SET name = ? WHERE person_id = ?", (name, person_id))
            ids = []
            for face in faces:
                cur.execute(
                    "INSERT INTO faces (person_id, source, model_id, embedding, crop, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (person_id, face.source, model_id, _blob(face.embedding), face.crop_png, now),
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
        self._cur.executemany("UPDATE faces SET embedding = ?, model_id = ? WHERE face_id = ?", [(_blob(e), model_id, i) for i, e in updates])


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()  # one connection shared by the threadpool; sqlite serialises anyway
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an answered enrolment survives power loss
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(str(path), f"cannot open the gallery store ({exc}); check that its folder exists and is writable") from exc

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

    def list_persons(self, offset: int, limit: int) -> tuple[list[Person], int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at FROM persons p "
                "LEFT JOIN faces f ON f.person_id = p.person_id GROUP BY p.person_id ORDER BY p.person_id LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            total = self._db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
        return [Person(*r) for r in rows], int(total)

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

    def embeddings_of(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(face ids found, their embeddings) for some faces."""
        marks = ",".join("?" * len(face_ids))
        with self._lock:
            rows = self._db.execute(f"SELECT face_id, embedding FROM faces WHERE face_id IN ({marks})", tuple(face_ids)).fetchall()
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), EMBEDDING_DIM)
        return np.array([r[0] for r in rows], dtype=np.int64), matrix

    def model_ids(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT model_id, COUNT(*) FROM faces GROUP BY model_id").fetchall())

    def crops(self) -> list[tuple[int, bytes | None]]:
        with self._lock:
            return self._db.execute("SELECT face_id, crop FROM faces ORDER BY face_id").fetchall()

    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None:
        with self.write() as w:
            w.replace_embeddings(updates, model_id)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            persons = self._db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
            faces = self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        return int(persons), int(faces)


def _blob(embedding: np.ndarray) -> bytes:
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vector.shape != (EMBEDDING_DIM,):
        raise ValueError(f"embedding must have {EMBEDDING_DIM} values, got {vector.shape[0]}")
    return vector.tobytes()
