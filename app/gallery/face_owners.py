"""Which person each indexed face is of, and how many indexed faces each person has.

The face search ranks people by their templates (core/embedding/templates.py): a person with
one face is scored by that face's similarity, as the index returns it, and one with several by
their template, read from the store. The counts say which is which without a read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


class FaceOwners:
    def __init__(self, pairs: Iterable[tuple[int, str]] = ()) -> None:
        """From (face id, person id) pairs, each face once (a whole gallery's, at a build)."""
        self._person_of: dict[int, str] = dict(pairs)
        self._faces: Counter[str] = Counter(self._person_of.values())

    def add(self, face_ids: Iterable[int], person_ids: Iterable[str]) -> None:
        """Faces newly indexed, each with its person (a face already held is not counted twice)."""
        for face_id, person_id in zip(face_ids, person_ids):
            if face_id not in self._person_of:
                self._person_of[face_id] = person_id
                self._faces[person_id] += 1

    def remove(self, face_ids: Iterable[int]) -> None:
        """Faces taken out of the index (ids not held are ignored)."""
        for face_id in face_ids:
            if (person_id := self._person_of.pop(face_id, None)) is not None:
                self._faces[person_id] -= 1
                if not self._faces[person_id]:
                    del self._faces[person_id]

    def person(self, face_id: int) -> str | None:
        return self._person_of.get(face_id)

    def faces(self, person_id: str) -> int:
        """How many of the person's faces are indexed."""
        return self._faces.get(person_id, 0)

    def face_ids(self) -> list[int]:
        return sorted(self._person_of)

    def copy(self) -> FaceOwners:
        return FaceOwners(self._person_of.items())

    def __contains__(self, face_id: object) -> bool:
        return face_id in self._person_of

    def __len__(self) -> int:
        return len(self._person_of)
