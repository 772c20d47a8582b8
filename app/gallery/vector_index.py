"""FAISS inner-product index over unit vectors (inner product = cosine), keyed by face id: the
gallery keeps one over the faces' embeddings and one over their photos' projected descriptors."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import faiss
import numpy as np

from app.gallery.records import Cells
from core.constants import EMBEDDING_DIM
from core.files import atomic_write

IndexKind = Literal["flat", "hnsw", "ivf"]
DEFAULT_HNSW_M = 32
# Recall@1 against the flat index on 100k synthetic 512-d vectors (benchmarks/service.py):
# 0.71 at efSearch 128, 0.95 at 512, 0.995 at 1024.
DEFAULT_EF_SEARCH = 1024
# IVF: below this many faces exact search is both exact and fast (a few ms a query on 2
# cores), so the index stays flat; above it, cells are trained on the faces themselves.
IVF_MIN_FACES = 50_000
DEFAULT_IVF_NPROBE = 96  # benchmarks/search.py, 1M face-like vectors (2,048 cells): docs/benchmarks.md


def ivf_lists(n_faces: int) -> int:
    """Cells for n faces: about 2·√n, a power of two (1M faces: 2048), and at least 39 faces
    to train each cell on (faiss's minimum)."""
    return max(1, min(2 ** round(math.log2(max(2 * math.sqrt(n_faces), 1))), n_faces // 39))


@dataclass(frozen=True)
class IndexSettings:
    """How the gallery's indexes are built: FACEID_INDEX and its tuning settings."""

    kind: IndexKind = "flat"
    hnsw_m: int = DEFAULT_HNSW_M
    ef_search: int = DEFAULT_EF_SEARCH
    nprobe: int = DEFAULT_IVF_NPROBE


class VectorIndex:
    """Flat (exact) by default; HNSW or IVF (approximate) for large galleries.

    HNSW cannot remove vectors, so deleted ids are masked at search time and the graph is
    rebuilt by the gallery once too many are masked. IVF removes them from its lists; it is
    trained when built over at least IVF_MIN_FACES faces (`VectorIndex.over`) and is exact flat
    search until then.
    """

    def __init__(self, settings: IndexSettings = IndexSettings(), dim: int = EMBEDDING_DIM) -> None:
        self.settings = settings
        self.kind = settings.kind
        self.dim = dim  # 512 for face embeddings, core.photos' PROJECTED_DIM for photo descriptors
        self.nprobe = settings.nprobe
        self.trained_on = 0  # IVF: faces its cells were trained on (0: still exact)
        if settings.kind in ("flat", "ivf"):
            base = faiss.IndexFlatIP(dim)
        else:
            base = faiss.IndexHNSWFlat(dim, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            base.hnsw.efSearch = settings.ef_search
            base.hnsw.efConstruction = max(40, 2 * settings.hnsw_m)
        self._index = faiss.IndexIDMap2(base)
        self._masked: set[int] = set()

    @classmethod
    def over(cls, ids: np.ndarray, vectors: np.ndarray, settings: IndexSettings = IndexSettings(), dim: int = EMBEDDING_DIM,
             cells: Cells | None = None) -> VectorIndex:
        """An index holding these faces. An IVF one over many faces uses `cells` when they fit
        them, and otherwise trains its cells on the faces (see `cells`)."""
        index = cls(settings, dim)
        if settings.kind == "ivf" and len(ids) >= IVF_MIN_FACES:
            index._make_ivf(vectors, cells if cells is not None and cells.fit(len(ids), dim) else None)
        index.add(ids, vectors)
        return index

    def _make_ivf(self, vectors: np.ndarray, cells: Cells | None) -> None:
        nlist = ivf_lists(len(vectors)) if cells is None else len(cells.centroids)
        quantizer = faiss.IndexFlatIP(self.dim)
        if cells is not None:  # faiss trains no cells for a quantizer that already holds nlist
            quantizer.add(np.ascontiguousarray(cells.centroids, dtype=np.float32))
        # Vectors kept in fp16: half the memory and about half the time of float32 cells at 1M
        # faces, with the same top-1 person as exact search (benchmarks/search.py, docs/benchmarks.md).
        ivf = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(len(vectors), min(len(vectors), 64 * nlist), replace=False)
        ivf.train(np.ascontiguousarray(vectors[np.sort(sample)], dtype=np.float32))
        ivf.nprobe = self.nprobe
        self._quantizer = quantizer  # the IVF index does not own it
        self._index = ivf  # IVF keeps ids itself and removes them from its lists
        self.trained_on = len(vectors) if cells is None else cells.trained_on

    @property
    def cells(self) -> Cells | None:
        """The trained IVF cells (None while flat, or for HNSW), for the store to keep."""
        if not self.trained_on:
            return None
        ivf = faiss.extract_index_ivf(self._index)
        return Cells(ivf.quantizer.reconstruct_n(0, ivf.nlist), self.trained_on)

    def save(self, path: Path, seal: Callable[[bytes], bytes] | None = None) -> None:
        """Write the index (never one with masked deletions) to `path` atomically; with `seal`,
        its bytes sealed (app/gallery/sealing.py), never written in the clear."""
        if self._masked:
            raise ValueError("an index with masked deletions is not saved; rebuild it first")
        with atomic_write(path) as tmp:
            if seal is None:
                faiss.write_index(self._index, str(tmp))
            else:
                tmp.write_bytes(seal(faiss.serialize_index(self._index).tobytes()))

    @classmethod
    def load(cls, path: Path, trained_on: int, settings: IndexSettings = IndexSettings(),
             open_: Callable[[bytes], bytes] | None = None) -> VectorIndex:
        """The index saved at `path`; with `open_`, from the bytes it gives back."""
        index = cls(settings)
        if open_ is None:
            index._index = faiss.read_index(str(path))
        else:
            index._index = faiss.deserialize_index(np.frombuffer(open_(path.read_bytes()), dtype=np.uint8))
        index.trained_on = trained_on
        if trained_on:
            faiss.extract_index_ivf(index._index).nprobe = settings.nprobe
        elif settings.kind == "hnsw":
            faiss.downcast_index(index._index.index).hnsw.efSearch = settings.ef_search
        return index

    @property
    def needs_training(self) -> bool:
        """An IVF index that has outgrown its cells: flat past IVF_MIN_FACES, or 4× the faces it
        was trained on. The gallery then rebuilds it."""
        if self.kind != "ivf":
            return False
        return self.size >= IVF_MIN_FACES if not self.trained_on else self.size >= 4 * self.trained_on

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
        if self.kind != "hnsw":
            self._index.remove_ids(np.asarray(ids, dtype=np.int64))
        else:
            self._masked.update(ids)

    def _breadth(self, wider: int) -> faiss.SearchParameters | None:
        if wider == 1 or self.kind == "flat" or (self.kind == "ivf" and not self.trained_on):
            return None
        if self.kind == "ivf":
            return faiss.SearchParametersIVF(nprobe=self.nprobe * wider)
        return faiss.SearchParametersHNSW(efSearch=faiss.downcast_index(self._index.index).hnsw.efSearch * wider)

    def search(self, queries: np.ndarray, k: int, wider: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(similarities, face ids), each n×k, best first; id −1 where fewer than k exist.
        `wider` times the usual cells (IVF) or candidates (HNSW) are visited: for the hard queries."""
        n = len(queries)
        if self.size == 0 or n == 0:
            return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)
        fetch = min(int(self._index.ntotal), k + len(self._masked))
        sims, ids = self._index.search(np.ascontiguousarray(queries, dtype=np.float32), fetch, params=self._breadth(wider))
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
