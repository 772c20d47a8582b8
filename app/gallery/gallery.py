"""The gallery: the SQLite store (source of truth) and the FAISS index over it, kept in step.

One lock orders every change: a store commit and the matching index update happen together,
and an index rebuild never interleaves with an enrolment or a delete. An index update that
fails rolls the transaction back; a commit that fails takes the update back out of the index.
Writes by another process (`faceid gallery import` into a running server's folder) are
noticed through SQLite's data_version, before the next request and by the service's watcher,
and the index is rebuilt (`refresh`, which logs it). Reading readiness never rebuilds.

The index saved at shutdown is trusted at the next start only when its note matches the store
(generation, model, index settings), the file's sha256 is the one recorded when it was saved,
and a sample of the store's faces finds itself in it; anything else is rebuilt from the store.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.config import Settings
from app.gallery.index import (
    DEFAULT_EF_SEARCH,
    DEFAULT_HNSW_M,
    DEFAULT_IVF_NPROBE,
    FaceIndex,
    IndexKind,
)
from app.gallery.store import Entry, GalleryStore, NewFace, Person, PhotoRecord, Store, StoreError
from core.constants import EMBEDDING_DIM
from core.files import sha256_of, write_text_atomic
from core.photos.descriptor import PROJECTED_DIM, SHORTLIST, Descriptor, describe, projected, rerank, search_breadth

STORE_FILE = "gallery.sqlite3"
# The index saved at shutdown, and what it was built from: used at the next start when the
# store is still at that generation (a 1M-face IVF index loads in seconds, builds in minutes).
INDEX_FILE, INDEX_NOTE = "index.faiss", "index.json"
SPOT_CHECKS = 32  # stored faces a loaded index must find as themselves before it is trusted
REBUILD_MASKED_FRACTION = 0.2  # HNSW: rebuild once a fifth of the graph is deleted faces
log = logging.getLogger(__name__)


def open_store(settings: Settings) -> GalleryStore:
    """The store the settings name: SQLite in FACEID_DATA_DIR, or FACEID_STORE's PostgreSQL."""
    if settings.store is None:
        return Store(settings.data_dir / STORE_FILE)
    from app.gallery.postgres import PostgresStore  # psycopg is needed only here

    return PostgresStore(settings.store.get_secret_value(), settings.store_password(), settings.store_pool_size)


def cells_space(model_id: str | None) -> str:
    """The name the store keeps IVF cells under: one model's face embeddings, or (None) the
    photo descriptors."""
    return f"faces {model_id}" if model_id is not None else "photos"


class ModelMismatch(RuntimeError):
    """The store holds embeddings made by another backbone; they must not be mixed."""


@dataclass(frozen=True)
class Candidate:
    person_id: str
    name: str | None
    similarity: float


@dataclass(frozen=True)
class PhotoCandidate:
    """An enrolled photo that a query photo may be a copy of (photo evidence, not face evidence)."""

    face_id: int
    person_id: str
    name: str | None
    source: str  # the enrolled photo's file name
    box: tuple[float, float, float, float]  # where its enrolled face was, as fractions of the photo
    similarity: float


class Gallery:
    def __init__(self, data_dir: Path, model_id: str, index_kind: IndexKind = "flat", hnsw_m: int = DEFAULT_HNSW_M,
                 ef_search: int = DEFAULT_EF_SEARCH, ivf_nprobe: int = DEFAULT_IVF_NPROBE, store: GalleryStore | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.store: GalleryStore = store if store is not None else Store(self.data_dir / STORE_FILE)
        self.model_id = model_id
        self._index_args = (index_kind, hnsw_m, ef_search, ivf_nprobe)
        self._lock = threading.RLock()
        self._person_of: dict[int, str] = {}
        self.mismatch: str | None = None
        self.index = FaceIndex(*self._index_args)
        self.photos = FaceIndex(*self._index_args, dim=PROJECTED_DIM)  # photo evidence, by face id
        self._seen_version = -1
        self.rebuild()

    @classmethod
    def from_settings(cls, settings: Settings, model_id: str) -> Gallery:
        """The SQLite gallery in FACEID_DATA_DIR, or with FACEID_STORE the shared PostgreSQL one."""
        if settings.store is None:
            return cls(settings.data_dir, model_id, settings.index, settings.hnsw_m, settings.hnsw_ef_search, settings.ivf_nprobe)
        from app.gallery.shared import SharedGallery  # psycopg is needed only here

        return SharedGallery.from_settings(settings, model_id)

    def _mismatch(self, models: dict[str, int]) -> str | None:
        """Why the store's embeddings cannot be searched with this model, or None."""
        others = {m: n for m, n in models.items() if m != self.model_id}
        if not others:
            return None
        found = ", ".join(f"{n} faces from {m}" for m, n in others.items())
        return f"the gallery holds {found}, but the service runs {self.model_id}; re-embed it with: {self.reembed_command}"

    @property
    def reembed_command(self) -> str:
        return f"faceid gallery reembed --data-dir {self.data_dir}"

    def rebuild(self) -> None:
        """Rebuild the index from the store, refusing embeddings from another model."""
        with self._lock:
            self._seen_version = self.store.data_version()
            self.mismatch = self._mismatch(self.store.model_ids())
            if self.mismatch:  # nothing is searchable until the gallery is re-embedded; its vectors are not read
                self.index, self._person_of = FaceIndex(*self._index_args), {}
                return
            self.photos = self._index_over(*self.store.photo_vectors(), dim=PROJECTED_DIM)
            if (saved := self._saved_index()) is not None:
                self.index = saved
                ids, persons = self.store.face_persons()
            else:
                ids, vectors, persons = self.store.embeddings()
                self.index = self._index_over(ids, vectors)
            self._person_of = dict(zip(ids.tolist(), persons))

    def _index_over(self, ids: np.ndarray, vectors: np.ndarray, dim: int = EMBEDDING_DIM) -> FaceIndex:
        """FaceIndex.over with the IVF cells the store keeps for this vector space; cells it has
        to train (none kept, or the gallery outgrew them) are kept for the next build, so a
        gallery's cells are trained once, not by every replica or restart."""
        space = cells_space(self.model_id if dim == EMBEDDING_DIM else None)
        kept = self.store.index_cells(space) if self._index_args[0] == "ivf" and len(ids) else None
        index = FaceIndex.over(ids, vectors, *self._index_args, dim=dim, cells=kept)
        made = index.cells
        if made is not None and (kept is None or not kept.fit(len(ids), dim)):
            try:
                self.store.keep_index_cells(space, made)
            except StoreError as exc:  # a cache: a read-only store just trains again next time
                log.warning("trained IVF cells not kept (%s)", exc)
        return index

    def _note(self) -> dict:
        return {"generation": self.store.generation(), "model_id": self.model_id, "index": list(self._index_args)}

    def _saved_index(self) -> FaceIndex | None:
        """The index saved beside the store, if it was built from the store as it is now and
        holds what the store holds (see the module's docstring)."""
        note_path, index_path = self.data_dir / INDEX_NOTE, self.data_dir / INDEX_FILE
        if not note_path.is_file():
            return None
        try:
            note = json.loads(note_path.read_text())
            if {k: note.get(k) for k in ("generation", "model_id", "index")} != self._note():
                raise ValueError("the store changed since it was saved")
            if sha256_of(index_path) != note["sha256"]:
                raise ValueError(f"{index_path.name} is not the file that was saved (sha256 differs)")
            index = FaceIndex.load(index_path, int(note["trained_on"]), *self._index_args)
            if index.size != self.store.counts()[1]:
                raise ValueError(f"it holds {index.size} faces, the store {self.store.counts()[1]}")
            self._spot_check(index)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # absent, stale or damaged: build anew
            log.warning("saved index not used (%s); building it from the store", exc)
            return None
        return index

    def _spot_check(self, index: FaceIndex) -> None:
        """Raise unless a sample of the store's faces each finds itself among its nearest in
        `index` (vectors and ids both as stored)."""
        ids, _ = self.store.face_persons()
        if not len(ids):
            return
        sample = np.random.default_rng(len(ids)).choice(ids, min(SPOT_CHECKS, len(ids)), replace=False)
        stored_ids, vectors = self.store.embeddings_of(sample.tolist())
        sims, found = index.search(vectors, 4)  # a few: a photo enrolled twice has a twin
        for face_id, row_sims, row_ids in zip(stored_ids, sims, found):
            hit = np.flatnonzero(row_ids == face_id)
            if not len(hit) or row_sims[hit[0]] < 0.999:
                raise ValueError(f"stored face {face_id} is not in it as stored")

    def save_index(self) -> None:
        """Save the index beside the store for the next start (at shutdown), with a note of
        what it was built from and its sha256. Nothing is saved for a refused gallery or an
        index with masked deletions."""
        with self._lock:
            if self.mismatch or self.index.masked:
                return
            (self.data_dir / INDEX_NOTE).unlink(missing_ok=True)  # no note: no stale pairing mid-write
            index_path = self.data_dir / INDEX_FILE
            self.index.save(index_path)
            note = self._note() | {"trained_on": self.index.trained_on, "faces": self.index.size, "sha256": sha256_of(index_path)}
            write_text_atomic(self.data_dir / INDEX_NOTE, json.dumps(note))

    def refresh(self) -> bool:
        """Rebuild if another process has committed to the store since the index was built;
        whether it did."""
        with self._lock:
            if self.store.data_version() == self._seen_version:
                return False
            log.info("the store in %s changed in another process; rebuilding the index", self.data_dir)
            self.rebuild()
            return True

    def check_usable(self) -> None:
        self.refresh()
        if self.mismatch:
            raise ModelMismatch(self.mismatch)

    def behind(self) -> int | None:
        """Changes committed to a shared store that this replica has not applied (None: not shared)."""
        return None

    @property
    def in_sync(self) -> bool:
        """The index holds every face of the store, made by this model. A cheap read: it never
        rebuilds (`refresh` does, for requests and the service's watcher)."""
        _, faces = self.store.counts()
        return self.mismatch is None and self.index.size == faces

    def enroll(self, person_id: str, name: str | None, faces: list[NewFace]) -> tuple[Person, int, bool]:
        ((added, created),) = self._add([(person_id, name, faces)])
        person = self.store.get_person(person_id)
        assert person is not None
        return person, added, created

    def enroll_many(self, entries: list[Entry]) -> int:
        """Several persons' faces in one transaction (bulk import); returns the faces added."""
        return sum(added for added, _ in self._add(entries))

    def _add(self, entries: list[Entry]) -> list[tuple[int, bool]]:
        with self._lock:
            self.check_usable()
            indexed: list[int] = []
            try:
                with self.store.write() as w:
                    added = w.add_faces(entries, self.model_id)
                    ids = [i for new_ids, _ in added for i in new_ids]
                    persons = [person_id for person_id, _, faces in entries for _ in faces]
                    vectors = [f.embedding for _, _, faces in entries for f in faces]
                    photos = [(i, f.photo) for i, f in zip(ids, (f for _, _, faces in entries for f in faces)) if f.photo is not None]
                    if ids:  # inside the transaction: if this fails, nothing is committed
                        self.index.add(np.array(ids, dtype=np.int64), np.stack(vectors))
                        indexed = ids
                        self._person_of.update(zip(ids, persons))
                        if photos:
                            self.photos.add(np.array([i for i, _ in photos], dtype=np.int64), np.stack([p.vector for _, p in photos]))
            except BaseException:
                self._forget(indexed)  # the commit failed after the index took the faces
                raise
            if self.index.needs_training:  # an IVF index outgrew its cells: train them anew
                self._retrain()
            return [(len(new_ids), created) for new_ids, created in added]

    def _retrain(self) -> None:
        """Rebuild with freshly trained cells. The faces are committed and in the current index
        already, so a failure here keeps that index and leaves the answer to the caller intact."""
        current = self.index, dict(self._person_of)
        try:
            self.rebuild()
        except (RuntimeError, MemoryError) as exc:
            self.index, self._person_of = current
            log.error("could not retrain the index (%s); keeping the current one", exc)

    def delete(self, person_id: str) -> bool:
        with self._lock:
            self.refresh()
            with self.store.write() as w:
                ids = w.delete_person(person_id)
            if ids is None:
                return False
            self._forget(ids)
            if self.index.masked > REBUILD_MASKED_FRACTION * max(1, self.index.size):
                self.rebuild()
        return True

    def _forget(self, ids: list[int]) -> None:
        if ids:
            self.index.remove(ids)
            self.photos.remove(ids)
            for i in ids:
                self._person_of.pop(i, None)

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        """Per query, the top_k persons by their best-matching face, most similar first."""
        with self._lock:
            self.check_usable()
            # Fetch extra faces: several of one person's faces may crowd the top.
            sims, ids = self.index.search(queries, min(self.index.size, top_k * 8) or 1)
            person_of = self._person_of
            results = []
            for row_sims, row_ids in zip(sims, ids):
                best: dict[str, float] = {}
                for sim, face_id in zip(row_sims, row_ids):
                    if face_id >= 0 and (p := person_of.get(int(face_id))) is not None and p not in best:
                        best[p] = float(sim)
                results.append(sorted(best.items(), key=lambda kv: -kv[1])[:top_k])
        names = self.store.names({p for row in results for p, _ in row})
        # A person deleted by another replica a moment ago is no longer in the store: never answered.
        return [[Candidate(p, names.get(p), s) for p, s in row if p in names] for row in results]

    def search_photos(self, thumb: np.ndarray, descriptor: Descriptor | None = None) -> list[PhotoCandidate]:
        """The enrolled photos a photo (its thumbnail) may be a copy of, most similar first: a
        FAISS shortlist on the projected descriptors, re-ranked by the exact similarity.
        `descriptor` is describe(thumb) when the caller has made it already."""
        query = describe(thumb) if descriptor is None else descriptor
        with self._lock:
            self.check_usable()
            if self.photos.size == 0:
                return []
            _, ids = self.photos.search(projected(query[0])[None], SHORTLIST * (wider := search_breadth(query)), wider=wider)
        stored = self.store.photos_of([int(i) for i in ids[0] if i >= 0])
        scores = rerank(thumb, [s.thumb for s in stored], [s.box for s in stored])
        names = self.store.names({s.person_id for s in stored})
        found = [PhotoCandidate(s.face_id, s.person_id, names.get(s.person_id), s.source, s.box, float(v)) for s, v in zip(stored, scores)]
        return sorted(found, key=lambda c: -c.similarity)

    def set_photos(self, updates: list[tuple[int, PhotoRecord]]) -> None:
        """Photo evidence for stored faces that had none (bulk import), committed with its index."""
        with self._lock:
            self.check_usable()
            with self.store.write() as w:
                w.set_photos(updates)
                self.photos.remove([i for i, _ in updates])
                self.photos.add(np.array([i for i, _ in updates], dtype=np.int64), np.stack([p.vector for _, p in updates]))

    def close(self) -> None:
        self.store.close()
