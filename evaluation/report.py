"""Scoring a data set's embeddings: gallery retrieval, verification, and the detection paths."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from core.data.dataset import Sample
from core.embedding.templates import templates
from core.faces.pipeline import DetectedFace
from evaluation import detection, open_set
from evaluation.metrics import retrieval_report, top1

# Bins of a query crop's blown-out share (core.faces.quality's over_exposed: the share of the crop's
# central half at luminance >= 250): how much of the face glare left to recognise.
BLOWN_OUT_BINS = (0.5, 0.95)


def report_from_embeddings(
    samples: Sequence[Sample], embeddings: np.ndarray, faces: Sequence[DetectedFace] | None = None, threshold: float | None = None,
    flagged: Sequence[bool] | None = None, blown_out: Sequence[float] | None = None, gone: Sequence[bool] | None = None,
) -> dict:
    """Score embeddings of `samples`; the same function serves `faceid evaluate` and training's
    validation. With the detected faces: detection recall, and (given the service's
    `threshold`) the open-set figures of what the service would answer, which never names a face
    that is `gone` by its looks. With each crop's blown-out share: top-1 by how much of the face is left."""
    clean = np.array([s.is_clean for s in samples])
    queries = ~clean
    pick = lambda mask, attr: [getattr(s, attr) for s, m in zip(samples, mask) if m]
    report = retrieval_report(
        embeddings[clean], pick(clean, "identity"), pick(clean, "source"),
        embeddings[queries], pick(queries, "identity"), pick(queries, "kind"), pick(queries, "source"),
    )
    if blown_out is not None:
        report["face_left"] = face_left_report(samples, embeddings, blown_out)
    if faces is not None:
        report["detection"] = detection_report(samples, faces, embeddings)
        report["detection_recall"] = detection.recall(samples, faces)
        if threshold is not None:
            report["open_set"] = open_set.report(
                embeddings[clean], pick(clean, "identity"), embeddings[queries], pick(queries, "identity"),
                pick(queries, "kind"), [detection.detected(f) for f, q in zip(faces, queries) if q], threshold,
                None if flagged is None else [f for f, q in zip(flagged, queries) if q],
                None if gone is None else [g for g, q in zip(gone, queries) if q],
            )
    return report


def query_hits(samples: Sequence[Sample], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the queries in `samples`, whether each one's top-1 is right)."""
    clean = np.array([s.is_clean for s in samples])
    tmpl, names = templates(embeddings[clean], [s.identity for s in samples if s.is_clean])
    q_idx = np.flatnonzero(~clean)
    return q_idx, top1(embeddings[q_idx] @ tmpl.T, names, [samples[int(i)].identity for i in q_idx])


def face_left_report(samples: Sequence[Sample], embeddings: np.ndarray, blown_out: Sequence[float]) -> dict:
    """Queries binned by the share of their crop's centre blown out to white (BLOWN_OUT_BINS):
    per bin the count, top-1 and the distortions in it. Shows what glare leaves to recognise."""
    q_idx, hits = query_hits(samples, embeddings)
    shares = np.asarray(blown_out, dtype=float)[q_idx]
    edges = (0.0, *BLOWN_OUT_BINS, np.inf)
    out = {}
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (shares >= low) & (shares < high)
        out[f"{low:g}-{high:g}"] = {
            "n": int(inside.sum()),
            "top1": float(hits[inside].mean()) if inside.any() else float("nan"),
            "kinds": dict(sorted(Counter(samples[i].kind for i in q_idx[inside]).items())),
        }
    return out


def detection_report(samples: Sequence[Sample], faces: Sequence[DetectedFace], embeddings: np.ndarray) -> dict:
    """How often each detection path was taken, and what queries found by each path score."""
    counts = Counter(f.path for f in faces)
    q_idx, hits = query_hits(samples, embeddings)
    by_path: dict[str, list[bool]] = defaultdict(list)
    by_path_kind: dict[str, Counter] = defaultdict(Counter)
    for i, hit in zip(q_idx, hits):
        by_path[faces[i].path].append(bool(hit))
        by_path_kind[faces[i].path][samples[i].kind] += 1
    return {
        "counts": dict(counts),
        "query_top1_by_path": {p: float(np.mean(v)) for p, v in by_path.items()},
        "query_kinds_by_path": {p: dict(c) for p, c in by_path_kind.items()},
    }
