"""The subject of a photo: the one rule for which face a photo is of.

Enrolment, bulk import, the data sets' crop caches and the box labels of detection's figures
all ask it (`subject`; enrolment through `reference`). Among the faces at least COMPARABLE_AREA of the largest, the one nearest the centre
is the subject; smaller faces and faces off to the side (press photos, snapshots) are not in the
way. A caller's box, when given, names the face instead. Enrolment also asks that no other large
face be about as near the centre (`require_clear`), since either could be the person meant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, TypeVar

from core.errors import NoFaceFound, TooManyFaces, UnusableFace
from core.faces.geometry import OVERLAPS_FACE_IOU, area, iou, rounded
from core.faces.quality import Quality

# A photo's subject is among the faces at least this share of the largest face's area...
COMPARABLE_AREA = 0.5
# ...and, for enrolment, nearer the centre than any other of them by this share of the image's
# longer side. On held-out FACECOM photos subjects sit within 0.07 of the centre and the
# large background faces 0.16 and farther.
CENTRE_MARGIN = 0.1


class Boxed(Protocol):
    @property
    def box(self) -> Sequence[float]: ...


class Assessed(Boxed, Protocol):
    """A whole face (core.faces.pipeline.Face): its quality, and the size of its photo."""

    @property
    def quality(self) -> Quality: ...

    @property
    def photo_size(self) -> tuple[int, int]: ...


F = TypeVar("F", bound=Boxed)
A = TypeVar("A", bound=Assessed)


def subject(faces: Sequence[F], image_size: tuple[int, int], source: str = "image",
            box: Sequence[float] | None = None, require_clear: bool = False) -> F:
    """The face the photo is of (`faces`' boxes and `box` in the pixels of an image of
    `image_size`). Raises NoFaceFound when there is none (or none at `box`), and with
    `require_clear` TooManyFaces when another large face is about as near the centre."""
    if not faces:
        raise NoFaceFound(source, "no face found")
    if box is not None:
        best = max(faces, key=lambda f: iou(f.box, box))
        if iou(best.box, box) < OVERLAPS_FACE_IOU:
            raise NoFaceFound(source, f"no face at box {[round(v) for v in box]}; faces found at {rounded([f.box for f in faces])}")
        return best
    ranked = _big_faces_by_centrality(image_size, faces)
    nearest, chosen = ranked[0]
    rivals = [f for distance, f in ranked[1:] if distance < nearest + CENTRE_MARGIN]
    if require_clear and rivals:
        raise TooManyFaces(source, f"{1 + len(rivals)} faces of comparable size and place found at "
                                   f"{rounded([chosen.box, *(r.box for r in rivals)])}; send `box` with the one to enrol")
    return chosen


def reference(faces: Sequence[A], source: str = "image", box: Sequence[float] | None = None) -> A:
    """The face an enrolment photo stands for (all `faces` from one photo; `box` in its pixels):
    its clear subject, or the face at `box`, refused when the face itself is gone (blown out or
    black) and cannot be a reference."""
    if not faces:
        raise NoFaceFound(source, "no face found")
    chosen = subject(faces, faces[0].photo_size, source, box, require_clear=True)
    if reason := chosen.quality.refusal():
        raise UnusableFace(source, f"{reason}; enrol a photo where the face is visible")
    return chosen


def _big_faces_by_centrality(size: tuple[int, int], faces: Sequence[F]) -> list[tuple[float, F]]:
    """(distance of the box centre from the image centre / longer side, face) for the faces
    at least COMPARABLE_AREA of the largest, nearest first."""
    largest = max(area(f.box) for f in faces)
    cx, cy, scale = size[0] / 2, size[1] / 2, max(size)
    big = [f for f in faces if area(f.box) >= COMPARABLE_AREA * largest]
    return sorted(((math.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy) / scale, f) for f in big),
                  key=lambda pair: pair[0])
