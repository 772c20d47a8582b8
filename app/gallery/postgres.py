"""The PostgreSQL store: one gallery shared by several replicas, each with its own indexes.

The same tables as the SQLite store (`app/gallery/sqlite.py`), plus a change log: every write
transaction appends its changes (faces added, deleted, re-embedded, given photo evidence) to
`changes` under one advisory lock, so the log's order is the commit order, and announces the
newest sequence number with NOTIFY on commit. The store's version is that sequence number.
Replicas follow the log (`app/gallery/sync.py`'s ChangeFollower, on this store's `listen`) and
apply each change to their indexes (`app/gallery/gallery.py`).

Embeddings are `bytea` (float32 × 512): COPY and read-back of 100k rows in about 2.6 s where
`real[]` was 30× slower (issue #18's measurements).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

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
    NewFace,
    NewUnknown,
    Person,
    PersonRow,
    PhotoRecord,
    StorageFull,
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
    sql_statements,
    stored_photo,
)
from app.gallery.sealing import (
    CROP,
    EMBEDDING,
    KEY_ID_BYTES,
    MAGIC,
    OVERHEAD,
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
from app.gallery.sync import ChangeFollower, Sync
from core.constants import EMBEDDING_DIM
from core.photos.descriptor import PROJECTED_DIM

FOLLOWER = "faceid-follower"  # the follower's connection's application_name
CHANNEL = "faceid_changes"  # NOTIFY channel; the payload is the newest committed sequence number
WRITE_LOCK = 0x66616365  # pg_advisory_xact_lock key: one writer at a time, so log order is commit order
CONNECT_TIMEOUT_S = 3  # a request waits at most this for a connection before it answers 503
PARSE_BYTES = 8 << 20  # a binary COPY's rows are parsed in pieces of about this size

# Forward migrations by the version they lead to (table schema_version). 1 to 3 are the
# SQLite store's versions 1 to 3 (3: the IVF cells, trained once per gallery rather than by each
# replica), so `faceid gallery migrate` maps one onto the other.
MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE persons (
    person_id  TEXT PRIMARY KEY,
    name       TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE faces (
    face_id    BIGSERIAL PRIMARY KEY,
    person_id  TEXT NOT NULL REFERENCES persons(person_id) ON DELETE CASCADE,
    source     TEXT NOT NULL,
    model_id   TEXT NOT NULL,
    embedding  BYTEA NOT NULL,
    crop       BYTEA,
    created_at TEXT NOT NULL
);
CREATE INDEX faces_person ON faces(person_id);
CREATE INDEX faces_source ON faces(person_id, source);
-- What replicas follow: every committed change, in commit order.
CREATE TABLE changes (
    seq        BIGSERIAL PRIMARY KEY,
    op         TEXT NOT NULL CHECK (op IN ('add', 'delete', 'embed', 'photo')),
    face_ids   BIGINT[] NOT NULL,
    at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('gallery_id', gen_random_uuid()::text);
""",
    2: """
ALTER TABLE faces ADD COLUMN photo_thumb BYTEA;
ALTER TABLE faces ADD COLUMN photo_vector BYTEA;
ALTER TABLE faces ADD COLUMN photo_box TEXT;
""",
    3: """
-- Embeddings and photo vectors stay in the row instead of the TOAST table (a 2 KB bytea
-- crosses its threshold): a replica reads 1M of them in one sequential scan, not 1M lookups.
-- Rows written from this version on; crops and thumbnails are still toasted.
ALTER TABLE faces ALTER COLUMN embedding SET STORAGE MAIN;
ALTER TABLE faces ALTER COLUMN photo_vector SET STORAGE MAIN;
CREATE TABLE index_cells (
    space      TEXT PRIMARY KEY,
    lists      INT NOT NULL,
    dim        INT NOT NULL,
    trained_on BIGINT NOT NULL,
    centroids  BYTEA NOT NULL,
    created_at TEXT NOT NULL
);
""",
    # The collections beside the default one, as the SQLite store's version 4: read in the
    # default schema only; each collection's tables are in a schema of its own.
    4: """
CREATE TABLE collections (
    name             TEXT PRIMARY KEY,
    created_at       TEXT NOT NULL,
    threshold        DOUBLE PRECISION,
    verify_threshold DOUBLE PRECISION,
    photo_threshold  DOUBLE PRECISION
);
""",
    # As the SQLite store's version 5: the append-only audit log and the consent reference.
    5: """
ALTER TABLE persons ADD COLUMN consent TEXT;
CREATE TABLE audit (
    id         BIGSERIAL PRIMARY KEY,
    at         TEXT NOT NULL,
    key_id     TEXT,
    collection TEXT NOT NULL,
    action     TEXT NOT NULL,
    persons    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT
);
CREATE INDEX audit_at ON audit(at);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TABLE unknowns (
    id          BIGSERIAL PRIMARY KEY,
    at          TEXT NOT NULL,
    key_id      TEXT,
    embedding   BYTEA NOT NULL,
    crop        BYTEA,
    quality     DOUBLE PRECISION NOT NULL,
    enrolled_as TEXT
);
CREATE INDEX unknowns_at ON unknowns(at);
""",
}
SCHEMA_VERSION = max(MIGRATIONS)
AUDIT_INSERT = "INSERT INTO audit (at, key_id, collection, action, persons, outcome, detail) VALUES (%s, %s, %s, %s, %s, %s, %s)"
MIGRATE_LOCK = 0x6D696772  # two replicas starting at once migrate once
SCHEMA_PREFIX = "collection_"  # a collection's tables live in schema collection_<name>; the default's in the URL's own


def lock_key(base: int, schema: str | None) -> int:
    """An advisory lock key per schema: the default schema keeps the keys it always had."""
    if schema is None:
        return base
    return int.from_bytes(hashlib.sha1(f"{base}:{schema}".encode()).digest()[:8], "big", signed=True)


def redacted(url: str) -> str:
    """The URL without its password: what logs and answers may show."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unparseable URL)"
    user, host, port, db = (parts.get(k) for k in ("user", "host", "port", "dbname"))
    where = host if host and not str(host).startswith("/") else "localhost"
    return f"postgresql://{f'{user}@' if user else ''}{where}{f':{port}' if port else ''}/{db or ''}"


def store_error(where: str, exc: Exception) -> StoreError:
    """One sentence for the caller; the status comes from the class (app/errors.py)."""
    if isinstance(exc, pg_errors.DiskFull):
        return StorageFull(where, "the database's disk is full; nothing was stored")
    if isinstance(exc, pg_errors.ReadOnlySqlTransaction):
        return StoreReadOnly(where, "the database is read-only (a standby, or default_transaction_read_only); nothing was changed")
    if isinstance(exc, PoolTimeout | psycopg.OperationalError):
        return StoreUnavailable(where, "PostgreSQL is not reachable now; try again shortly")
    return StoreError(where, f"the gallery store failed ({type(exc).__name__}); nothing was changed")


class PgWriter:
    """The writes one transaction may make; each is also written to the change log."""

    def __init__(self, cur: psycopg.Cursor, sealer: Sealer) -> None:
        self._cur = cur
        self._sealer = sealer
        self.changes: list[tuple[str, list[int]]] = []
        self.committed: Committed | None = None  # set once the transaction has committed

    def add_faces(self, entries: list[Entry], model_id: str) -> list[tuple[list[int], bool]]:
        cur, at, out = self._cur, now(), []
        for person_id, name, faces in entries:
            cur.execute("INSERT INTO persons (person_id, name, created_at) VALUES (%s, %s, %s) ON CONFLICT (person_id) DO NOTHING",
                        (person_id, name, created(faces, at)))
            new = cur.rowcount == 1
            if not new and name is not None:
                cur.execute("UPDATE persons SET name = %s WHERE person_id = %s", (name, person_id))
            ids = [self._insert(person_id, face, model_id, at) for face in faces]
            out.append((ids, new))
        ids = [i for new, _ in out for i in new]
        if ids:
            self.changes.append(("add", ids))
        return out

    def _insert(self, person_id: str, face: NewFace, model_id: str, at: str) -> int:
        self._cur.execute(
            "INSERT INTO faces (person_id, source, model_id, embedding, crop, created_at, photo_thumb, photo_vector, photo_box) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING face_id",
            (person_id, face.source, model_id, self._sealer.seal(blob(face.embedding), EMBEDDING), self._sealer.seal(face.crop_png, CROP),
             face.created_at or at, *sealed_photo(self._sealer, photo_columns(face.photo))))
        row = self._cur.fetchone()
        assert row is not None  # RETURNING always gives the row
        return int(row[0])

    def set_consent(self, person_id: str, consent: str) -> None:
        self._cur.execute("UPDATE persons SET consent = %s WHERE person_id = %s", (consent, person_id))

    def audit(self, event: AuditEvent) -> None:
        self._cur.execute(AUDIT_INSERT, audit_row(event))

    def delete_person(self, person_id: str) -> Erased | None:
        rows = self._cur.execute("SELECT face_id, crop IS NOT NULL, photo_thumb IS NOT NULL FROM faces WHERE person_id = %s",
                                 (person_id,)).fetchall()
        deleted = self._cur.execute("DELETE FROM persons WHERE person_id = %s", (person_id,)).rowcount
        if not deleted:
            return None
        ids = [int(r[0]) for r in rows]
        self.changes.append(("delete", ids))
        unknowns = self._cur.execute("DELETE FROM unknowns WHERE enrolled_as = %s", (person_id,)).rowcount
        return Erased(ids, sum(bool(r[1]) for r in rows), sum(bool(r[2]) for r in rows), unknowns)

    def mark_unknowns(self, ids: list[int], person_id: str) -> None:
        self._cur.executemany("UPDATE unknowns SET enrolled_as = %s WHERE id = %s", [(person_id, i) for i in ids])

    def replace_embeddings(self, updates: list[tuple[int, np.ndarray]], model_id: str) -> None:
        self._cur.executemany("UPDATE faces SET embedding = %s, model_id = %s WHERE face_id = %s",
                              [(self._sealer.seal(blob(e), EMBEDDING), model_id, i) for i, e in updates])
        self.changes.append(("embed", [i for i, _ in updates]))

    def purge_sources(self, before: str) -> list[int]:
        rows = self._cur.execute("UPDATE faces SET crop = NULL, photo_thumb = NULL, photo_vector = NULL, photo_box = NULL WHERE created_at < %s "
                                 "AND (crop IS NOT NULL OR photo_thumb IS NOT NULL OR photo_vector IS NOT NULL) RETURNING face_id",
                                 (before,)).fetchall()
        ids = [int(r[0]) for r in rows]
        if ids:
            self.changes.append(("photo", ids))  # replicas drop these faces' photo vectors
        return ids

    def expired_persons(self, before: str) -> list[str]:
        return [r[0] for r in self._cur.execute("SELECT p.person_id FROM persons p LEFT JOIN faces f ON f.person_id = p.person_id "
                                                "GROUP BY p.person_id HAVING COALESCE(MAX(f.created_at), p.created_at) < %s", (before,))]

    def set_photos(self, updates: list[tuple[int, PhotoRecord]]) -> None:
        self._cur.executemany("UPDATE faces SET photo_thumb = %s, photo_vector = %s, photo_box = %s WHERE face_id = %s",
                              [(*sealed_photo(self._sealer, photo_columns(p)), i) for i, p in updates])
        self.changes.append(("photo", [i for i, _ in updates]))

    def copy_in(self, persons: list[PersonRow], faces: list[tuple]) -> None:
        self._cur.executemany(f"INSERT INTO persons ({', '.join(PERSON_COLUMNS)}) VALUES (%s, %s, %s, %s) ON CONFLICT (person_id) DO NOTHING", persons)
        self._cur.executemany(f"INSERT INTO faces ({', '.join(FACE_COLUMNS)}) VALUES ({', '.join(['%s'] * len(FACE_COLUMNS))})",
                              [tuple(bytes(v) if isinstance(v, memoryview) else v for v in f) for f in faces])
        # the ids were given: the sequence must start past them
        self._cur.execute("SELECT setval(pg_get_serial_sequence('faces', 'face_id'), GREATEST((SELECT MAX(face_id) FROM faces), 1))")
        if faces:
            self.changes.append(("add", [int(f[0]) for f in faces]))

    def add_collection(self, row: CollectionRow) -> None:
        self._cur.execute("INSERT INTO collections VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                          (row.name, row.created_at, row.threshold, row.verify_threshold, row.photo_threshold))
        if self._cur.rowcount != 1:
            raise CollectionExists(row.name, "a collection of this name exists already")

    def remove_collection(self, name: str) -> bool:
        return self._cur.execute("DELETE FROM collections WHERE name = %s", (name,)).rowcount > 0


class PgListener:
    """The change log's announcements, on a connection of its own (the follower's)."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def head(self) -> int:
        row = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(row[0]) if row else 0

    def announcements(self, timeout: float) -> Iterator[int]:
        for notice in self._conn.notifies(timeout=timeout):
            yield int(notice.payload)


class PostgresStore:
    """The gallery's tables in PostgreSQL, through a connection pool. Every failure to reach the
    database is a StoreUnavailable (503 with Retry-After), never a crash. `read_only` opens
    every transaction read-only (FACEID_READ_ONLY). A `collection` other than the default has
    its tables in a schema of its own (the connections' search_path), its own change channel
    and its own locks: every statement below is the same for all."""

    kind: StoreKind = "postgresql"

    def __init__(self, url: str, password: str | None = None, max_connections: int = 8, read_only: bool = False,
                 collection: str | None = None, sealer: Sealer | None = None) -> None:
        self.url = url
        self.sealer = sealer if sealer is not None else Sealer()
        self.schema = None if collection is None else SCHEMA_PREFIX + collection
        self.location = redacted(url) + (f" (collection {collection})" if collection is not None else "")
        self.channel = CHANNEL if collection is None else f"{CHANNEL}_{collection}"
        self._write_lock, self._migrate_lock = lock_key(WRITE_LOCK, self.schema), lock_key(MIGRATE_LOCK, self.schema)
        self._kwargs: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "faceid"}
        if password is not None:
            self._kwargs["password"] = password
        options = ([f"-c search_path={self.schema}"] if self.schema else []) + (["-c default_transaction_read_only=on"] if read_only else [])
        if options:
            self._kwargs["options"] = " ".join(options)
        try:
            self._pool = ConnectionPool(url, min_size=1, max_size=max_connections, kwargs=self._kwargs, open=True,
                                        timeout=CONNECT_TIMEOUT_S, check=ConnectionPool.check_connection, name="faceid")
            self._pool.wait(timeout=CONNECT_TIMEOUT_S * 3)
            self._refuse_old_schema() if read_only else self._migrate()
            sealed_with = {bytes(r[0]).decode("ascii", "replace") for r in self._all(
                f"SELECT DISTINCT substring(embedding from 4 for {KEY_ID_BYTES}) FROM faces WHERE substring(embedding from 1 for 3) = %s", (MAGIC,))}
        except (PoolTimeout, psycopg.Error, StoreError) as exc:
            self.close()
            raise StoreUnavailable(self.location, f"cannot open the gallery store ({type(exc).__name__}: {_first_line(exc)})") from exc
        if unknown := sorted(k for k in sealed_with if not self.sealer.knows(k)):
            self.close()
            raise StoreUnavailable(self.location, missing_key(unknown[0]))

    # -- connections ----------------------------------------------------------------------
    @contextmanager
    def listen(self) -> Iterator[PgListener]:
        """The change log's channel, on a connection of its own outside the pool."""
        with psycopg.connect(self.url, **(self._kwargs | {"autocommit": True, "application_name": FOLLOWER})) as conn:
            conn.execute(f"LISTEN {self.channel}")
            yield PgListener(conn)

    def watch(self, on_change: Callable[[], object]) -> Sync:
        return ChangeFollower(self.listen, on_change)

    def reembed_command(self) -> str:
        return "faceid gallery reembed (with this FACEID_STORE)"

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except StoreError:
            raise
        except (PoolTimeout, psycopg.Error) as exc:
            raise store_error(self.location, exc) from exc

    def _all(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchall()

    def _one(self, sql: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        with self._conn() as conn:
            return conn.execute(sql, args).fetchone()

    def _refuse_old_schema(self) -> None:
        with self._pool.connection() as conn:
            exists = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            row = conn.execute("SELECT version FROM schema_version").fetchone() if exists and exists[0] else None
        version = int(row[0]) if row else 0
        if version != SCHEMA_VERSION:
            raise StoreUnavailable(self.location, f"the store's schema is at version {version}, this service's at {SCHEMA_VERSION}; "
                                   "start once without FACEID_READ_ONLY to migrate it")

    def _migrate(self) -> None:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._migrate_lock,))
            if self.schema is not None:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self.schema}")
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INT NOT NULL)")
            row = conn.execute("SELECT version FROM schema_version").fetchone()
            version = int(row[0]) if row else 0
            for target in sorted(v for v in MIGRATIONS if v > version):
                for statement in sql_statements(MIGRATIONS[target]):
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute("DELETE FROM schema_version")
                conn.execute("INSERT INTO schema_version VALUES (%s)", (SCHEMA_VERSION,))

    def schema_version(self) -> int:
        row = self._one("SELECT version FROM schema_version")
        return int(row[0]) if row else 0

    def gallery_id(self) -> str:
        """This gallery's identity (made with its tables): a snapshot of another is not used."""
        row = self._one("SELECT value FROM meta WHERE key = 'gallery_id'")
        return str(row[0]) if row else ""

    # -- writes -----------------------------------------------------------------------------
    @contextmanager
    def write(self) -> Iterator[PgWriter]:
        """One writer at a time across every replica (an advisory lock): the block's writes and
        their change-log entries commit together when it ends, or not at all if it raises. The
        writer's `committed` says the version before and after."""
        with self._conn() as conn:
            try:
                with conn.transaction(), conn.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_lock,))
                    row = cur.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
                    before = seq = int(row[0]) if row else 0
                    writer = PgWriter(cur, self.sealer)
                    yield writer
                    for op, ids in writer.changes:
                        row = cur.execute("INSERT INTO changes (op, face_ids) VALUES (%s, %s) RETURNING seq", (op, ids)).fetchone()
                        assert row is not None
                        seq = int(row[0])
                    if seq != before:
                        cur.execute("SELECT pg_notify(%s, %s)", (self.channel, str(seq)))
                writer.committed = Committed(before, seq)
            except (psycopg.Error, PoolTimeout) as exc:
                raise store_error(self.location, exc) from exc

    # -- the change log -------------------------------------------------------------------
    def version(self) -> int:
        """The newest committed change's sequence number."""
        row = self._one("SELECT COALESCE(MAX(seq), 0) FROM changes")
        return int(row[0]) if row else 0

    def changes_since(self, version: int, limit: int = 10_000) -> list[Change] | None:
        """The changes committed after `version`, in order (at most `limit`)."""
        rows = self._all("SELECT seq, op, face_ids FROM changes WHERE seq > %s ORDER BY seq LIMIT %s", (version, limit))
        return [Change(int(s), op, [int(i) for i in ids]) for s, op, ids in rows]

    def faces_for_index(self, face_ids: list[int]) -> list[IndexedFace]:
        """The faces that still exist among `face_ids`, as the indexes take them."""
        rows = self._all("SELECT face_id, person_id, model_id, embedding, photo_vector FROM faces WHERE face_id = ANY(%s) ORDER BY face_id",
                         (face_ids,))
        return [indexed_face(i, p, m, self.sealer.open(e, EMBEDDING) or b"", self.sealer.open(v, VECTOR)) for i, p, m, e, v in rows]

    # -- reads, as the SQLite store's -------------------------------------------------------

    def writable(self) -> bool:
        row = self._one("SELECT current_setting('transaction_read_only') = 'off' AND NOT pg_is_in_recovery()")
        return bool(row and row[0])

    def close(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()

    def get_person(self, person_id: str) -> Person | None:
        row = self._one("SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at, p.consent FROM persons p "
                        "LEFT JOIN faces f ON f.person_id = p.person_id WHERE p.person_id = %s GROUP BY p.person_id", (person_id,))
        return Person(row[0], row[1], int(row[2]), row[3], row[4]) if row else None

    def list_persons(self, offset: int, limit: int, containing: str | None = None) -> tuple[list[Person], int]:
        where, args = "", tuple[str, ...]()
        if containing:  # ILIKE: letters in any case, as SQLite's LIKE does for ASCII
            pattern = like_pattern(containing)
            where, args = "WHERE p.person_id ILIKE %s OR p.name ILIKE %s ", (pattern, pattern)
        with self._conn() as conn:
            rows = conn.execute("SELECT p.person_id, p.name, COUNT(f.face_id), p.created_at, p.consent FROM persons p "
                                f"LEFT JOIN faces f ON f.person_id = p.person_id {where}GROUP BY p.person_id "
                                "ORDER BY p.person_id COLLATE \"C\" LIMIT %s OFFSET %s", (*args, limit, offset)).fetchall()
            total = conn.execute(f"SELECT COUNT(*) FROM persons p {where}", args).fetchone()
        return [Person(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows], int(total[0]) if total else 0

    def faces_of(self, person_id: str, offset: int, limit: int) -> tuple[list[FaceRow], int] | None:
        with self._conn() as conn:
            if conn.execute("SELECT 1 FROM persons WHERE person_id = %s", (person_id,)).fetchone() is None:
                return None
            rows = conn.execute("SELECT face_id, source, model_id, created_at, crop IS NOT NULL, photo_vector IS NOT NULL FROM faces "
                                "WHERE person_id = %s ORDER BY face_id LIMIT %s OFFSET %s", (person_id, limit, offset)).fetchall()
            total = conn.execute("SELECT COUNT(*) FROM faces WHERE person_id = %s", (person_id,)).fetchone()
        return [FaceRow(int(r[0]), r[1], r[2], r[3], bool(r[4]), bool(r[5])) for r in rows], int(total[0]) if total else 0

    def crop_of(self, person_id: str, face_id: int) -> tuple[bool, bytes | None]:
        row = self._one("SELECT crop FROM faces WHERE person_id = %s AND face_id = %s", (person_id, face_id))
        return (False, None) if row is None else (True, self.sealer.open(row[0], CROP))

    def names(self, person_ids: set[str]) -> dict[str, str | None]:
        if not person_ids:
            return {}
        return {r[0]: r[1] for r in self._all("SELECT person_id, name FROM persons WHERE person_id = ANY(%s)", (list(person_ids),))}

    def has_source(self, person_id: str, source: str) -> bool:
        return self._one("SELECT 1 FROM faces WHERE person_id = %s AND source = %s", (person_id, source)) is not None

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every face's id, embedding and person, from one snapshot of the table, in the
        table's order: sorting 1M rows by id in the database took longer than reading them."""
        with self._conn() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # both reads see the same faces
            ids, vectors = _copy_vectors(conn, "SELECT face_id, embedding FROM faces", EMBEDDING_DIM, self.sealer, EMBEDDING)
            rows = conn.execute("SELECT face_id, person_id FROM faces ORDER BY face_id").fetchall()
        by_id = np.array([r[0] for r in rows], dtype=np.int64)
        return ids, vectors, [rows[i][1] for i in np.searchsorted(by_id, ids)]

    def index_cells(self, space: str) -> Cells | None:
        row = self._one("SELECT lists, dim, trained_on, centroids FROM index_cells WHERE space = %s", (space,))
        return None if row is None else cells_of(row[0], row[1], row[2], bytes(row[3]))

    def keep_index_cells(self, space: str, cells: Cells) -> None:
        """As the SQLite store's; outside the change log (cells are a cache, not gallery data)."""
        with self._conn() as conn, conn.transaction():
            conn.execute("INSERT INTO index_cells VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (space) DO UPDATE SET lists = EXCLUDED.lists, "
                         "dim = EXCLUDED.dim, trained_on = EXCLUDED.trained_on, centroids = EXCLUDED.centroids, created_at = EXCLUDED.created_at "
                         "WHERE EXCLUDED.trained_on >= index_cells.trained_on", cells_row(space, cells))

    def face_persons(self) -> tuple[np.ndarray, list[str]]:
        rows = self._all("SELECT face_id, person_id FROM faces ORDER BY face_id")
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def embeddings_of(self, face_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        rows = self._all("SELECT face_id, embedding FROM faces WHERE face_id = ANY(%s)", (face_ids,))
        return np.array([r[0] for r in rows], dtype=np.int64), embeddings_of([self.sealer.open(r[1], EMBEDDING) or b"" for r in rows])

    def embeddings_by_person(self, person_ids: list[str]) -> dict[str, np.ndarray]:
        if not person_ids:
            return {}
        rows = self._all("SELECT person_id, embedding FROM faces WHERE person_id = ANY(%s) ORDER BY face_id", (person_ids,))
        grouped: dict[str, list[bytes]] = {}
        for person_id, value in rows:
            grouped.setdefault(person_id, []).append(self.sealer.open(value, EMBEDDING) or b"")
        return {person_id: embeddings_of(values) for person_id, values in grouped.items()}

    def photo_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        with self._conn() as conn, conn.transaction():
            return _copy_vectors(conn, "SELECT face_id, photo_vector FROM faces WHERE photo_vector IS NOT NULL", PROJECTED_DIM, self.sealer, VECTOR)

    def photos_of(self, face_ids: list[int]) -> list[StoredPhoto]:
        if not face_ids:
            return []
        rows = self._all("SELECT face_id, person_id, source, photo_thumb, photo_box FROM faces "
                         "WHERE photo_thumb IS NOT NULL AND face_id = ANY(%s)", (face_ids,))
        found = {int(r[0]): stored_photo(r[0], r[1], r[2], self.sealer.open(r[3], THUMB) or b"", r[4]) for r in rows}
        return [found[i] for i in face_ids if i in found]

    def faces_without_photos(self) -> list[tuple[int, str, str]]:
        return [(int(r[0]), r[1], r[2]) for r in self._all("SELECT face_id, person_id, source FROM faces WHERE photo_vector IS NULL ORDER BY face_id")]

    def model_ids(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._all("SELECT model_id, COUNT(*) FROM faces GROUP BY model_id")}

    def crops(self) -> list[tuple[int, bytes | None]]:
        return [(int(r[0]), self.sealer.open(r[1], CROP)) for r in self._all("SELECT face_id, crop FROM faces ORDER BY face_id")]

    def all_persons(self) -> list[PersonRow]:
        return [(r[0], r[1], r[2], r[3]) for r in self._all(f"SELECT {', '.join(PERSON_COLUMNS)} FROM persons ORDER BY person_id")]

    def face_rows(self, after: int, limit: int) -> list[tuple]:
        rows = self._all(f"SELECT {', '.join(FACE_COLUMNS)} FROM faces WHERE face_id > %s ORDER BY face_id LIMIT %s", (after, limit))
        return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]

    def reseal(self, batch: int = 500) -> Iterator[int]:
        """As the SQLite store's: every sensitive value sealed with the current key, a batch per
        transaction, outside the change log (the values do not change)."""
        for table, id_column, columns in SEALED:
            after = 0
            while True:
                with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                    rows = cur.execute(f"SELECT {id_column}, {', '.join(c for c, _ in columns)} FROM {table} WHERE {id_column} > %s "
                                       f"ORDER BY {id_column} LIMIT %s", (after, batch)).fetchall()
                    updates = [(*new, r[0]) for r in rows if (new := resealed(self.sealer, r[1:], columns)) is not None]
                    cur.executemany(f"UPDATE {table} SET {', '.join(f'{c} = %s' for c, _ in columns)} WHERE {id_column} = %s", updates)
                if not rows:
                    break
                after = int(rows[-1][0])
                yield len(updates)

    # -- unknown faces (FACEID_UNKNOWNS): outside the change log ---------------------------------
    def add_unknowns(self, rows: list[NewUnknown]) -> None:
        if rows:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany("INSERT INTO unknowns (at, key_id, embedding, crop, quality) VALUES (%s, %s, %s, %s, %s)",
                                [(u.at, u.key_id, self.sealer.seal(blob(u.embedding), UNKNOWN_EMBEDDING), self.sealer.seal(u.crop_png, UNKNOWN_CROP),
                                  float(u.quality)) for u in rows])

    def unknowns(self, limit: int) -> list[Unknown]:
        rows = self._all("SELECT id, at, key_id, embedding, quality FROM unknowns WHERE enrolled_as IS NULL ORDER BY id DESC LIMIT %s", (limit,))
        return [Unknown(int(r[0]), r[1], r[2], embeddings_of([self.sealer.open(r[3], UNKNOWN_EMBEDDING) or b""])[0], float(r[4])) for r in rows]

    def unknown_crop(self, unknown_id: int) -> tuple[bool, bytes | None]:
        row = self._one("SELECT crop FROM unknowns WHERE id = %s", (unknown_id,))
        return (False, None) if row is None else (True, self.sealer.open(row[0], UNKNOWN_CROP))

    def enrolled_unknowns(self, person_id: str) -> list[str]:
        return [r[0] for r in self._all("SELECT at FROM unknowns WHERE enrolled_as = %s ORDER BY at", (person_id,))]

    def delete_unknowns(self, ids: list[int]) -> int:
        with self._conn() as conn, conn.transaction():
            return conn.execute("DELETE FROM unknowns WHERE id = ANY(%s) AND enrolled_as IS NULL", (ids,)).rowcount

    def purge_unknowns(self, before: str) -> int:
        with self._conn() as conn, conn.transaction():
            return conn.execute("DELETE FROM unknowns WHERE at < %s", (before,)).rowcount

    # -- the audit log -------------------------------------------------------------------------
    def append_audit(self, events: list[AuditEvent]) -> None:
        """Events recorded apart from any write (what reads did); outside the change log."""
        if events:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                cur.executemany(AUDIT_INSERT, [audit_row(e) for e in events])

    def audit_page(self, query: AuditQuery, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        where, args = audit_where(query, "%s")
        with self._conn() as conn:
            rows = conn.execute(f"SELECT id, at, key_id, collection, action, persons, outcome, detail FROM audit {where}"
                                "ORDER BY at, id LIMIT %s OFFSET %s", (*args, limit, offset)).fetchall()
            total = conn.execute(f"SELECT COUNT(*) FROM audit {where}", args).fetchone()
        return [audit_entry(r) for r in rows], int(total[0]) if total else 0

    # -- the collections' registry ------------------------------------------------------------
    def collections(self) -> list[CollectionRow]:
        return [CollectionRow(*r) for r in self._all("SELECT name, created_at, threshold, verify_threshold, photo_threshold "
                                                     "FROM collections ORDER BY name")]

    def add_collection(self, row: CollectionRow) -> None:
        """In a write transaction that logs no change (the version stays): a collection is not
        a change to this gallery's faces."""
        with self.write() as w:
            w.add_collection(row)

    def remove_collection(self, name: str) -> bool:
        with self.write() as w:
            return w.remove_collection(name)

    def scrub(self) -> str:
        """After an erasure: VACUUM the tables the rows were in (their TOAST tables with them): the
        rows are gone and their space reusable at once. PostgreSQL never overwrites in place, so
        their bytes stay in the tables' free space until `compact` rewrites the tables, and in
        its write-ahead log and backups until those are recycled (docs/deployment.md)."""
        self._vacuum("VACUUM faces, persons")
        return ("tables vacuumed; the bytes stay in the tables' free space until `faceid gallery compact` rewrites them, "
                "and in PostgreSQL's write-ahead log and backups until recycled")

    def compact(self) -> str:
        """Rewrite the tables (VACUUM FULL): what deleted rows left in their files goes. It locks
        them while it runs: a maintenance window's work."""
        self._vacuum("VACUUM FULL faces, persons, audit")
        return "tables rewritten (VACUUM FULL)"

    def _vacuum(self, statement: str) -> None:
        with self._conn() as conn:
            conn.autocommit = True  # VACUUM runs outside a transaction
            try:
                conn.execute(statement)
            finally:
                conn.autocommit = False

    def destroy(self) -> None:
        """Remove this collection's tables for good (DROP SCHEMA; the default's are never dropped).
        PostgreSQL keeps what was in them in its WAL and backups until those are recycled."""
        if self.schema is None:
            raise StoreError(self.location, "the default collection's tables are not dropped")
        with self._conn() as conn, conn.transaction():
            conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        self.close()

    def counts(self) -> tuple[int, int]:
        row = self._one("SELECT (SELECT COUNT(*) FROM persons), (SELECT COUNT(*) FROM faces)")
        return (int(row[0]), int(row[1])) if row else (0, 0)


COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
COPY_HEADER = len(COPY_SIGNATURE) + 8  # then 4 bytes of flags and 4 of header-extension length (0)
COPY_TRAILER = b"\xff\xff"


def _copy_vectors(conn: psycopg.Connection, query: str, dim: int, sealer: Sealer, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, N×dim float32) of a query's (bigint, bytea of dim float32) rows, by binary COPY
    parsed with numpy: every row has the same width, so no Python object is made per row
    (fetching 1M embeddings as rows took 28 s on 2 cores). Sealed rows have one width too; each
    is opened. Rows of mixed widths (a gallery part sealed: encryption just turned on, before
    `faceid gallery rotate-key` ran) are read as rows."""
    raw: np.ndarray | list[bytes]
    try:
        ids, raw = _copy_rows(conn, query, dim * 4 + (OVERHEAD if sealer.on else 0))
    except ValueError:
        if not sealer.on:
            raise
        rows = conn.execute(query).fetchall()
        ids, raw = np.array([r[0] for r in rows], dtype=np.int64), [bytes(r[1]) for r in rows]
    if not sealer.on:
        return ids, np.ascontiguousarray(np.asarray(raw).view("<f4").reshape(len(ids), dim))
    opened = b"".join(sealer.open(bytes(r), column) or b"" for r in raw)
    return ids, np.frombuffer(opened, dtype="<f4").reshape(len(ids), dim).copy()


def _copy_rows(conn: psycopg.Connection, query: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, N×width bytes) of a query's (bigint, bytea of `width` bytes) rows, by binary COPY."""
    row = np.dtype([("fields", ">i2"), ("id_size", ">i4"), ("id", ">i8"), ("vector_size", ">i4"), ("vector", "u1", (width,))])
    pieces: list[np.ndarray] = []
    pending = bytearray()
    with conn.cursor() as cur, cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as copy:
        for block in copy:
            pending += block
            if len(pending) >= PARSE_BYTES + COPY_HEADER:
                pieces.append(_take_rows(pending, row, COPY_HEADER if not pieces else 0))
    if not pending.endswith(COPY_TRAILER):
        raise ValueError("the database's COPY ended early")
    del pending[-len(COPY_TRAILER):]
    pieces.append(_take_rows(pending, row, COPY_HEADER if not pieces else 0))
    if pending:
        raise ValueError(f"a stored vector is not {width // 4} float32 values")
    rows = np.concatenate(pieces)
    return rows["id"].astype(np.int64), np.ascontiguousarray(rows["vector"])


def _take_rows(pending: bytearray, row: np.dtype, header: int) -> np.ndarray:
    """The whole rows at the start of `pending` (after the COPY header, if it is there), removed
    from it; raises unless each is two fields of the expected sizes."""
    if header:
        if not pending.startswith(COPY_SIGNATURE):
            raise ValueError("not a binary COPY")
        del pending[:header]
    whole = len(pending) // row.itemsize * row.itemsize
    rows = np.frombuffer(bytes(pending[:whole]), dtype=row)
    del pending[:whole]
    if not (np.all(rows["fields"] == 2) and np.all(rows["id_size"] == 8) and np.all(rows["vector_size"] == row["vector"].itemsize)):
        raise ValueError(f"a stored vector is not {row['vector'].shape[0] // 4} float32 values")
    return rows


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]
