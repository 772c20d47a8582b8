"""The face index saved beside the gallery at shutdown, so that the next start loads it instead
of rebuilding it from the store (a 1M-face IVF index: seconds, not minutes).

A snapshot is the index, the face ids it holds and a note: which gallery, model and index
settings it was built for, the store version it holds every change up to, and the sha256 of
both files. `load` trusts nothing it cannot check here (another gallery, model or setting, a
file that is not the one saved, a version the store has not reached); the gallery then checks
it against the store itself (it catches up from its version, and a sample of the store's faces
must find themselves in it). It is a cache: anything wrong, and the index is built anew.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.gallery.sealing import MAGIC, SNAPSHOT, Sealer
from app.gallery.vector_index import IndexSettings, VectorIndex
from core.files import atomic_write, sha256_of, write_text_atomic

INDEX_FILE, IDS_FILE, NOTE_FILE = "index.faiss", "index.ids.npy", "index.json"


class SnapshotRejected(ValueError):
    """The snapshot is stale, another gallery's, or damaged: build the index anew."""


class NoSnapshot(SnapshotRejected):
    """None was saved."""


@dataclass(frozen=True)
class Built:
    """What an index was built for: a snapshot of anything else is not used."""

    gallery_id: str
    model_id: str
    index: IndexSettings

    def note(self) -> dict:
        return {"gallery_id": self.gallery_id, "model_id": self.model_id, "index": asdict(self.index)}


@dataclass(frozen=True)
class Note:
    built: Built
    version: int  # the store version the index holds every change up to
    trained_on: int
    sha256: str
    ids_sha256: str


@dataclass(frozen=True)
class Loaded:
    index: VectorIndex
    face_ids: np.ndarray


class Snapshot:
    """With a sealer that has a key, the index file is sealed (its embeddings never on disk in the clear)."""

    def __init__(self, folder: Path, sealer: Sealer | None = None) -> None:
        self.folder = Path(folder)
        self.sealer = sealer if sealer is not None else Sealer()
        self._note, self._index, self._ids = self.folder / NOTE_FILE, self.folder / INDEX_FILE, self.folder / IDS_FILE

    def save(self, index: VectorIndex, face_ids: np.ndarray, built: Built, version: int) -> None:
        """Write the index, its face ids and the note, each atomically; the note last, and removed
        first, so no stale pairing of note and files is ever on disk."""
        self._note.unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        index.save(self._index, (lambda data: self.sealer.seal(data, SNAPSHOT) or b"") if self.sealer.on else None)
        with atomic_write(self._ids) as tmp, open(tmp, "wb") as f:
            np.save(f, np.sort(np.asarray(face_ids, dtype=np.int64)))
        note = built.note() | {"version": version, "trained_on": index.trained_on, "faces": index.size,
                               "sha256": sha256_of(self._index), "ids_sha256": sha256_of(self._ids)}
        write_text_atomic(self._note, json.dumps(note))

    def remove(self) -> bool:
        """Delete the snapshot (the note first); whether there was one."""
        existed = self._note.is_file() or self._index.is_file()
        for path in (self._note, self._index, self._ids):
            path.unlink(missing_ok=True)
        return existed

    def note(self, built: Built, store_version: int) -> Note:
        """The note of the snapshot saved for `built` at a version the store has reached (cheap
        checks: the files are not read); else SnapshotRejected, saying why."""
        if not self._note.is_file():
            raise NoSnapshot("none was saved")
        try:
            saved = json.loads(self._note.read_text())
            if {k: saved.get(k) for k in built.note()} != built.note():
                raise SnapshotRejected("it was saved for another gallery, model or index setting")
            note = Note(built, int(saved["version"]), int(saved["trained_on"]), str(saved["sha256"]), str(saved["ids_sha256"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SnapshotRejected(f"its note cannot be read ({type(exc).__name__}: {exc})") from exc
        if note.version > store_version:
            raise SnapshotRejected("it is ahead of the store (restored from an older backup?)")
        return note

    def load(self, note: Note) -> Loaded:
        """The index and face ids the note describes, if they are the files that were saved."""
        try:
            if sha256_of(self._index) != note.sha256 or sha256_of(self._ids) != note.ids_sha256:
                raise SnapshotRejected(f"its files are not the ones that were saved ({self._index.name}'s sha256 differs)")
            sealed = self.sealer.on or self._index.read_bytes()[: len(MAGIC)] == MAGIC
            opener = (lambda data: self.sealer.open(data, SNAPSHOT) or b"") if sealed else None
            return Loaded(VectorIndex.load(self._index, note.trained_on, note.built.index, opener), np.load(self._ids))
        except SnapshotRejected:
            raise
        except (OSError, ValueError, RuntimeError) as exc:  # unreadable or damaged
            raise SnapshotRejected(f"it cannot be read ({type(exc).__name__}: {exc})") from exc
