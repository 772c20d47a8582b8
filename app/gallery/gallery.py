"""The gallery: a store (the source of truth) and two vector indexes over it, faces and photos,
kept in step; composed of parts, the same on SQLite and PostgreSQL:

- the store (`store.py`: SQLite or PostgreSQL), whose version grows with every committed write;
- the indexes (`vector_index.py`), which hold every change up to `applied`, a store version;
- the snapshot (`snapshot.py`), the face index saved at shutdown and loaded at the next start;
- the sync policy (`sync.py`), made by the store, which calls `refresh` when the store may have
  changed under the gallery (another process, another replica).

One lock orders every change: a store commit and the matching index update happen together,
and a rebuild never interleaves with an enrolment or a delete. An index update that fails rolls
the transaction back; a commit that fails takes the update back out of the index. Catching up
applies the store's change log where it keeps one (PostgreSQL), idempotently (a face already
indexed is not added twice, one not indexed is not removed, so a replica's own writes coming
back from the log are no-ops), and rebuilds where it keeps none (SQLite). Reading readiness never
rebuilds.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from app.gallery.audit import AuditLog
from app.gallery.face_owners import FaceOwners
from app.gallery.records import AuditEvent, Change, Committed, Entry, Erased, NewFace, Person, PhotoRecord, StoreError, StoreKind, now
from app.gallery.snapshot import Built, NoSnapshot, Snapshot, SnapshotRejected
from app.gallery.store import Store
from app.gallery.sync import Sync
from app.gallery.vector_index import IndexSettings, VectorIndex
from core.constants import EMBEDDING_DIM
from core.embedding.templates import template
from core.photos.descriptor import PROJECTED_DIM, SHORTLIST, Descriptor, describe, projected, rerank, search_breadth

SPOT_CHECKS = 32  # stored faces a loaded snapshot must find as themselves before it is trusted
REBUILD_MASKED_FRACTION = 0.2  # HNSW: rebuild once a fifth of the graph is deleted faces
log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Erasure:
    """What deleting a person removed, and when: the receipt /persons/{id} answers."""

    person_id: str
    faces: int  # face rows, each with its embedding
    crops: int
    photos: int  # photo thumbnails with their descriptors
    unknowns: int  # unknown faces kept before they were enrolled as this person
    index_entries: int  # removed from this service's face and photo indexes
    snapshot_removed: bool  # a saved index snapshot that could hold them was deleted
    store: str  # what the store did to its files, in words
    at: str


@dataclass(frozen=True)
class Purge:
    faces: int  # faces whose crop and photo evidence went
    expired: list[str]  # persons who went entirely


def erased_counts(erased: Erased) -> str:
    return f"faces {len(erased.face_ids)}, crops {erased.crops}, photos {erased.photos}"


@dataclass(frozen=True)
class Status:
    """What the gallery is and whether it is in step, as /readyz reports it."""

    store: StoreKind
    location: str
    model_id: str
    persons: int
    faces: int
    index_size: int
    index: str
    writable: bool
    behind: int  # store versions past what the indexes hold
    mismatch: str | None

    @property
    def in_sync(self) -> bool:
        return self.mismatch is None and self.behind == 0


class Gallery:
    def __init__(self, store: Store, data_dir: Path, model_id: str, index: IndexSettings = IndexSettings()) -> None:
        self.store = store
        self.audit = AuditLog(store)
        self.snapshot = Snapshot(data_dir, store.sealer)
        self.model_id = model_id
        self.index_settings = index
        self._lock = threading.RLock()
        self._owners = FaceOwners()  # who each indexed face is of
        self._sync: Sync | None = None  # until `follow`, every request reads the store
        self.mismatch: str | None = None
        self.index = VectorIndex(index)
        self.photos = VectorIndex(index, PROJECTED_DIM)  # photo evidence, by face id
        self.applied = 0  # the indexes hold every change up to this store version
        self._build(from_snapshot=True)

    # -- building -------------------------------------------------------------------------
    def _mismatch(self, models: dict[str, int]) -> str | None:
        """Why the store's embeddings cannot be searched with this model, or None."""
        others = {m: n for m, n in models.items() if m != self.model_id}
        if not others:
            return None
        found = ", ".join(f"{n} faces from {m}" for m, n in others.items())
        return f"the gallery holds {found}, but the service runs {self.model_id}; re-embed it with: {self.store.reembed_command()}"

    def rebuild(self) -> None:
        """Build the indexes from the store, refusing embeddings from another model."""
        self._build(from_snapshot=False)

    def _build(self, from_snapshot: bool) -> None:
        with self._lock:
            version = self.store.version()  # read before the faces: what commits meanwhile is caught up, idempotently
            self.mismatch = self._mismatch(self.store.model_ids())
            self.index, self._owners = VectorIndex(self.index_settings), FaceOwners()
            if self.mismatch:  # nothing is searchable until the gallery is re-embedded; its vectors are not read
                self.photos, self.applied = VectorIndex(self.index_settings, PROJECTED_DIM), version
                return
            self.photos = self._index_over(*self.store.photo_vectors(), dim=PROJECTED_DIM)
            if from_snapshot and self._load_snapshot():
                return
            ids, vectors, persons = self.store.embeddings()
            self.index = self._index_over(ids, vectors)
            self._owners = FaceOwners(zip(ids.tolist(), persons))
            self.applied = version

    def _index_over(self, ids: np.ndarray, vectors: np.ndarray, dim: int = EMBEDDING_DIM) -> VectorIndex:
        """VectorIndex.over with the IVF cells the store keeps for this vector space; cells it has
        to train (none kept, or the gallery outgrew them) are kept for the next build, so a
        gallery's cells are trained once, not by every replica or restart."""
        space = cells_space(self.model_id if dim == EMBEDDING_DIM else None)
        kept = self.store.index_cells(space) if self.index_settings.kind == "ivf" and len(ids) else None
        index = VectorIndex.over(ids, vectors, self.index_settings, dim, cells=kept)
        made = index.cells
        if made is not None and (kept is None or not kept.fit(len(ids), dim)):
            try:
                self.store.keep_index_cells(space, made)
            except StoreError as exc:  # a cache: a read-only store just trains again next time
                log.warning("trained IVF cells not kept (%s)", exc)
        return index

    def _built(self) -> Built:
        return Built(self.store.gallery_id(), self.model_id, self.index_settings)

    def _load_snapshot(self) -> bool:
        """Use the snapshot saved beside the gallery, caught up to the store; False (and a log
        line) when there is none or it fails a check (snapshot.py, and here: the store can catch
        it up, every face it holds is the store's, and a sample finds itself in it)."""
        try:
            note = self.snapshot.note(self._built(), self.store.version())
            if self.store.changes_since(note.version, limit=1) is None:
                raise SnapshotRejected("the store changed since it was saved")
            loaded = self.snapshot.load(note)
            stored_ids, persons = self.store.face_persons()
            person = dict(zip(stored_ids.tolist(), persons))
            held = set(loaded.face_ids.tolist())
            if gone := sorted(held - person.keys()):  # deleted since: the log's deletes of them would find nothing to remove
                loaded.index.remove(gone)
            self.index, self._owners, self.applied = loaded.index, FaceOwners((i, person[i]) for i in held if i in person), note.version
            self._catch_up()
            if self.index.size != (faces := self.store.counts()[1]):
                raise SnapshotRejected(f"after catching up it holds {self.index.size} faces, the store {faces}")
            self._spot_check(self.index)
        except SnapshotRejected as exc:
            if not isinstance(exc, NoSnapshot):
                log.warning("snapshot not used (%s); building the index from the store", exc)
            self.index, self._owners = VectorIndex(self.index_settings), FaceOwners()
            return False
        log.info("index loaded from the snapshot at version %d and caught up to %d", note.version, self.applied)
        return True

    def _spot_check(self, index: VectorIndex) -> None:
        """SnapshotRejected unless a sample of the store's faces each finds itself among its
        nearest in `index` (vectors and ids both as stored)."""
        ids, _ = self.store.face_persons()
        if not len(ids):
            return
        sample = np.random.default_rng(len(ids)).choice(ids, min(SPOT_CHECKS, len(ids)), replace=False)
        stored_ids, vectors = self.store.embeddings_of(sample.tolist())
        sims, found = index.search(vectors, 4)  # a few: a photo enrolled twice has a twin
        for face_id, row_sims, row_ids in zip(stored_ids, sims, found):
            hit = np.flatnonzero(row_ids == face_id)
            if not len(hit) or row_sims[hit[0]] < 0.999:
                raise SnapshotRejected(f"stored face {face_id} is not in it as stored")

    def save_snapshot(self) -> None:
        """Save the face index for the next start (at shutdown). Nothing is saved for a refused
        gallery or an index with masked deletions."""
        with self._lock:
            if self.mismatch or self.index.masked:
                return
            self.snapshot.save(self.index, np.array(self._owners.face_ids(), dtype=np.int64), self._built(), self.applied)

    # -- keeping in step with the store ---------------------------------------------------
    def follow(self, sync: Sync | None = None) -> None:
        """Start following the store's changes with its sync policy (or the one given)."""
        self._sync = sync if sync is not None else self.store.watch(self.refresh)
        self._sync.start()
        self.audit.start()

    def refresh(self) -> bool:
        """Catch up with what the store committed past `applied`, if it may have; whether
        anything was applied."""
        if self._sync is not None and not self._sync.may_have_changed(self.applied):
            return False
        with self._lock:
            return self._catch_up()

    def _catch_up(self) -> bool:
        applied, reembedded = 0, False
        while changes := self.store.changes_since(self.applied):
            for change in changes:
                if change.op == "embed":  # `faceid gallery reembed`: every face anew, and maybe a new model
                    reembedded = True
                elif not reembedded:
                    self._apply(change)
                self.applied = change.version
                applied += 1
        if changes is None:  # a store without a log moved: another process wrote to it
            log.info("the store %s changed in another process; rebuilding the index", self.store.location)
            self.rebuild()
            return True
        if reembedded:
            self.rebuild()
        elif applied and self.index.needs_training:
            self._retrain()
        elif self.index.masked > REBUILD_MASKED_FRACTION * max(1, self.index.size):
            self.rebuild()
        return applied > 0

    def _apply(self, change: Change) -> None:
        """One logged change ('add', 'delete' or 'photo'), idempotently."""
        if change.op == "delete":
            self._forget([i for i in change.face_ids if i in self._owners])
            return
        faces = self.store.faces_for_index(change.face_ids)  # those deleted since are gone: their delete follows
        if change.op == "add":
            faces = [f for f in faces if f.face_id not in self._owners]
            if mismatch := self._mismatch({f.model_id: 1 for f in faces}):
                self.mismatch = mismatch  # another replica runs another model: refuse, as at start
                return
            if faces:
                self.index.add(np.array([f.face_id for f in faces], dtype=np.int64), np.stack([f.embedding for f in faces]))
                self._owners.add([f.face_id for f in faces], [f.person_id for f in faces])
        photos = [(f.face_id, f.photo_vector) for f in faces if f.photo_vector is not None]
        if photos:
            if change.op == "photo":
                self.photos.remove([i for i, _ in photos])
            self.photos.add(np.array([i for i, _ in photos], dtype=np.int64), np.stack([v for _, v in photos]))

    def _committed(self, committed: Committed | None) -> None:
        """After this gallery's own write, which its indexes hold: when no other write came
        between, they hold the store's new version."""
        if committed is not None and committed.before == self.applied:
            self.applied = committed.after

    def check_usable(self) -> None:
        self.refresh()
        if self.mismatch:
            raise ModelMismatch(self.mismatch)

    def behind(self) -> int:
        """Store versions committed that the indexes do not hold yet."""
        return max(0, self.store.version() - self.applied)

    @property
    def in_sync(self) -> bool:
        """The indexes hold every change of the store, made by this model. A cheap read: it
        never rebuilds (`refresh` does, for requests and the sync policy)."""
        return self.mismatch is None and self.behind() == 0

    def status(self) -> Status:
        persons, faces = self.store.counts()
        return Status(self.store.kind, self.store.location, self.model_id, persons, faces, self.index.size, self.index.kind,
                      self.store.writable(), self.behind(), self.mismatch)

    # -- writes ---------------------------------------------------------------------------
    def enroll(self, person_id: str, name: str | None, faces: list[NewFace], consent: str | None = None,
               audit: AuditEvent | None = None, from_unknowns: list[int] | None = None) -> tuple[Person, int, bool]:
        """Add faces to a person (created if new); `consent` is kept with them, `audit` appended
        and the unknown faces `from_unknowns` marked enrolled as them, all in the same transaction."""
        ((added, created),) = self._add([(person_id, name, faces)], audit, {person_id: consent} if consent is not None else {},
                                        {person_id: from_unknowns} if from_unknowns else {})
        person = self.store.get_person(person_id)
        assert person is not None
        return person, added, created

    def enroll_many(self, entries: list[Entry], audit: AuditEvent | None = None, consents: dict[str, str] | None = None) -> int:
        """Several persons' faces in one transaction (bulk import); returns the faces added."""
        return sum(added for added, _ in self._add(entries, audit, consents))

    def _add(self, entries: list[Entry], audit: AuditEvent | None = None, consents: dict[str, str] | None = None,
             unknowns: dict[str, list[int]] | None = None) -> list[tuple[int, bool]]:
        with self._lock:
            self.check_usable()  # under the write's lock: never mix another model's embeddings in
            indexed: list[int] = []
            try:
                with self.store.write() as w:
                    added = w.add_faces(entries, self.model_id)
                    for person_id, consent in (consents or {}).items():
                        w.set_consent(person_id, consent)
                    for person_id, ids in (unknowns or {}).items():
                        w.mark_unknowns(ids, person_id)
                    if audit is not None:
                        w.audit(audit)
                    ids = [i for new_ids, _ in added for i in new_ids]
                    persons = [person_id for person_id, _, faces in entries for _ in faces]
                    vectors = [f.embedding for _, _, faces in entries for f in faces]
                    photos = [(i, f.photo) for i, f in zip(ids, (f for _, _, faces in entries for f in faces)) if f.photo is not None]
                    if ids:  # inside the transaction: if this fails, nothing is committed
                        self.index.add(np.array(ids, dtype=np.int64), np.stack(vectors))
                        indexed = ids
                        self._owners.add(ids, persons)
                        if photos:
                            self.photos.add(np.array([i for i, _ in photos], dtype=np.int64), np.stack([p.vector for _, p in photos]))
            except BaseException:
                self._forget(indexed)  # the commit failed after the index took the faces
                raise
            self._committed(w.committed)
            if self.index.needs_training:  # an IVF index outgrew its cells: train them anew
                self._retrain()
            return [(len(new_ids), created) for new_ids, created in added]

    def _retrain(self) -> None:
        """Rebuild with freshly trained cells. The faces are committed and in the current index
        already, so a failure here keeps that index and leaves the answer to the caller intact."""
        current = self.index, self._owners.copy(), self.applied
        try:
            self.rebuild()
        except (RuntimeError, MemoryError) as exc:
            self.index, self._owners, self.applied = current
            log.error("could not retrain the index (%s); keeping the current one", exc)

    def delete(self, person_id: str, audit: AuditEvent | None = None) -> Erasure | None:
        """Delete a person and every trace of them here: their rows (faces, embeddings, crops,
        photo evidence), their index entries, the saved snapshot that held them, and what the
        store's files kept of the rows (`Store.scrub`). `audit` is appended with the deletion.
        None when there was no such person."""
        with self._lock:
            self.refresh()
            with self.store.write() as w:
                erased = w.delete_person(person_id)
                if erased is not None and audit is not None:
                    w.audit(replace(audit, detail=audit.detail or erased_counts(erased)))
            self._committed(w.committed)
            if erased is None:
                return None
            indexed = self.index.size + self.photos.size
            self._forget(erased.face_ids)
            removed = indexed - self.index.size - self.photos.size
            if self.index.masked > REBUILD_MASKED_FRACTION * max(1, self.index.size):
                self.rebuild()
            snapshot = self.snapshot.remove()  # it may hold their embeddings; the next shutdown saves a new one
        return Erasure(person_id, len(erased.face_ids), erased.crops, erased.photos, erased.unknowns, removed, snapshot, self.store.scrub(), now())

    def purge(self, before: str, expire: bool, audit: AuditEvent) -> Purge:
        """Retention: the crops and photo evidence of faces created before `before` go, their
        embeddings stay; with `expire`, persons whose newest face is that old go entirely. One
        transaction, with `audit`; then the indexes, the snapshot and the store's files."""
        with self._lock:
            self.refresh()
            with self.store.write() as w:
                gone = [(p, erased) for p in (w.expired_persons(before) if expire else []) if (erased := w.delete_person(p)) is not None]
                purged = w.purge_sources(before)
                if gone or purged:
                    w.audit(replace(audit, persons=tuple(p for p, _ in gone),
                                    detail=f"crops and photos of faces {len(purged)} before {before}; persons expired {len(gone)}"))
            self._committed(w.committed)
            for _, erased in gone:
                self._forget(erased.face_ids)
            if purged:
                self.photos.remove(purged)
            if gone:
                self.snapshot.remove()
        if gone or purged:
            self.store.scrub()
        return Purge(len(purged), [p for p, _ in gone])

    def _forget(self, ids: list[int]) -> None:
        if ids:
            self.index.remove(ids)
            self.photos.remove(ids)
            self._owners.remove(ids)

    def set_photos(self, updates: list[tuple[int, PhotoRecord]], audit: AuditEvent | None = None) -> None:
        """Photo evidence for stored faces that had none (bulk import), committed with its index."""
        with self._lock:
            self.check_usable()
            with self.store.write() as w:
                w.set_photos(updates)
                if audit is not None:
                    w.audit(audit)
                self.photos.remove([i for i, _ in updates])
                self.photos.add(np.array([i for i, _ in updates], dtype=np.int64), np.stack([p.vector for _, p in updates]))
            self._committed(w.committed)

    # -- searches ---------------------------------------------------------------------------
    def lookup(self) -> Lookup:
        """The gallery checked once (caught up with the store, made by this model), for one
        request's searches."""
        self.check_usable()
        return Lookup(self)

    def search(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        """Per query, the top_k persons by their template's similarity (core/embedding/templates.py),
        most similar first."""
        return self.lookup().faces(queries, top_k)

    def search_photos(self, thumb: np.ndarray, descriptor: Descriptor | None = None) -> list[PhotoCandidate]:
        """The enrolled photos a photo (its thumbnail) may be a copy of, most similar first."""
        return self.lookup().photos(thumb, descriptor)

    def _faces(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        with self._lock:
            # Fetch extra faces: several of one person's faces may crowd the top.
            sims, ids = self.index.search(queries, min(self.index.size, top_k * 8) or 1)
            found: list[dict[str, float]] = []  # per query, each person among its faces: their best face's similarity
            for row_sims, row_ids in zip(sims, ids):
                best: dict[str, float] = {}
                for sim, face_id in zip(row_sims, row_ids):
                    if face_id >= 0 and (p := self._owners.person(int(face_id))) is not None and p not in best:
                        best[p] = float(sim)
                found.append(best)
            several = sorted({p for best in found for p in best if self._owners.faces(p) > 1})
            held = {p: template(faces) for p, faces in self.store.embeddings_by_person(several).items()} if several else {}
        results = []
        for query, best in zip(queries, found):
            # A person with several faces is scored by their template, with one by that face.
            scored = {p: float(held[p] @ query) if p in held else sim for p, sim in best.items()}
            results.append(sorted(scored.items(), key=lambda ps: -ps[1])[:top_k])
        names = self.store.names({p for row in results for p, _ in row})
        # A person deleted by another replica a moment ago is no longer in the store: never answered.
        return [[Candidate(p, names.get(p), s) for p, s in row if p in names] for row in results]

    def _photos(self, thumb: np.ndarray, descriptor: Descriptor | None) -> list[PhotoCandidate]:
        """A FAISS shortlist on the projected descriptors, re-ranked by the exact similarity.
        `descriptor` is describe(thumb) when the caller has made it already."""
        query = describe(thumb) if descriptor is None else descriptor
        with self._lock:
            if self.photos.size == 0:
                return []
            _, ids = self.photos.search(projected(query[0])[None], SHORTLIST * (wider := search_breadth(query)), wider=wider)
        stored = self.store.photos_of([int(i) for i in ids[0] if i >= 0])
        scores = rerank(thumb, [s.thumb for s in stored], [s.box for s in stored])
        names = self.store.names({s.person_id for s in stored})
        found = [PhotoCandidate(s.face_id, s.person_id, names.get(s.person_id), s.source, s.box, float(v)) for s, v in zip(stored, scores)]
        return sorted(found, key=lambda c: -c.similarity)

    def stop_following(self) -> None:
        if self._sync is not None:
            self._sync.stop()
            self._sync = None
        self.audit.stop()

    def close(self) -> None:
        self.stop_following()
        self.store.close()


class Lookup:
    """A gallery checked once for a request: its searches do not check again."""

    def __init__(self, gallery: Gallery) -> None:
        self._gallery = gallery

    def faces(self, queries: np.ndarray, top_k: int) -> list[list[Candidate]]:
        """Per query, the top_k persons by their template's similarity, most similar first."""
        return self._gallery._faces(queries, top_k)

    def photos(self, thumb: np.ndarray, descriptor: Descriptor | None = None) -> list[PhotoCandidate]:
        """The enrolled photos a photo may be a copy of, most similar first (photo evidence)."""
        return self._gallery._photos(thumb, descriptor)

    def person(self, person_id: str) -> tuple[Person, np.ndarray] | None:
        """An enrolled person and their faces' embeddings (N×512), or None."""
        person = self._gallery.store.get_person(person_id)
        if person is None:
            return None
        return person, self._gallery.store.embeddings_by_person([person_id]).get(person_id, np.zeros((0, EMBEDDING_DIM), np.float32))
