"""SQLite store of persons and their faces: the gallery's source of truth.

WAL mode lets readers run beside the single writer; every enrolment is one transaction,
committed (and so durable) before the service answers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from core.constants import EMBEDDING_DIM

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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()  # one connection shared by the threadpool; sqlite serialises anyway
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an answered enrolment survives power loss
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """One writer at a time; everything inside commits together or not at all."""
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_faces(self, person_id: str, name: str | None, faces: list[NewFace], model_id: str) -> tuple[Person, list[int], bool]:
        """Store a person's new faces in one transaction: all of them or none. Returns
        (person, new face ids, created)."""
        ((ids, created),) = self.add_many([(person_id, name, faces)], model_id)
        person = self.get_person(person_id)
        assert person is not None
        return person, ids, created

    def add_many(self, entries: list[tuple[str, str | None, list[NewFace]]], model_id: str) -> list[tuple[list[int], bool]]:
        """Store several persons' new faces in one transaction; per entry (new face ids, created)."""
        now = _now()
        out = []
        with self._transaction() as cur:
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
                    ids.append(int(cur.lastrowid))
                out.append((ids, created))
        return out

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

    def delete_person(self, person_id: str) -> list[int] | None:
        """Delete a person and their faces; None if there was no such person."""
        with self._transaction() as cur:
            ids = [r[0] for r in cur.execute("SELECT face_id FROM faces WHERE person_id = ?", (person_id,))]
            deleted = cur.execute("DELETE FROM persons WHERE person_id = ?", (person_id,)).rowcount
        return ids if deleted else None

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

    def model_ids(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT model_id, COUNT(*) FROM faces GROUP BY model_id").fetchall())

    def crops(self) -> list[tuple[int, bytes | None]]:
        with self._lock:
            return self._db.execute("SELECT face_id, crop FROM faces ORDER BY face_id").fetchall()

    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None:
        with self._transaction() as cur:
            cur.executemany("UPDATE faces SET embedding = ?, model_id = ? WHERE face_id = ?", [(_blob(e), model_id, i) for i, e in updates])

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
