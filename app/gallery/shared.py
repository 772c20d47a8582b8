"""The gallery on PostgreSQL: stateless replicas, each with its own FAISS index, following one
change log.

- Writes take one advisory lock across replicas, so the log's sequence numbers are in commit
  order; each write transaction's NOTIFY carries its newest sequence number.
- A replica's index holds every change up to `applied`. A follower thread LISTENs and applies
  each announced change at once (`refresh`, under the gallery's lock), so another replica's
  enrolment or delete is searchable here within milliseconds.
- Applying is idempotent (a face already indexed is not added twice, a face not indexed is not
  removed), so a replica's own writes, which it indexes as it commits, are no-ops when their
  announcement comes back, and a rebuild may overlap changes it then re-reads.
- While the follower is not listening (its connection dropped, the database restarting), every
  request reads the log itself before answering: a replica that missed announcements catches up
  before it answers, and answers 503 if the database cannot be read.
- At start a replica loads its snapshot (index, face ids and the sequence it was saved at) if
  one is in its data folder for this gallery, and applies the log from there; else it builds
  the index from the table, adding the vectors to the IVF cells the database keeps (trained
  by the first replica that needed them). The snapshot is a cache: a replica holds no state
  that matters.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import numpy as np

from app.config import Settings
from app.gallery.gallery import INDEX_FILE, INDEX_NOTE, REBUILD_MASKED_FRACTION, Gallery, open_store
from app.gallery.index import DEFAULT_EF_SEARCH, DEFAULT_HNSW_M, DEFAULT_IVF_NPROBE, FaceIndex, IndexKind
from app.gallery.postgres import CHANNEL, PostgresStore
from core.files import atomic_write, sha256_of, write_text_atomic
from core.photos.descriptor import PROJECTED_DIM

SNAPSHOT_IDS = "index.ids.npy"  # the face ids the snapshot index holds
POLL_S = 5.0  # the follower also reads the log's head this often: a lost announcement costs at most this
FOLLOWER = "faceid-follower"  # its connection's application_name
log = logging.getLogger(__name__)


class SharedGallery(Gallery):
    store: PostgresStore

    def __init__(self, store: PostgresStore, data_dir: Path, model_id: str, index_kind: IndexKind = "flat", hnsw_m: int = DEFAULT_HNSW_M,
                 ef_search: int = DEFAULT_EF_SEARCH, ivf_nprobe: int = DEFAULT_IVF_NPROBE, follow: bool = True) -> None:
        self.applied = 0  # every change up to this sequence number is in the index
        self.announced = 0  # the newest sequence number the follower has heard of
        self.follower = ChangeFollower(self) if follow else None
        self._starting = True  # the snapshot is tried once, at start; later rebuilds read the table
        super().__init__(data_dir, model_id, index_kind, hnsw_m, ef_search, ivf_nprobe, store=store)
        if self.follower is not None:
            self.follower.start()

    @classmethod
    def from_settings(cls, settings: Settings, model_id: str) -> SharedGallery:
        store = open_store(settings)
        assert isinstance(store, PostgresStore)
        return cls(store, settings.data_dir, model_id, settings.index, settings.hnsw_m, settings.hnsw_ef_search, settings.ivf_nprobe)

    @property
    def reembed_command(self) -> str:
        return "faceid gallery reembed (with this FACEID_STORE)"

    # -- building ---------------------------------------------------------------------------
    def rebuild(self) -> None:
        with self._lock:
            head = self.store.last_seq()  # read before the faces: what commits meanwhile is re-applied, idempotently
            self.mismatch = self._mismatch(self.store.model_ids())
            self.index, self._person_of = FaceIndex(*self._index_args), {}
            if self.mismatch:
                self.applied = head
                return
            self.photos = self._index_over(*self.store.photo_vectors(), dim=PROJECTED_DIM)
            starting, self._starting = self._starting, False
            if starting and self._load_snapshot():
                return
            ids, vectors, persons = self.store.embeddings()
            self.index = self._index_over(ids, vectors)
            self._person_of = dict(zip(ids.tolist(), persons))
            self.applied = head

    def _note(self) -> dict:
        return {"gallery_id": self.store.gallery_id(), "model_id": self.model_id, "index": list(self._index_args)}

    def _load_snapshot(self) -> bool:
        """Load the snapshot saved for this gallery and catch up from its sequence number; False
        (and a log line) when there is none, it is another gallery's, or it fails its checks."""
        note_path = self.data_dir / INDEX_NOTE
        if not note_path.is_file():
            return False
        try:
            note = json.loads(note_path.read_text())
            if {k: note.get(k) for k in ("gallery_id", "model_id", "index")} != self._note():
                raise ValueError("it was saved for another gallery, model or index setting")
            index_path, ids_path = self.data_dir / INDEX_FILE, self.data_dir / SNAPSHOT_IDS
            if sha256_of(index_path) != note["sha256"] or sha256_of(ids_path) != note["ids_sha256"]:
                raise ValueError("its files are not the ones that were saved (sha256 differs)")
            if int(note["seq"]) > self.store.last_seq():
                raise ValueError("it is ahead of the database (restored from an older backup?)")
            index = FaceIndex.load(index_path, int(note["trained_on"]), *self._index_args)
            held = set(np.load(ids_path).tolist())
            stored_ids, persons = self.store.face_persons()
            person = dict(zip(stored_ids.tolist(), persons))
            gone = sorted(held - person.keys())
            if gone:  # deleted since: the log's deletes of them would find nothing to remove
                index.remove(gone)
            self.index, self._person_of, self.applied = index, {i: person[i] for i in held if i in person}, int(note["seq"])
            self._catch_up()
            if self.index.size != self.store.counts()[1]:
                raise ValueError(f"after catching up it holds {self.index.size} faces, the database {self.store.counts()[1]}")
            self._spot_check(self.index)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            log.warning("snapshot not used (%s); building the index from the database", exc)
            self.index, self._person_of = FaceIndex(*self._index_args), {}
            return False
        log.info("index loaded from the snapshot at change %d and caught up to %d", note["seq"], self.applied)
        return True

    def save_index(self) -> None:
        """Save a snapshot of the index, its face ids and the change it holds up to."""
        with self._lock:
            if self.mismatch or self.index.masked:
                return
            (self.data_dir / INDEX_NOTE).unlink(missing_ok=True)
            self.data_dir.mkdir(parents=True, exist_ok=True)
            index_path, ids_path = self.data_dir / INDEX_FILE, self.data_dir / SNAPSHOT_IDS
            self.index.save(index_path)
            with atomic_write(ids_path) as tmp, open(tmp, "wb") as f:
                np.save(f, np.array(sorted(self._person_of), dtype=np.int64))
            note = self._note() | {"seq": self.applied, "trained_on": self.index.trained_on, "faces": self.index.size,
                                   "sha256": sha256_of(index_path), "ids_sha256": sha256_of(ids_path)}
            write_text_atomic(self.data_dir / INDEX_NOTE, json.dumps(note))

    # -- following the log ------------------------------------------------------------------
    def announce(self, seq: int) -> None:
        self.announced = max(self.announced, seq)

    def refresh(self) -> bool:
        """Apply what the log holds beyond `applied`: only when something was announced, or on
        every call while the follower is not listening. Whether anything was applied."""
        if self.follower is not None and self.follower.listening and self.announced <= self.applied:
            return False
        with self._lock:
            return self._catch_up() > 0

    def _catch_up(self) -> int:
        applied, reembedded = 0, False
        while changes := self.store.changes_since(self.applied):
            for seq, op, ids in changes:
                if op == "embed":  # `faceid gallery reembed`: every face anew, and maybe a new model
                    reembedded = True
                elif not reembedded:
                    self._apply(op, ids)
                self.applied = seq
                applied += 1
        self.announce(self.applied)
        if reembedded:
            self.rebuild()
        elif applied and self.index.needs_training:
            self._retrain()
        elif self.index.masked > REBUILD_MASKED_FRACTION * max(1, self.index.size):
            self.rebuild()
        return applied

    def _apply(self, op: str, ids: list[int]) -> None:
        """One logged change ('add', 'delete' or 'photo'), idempotently."""
        if op == "delete":
            self._forget([i for i in ids if i in self._person_of])
            return
        rows = self.store.faces_for_index(ids)  # those deleted since are gone: their delete follows
        if op == "add":
            rows = [r for r in rows if r[0] not in self._person_of]
            if mismatch := self._mismatch({model: 1 for _, _, model, _, _ in rows}):
                self.mismatch = mismatch  # another replica runs another model: refuse, as at start
                return
            if rows:
                self.index.add(np.array([r[0] for r in rows], dtype=np.int64), np.stack([r[3] for r in rows]))
                self._person_of.update((r[0], r[1]) for r in rows)
        photos = [(r[0], r[4]) for r in rows if r[4] is not None]
        if photos:
            if op == "photo":
                self.photos.remove([i for i, _ in photos])
            self.photos.add(np.array([i for i, _ in photos], dtype=np.int64), np.stack([v for _, v in photos]))

    def behind(self) -> int:
        """Changes committed to the database that this replica's index does not hold yet."""
        return max(0, self.store.last_seq() - self.applied)

    @property
    def in_sync(self) -> bool:
        return self.mismatch is None and self.behind() == 0

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        super().close()


class ChangeFollower(threading.Thread):
    """LISTENs for the change log's announcements on a connection of its own and applies them;
    reconnects with backoff when the connection drops, and reads the log's head on connecting
    (announcements sent while it was away are not queued for it)."""

    def __init__(self, gallery: SharedGallery) -> None:
        super().__init__(name="faceid-change-follower", daemon=True)
        self.gallery = gallery
        self.listening = False
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=5)

    def run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._follow()
            except Exception as exc:  # the connection dropped, or a change could not be applied: retry from the log
                if self.listening:
                    log.warning("change follower stopped (%s: %s); requests read the log until it is back",
                                type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self.listening = False
                self._stopping.wait(backoff)
                backoff = min(2 * backoff, 2.0)
            else:
                backoff = 0.1

    def _follow(self) -> None:
        store = self.gallery.store
        with store.connect(autocommit=True, application_name=FOLLOWER) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            self.gallery.announce(store.last_seq())  # what was missed while not listening
            self.gallery.refresh()
            self.listening = True
            log.info("following the change log at %d", self.gallery.applied)
            polled = time.monotonic()
            while not self._stopping.is_set():
                for notice in conn.notifies(timeout=0.5):
                    self.gallery.announce(int(notice.payload))
                    self.gallery.refresh()
                if time.monotonic() - polled > POLL_S:  # also proves the connection is alive
                    row = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
                    self.gallery.announce(int(row[0]) if row else 0)
                    polled = time.monotonic()
                self.gallery.refresh()
