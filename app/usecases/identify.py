"""Identification: who is in this photo (or behind this embedding)?

A photo is looked at in one worker thread, start to end: the gallery is checked once (caught
up with its store, made by this model), the photo decoded and its faces detected, the largest
embedded, and the gallery searched by face and, with photo evidence on, by photo. The answer
per face is then decided from the two kinds of evidence (evidence.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from starlette.concurrency import run_in_threadpool

from app.config import Settings
from app.engine import Engine
from app.gallery.gallery import Candidate, Gallery, PhotoCandidate
from app.http.audit import Trail
from app.schemas import EmbeddingResult, IdentifyResponse
from app.usecases.evidence import answer, face_matches
from app.usecases.unknowns import keep_unknowns
from core.errors import NoFaceFound
from core.faces.pipeline import Face


@dataclass(frozen=True)
class Options:
    """A request's own choices; None takes the service's setting."""

    top_k: int | None = None
    threshold: float | None = None
    max_faces: int | None = None


@dataclass(frozen=True)
class Looked:
    """What the answer is decided from: the faces (largest first), each face's candidates, the
    photo's own size, and the photo-evidence search of the whole photo (None when off)."""

    faces: list[Face]
    found: list[list[Candidate]]
    photo_size: tuple[int, int]
    photos: list[PhotoCandidate] | None
    vectors: np.ndarray  # the faces' embeddings, in order


def largest(faces: list[Face], limit: int, source: str) -> list[Face]:
    """The `limit` largest faces, largest first (with a cap, the people in front are answered)."""
    if not faces:
        raise NoFaceFound(source, "no face found")
    return sorted(faces, key=lambda f: -f.area)[:limit]


def look(engine: Engine, gallery: Gallery, data: bytes, source: str, top_k: int, max_faces: int, photo_evidence: bool) -> Looked:
    """The photo's faces and what the gallery holds like them (blocking: one worker thread). No
    face is NoFaceFound unless photo evidence may still answer."""
    lookup = gallery.lookup()
    seen = engine.see(data, source, thumb=photo_evidence)
    faces = largest(seen.faces, max_faces, source) if seen.faces or not photo_evidence else []
    vectors = engine.embed([f.crop for f in faces])
    return Looked(faces, lookup.faces(vectors, top_k), seen.size, lookup.photos(seen.thumb) if seen.thumb is not None else None, vectors)


async def identify_photo(engine: Engine, gallery: Gallery, settings: Settings, data: bytes, source: str, options: Options,
                         trail: Trail | None = None) -> IdentifyResponse:
    threshold = settings.answer_threshold() if options.threshold is None else options.threshold
    looked = await engine.admission.run(source, look, engine, gallery, data, source, options.top_k or settings.top_k,
                                        options.max_faces or settings.max_faces, settings.photo_evidence)
    results = answer(looked.faces, looked.found, looked.photo_size, looked.photos, threshold, settings.photo_threshold)
    if not results:
        raise NoFaceFound(source, "no face found")
    kept = await run_in_threadpool(keep_unknowns, gallery, settings, looked.faces, looked.vectors, results, trail) if settings.unknowns else 0
    if trail is not None:  # the persons it named, not the candidates
        trail.persons = sorted({r.match.person_id for r in results if r.match is not None})
        trail.detail = f"faces {len(results)}" + (f", unknown faces kept {kept}" if kept else "")
    return IdentifyResponse(faces=results, threshold=threshold, photo_threshold=settings.photo_threshold if settings.photo_evidence else None,
                            model_id=gallery.model_id)


def identify_embedding(gallery: Gallery, settings: Settings, vector: np.ndarray, options: Options, trail: Trail | None = None) -> EmbeddingResult:
    """A precomputed unit embedding against the enrolled faces (blocking)."""
    threshold = settings.answer_threshold() if options.threshold is None else options.threshold
    (candidates,) = gallery.lookup().faces(vector[None], options.top_k or settings.top_k)
    match, cands = face_matches(candidates, threshold)
    if trail is not None and match is not None:
        trail.persons = [match.person_id]
    return EmbeddingResult(match=match, candidates=cands, threshold=threshold, model_id=gallery.model_id)
