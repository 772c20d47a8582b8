"""`faceid gallery migrate`: copy a gallery between stores (SQLite ⇄ PostgreSQL), resumably.

Faces keep their ids, so a copy interrupted part-way resumes after the last face it committed
(each batch is one transaction), and the check at the end compares every face's embedding by
id. A target that holds faces the source does not have is refused before anything is written.
The source's trained IVF cells come along, so the target's replicas add their vectors to them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from app.gallery.gallery import cells_space
from app.gallery.records import FACE_COLUMNS
from app.gallery.store import Store
from core.errors import FaceIdError

BATCH = 1000
EMBEDDING = FACE_COLUMNS.index("embedding")


@dataclass(frozen=True)
class Migrated:
    persons: int
    faces: int
    copied: int  # faces this run copied (the rest were there from an earlier, interrupted run)


def migrate(source: Store, target: Store, batch: int = BATCH) -> Migrated:
    after = _resume_point(source, target)
    copied = 0
    known = {p[0] for p in target.all_persons()}
    persons = {p[0]: p for p in source.all_persons()}
    while rows := source.face_rows(after, batch):
        new_persons = [persons[pid] for pid in dict.fromkeys(r[1] for r in rows) if pid not in known]
        with target.write() as w:
            w.copy_in(new_persons, rows)
        known.update(p[0] for p in new_persons)
        after, copied = int(rows[-1][0]), copied + len(rows)
    missing = [p for pid, p in persons.items() if pid not in known]  # persons without faces
    if missing:
        with target.write() as w:
            w.copy_in(missing, [])
    _check(source, target)
    for space in [cells_space(m) for m in source.model_ids()] + [cells_space(None)]:
        if (cells := source.index_cells(space)) is not None:  # so no replica on the target trains them again
            target.keep_index_cells(space, cells)
    n_persons, n_faces = target.counts()
    return Migrated(n_persons, n_faces, copied)


def _resume_point(source: Store, target: Store) -> int:
    """The id after which to copy: the target may hold only the source's first faces."""
    _, held = target.counts()
    if held == 0:
        return 0
    last = 0
    while rows := target.face_rows(last, BATCH):  # a prefix of the source: the same ids, in the same order
        for row, mine in zip(rows, source.face_rows(last, len(rows)) + [None] * len(rows)):
            if mine is None or mine[0] != row[0] or mine[1] != row[1] or bytes(mine[EMBEDDING]) != bytes(row[EMBEDDING]):
                raise FaceIdError(target.location, f"holds face {row[0]}, which is not the source's: migrate into an empty gallery")
        last = int(rows[-1][0])
    return last


def _check(source: Store, target: Store) -> None:
    """Counts, and every face's id, person and embedding, the same in both."""
    if source.counts() != target.counts():
        raise FaceIdError(target.location, f"holds {target.counts()} persons and faces, the source {source.counts()}")
    digests = []
    for store in (source, target):
        h, last = hashlib.sha256(), 0
        while rows := store.face_rows(last, BATCH):
            for r in rows:
                h.update(f"{r[0]}:{r[1]}:".encode())
                h.update(bytes(r[EMBEDDING]))
            last = int(rows[-1][0])
        digests.append(h.hexdigest())
    if digests[0] != digests[1]:
        raise FaceIdError(target.location, "its embeddings differ from the source's after the copy")
