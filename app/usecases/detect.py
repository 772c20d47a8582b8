"""Detection only: where the faces of a photo are, their landmarks and quality; no gallery."""

from __future__ import annotations

import base64

from app.engine import Engine
from app.http.audit import Trail
from app.schemas import DetectedFacePublic, DetectResponse, Landmarks, QualityPublic, rounded_box
from core.faces.pipeline import Face

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


def public(face: Face, crop: bool) -> DetectedFacePublic:
    landmarks = None
    if face.landmarks is not None:
        landmarks = Landmarks(**{name: [round(x, 1), round(y, 1)] for name, (x, y) in zip(LANDMARK_NAMES, face.landmarks)})
    return DetectedFacePublic(box=rounded_box(face.box), detection_score=face.score, landmarks=landmarks,
                              quality=QualityPublic(score=face.quality.score, reasons=list(face.quality.reasons)),
                              crop=base64.b64encode(face.png()).decode() if crop else None)


def detect_faces(engine: Engine, data: bytes, source: str, max_faces: int, crops: bool) -> DetectResponse:
    """Blocking: one worker thread."""
    seen = engine.see(data, source, thumb=False)
    faces = sorted(seen.faces, key=lambda f: -f.area)[:max_faces]
    return DetectResponse(faces=[public(f, crops) for f in faces], photo_size=list(seen.size))


async def detect(engine: Engine, data: bytes, source: str, max_faces: int, crops: bool, trail: Trail | None = None) -> DetectResponse:
    answer = await engine.admission.run(source, detect_faces, engine, data, source, max_faces, crops)
    if trail is not None:
        trail.detail = f"faces {len(answer.faces)}"
    return answer
