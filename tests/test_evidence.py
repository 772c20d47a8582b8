"""The answer per face from its two kinds of evidence (app/evidence.py), on hand-made faces."""

import numpy as np
import torch

from app.gallery.gallery import Candidate, PhotoCandidate
from app.usecases.evidence import answer
from core.faces.pipeline import Face
from core.faces.quality import assess

BOX = (20.0, 20.0, 80.0, 80.0)
SIZE = (100, 100)


def face(pixels: np.ndarray) -> Face:
    crop = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    return Face(box=BOX, score=0.99, path="mtcnn", crop=crop, quality=assess(pixels, BOX, 0.99), photo_size=SIZE)


def textured() -> np.ndarray:
    return np.random.default_rng(0).integers(60, 200, (160, 160, 3), dtype=np.uint8)


ANNA = [Candidate(person_id="p1", name="Anna", similarity=0.9)]
COPY = PhotoCandidate(face_id=7, person_id="p2", name="Ben", source="ben.jpg", box=(0.2, 0.2, 0.8, 0.8), similarity=0.8)


def test_a_face_gone_to_glare_is_not_named_by_its_looks():
    seen, gone = face(textured()), face(np.full((160, 160, 3), 255, dtype=np.uint8))
    assert not seen.quality.gone and gone.quality.gone == ("over_exposed",)
    named, withheld = answer([seen, gone], [ANNA, ANNA], SIZE, None, threshold=0.6, photo_threshold=0.5)
    assert named.match is not None and named.match.name == "Anna" and named.evidence == ["face"]
    assert withheld.match is None and withheld.evidence == [] and "over_exposed" in withheld.quality.reasons
    assert [c.name for c in withheld.candidates] == ["Anna"]  # the face evidence is still shown, not used


def test_a_face_partly_under_glare_is_still_named_by_its_looks():
    pixels = textured()
    pixels[40:100, 40:120] = 255  # three quarters of the central half blown out: no reference, not gone
    partly = face(pixels)
    assert partly.quality.refusal() is not None and not partly.quality.gone
    [result] = answer([partly], [ANNA], SIZE, None, threshold=0.6, photo_threshold=0.5)
    assert result.match is not None and result.match.name == "Anna" and result.evidence == ["face"]


def test_photo_evidence_still_names_a_face_gone_to_glare_without_a_conflict():
    [result] = answer([face(np.full((160, 160, 3), 255, dtype=np.uint8))], [ANNA], SIZE, [COPY], threshold=0.6, photo_threshold=0.5)
    assert result.match is not None and result.match.name == "Ben" and result.evidence == ["photo"]
    assert result.conflict is False and result.photo_match is not None and result.photo_match.photo == "ben.jpg"
