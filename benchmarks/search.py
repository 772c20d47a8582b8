"""Search at a million faces, on vectors that look like face embeddings.

    .venv/bin/python -m benchmarks.search [--data DIR] [--identities 200000] [--out reports/bench_search.json]

Real embeddings of the training identities (the shipped model, the evaluation's pipeline)
fix the shape of the synthetic gallery: the mean, the spread of people's centres along the
principal axes, and the spread of one person's photos around their centre, clean (gallery)
and distorted (queries). From those, `--identities` synthetic people × 5 gallery photos and
`--queries` distorted queries of enrolled people are drawn. The report states how close the
synthetic similarities come to the real ones, so the figures can be trusted as far as that.

Each index the gallery can use is built over the same vectors: build time, memory, one
query's p50/p99 (a loop of single queries, as /identify searches) and how often its top-1
*person* is the one exact search gives. The restart figure times `Gallery` opening a store
of that size, as `faceid serve` does at start.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from app.gallery.vector_index import DEFAULT_IVF_NPROBE
from benchmarks.machine import machine

PHOTOS_PER_PERSON = 5


# -- the distribution ----------------------------------------------------------------------
def real_embeddings(data: Path, cache: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N×512 unit embeddings, identity index, is_clean) of the training identities: every
    identity but the validation and test ones (the first `limit` of them, when given)."""
    fit = cache / ("search_fit.npz" if limit is None else f"search_fit_{limit}.npz")
    if fit.is_file():
        with np.load(fit) as z:
            return z["vectors"], z["identity"], z["clean"]
    from core.data.dataset import (
        DEFAULT_TEST_SPLIT,
        DEFAULT_VAL_SPLIT,
        identities,
        read_split,
        scan,
    )
    from core.embedding.runtime import make_embedder
    from core.faces.pipeline import DATASET_PIPELINE, load_pipeline
    from core.models.backbone import default_weights, load_backbone
    from evaluation.embeddings import embed_samples, embedder_id

    held_out = read_split(DEFAULT_VAL_SPLIT) | read_split(DEFAULT_TEST_SPLIT)
    training = sorted(set(identities(data)) - held_out)
    samples = scan(data, set(training[:limit] if limit else training))
    backbone = load_backbone(default_weights())
    embedder = make_embedder(backbone, "cpu")
    vectors, _, _ = embed_samples(samples, load_pipeline(DATASET_PIPELINE), embedder, embedder_id(backbone.model_id, embedder.runtime), cache)
    names = sorted({s.identity for s in samples})
    identity = np.array([names.index(s.identity) for s in samples])
    clean = np.array([s.is_clean for s in samples])
    np.savez(fit, vectors=vectors, identity=identity, clean=clean)
    return vectors, identity, clean


class FaceLike:
    """Gaussian fit of face embeddings: centres of people, and photos around a centre."""

    def __init__(self, vectors: np.ndarray, identity: np.ndarray, clean: np.ndarray) -> None:
        people = np.unique(identity[clean])
        centres = np.stack([vectors[(identity == p) & clean].mean(axis=0) for p in people])
        self.mean = centres.mean(axis=0)
        centre_of = dict(zip(people.tolist(), centres))
        own = np.stack([centre_of.get(int(p), self.mean) for p in identity])
        keep = np.isin(identity, people)
        self.between = _sqrt_cov(centres - self.mean)
        self.clean_spread = _sqrt_cov((vectors - own)[keep & clean])
        self.query_spread = _sqrt_cov((vectors - own)[keep & ~clean])

    def people(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.mean + rng.standard_normal((n, len(self.mean)), dtype=np.float32) @ self.between

    def draw(self, identities: int, queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(gallery: PHOTOS_PER_PERSON clean photos of each synthetic person, in person order;
        each query's person; the queries: distorted photos of enrolled people)."""
        rng = np.random.default_rng(seed)
        centres = self.people(identities, rng)
        gallery = self.photos(np.repeat(centres, PHOTOS_PER_PERSON, axis=0), self.clean_spread, rng)
        target = rng.integers(0, identities, queries)
        return gallery, target, self.photos(centres[target], self.query_spread, rng)

    @staticmethod
    def photos(centres: np.ndarray, spread: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        x = centres + rng.standard_normal(centres.shape, dtype=np.float32) @ spread
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _sqrt_cov(residuals: np.ndarray) -> np.ndarray:
    """A matrix S with Sᵀ S = the residuals' covariance, so z @ S has that covariance."""
    values, vectors = np.linalg.eigh(np.cov(residuals, rowvar=False))
    return (vectors * np.sqrt(np.clip(values, 0, None))).T.astype(np.float32)


def similarity_profile(gallery: np.ndarray, person: np.ndarray, queries: np.ndarray, target: np.ndarray) -> dict:
    """Median cosine of a query to its own person's best photo and to the best other person's."""
    sims = queries @ gallery.T
    own = np.where(person[None, :] == target[:, None], sims, -np.inf).max(axis=1)
    other = np.where(person[None, :] != target[:, None], sims, -np.inf).max(axis=1)
    return {"own_best_median": round(float(np.median(own)), 3), "other_best_median": round(float(np.median(other)), 3),
            "own_beats_other": round(float(np.mean(own > other)), 3)}


# -- the indexes ---------------------------------------------------------------------------
def timed_queries(search, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q[None]))
        times.append(time.perf_counter() - start)
    return np.array(found), times


def measure_index(name: str, index, gallery: np.ndarray, queries: np.ndarray, exact_person: np.ndarray, nprobes: list[int]) -> list[dict]:
    """Build `index` over the gallery, then time single queries at each nprobe (IVF)."""
    start = time.perf_counter()
    if not index.is_trained:
        rng = np.random.default_rng(1)
        index.train(gallery[rng.choice(len(gallery), min(len(gallery), 64 * faiss.extract_index_ivf(index).nlist), replace=False)])
    trained = time.perf_counter() - start
    index.add(gallery)
    built = time.perf_counter() - start
    memory = faiss.serialize_index(index).nbytes
    rows = []
    for nprobe in nprobes or [None]:
        if nprobe is not None:
            faiss.extract_index_ivf(index).nprobe = nprobe
        ids, times = timed_queries(lambda q: int(index.search(q, 1)[1][0, 0]), queries)
        ms = np.asarray(times) * 1000
        row = {"index": name, "nprobe": nprobe, "train_s": round(trained, 1), "build_s": round(built, 1),
               "memory_mb": round(memory / 2**20), "p50_ms": round(float(np.median(ms)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
               "same_person_as_exact": round(float(np.mean(ids // PHOTOS_PER_PERSON == exact_person)), 4)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def restart(gallery: np.ndarray, index_kind: str, nprobe: int, model_id: str = "bench@0") -> dict:
    """Open a store of this many faces as `faceid serve` does at start: the first time (the
    index built from the store), then after a shutdown that saved the index beside it."""
    from app.gallery.gallery import Gallery
    from app.gallery.records import NewFace
    from app.gallery.sqlite import SqliteStore
    from app.gallery.store import open_store
    from app.gallery.vector_index import IndexSettings

    with tempfile.TemporaryDirectory(dir=os.environ.get("FACEID_BENCH_TMP")) as tmp:
        store = SqliteStore(Path(tmp) / "gallery.sqlite3")
        start = time.perf_counter()
        for first in range(0, len(gallery), 50_000):
            chunk = gallery[first : first + 50_000]
            with store.write() as w:
                w.add_faces([(f"p{(first + i) // PHOTOS_PER_PERSON}", None, [NewFace(str(first + i), v)]) for i, v in enumerate(chunk)], model_id)
        filled = time.perf_counter() - start
        store.close()
        start = time.perf_counter()
        opened = Gallery(open_store(tmp), Path(tmp), model_id, IndexSettings(index_kind, nprobe=nprobe))  # type: ignore[arg-type]
        built = time.perf_counter() - start
        start = time.perf_counter()
        opened.save_snapshot()
        saved = time.perf_counter() - start
        opened.close()
        start = time.perf_counter()
        reopened = Gallery(open_store(tmp), Path(tmp), model_id, IndexSettings(index_kind, nprobe=nprobe))  # type: ignore[arg-type]
        loaded = time.perf_counter() - start
        size, trained = reopened.index.size, reopened.index.trained_on
        reopened.close()
    return {"index": index_kind, "faces": size, "trained_on": trained, "store_fill_s": round(filled, 1),
            "first_start_ready_s": round(built, 1), "save_at_shutdown_s": round(saved, 1), "restart_ready_s": round(loaded, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--identities", type=int, default=200_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ivf", default="1024:8/16/32/64,2048:16/32/64/96/128,4096:32/64/128/256",
                        help="IVF settings measured, nlist:nprobe/nprobe/...,...")
    parser.add_argument("--codes", default="flat,fp16,sq8", help="how IVF stores the vectors, any of flat,fp16,sq8 (comma-separated)")
    parser.add_argument("--skip-restart", action="store_true")
    parser.add_argument("--only-flat", action="store_true", help="exact search alone (a quick check of the set-up)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_search.json"))
    args = parser.parse_args()
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    vectors, identity, clean = real_embeddings(args.data, args.cache)
    gallery, target, queries = FaceLike(vectors, identity, clean).draw(args.identities, args.queries)
    report: dict = {"machine": machine(), "threads": faiss.omp_get_max_threads(),
                    "faiss": faiss.__version__, "faces": len(gallery), "identities": args.identities, "queries": args.queries}

    # How face-like the synthetic vectors are: the same profile over real and synthetic data.
    real_clean = clean & np.isin(identity, np.unique(identity[~clean]))
    real_q = np.flatnonzero(~clean)[:: max(1, (~clean).sum() // 1000)]
    report["realism"] = {
        "real": similarity_profile(vectors[real_clean], identity[real_clean], vectors[real_q], identity[real_q]),
        "synthetic_small": similarity_profile(gallery[: PHOTOS_PER_PERSON * 700], np.arange(PHOTOS_PER_PERSON * 700) // PHOTOS_PER_PERSON,
                                              queries[target < 700], target[target < 700]),
    }
    print("realism", json.dumps(report["realism"]), flush=True)

    flat = faiss.IndexFlatIP(gallery.shape[1])
    rows = measure_index("flat", flat, gallery, queries[:200], np.full(200, -1), [])  # 200: each takes ~0.15 s
    _, exact = flat.search(queries, 1)
    exact_person = exact[:, 0] // PHOTOS_PER_PERSON
    rows[0]["same_person_as_exact"] = 1.0
    report["exact_is_right_person"] = round(float(np.mean(exact_person == target)), 4)
    del flat
    d = gallery.shape[1]
    for nlist, nprobes in () if args.only_flat else [(int(n), [int(p) for p in probes.split("/")]) for n, probes in
                                                     (setting.split(":") for setting in args.ivf.split(","))]:
        for codes in args.codes.split(","):
            quantizer = faiss.IndexFlatIP(d)
            if codes == "flat":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                kind = {"fp16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}[codes]
                index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, kind, faiss.METRIC_INNER_PRODUCT)
            rows += measure_index(f"ivf{nlist},{codes}", index, gallery, queries, exact_person, nprobes)
            del index, quantizer
    report["indexes"] = rows
    if not (args.skip_restart or args.only_flat):
        report["restart"] = [restart(gallery, "ivf", DEFAULT_IVF_NPROBE)]
        print("restart", json.dumps(report["restart"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
