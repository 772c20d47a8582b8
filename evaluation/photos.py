"""Photo evidence, scored on its own and beside face evidence, as the service combines them.

The gallery's photos are the evaluated people's clean photos; each query (a distorted photo) is
searched as `Gallery.search_photos` does it: a shortlist on the projected descriptors, re-ranked by
the exact similarity. Where it clears the threshold it names the query: the service attaches it to
the face where the enrolled face was, or places a face there when none was detected. Reported:
- face-only top-1 (the usual protocol), face + photo top-1 (the photo's person where its evidence
  clears the threshold, else the face's top-1), both per distortion;
- photo evidence's false names: on strangers (the query's own person out of the gallery) and, counted
  apart, on other photos of enrolled people (the query's own photo out: naming another photo of the
  same person is a copy of the same shoot, not a false name);
- where face and photo evidence disagree, which was right;
- the open set as the service answers with both (face named when it clears its threshold, else photo).
Source-left-out stays face-only by construction: with the source photo out, a copy has no original.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from core.data.dataset import Sample
from core.embedding.templates import templates
from core.faces.geometry import fractions_of
from core.faces.pipeline import DetectedFace
from core.images import load_image
from core.photos.descriptor import EXACT_GROW, SHORTLIST, describe, describe_many, projected, search_breadth, similarity, thumbnail
from evaluation import open_set
from evaluation.detection import detected


def thumbnails(samples: Sequence[Sample]) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(N×THUMB_SIDE×THUMB_SIDE thumbnails of the samples' photos, their sizes)."""
    images = [load_image(s.path) for s in samples]
    return np.stack([thumbnail(img) for img in images]), [img.size for img in images]


def best_photos(gallery_thumbs: np.ndarray, gallery_boxes: Sequence[tuple[float, float, float, float]], query_thumbs: np.ndarray,
                allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query, (the best allowed gallery photo, its similarity), by shortlist and re-rank as the
    service searches; -1 and -inf where nothing is allowed."""
    vectors = np.stack([projected(f) for f in describe_many(gallery_thumbs)[0]])
    fields, masks = describe_many(gallery_thumbs, EXACT_GROW)  # what `rerank` makes of each shortlisted thumbnail
    best, sims = np.full(len(query_thumbs), -1), np.full(len(query_thumbs), -np.inf, dtype=np.float32)
    for q, thumb in enumerate(query_thumbs):
        query = describe(thumb)
        scores = np.where(allowed[q], vectors @ projected(query[0]), -np.inf)
        shortlist = [i for i in np.argsort(-scores)[:SHORTLIST * search_breadth(query)] if np.isfinite(scores[i])]
        if shortlist:
            exact = similarity(describe(thumb, EXACT_GROW), (fields[shortlist], masks[shortlist]), [gallery_boxes[i] for i in shortlist])
            best[q], sims[q] = shortlist[int(np.argmax(exact))], float(exact.max())
    return best, sims


def report(samples: Sequence[Sample], embeddings: np.ndarray, faces: Sequence[DetectedFace], sizes: Sequence[tuple[int, int]],
           thumbs: np.ndarray, face_threshold: float, photo_threshold: float, gone: Sequence[bool] | None = None) -> dict:
    """`gone`: faces the service does not name by face evidence (the quality check's `gone`)."""
    clean = np.array([s.is_clean for s in samples])
    g_idx, q_idx = [int(i) for i in np.flatnonzero(clean)], [int(i) for i in np.flatnonzero(~clean)]
    g_person = np.array([samples[i].identity for i in g_idx])
    g_source = np.array([samples[i].source for i in g_idx])
    q_person = np.array([samples[i].identity for i in q_idx])
    q_source = np.array([samples[i].source for i in q_idx])
    q_kind = [samples[i].kind for i in q_idx]
    g_box = [fractions_of(faces[i].box, sizes[i]) for i in g_idx]
    q_found = [detected(faces[i]) and not (gone is not None and gone[i]) for i in q_idx]  # face evidence may name it
    everyone = np.ones((len(q_idx), len(g_idx)), dtype=bool)

    def named(allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(per query the gallery photo that photo evidence names, or -1; whether it names one)."""
        best, sims = best_photos(thumbs[g_idx], g_box, thumbs[q_idx], allowed)
        ok = (sims >= photo_threshold) & (best >= 0)
        return np.where(ok, best, -1), ok

    photo_at, by_photo = named(everyone)
    photo_person = np.where(by_photo, g_person[np.maximum(photo_at, 0)], "")
    tmpl, names = templates(embeddings[g_idx], list(g_person))
    face_person = np.asarray(names)[(embeddings[q_idx] @ tmpl.T).argmax(axis=1)]
    combined = np.where(by_photo, photo_person, face_person)

    strangers_at, strangers_named = named(g_person[None, :] != q_person[:, None])
    own_out_at, own_out_named = named(g_source[None, :] != q_source[:, None])
    same_shoot = own_out_named & (g_person[np.maximum(own_out_at, 0)] == q_person)
    conflict = by_photo & (photo_person != face_person)

    per_kind: dict[str, list[int]] = defaultdict(list)
    for i, kind in enumerate(q_kind):
        per_kind[kind].append(i)
    return {
        "threshold": photo_threshold,
        "face_only_top1": float(np.mean(face_person == q_person)),
        "face_and_photo_top1": float(np.mean(combined == q_person)),
        "per_distortion": {k: {"face_only": float(np.mean(face_person[i] == q_person[i])),
                               "face_and_photo": float(np.mean(combined[i] == q_person[i])),
                               "named_by_photo": float(np.mean(by_photo[i]))} for k, i in sorted(per_kind.items())},
        "named_by_photo": float(by_photo.mean()),
        "photo_right_when_it_names": float(np.mean(photo_person[by_photo] == q_person[by_photo])) if by_photo.any() else float("nan"),
        "strangers_named_by_photo": float(strangers_named.mean()),
        "other_photos_of_enrolled": {"n": int(len(q_idx)), "named_same_person": float(same_shoot.mean()),
                                     "named_another_person": float((own_out_named & ~same_shoot).mean())},
        "conflicts": {"n": int(conflict.sum()), "photo_right": int(np.sum(conflict & (photo_person == q_person))),
                      "face_right": int(np.sum(conflict & (face_person == q_person)))},
        "open_set": open_set_with_photos(embeddings[g_idx], list(g_person), embeddings[q_idx], list(q_person), q_kind,
                                         q_found, face_threshold, photo_person, by_photo, strangers_named),
    }


def open_set_with_photos(gallery: np.ndarray, gallery_labels: Sequence[str], queries: np.ndarray, query_labels: Sequence[str],
                         kinds: Sequence[str], found: Sequence[bool], threshold: float, photo_person: np.ndarray,
                         by_photo: np.ndarray, strangers_by_photo: np.ndarray) -> dict:
    """What the service answers with both kinds of evidence: a query is named by its face where
    that clears the threshold and photo evidence does not disagree, else by its photo; a stranger
    is named if either names them."""
    s = open_set.scores(gallery, gallery_labels, queries, query_labels)
    face_named = np.asarray(found, dtype=bool) & (s["top"] >= threshold)
    right = np.where(by_photo, photo_person == np.asarray(query_labels), face_named & s["right"])
    strangers = (np.asarray(found, dtype=bool) & (s["stranger_top"] >= threshold)) | strangers_by_photo
    per_kind: dict[str, list[int]] = defaultdict(list)
    for i, kind in enumerate(kinds):
        per_kind[kind].append(i)
    return {"named_correctly": float(right.mean()), "strangers_named": float(strangers.mean()),
            "per_distortion": {k: {"named_correctly": float(right[i].mean()), "strangers_named": float(strangers[i].mean())}
                               for k, i in sorted(per_kind.items())}}
