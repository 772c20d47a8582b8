"""FAISS inner-product index over unit embeddings (inner product = cosine), keyed by face id."""

from __future__ import annotations

from typing import Literal

import faiss
import numpy as np

from core.constants import EMBEDDING_DIM

DEFAULT_HNSW_M = 32
# Recall@1 against the flat index on 100k synthetic 512-d vectors (benchmarks/service.py):
# 0.71 at efSearch 128, 0.95 at 512, 0.995 at 1024 (4.4 ms per query on 2 cores).
DEFAULT_EF_SEARCH = 1024


class FaceIndex:
    """Flat (exact) by default; HNSW (approximate) for large galleries.

    HNSW cannot remove vectors, so deleted ids are masked at search time and the graph is
    rebuilt by the gallery once too many are masked.
    """

    def __init__(self, kind: Literal["flat", "hnsw"] = "flat", hnsw_m: int = DEFAULT_HNSW_M, ef_search: int = DEFAULT_EF_SEARCH) -> None:
        self.kind = kind
        if kind == "flat":
            base = faiss.IndexFlatIP(EMBEDDING_DIM)
        else:
            base = faiss.IndexHNSWFlat(EMBEDDING_DIM, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = ef_search
            base.hnsw.efConstruction = max(40, 2 * hnsw_m)
        self._index = faiss.IndexIDMap2(base)
        self._masked: set[int] = set()

    @property
    def size(self) -> int:
        return int(self._index.ntotal) - len(self._masked)

    @property
    def masked(self) -> int:
        return len(self._masked)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(ids, dtype=np.int64))

    def remove(self, ids: list[int]) -> None:
        if self.kind == "flat":
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        else:
            self._masked.update(ids)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, face ids), each n×k, best first; id −1 where fewer than k exist."""
        n = len(queries)
        if self.size == 0 or n == 0:
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        fetch = min(int(self._index.ntotal), k + len(self._masked))
        sims, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch)
        if self._masked:
            keep = ~np.isin(ids, list(self._masked))
            sims = np.where(keep, sims, -np.inf)
            order = np.argsort(-sims, axis=1, kind="stable")
            sims, ids = np.take_along_axis(sims, order, 1), np.where(keep, ids, -1)
            ids = np.take_along_axis(ids, order, 1)
        sims, ids = sims[:, :k], ids[:, :k]
        if sims.shape[1] < k:  # pad so callers always get n×k
            pad = k - sims.shape[1]
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return sims, ids
