"""One answer per face from two kinds of evidence, kept apart in it.

Face evidence: the face's embedding against the enrolled faces (cosine, the model's threshold).
Photo evidence: the whole photo against the enrolled photos (core/photos; its own threshold):
"this photo is a copy of enrolled photo N", which says nothing of the face's looks. It goes to
the one face at the place where the enrolled photo's face was (a two-person copy of a one-person
enrolment names one face, not both), and where no face was detected there, that place becomes a
face of its own. A face is named by its face evidence when that clears the threshold and the
face is not gone (blown out nearly whole, or black: core/faces/quality.py), else by
its photo evidence; `evidence` lists what supports the name (both, when they agree). When both
clear their thresholds and disagree, the photo evidence names it and the answer says so
(`conflict`): measured on the validation people, see docs/photo-evidence.md.
"""

from __future__ import annotations

from app.gallery.gallery import Candidate, PhotoCandidate
from app.schemas import FaceResult, Match, PhotoMatch, QualityPublic, rounded_box
from core.faces.geometry import OVERLAPS_FACE_IOU, iou, scaled_box
from core.faces.pipeline import Face


def photo_match(candidate: PhotoCandidate) -> PhotoMatch:
    """Photo evidence as answers carry it: the enrolled photo a photo is a copy of."""
    return PhotoMatch(person_id=candidate.person_id, name=candidate.name, photo=candidate.source, similarity=round(candidate.similarity, 6))


def face_matches(candidates: list[Candidate], threshold: float) -> tuple[Match | None, list[Match]]:
    """(the face's name if its best candidate clears the threshold, every candidate)."""
    matches = [Match(person_id=c.person_id, name=c.name, similarity=round(c.similarity, 6)) for c in candidates]
    return (matches[0] if matches and matches[0].similarity >= threshold else None), matches


def answer(faces: list[Face], found: list[list[Candidate]], photo_size: tuple[int, int], photos: list[PhotoCandidate] | None,
           threshold: float, photo_threshold: float) -> list[FaceResult]:
    """The faces as /identify answers them (see the module's docstring)."""
    results = []
    for face, candidates in zip(faces, found):
        match, cands = face_matches(candidates, threshold)
        if face.quality.gone:  # its candidates stay listed; quality.reasons says why none names it
            match = None
        quality = QualityPublic(score=face.quality.score, reasons=list(face.quality.reasons))
        results.append(FaceResult(box=rounded_box(face.box), detection_score=face.score, quality=quality, match=match,
                                  evidence=["face"] if match else [], candidates=cands))
    best = photos[0] if photos else None
    if best is None or best.similarity < photo_threshold:
        return results
    place = scaled_box(best.box, photo_size)
    overlaps = [iou(face.box, place) for face in faces]
    if overlaps and max(overlaps) >= OVERLAPS_FACE_IOU:
        i = overlaps.index(max(overlaps))
    else:  # no face detected where the enrolled one was: the place itself is answered
        results.append(FaceResult(box=rounded_box(place), detection_score=None, quality=None, match=None, candidates=[]))
        i = len(results) - 1
    result = results[i]
    photo = photo_match(best)
    named_by_photo = Match(person_id=best.person_id, name=best.name, similarity=photo.similarity)
    conflict = result.match is not None and result.match.person_id != best.person_id
    if result.match is None or conflict:
        result = result.model_copy(update={"match": named_by_photo, "evidence": ["photo"], "conflict": conflict})
    else:
        result = result.model_copy(update={"evidence": ["face", "photo"]})
    results[i] = result.model_copy(update={"photo_match": photo})
    return results
