"""What photo evidence costs /identify, at a gallery of many enrolled photos.

    .venv/bin/python -m benchmarks.photo_evidence [--data DIR] [--photos 100000] [--index flat|ivf] [--out reports/bench_photo_evidence.json]

The gallery holds the validation people's clean photos (real) and, to make up `--photos`,
synthetic ones (smooth random textures: photos unlike the queries, as most of a large gallery
is). Queries are the validation people's distorted copies. Timed per query, as /identify runs
it: the thumbnail of the decoded photo, then `Gallery.search_photos` (descriptor, FAISS
shortlist, the shortlist's stored thumbnails read back, the exact re-rank), with each part
timed apart once more. Also reported: bytes per photo in the store, and how often the query's
own photo is the best one found (the shortlist at this size still holds it), and the yardstick
(one eager backbone forward, measured in the same run) so that figures from other CPUs compare.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from app.gallery.gallery import Gallery
from app.gallery.records import NewFace, PhotoRecord
from app.gallery.store import open_store
from app.gallery.vector_index import IndexSettings
from benchmarks.machine import machine
from benchmarks.yardstick import yardstick_ms
from core.constants import EMBEDDING_DIM
from core.data.dataset import DEFAULT_VAL_SPLIT, read_split, scan
from core.images import load_image
from core.photos.descriptor import SHORTLIST, THUMB_SIDE, describe, projected, rerank, search_breadth, thumbnail

MODEL_ID = "bench"
CENTRE_BOX = (0.3, 0.25, 0.7, 0.7)  # where a portrait's face is; the real photos' boxes are not needed to time them


def record(thumb: np.ndarray) -> PhotoRecord:
    return PhotoRecord(thumb, projected(describe(thumb)[0]), CENTRE_BOX)


def synthetic_thumbs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    return np.stack([np.asarray(Image.fromarray(c).resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BICUBIC)) for c in coarse])


def build(data_dir: Path, real: list[tuple[str, str, np.ndarray]], n_photos: int, batch: int = 5000) -> float:
    """A store of `n_photos` faces with photo evidence; returns the seconds it took."""
    started = time.perf_counter()
    gallery = Gallery(open_store(data_dir), data_dir, MODEL_ID)
    rng = np.random.default_rng(1)
    entries = [(person, None, [NewFace(source, np.zeros(EMBEDDING_DIM, np.float32) + 1 / np.sqrt(EMBEDDING_DIM), None, record(t))])
               for person, source, t in real]
    gallery.enroll_many(entries)
    for start in range(len(real), n_photos, batch):
        thumbs = synthetic_thumbs(min(batch, n_photos - start), seed=start)
        vectors = rng.standard_normal((len(thumbs), EMBEDDING_DIM)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        gallery.enroll_many([(f"synthetic_{start + i}", None, [NewFace("synthetic.jpg", v, None, record(t))])
                             for i, (t, v) in enumerate(zip(thumbs, vectors))])
    gallery.close()
    return time.perf_counter() - started


def parts(gallery: Gallery, thumb: np.ndarray) -> dict[str, float]:
    """One query's photo search, part by part (ms)."""
    t0 = time.perf_counter()
    query = describe(thumb)
    vector = projected(query[0])[None]
    t1 = time.perf_counter()
    _, ids = gallery.photos.search(vector, SHORTLIST * (wider := search_breadth(query)), wider=wider)
    t2 = time.perf_counter()
    stored = gallery.store.photos_of([int(i) for i in ids[0] if i >= 0])
    t3 = time.perf_counter()
    rerank(thumb, [s.thumb for s in stored], [s.box for s in stored])
    t4 = time.perf_counter()
    return {"describe": 1e3 * (t1 - t0), "faiss": 1e3 * (t2 - t1), "read_shortlist": 1e3 * (t3 - t2), "rerank": 1e3 * (t4 - t3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    ap.add_argument("--photos", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--index", choices=["flat", "ivf", "hnsw"], default="flat", help="the gallery's FACEID_INDEX")
    ap.add_argument("--out", type=Path, default=Path("reports/bench_photo_evidence.json"))
    args = ap.parse_args()

    samples = scan(args.data, read_split(DEFAULT_VAL_SPLIT))
    clean = [s for s in samples if s.is_clean]
    queries = [s for s in samples if not s.is_clean]
    queries = [queries[i] for i in np.random.default_rng(0).choice(len(queries), min(args.queries, len(queries)), replace=False)]
    real = [(s.identity, s.path.name, thumbnail(load_image(s.path))) for s in clean]
    with tempfile.TemporaryDirectory() as tmp:
        build_s = build(Path(tmp), real, args.photos)
        store_bytes = (Path(tmp) / "gallery.sqlite3").stat().st_size
        opened = time.perf_counter()
        gallery = Gallery(open_store(tmp), Path(tmp), MODEL_ID, IndexSettings(args.index))
        open_s = time.perf_counter() - opened
        images = [load_image(q.path) for q in queries]
        for img in images[:10]:  # warm-up
            gallery.search_photos(thumbnail(img))
        totals, right, split = [], [], []
        for q, img in zip(queries, images):
            t0 = time.perf_counter()
            found = gallery.search_photos(thumbnail(img))
            totals.append(1e3 * (time.perf_counter() - t0))
            right.append(bool(found) and (found[0].person_id, Path(found[0].source).stem) == (q.identity, q.source))
            split.append(parts(gallery, thumbnail(img)))
        n = gallery.photos.size
        gallery.close()
    ms = np.array(totals)
    yardstick = yardstick_ms()
    report = {
        "machine": machine(),
        "yardstick_ms": yardstick,
        "photos": n, "queries": len(queries), "shortlist": SHORTLIST, "index": args.index,
        "photo_channel_ms": {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "mean": float(ms.mean())},
        "photo_channel_p50_per_yardstick": float(np.percentile(ms, 50)) / yardstick,
        "parts_ms_p50": {k: float(np.median([s[k] for s in split])) for k in split[0]},
        "own_photo_found": float(np.mean(right)),
        "own_photo_found_by_kind": {k: float(np.mean([r for r, q in zip(right, queries) if q.kind == k])) for k in sorted({q.kind for q in queries if q.kind})},
        "bytes_per_photo": {"thumbnail": THUMB_SIDE * THUMB_SIDE, "projected_vector": 4 * len(record(real[0][2]).vector),
                            "store_file_per_face": store_bytes / n},
        "build_s": build_s, "gallery_open_s": open_s,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
