"""`faceid evaluate`: a FACECOM-layout folder → JSON report (and plots) of gallery retrieval."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.crops import DEFAULT_CACHE_DIR, content_key, face_crops, pipeline_key
from evaluation.facecom import Sample
from evaluation.metrics import retrieval_report, templates, top1
from models.embedder import Embedder
from models.faces import DetectedFace, FacePipeline


def report_from_embeddings(samples: Sequence[Sample], embeddings: np.ndarray, faces: Sequence[DetectedFace] | None = None) -> dict:
    """Score embeddings of `samples`; the same function serves `faceid evaluate` and training's validation."""
    clean = np.array([s.is_clean for s in samples])
    queries = ~clean
    pick = lambda mask, attr: [getattr(s, attr) for s, m in zip(samples, mask) if m]  # noqa: E731
    report = retrieval_report(
        embeddings[clean], pick(clean, "identity"), pick(clean, "source"),
        embeddings[queries], pick(queries, "identity"), pick(queries, "kind"), pick(queries, "source"),
    )
    if faces is not None:
        report["detection"] = detection_report(samples, faces, embeddings)
    return report


def detection_report(samples: Sequence[Sample], faces: Sequence[DetectedFace], embeddings: np.ndarray) -> dict:
    """How often each detection path was taken, and what queries found by each path score."""
    counts = Counter(f.path for f in faces)
    clean = np.array([s.is_clean for s in samples])
    tmpl, names = templates(embeddings[clean], [s.identity for s in samples if s.is_clean])
    q_idx = np.flatnonzero(~clean)
    hits = top1(embeddings[q_idx] @ tmpl.T, names, [samples[i].identity for i in q_idx])
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


class EmbeddingCache:
    """Embeddings on disk keyed by (file content, pipeline config, model id), so reruns are fast."""

    def __init__(self, cache_dir: Path, pipeline: FacePipeline, model_id: str) -> None:
        key = hashlib.sha1(f"{pipeline_key(pipeline)}|{model_id}".encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / "embeddings" / f"{key}.npz"

    def load(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            return {}
        with np.load(self.path) as data:
            return dict(zip(data["keys"].tolist(), data["vectors"]))

    def save(self, entries: dict[str, np.ndarray]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=np.array(list(entries)), vectors=np.stack(list(entries.values())))
        tmp.replace(self.path)


def embed_samples(
    samples: Sequence[Sample],
    pipeline: FacePipeline,
    embedder: Embedder,
    model_id: str,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> tuple[np.ndarray, list[DetectedFace]]:
    paths = [s.path for s in samples]
    keys = [content_key(p) for p in paths]
    crops, faces = face_crops(paths, pipeline, cache_dir, progress=progress, keys=keys)
    cache = EmbeddingCache(cache_dir, pipeline, model_id)
    stored = cache.load()
    missing = [i for i, k in enumerate(keys) if k not in stored]
    if missing:
        vectors = embedder.embed(crops[missing], progress=progress)
        stored.update({keys[i]: v for i, v in zip(missing, vectors)})
        cache.save(stored)
    return np.stack([stored[k] for k in keys]), faces
