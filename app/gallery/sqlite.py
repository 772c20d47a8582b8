"""The SQLite store, the embedded default: one file in the data folder, one process writing.

WAL mode lets readers run beside the single writer; every write is one transaction, committed
(and so durable) before the service answers. The store's version is a counter of committed
write transactions (the `generation` row of `meta`), so a process notices another's writes by
reading it. It keeps no change log: a version that moved means the index is rebuilt.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from app.gallery.records import (
    FACE_COLUMNS,
    PERSON_COLUMNS,
    AuditEntry,
    AuditEvent,
    AuditQuery,
    Cells,
    Change,
    CollectionExists,
    CollectionRow,
    Committed,
    Entry,
    Erased,
    FaceRow,
    IndexedFace,
    NewUnknown,
    Person,
    PersonRow,
    PhotoRecord,
    StorageFull,
    StoreBusy,
    StoredPhoto,
    StoreError,
    StoreKind,
    StoreReadOnly,
    StoreUnavailable,
    Unknown,
    audit_entry,
    audit_row,
    audit_where,
    blob,
    cells_of,
    cells_row,
    created,
    embeddings_of,
    indexed_face,
    like_pattern,
    now,
    photo_columns,
    photo_vectors_of,
    sql_statements,
    stored_photo,
)
from app.gallery.sealing import (
    CROP,
    EMBEDDING,
    KEY_ID_BYTES,
    MAGIC,
    SEALED,
    THUMB,
    UNKNOWN_CROP,
    UNKNOWN_EMBEDDING,
    VECTOR,
    Sealer,
    missing_key,
    resealed,
    sealed_photo,
)
from app.gallery.sync import LocalWatcher, Sync

STORE_FILE = "gallery.sqlite3"  # its name in the data folder
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
-- 'generation' is the store's version: committed write transactions, counted
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
    # An IVF index's trained cells (records.Cells), per vector space: a cache the next build adds
    # its vectors to instead of training anew. Not gallery data: writing it leaves the version
    # alone (`faceid gallery migrate` copies it after the faces).
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
    # The collections beside the default one (app/gallery/collections.py): read in the default
    # collection's store only; each collection's own faces live in a store of its own.
    4: """
CREATE TABLE collections (
    name             TEXT PRIMARY KEY,
    created_at       TEXT NOT NULL,
    threshold        REAL,  -- NULL: the service's
    verify_threshold REAL,
    photo_threshold  REAL
);
""",
    # Biometric data handled as the law expects (app/gallery/audit.py): who did what, appended
    # in the same transaction as the write it records, and never changed; and each person's
    # consent reference.
    5: """
ALTER TABLE persons ADD COLUMN consent TEXT;  -- a consent reference (free text or an id), as enrolment gave it
CREATE TABLE audit (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         TEXT NOT NULL,     -- ISO 8601, UTC, milliseconds
    key_id     TEXT,              -- the API key's id, never the key; NULL: no key configured
    collection TEXT NOT NULL,
    action     TEXT NOT NULL,     -- enrol, delete, identify, verify, export, import, purge, ...
    persons    TEXT NOT NULL,     -- JSON list of the person ids written, named or erased
    outcome    TEXT NOT NULL,     -- ok, or the status it was refused with
    detail     TEXT               -- counts and short facts; never images or embeddings
);
CREATE INDEX audit_at ON audit(at);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
-- Faces /identify answered as unknown, kept when FACEID_UNKNOWNS is on (app/usecases/unknowns.py)
CREATE TABLE unknowns (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    key_id      TEXT,
    embedding   BLOB NOT NULL,
    crop        BLOB,
    quality     REAL NOT NULL,
    enrolled_as TEXT              -- the person its cluster was enrolled as
);
CREATE INDEX unknowns_at ON unknowns(at);
""",
}
SCHEMA_VERSION = max(MIGRATIONS)
AUDIT_INSERT = "INSERT INTO audit (at, key_id, collection, action, persons, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?)"
WATCH_INTERVAL_S = 2.0  # how often a serving process reads the version for another process's writes


def _store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    if code == sqlite3.SQLITE_FULL:
        return StorageFull(str(path), "the disk is full; nothing was stored")
    if code == sqlite3.SQLITE_READONLY or code == sqlite3.SQLITE_CANTOPEN:
        return StoreReadOnly(str(path), "the gallery store is read-only; nothing was changed")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreBusy(str(path), "the gallery store is busy with another writer; try again")
    return StoreError(str(path), f"the gallery store failed ({exc}); nothing was changed")


class SqliteWriter:
    """The writes one transaction may make."""

    def __init__(self, cur: sqlite3.Cursor, sealer: Sealer) -> None:
        self._cur = cur
        self._sealer = sealer
        self.committed: Committed | None = None  # set once the transaction has committed

    def add_faces(self, entries: list[Entry], model_id: str) -> list[tuple[list[int], bool]]:
        """Per entry: (new face ids, whether the person was created)."""
        cur, at, out = self._cur, now(), []
        for person_id, name, faces in entries:
            new = cur.execute("SELECT 1 FROM persons WHERE person_id = ?", (person_id,)).fetchone() is None
            if new:
                cur.execute("INSERT INTO persons (person_id, name, created_at) VALUES (?, ?, ?)", (person_id, name, created(faces, at)))
            elif name is not None:
                cur.execute("UPDATE persons SET name = ? WHERE person_id = ?", (name, person_id))
            ids = []
            for face in faces:
                cur.execute(
                    "INSERT INTO faces (person_id, source, model_id, embedding, crop, created_at, photo_thumb, photo_vector, photo_box) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (person_id, face.source, model_id, self._sealer.seal(blob(face.embedding), EMBEDDING), self._sealer.seal(face.crop_png, CROP),
                     face.created_at or at, *sealed_photo(self._sealer, photo_columns(face.photo))),
                )
                assert cur.lastrowid is not None  # an INSERT always sets it
                ids.append(cur.lastrowid)
            out.append((ids, new))
        return out

    def set_consent(self, person_id: str, consent: str) -> None:
        self._cur.execute("UPDATE persons SET consent = ? WHERE person_id = ?", (consent, person_id))

    def audit(self, event: AuditEvent) -> None:
        """The event, in this transaction: it commits with the write it records, or not at all."""
        self._cur.execute(AUDIT_INSERT, audit_row(event))

    def delete_person(self, person_id: str) -> Erased | None:
        """The person and their faces (and the unknown faces enrolled as them), deleted; what went
        (None if there was no such person)."""
        rows = self._cur.execute("SELECT face_id, crop IS NOT NULL, photo_thumb IS NOT NULL FROM faces WHERE person_id = ?", (person_id,)).fetchall()
        deleted = self._cur.execute("DELETE FROM persons WHERE person_id = ?", (person_id,)).rowcount
        if not deleted:
            return None
        unknowns = self._cur.execute("DELETE FROM unknowns WHERE enrolled_as = ?", (person_id,)).rowcount
        return Erased([r[0] for r in rows], sum(r[1] for r in rows), sum(r[2] for r in rows), unknowns)

    def mark_unknowns(self, ids: list[int], person_id: str) -> None:
        """These unknown faces' cluster was enrolled as this person."""
        self._cur.executemany("UPDATE unknowns SET enrolled_as = ? WHERE id = ?", [(person_id, i) for i in ids])

    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None:
        self._cur.executemany("UPDATE faces SET embedding = ?, model_id = ? WHERE face_id = ?",
                              [(self._sealer.seal(blob(e), EMBEDDING), model_id, i) for i, e in updates])

    def purge_sources(self, before: str) -> list[int]:
        """Crops and photo evidence of faces created before `before`, gone; the embeddings stay.
        The ids of the faces that lost something."""
        ids = [r[0] for r in self._cur.execute("SELECT face_id FROM faces WHERE created_at < ? AND (crop IS NOT NULL OR photo_thumb IS NOT NULL "
                                               "OR photo_vector IS NOT NULL)", (before,))]
        self._cur.executemany("UPDATE faces SET crop = NULL, photo_thumb = NULL, photo_vector = NULL, photo_box = NULL WHERE face_id = ?",
                              [(i,) for i in ids])
        return ids

    def expired_persons(self, before: str) -> list[str]:
        """Persons whose newest face (or, faceless, their creation) is older than `before`."""
        return [r[0] for r in self._cur.execute("SELECT p.person_id FROM persons p LEFT JOIN faces f ON f.person_id = p.person_id "
                                                "GROUP BY p.person_id HAVING COALESCE(MAX(f.created_at), p.created_at) < ?", (before,))]

    def set_photos(self, updates: list[tuple[int, PhotoRecord]]) -> None:
        """Photo evidence for faces stored without it (a gallery enrolled before it existed)."""
        self._cur.executemany("UPDATE faces SET photo_thumb = ?, photo_vector = ?, photo_box = ? WHERE face_id = ?",
                              [(*sealed_photo(self._sealer, photo_columns(p)), i) for i, p in updates])

    def copy_in(self, persons: list[PersonRow], faces: list[tuple]) -> None:
        """Persons (kept if there) and faces with their ids, as another store holds them."""
        self._cur.executemany(f"INSERT INTO persons ({', '.join(PERSON_COLUMNS)}) VALUES (?, ?, ?, ?) ON CONFLICT(person_id) DO NOTHING", persons)
        self._cur.executemany(f"INSERT INTO faces ({', '.join(FACE_COLUMNS)}) VALUES ({', '.join('?' * len(FACE_COLUMNS))})", faces)

    def add_collection(self, row: CollectionRow) -> None:
        if self._cur.execute("SELECT 1 FROM collections WHERE name = ?", (row.name,)).fetchone() is not None:
            raise CollectionExists(row.name, "a collection of this name exists already")
        self._cur.execute("INSERT INTO collections VALUES (?, ?, ?, ?, ?)",
                          (row.name, row.created_at, row.threshold, row.verify_threshold, row.photo_threshold))

    def remove_collection(self, name: str) -> bool:
        return self._cur.execute("DELETE FROM collections WHERE name = ?", (name,)).rowcount > 0


class SqliteStore:
    """Persons and faces in one SQLite file. `read_only` takes no writes (FACEID_READ_ONLY);
    `max_pages` caps the file's size (PRAGMA max_page_count): past it a write is StorageFull,
    as on a full disk."""

    kind: StoreKind = "sqlite"

    def __init__(self, path: Path, read_only: bool = False, max_pages: int | None = None, sealer: Sealer | None = None) -> None:
        self.path = path
        self.sealer = sealer if sealer is not None else Sealer()
        self.location = str(path)  # what messages show: a path here, a URL without password there
        self._lock = threading.Lock()  # one connection shared by the threadpool; sqlite serialises anyway
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10.0)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # an answered enrolment survives power loss
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA secure_delete=ON")  # deleted rows' bytes are overwritten, not left in free pages
            if read_only:
                self._refuse_old_schema()
            else:
                self._db.executescript(SCHEMA)
                self._migrate()
            if max_pages is not None:
                self._db.execute(f"PRAGMA max_page_count = {int(max_pages)}")
            self._db.execute(f"PRAGMA query_only = {'ON' if read_only else 'OFF'}")
            sealed_with = {r[0] for r in self._db.execute(f"SELECT DISTINCT substr(embedding, 4, {KEY_ID_BYTES}) FROM faces "
                                                          "WHERE substr(embedding, 1, 3) = ?", (MAGIC,))}
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(str(path), f"cannot open the gallery store ({exc}); check that its folder exists and is writable") from exc
        if unknown := sorted(_text(k) for k in sealed_with if not self.sealer.knows(_text(k))):
            self._db.close()
            raise StoreUnavailable(str(path), missing_key(unknown[0]))

    def _migrate(self) -> None:
        """Bring the schema to SCHEMA_VERSION, one transaction per step (a store made before
        versions were recorded is at 1)."""
        version = max(1, int(self._db.execute("PRAGMA user_version").fetchone()[0]))
        for target in sorted(v for v in MIGRATIONS if v > version):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for statement in sql_statements(MIGRATIONS[target]):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {target}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.rollback()
                raise

    def _refuse_old_schema(self) -> None:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version != SCHEMA_VERSION:
            raise StoreUnavailable(str(self.path), f"the store's schema is at version {version}, this service's at {SCHEMA_VERSION}; "
                                   "start once without FACEID_READ_ONLY to migrate it")

    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def reembed_command(self) -> str:
        return f"faceid gallery reembed --data-dir {self.path.parent}"

    # -- writes and the version -------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[SqliteWriter]:
        """One writer at a time; the block's writes commit together when it ends, or not at all
        if it raises (a failed COMMIT included). The writer's `committed` says the version
        before and after."""
        with self._transaction() as cur:
            before, rows_before = _version(cur), self._db.total_changes
            writer = SqliteWriter(cur, self.sealer)
            yield writer
            changed = self._db.total_changes != rows_before  # a write that changed nothing leaves the version alone
            if changed:
                cur.execute("INSERT INTO meta VALUES ('generation', 1) ON CONFLICT(key) DO UPDATE SET value = value + 1")
        writer.committed = Committed(before, before + 1 if changed else before)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction that leaves the version alone (what is not gallery data: the
        registry of collections), or the body of `write`."""
        with self._lock:
            cur = self._db.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
                yield cur
                cur.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.rollback()
                if isinstance(exc, sqlite3.Error):
                    raise _store_error(self.path, exc) from exc
                raise

    def version(self) -> int:
        """Write transactions committed to this store, by any process."""
        with self._lock:
            return _version(self._db)

    def changes_since(self, version: int, limit: int = 10_000) -> list[Change] | None:
        """No change log here: [] while the store is at `version`, None (rebuild) once it moved."""
        return [] if self.version() == version else None

    def watch(self, on_change: Callable[[], object]) -> Sync:
        """Another process (`faceid gallery import` into a serving folder) is noticed by reading
        the version every few seconds; requests read it too, before they answer."""
        return LocalWatcher(on_change, WATCH_INTERVAL_S)

    def gallery_id(self) -> str:
        """A snapshot lives beside its file: the folder is the gallery's identity."""
        return ""

    def writable(self) -> bool:
        with self._lock:
            query_only = self._db.execute("PRAGMA query_only").fetchone()[0]
        return not query_only and os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- reads ------------------------------------------------------------------------------
    def _all(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def get_person(self, person_id: str) -> Person | None:
        row = self._one("SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at, p.consent FROM persons p "
                        "LEFT JOIN faces f ON f.person_id = p.person_id WHERE p.person_id = ? GROUP BY p.person_id", (person_id,))
        return Person(*row) if row else None

    def list_persons(self, offset: int, limit: int, containing: str | None = None) -> tuple[list[Person], int]:
        """A page of persons by id; with `containing`, those whose id or name holds it (ASCII letters in any case)."""
        where, args = "", tuple[str, ...]()
        if containing:
            pattern = like_pattern(containing)
            where, args = "WHERE p.person_id LIKE ? ESCAPE '\\' OR p.name LIKE ? ESCAPE '\\' ", (pattern, pattern)
        with self._lock:
            rows = self._db.execute(
                "SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at, p.consent FROM persons p "
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
        row = self._one("SELECT crop FROM faces WHERE person_id = ? AND face_id = ?", (person_id, face_id))
        return (False, None) if row is None else (True, self.sealer.open(row[0], CROP))

    def names(self, person_ids: set[str]) -> dict[str, str | None]:
        if not person_ids:
            return {}
        marks = ",".join("?" * len(person_ids))
        return dict(self._all(f"SELECT person_id, name FROM persons WHERE person_id IN ({marks})", tuple(person_ids)))

    def has_source(self, person_id: str, source: str) -> bool:
        return self._one("SELECT 1 FROM faces WHERE person_id = ? AND source = ?", (person_id, source)) is not None

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(face ids, N×512 matrix, person id per face) for building the index."""
        rows = self._all("SELECT face_id, person_id, embedding FROM faces ORDER BY face_id")
        return np.array([r[0] for r in rows], dtype=np.int64), self._embeddings([r[2] for r in rows]), [r[1] for r in rows]

    def _embeddings(self, values: list[bytes]) -> np.ndarray:
        return embeddings_of([self.sealer.open(v, EMBEDDING) or b"" for v in values])

    def face_persons(self) -> tuple[np.ndarray, list[str]]:
        """(face ids, person id per face), without the embeddings: what a snapshot lacks."""
        rows = self._all("SELECT face_id, person_id FROM faces ORDER BY face_id")
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def embeddings_of(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(face ids found, their embeddings) for some faces."""
        marks = ",".join("?" * len(face_ids))
        rows = self._all(f"SELECT face_id, embedding FROM faces WHERE face_id IN ({marks})", tuple(face_ids))
        return np.array([r[0] for r in rows], dtype=np.int64), self._embeddings([r[1] for r in rows])

    def embeddings_by_person(self, person_ids: list[str]) -> dict[str, np.ndarray]:
        """Each person's faces' embeddings (N×512, oldest first); a person without faces is left out."""
        if not person_ids:
            return {}
        marks = ",".join("?" * len(person_ids))
        rows = self._all(f"SELECT person_id, embedding FROM faces WHERE person_id IN ({marks}) ORDER BY face_id", tuple(person_ids))
        grouped: dict[str, list[bytes]] = {}
        for person_id, value in rows:
            grouped.setdefault(person_id, []).append(value)
        return {person_id: self._embeddings(values) for person_id, values in grouped.items()}

    def faces_for_index(self, face_ids: list[int]) -> list[IndexedFace]:
        """The faces that still exist among `face_ids`, as the indexes take them."""
        marks = ",".join("?" * len(face_ids))
        rows = self._all(f"SELECT face_id, person_id, model_id, embedding, photo_vector FROM faces WHERE face_id IN ({marks}) "
                         "ORDER BY face_id", tuple(face_ids)) if face_ids else []
        return [indexed_face(i, p, m, self.sealer.open(e, EMBEDDING) or b"", self.sealer.open(v, VECTOR)) for i, p, m, e, v in rows]

    def index_cells(self, space: str) -> Cells | None:
        """The IVF cells kept for this vector space, if any."""
        row = self._one("SELECT lists, dim, trained_on, centroids FROM index_cells WHERE space = ?", (space,))
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

    def photo_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(face ids, N×PROJECTED_DIM) of the faces that have photo evidence, for its index."""
        rows = self._all("SELECT face_id, photo_vector FROM faces WHERE photo_vector IS NOT NULL ORDER BY face_id")
        return np.array([r[0] for r in rows], dtype=np.int64), photo_vectors_of([self.sealer.open(r[1], VECTOR) or b"" for r in rows])

    def photos_of(self, face_ids: list[int]) -> list[StoredPhoto]:
        """The stored photos of some faces (those that have one), in the order asked."""
        if not face_ids:
            return []
        marks = ",".join("?" * len(face_ids))
        rows = self._all(f"SELECT face_id, person_id, source, photo_thumb, photo_box FROM faces "
                         f"WHERE photo_thumb IS NOT NULL AND face_id IN ({marks})", tuple(face_ids))
        found = {r[0]: stored_photo(r[0], r[1], r[2], self.sealer.open(r[3], THUMB) or b"", r[4]) for r in rows}
        return [found[i] for i in face_ids if i in found]

    def faces_without_photos(self) -> list[tuple[int, str, str]]:
        """(face id, person id, source) of the faces stored without photo evidence."""
        return self._all("SELECT face_id, person_id, source FROM faces WHERE photo_vector IS NULL ORDER BY face_id")

    def model_ids(self) -> dict[str, int]:
        return dict(self._all("SELECT model_id, COUNT(*) FROM faces GROUP BY model_id"))

    def crops(self) -> list[tuple[int, bytes | None]]:
        return [(r[0], self.sealer.open(r[1], CROP)) for r in self._all("SELECT face_id, crop FROM faces ORDER BY face_id")]

    def all_persons(self) -> list[PersonRow]:
        return self._all(f"SELECT {', '.join(PERSON_COLUMNS)} FROM persons ORDER BY person_id")

    def face_rows(self, after: int, limit: int) -> list[tuple]:
        """Up to `limit` faces with ids above `after`, every column (FACE_COLUMNS), by id."""
        return self._all(f"SELECT {', '.join(FACE_COLUMNS)} FROM faces WHERE face_id > ? ORDER BY face_id LIMIT ?", (after, limit))

    def reseal(self, batch: int = 500) -> Iterator[int]:
        """Seal every sensitive value with the current key (what was sealed with an older one, or
        not sealed), a batch per transaction, yielding how many each batch resealed: what a kill
        interrupts, the next run skips. The values do not change, so the version stays."""
        for table, id_column, columns in SEALED:
            after = 0
            while True:
                with self._transaction() as cur:
                    rows = cur.execute(f"SELECT {id_column}, {', '.join(c for c, _ in columns)} FROM {table} WHERE {id_column} > ? "
                                       f"ORDER BY {id_column} LIMIT ?", (after, batch)).fetchall()
                    updates = [(*new, r[0]) for r in rows if (new := resealed(self.sealer, r[1:], columns)) is not None]
                    cur.executemany(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c, _ in columns)} WHERE {id_column} = ?", updates)
                if not rows:
                    break
                after = rows[-1][0]
                yield len(updates)

    # -- unknown faces (FACEID_UNKNOWNS): kept apart from the gallery's version -------------------
    def add_unknowns(self, rows: list[NewUnknown]) -> None:
        if rows:
            with self._transaction() as cur:
                cur.executemany("INSERT INTO unknowns (at, key_id, embedding, crop, quality) VALUES (?, ?, ?, ?, ?)",
                                [(u.at, u.key_id, self.sealer.seal(blob(u.embedding), UNKNOWN_EMBEDDING), self.sealer.seal(u.crop_png, UNKNOWN_CROP),
                                  float(u.quality)) for u in rows])

    def unknowns(self, limit: int) -> list[Unknown]:
        """The newest `limit` unknown faces not enrolled yet, newest first."""
        rows = self._all("SELECT id, at, key_id, embedding, quality FROM unknowns WHERE enrolled_as IS NULL ORDER BY id DESC LIMIT ?", (limit,))
        return [Unknown(int(r[0]), r[1], r[2], embeddings_of([self.sealer.open(r[3], UNKNOWN_EMBEDDING) or b""])[0], float(r[4])) for r in rows]

    def unknown_crop(self, unknown_id: int) -> tuple[bool, bytes | None]:
        row = self._one("SELECT crop FROM unknowns WHERE id = ?", (unknown_id,))
        return (False, None) if row is None else (True, self.sealer.open(row[0], UNKNOWN_CROP))

    def enrolled_unknowns(self, person_id: str) -> list[str]:
        """When a person's unknown faces were seen, before their cluster was enrolled as them."""
        return [r[0] for r in self._all("SELECT at FROM unknowns WHERE enrolled_as = ? ORDER BY at", (person_id,))]

    def delete_unknowns(self, ids: list[int]) -> int:
        with self._transaction() as cur:
            return cur.executemany("DELETE FROM unknowns WHERE id = ? AND enrolled_as IS NULL", [(i,) for i in ids]).rowcount

    def purge_unknowns(self, before: str) -> int:
        """Unknown faces older than `before` (their own retention), enrolled or not."""
        with self._transaction() as cur:
            return cur.execute("DELETE FROM unknowns WHERE at < ?", (before,)).rowcount

    # -- the audit log -------------------------------------------------------------------------
    def append_audit(self, events: list[AuditEvent]) -> None:
        """Events recorded apart from any write (what reads did), in one transaction that leaves
        the version alone."""
        if events:
            with self._transaction() as cur:
                cur.executemany(AUDIT_INSERT, [audit_row(e) for e in events])

    def audit_page(self, query: AuditQuery, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        """The entries `query` selects, by the time they happened (a read waits a moment in the
        buffer before it is written), and how many there are."""
        where, args = audit_where(query, "?")
        with self._lock:
            rows = self._db.execute(f"SELECT id, at, key_id, collection, action, persons, outcome, detail FROM audit {where}"
                                    "ORDER BY at, id LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
            total = self._db.execute(f"SELECT COUNT(*) FROM audit {where}", args).fetchone()[0]
        return [audit_entry(r) for r in rows], int(total)

    # -- the collections' registry ------------------------------------------------------------
    def collections(self) -> list[CollectionRow]:
        return [CollectionRow(*r) for r in self._all("SELECT name, created_at, threshold, verify_threshold, photo_threshold "
                                                     "FROM collections ORDER BY name")]

    def add_collection(self, row: CollectionRow) -> None:
        """Registered outside the version: a collection is not a change to this gallery's faces."""
        with self._transaction() as cur:
            SqliteWriter(cur, self.sealer).add_collection(row)

    def remove_collection(self, name: str) -> bool:
        with self._transaction() as cur:
            return SqliteWriter(cur, self.sealer).remove_collection(name)

    def scrub(self) -> str:
        """After an erasure: what deleted rows left in the files goes too. Deleted pages are
        overwritten (secure_delete); the write-ahead log, which still holds their old images, is
        checkpointed into the file and truncated. Returns what was done, in words."""
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            return "deleted pages overwritten; the write-ahead log was busy and is truncated at the next checkpoint"
        return "deleted pages overwritten; the write-ahead log checkpointed and truncated"

    def compact(self) -> str:
        """Rewrite the file (VACUUM): it shrinks to what it holds."""
        with self._lock:
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return "file rewritten (VACUUM)"

    def destroy(self) -> None:
        """Remove this store's data for good (its collection was deleted): the file, its journal,
        and the folder when nothing else is in it."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            persons = self._db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
            faces = self._db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        return int(persons), int(faces)


def _text(value: bytes | str) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


def _version(db: sqlite3.Connection | sqlite3.Cursor) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
    return int(row[0]) if row else 0


def check_data_dir(data_dir: Path) -> None:
    """Refuse, in one sentence, a data directory the store cannot live in."""
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreUnavailable(str(data_dir), f"cannot create the gallery's data directory ({exc.strerror}); set FACEID_DATA_DIR") from exc
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise StoreUnavailable(str(data_dir), "the gallery's data directory is not writable; set FACEID_DATA_DIR to one that is")
