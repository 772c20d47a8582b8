"""Embeddings of a data set's samples, cached on disk by file content, pipeline and model."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.data.crop_cache import DEFAULT_CACHE_DIR, content_key, face_crops, pipeline_key
from core.data.dataset import Sample
from core.embedding.embedder import Embedder
from core.embedding.restoration import NOISE_TO_RESTORE
from core.faces.pipeline import DetectedFace, FacePipeline
from core.files import atomic_write


def embedder_id(model_id: str, runtime: str) -> str:
    """What cached embeddings are keyed on: the model, and the runtime where it changes the
    vectors (fp32 ONNX and torch agree to 1e-4 and share; int8 has its own)."""
    return model_id if runtime in ("onnx", "torch") else f"{model_id}|{runtime}"


class EmbeddingCache:
    """Embeddings on disk keyed by (file content, pipeline config, model id), so reruns are fast."""

    def __init__(self, cache_dir: Path, pipeline: FacePipeline, model_id: str) -> None:
        key = hashlib.sha1(f"{pipeline_key(pipeline)}|{model_id}|restore>={NOISE_TO_RESTORE}".encode()).hexdigest()[:16]
        self.path = Path(cache_dir) / "embeddings" / f"{key}.npz"

    def load(self) -> dict[str, np.ndarray]:
        if not self.path.is_file():
            return {}
        with np.load(self.path) as data:
            return dict(zip(data["keys"].tolist(), data["vectors"]))

    def save(self, entries: dict[str, np.ndarray]) -> None:
        with atomic_write(self.path) as tmp:
            np.savez(tmp, keys=np.array(list(entries)), vectors=np.stack(list(entries.values())))


def embed_samples(
    samples: Sequence[Sample],
    pipeline: FacePipeline,
    embedder: Embedder,
    model_id: str,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> tuple[np.ndarray, list[DetectedFace], torch.Tensor]:
    """(embeddings, the face each came from, the uint8 crops embedded)."""
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
    return np.stack([stored[k] for k in keys]), faces, crops
