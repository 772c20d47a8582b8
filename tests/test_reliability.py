"""What a hostile or unlucky client meets: no 5xx from any input, the subject of a photo
enrolled, bounded work per request, the key checked before the body is read, and a gallery
whose store and index never drift apart."""

from __future__ import annotations

import io
import json
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.gallery.gallery import Gallery
from app.gallery.records import NewFace, StorageFull, StoreReadOnly, StoreUnavailable
from app.gallery.sqlite import SCHEMA_VERSION, STORE_FILE, SqliteStore
from app.gallery.store import open_store
from app.gallery.vector_index import IndexSettings
from app.main import create_app
from tests.conftest import KEY, enroll, identify, jpeg, sealer, settings

PAGE = 4096  # SQLite's default page size: a file's pages are its size over this


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def canvas(size, *placed) -> Image.Image:
    out = Image.new("RGB", size, (128, 128, 128))
    for photo, side, at in placed:
        out.paste(photo.resize((side, side)), at)
    return out


# -- no 5xx from any input -------------------------------------------------------------
@pytest.mark.parametrize("size", [(1, 1), (5, 5), (11, 11), (19, 200), (200, 19)])
def test_tiny_images_get_no_face_not_500(client, size):
    photo = png(Image.new("RGB", size, (200, 150, 120)))
    r = identify(client, photo, "tiny.png")
    assert r.status_code == 422 and "no face" in r.json()["detail"]
    r = client.post("/enroll", data={"person_id": "t"}, files=[("images", ("tiny.png", photo, "image/png"))])
    assert r.status_code == 422 and "tiny.png" in r.json()["detail"]


@pytest.mark.parametrize("offset", ["100000000000000000000", "9223372036854775808"])
def test_offsets_past_sqlite_integers_are_422(client, offset):
    assert client.get(f"/persons?offset={offset}").status_code == 422
    assert client.get("/persons?offset=9223372036854775807").json()["items"] == []


@pytest.mark.parametrize("body", [
    '{"embedding": [NaN' + ", 0.1" * 511 + "]}",
    '{"embedding": [Infinity' + ", 0.1" * 511 + "]}",
    '{"embedding": [' + ", ".join(["0.1"] * 512) + '], "top_k": NaN}',
    '{"embedding": [' + ", ".join(["0.1"] * 512) + '], "threshold": Infinity}',
])
def test_non_finite_json_is_422_and_the_connection_survives(client, body):
    r = client.post("/identify/embedding", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("value", [1e300, 3.5e38, 1e-45, 1e-300])
def test_vectors_that_break_in_float32_are_422(client, value):
    r = client.post("/identify/embedding", json={"embedding": [value] * 512})
    assert r.status_code == 422 and "float32" in json.dumps(r.json())


def test_sixteen_bit_greyscale_png_is_read_as_a_photo(client, group_faces):
    grey = np.asarray(group_faces[2].convert("L"), dtype=np.uint16) * 257  # the same photo at 16 bits
    enroll(client, "p2", [group_faces[2]])
    r = identify(client, png(Image.fromarray(grey)), "grey16.png")
    assert r.status_code == 200 and r.json()["faces"][0]["match"]["person_id"] == "p2"


@pytest.mark.parametrize("brand", [b"heic", b"mif1", b"avif"])
def test_heic_and_avif_are_415(client, brand):
    r = identify(client, b"\x00\x00\x00\x18ftyp" + brand + b"\x00" * 32, "photo.heic")
    assert r.status_code == 415 and "photo.heic" in r.json()["detail"]


# -- enrolment takes the subject -----------------------------------------------------------
def test_enrolment_takes_the_dominant_face_and_names_the_ignored(client, group_faces):
    photo = canvas((448, 448), (group_faces[0], 336, (0, 56)), (group_faces[1], 112, (336, 0)))
    r = client.post("/enroll", data={"person_id": "p0"}, files=[("images", ("press.jpg", jpeg(photo), "image/jpeg"))])
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["box"][0] < 336 and len(face["ignored"]) == 1 and face["ignored"][0][0] >= 336
    (found,) = [f for f in identify(client, jpeg(group_faces[0])).json()["faces"]]
    assert found["match"]["person_id"] == "p0"


def test_comparable_faces_need_a_box(client, group_faces):
    pair = canvas((448, 224), (group_faces[3], 224, (0, 0)), (group_faces[4], 224, (224, 0)))
    files = [("images", ("pair.jpg", jpeg(pair), "image/jpeg"))]
    r = client.post("/enroll", data={"person_id": "x"}, files=files)
    assert r.status_code == 422 and "2 faces of comparable size" in r.json()["detail"]
    right = next(f for f in identify(client, jpeg(pair)).json()["faces"] if f["box"][0] > 224)["box"]
    r = client.post("/enroll", data={"person_id": "p4", "box": ",".join(f"{v:.1f}" for v in right)}, files=files)
    assert r.status_code == 200 and r.json()["faces"][0]["box"][0] > 224
    assert identify(client, jpeg(group_faces[4])).json()["faces"][0]["match"]["person_id"] == "p4"
    r = client.post("/enroll", data={"person_id": "x", "box": "1,1,2,2"}, files=files + files)
    assert r.status_code == 422 and "one at a time" in r.json()["detail"]


def test_identify_reports_quality(client, group_faces):
    (face,) = identify(client, jpeg(group_faces[0])).json()["faces"]
    assert face["quality"]["score"] > 0.5 and face["quality"]["reasons"] == []
    dark = Image.eval(group_faces[0], lambda v: v // 6)  # found, but barely: the answer says so
    faces = identify(client, jpeg(dark)).json()["faces"]
    assert faces and faces[0]["quality"]["score"] < 0.5 and faces[0]["quality"]["reasons"]


# -- bounded work, and the key before the body --------------------------------------------------
def chunked(total: int, sent: list[int]):
    def body():
        head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        yield head
        for _ in range(total // 65536):
            sent.append(65536)
            yield b"\0" * 65536
    return body()


def test_without_the_key_a_chunked_body_is_refused_unread(tmp_path):
    with TestClient(create_app(settings(tmp_path, api_key=KEY))) as c:
        sent: list[int] = []
        r = c.post("/identify", content=chunked(50 << 20, sent), headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert r.status_code == 401
        assert sum(sent) < 1 << 20  # not spooled: 50 MB offered, almost none read


def test_a_huge_photo_is_detected_small_and_boxes_stay_in_its_pixels(tmp_path, store, detection, group_faces):
    with TestClient(create_app(settings(tmp_path, **store), pipeline=detection)) as client:
        big = group_faces[5].resize((4000, 4000))
        enroll(client, "p5", [group_faces[5]])
        detection.sizes.clear()
        (face,) = identify(client, jpeg(big, quality=80)).json()["faces"]
    assert 384 <= max(detection.sizes[0][0]) <= 768  # JPEG DCT scaling to 1/8: 500 px, never the full 4000
    assert face["match"]["person_id"] == "p5"
    assert 1200 < face["box"][0] < 2000 and face["box"][2] > 2000  # the face sits mid-photo, in 4000-px coordinates


def test_a_full_queue_answers_503_with_retry_after(tmp_path, detection, group_faces):
    with TestClient(create_app(settings(tmp_path, max_pending=1), pipeline=detection)) as c:
        detection.release.clear()
        first = threading.Thread(target=identify, args=(c, jpeg(group_faces[0])))
        first.start()
        assert detection.entered.wait(30)
        r = identify(c, jpeg(group_faces[1]))
        detection.release.set()
        first.join(60)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "waiting" in r.json()["detail"]
        assert c.get("/healthz").status_code == 200


def test_when_the_queue_is_full_the_503_comes_before_the_upload_is_read(tmp_path, detection, group_faces):
    with TestClient(create_app(settings(tmp_path, max_pending=1), pipeline=detection)) as c:
        detection.release.clear()
        first = threading.Thread(target=identify, args=(c, jpeg(group_faces[0])))
        first.start()
        assert detection.entered.wait(30)
        sent: list[int] = []
        r = c.post("/identify", content=chunked(50 << 20, sent), headers={"Content-Type": "multipart/form-data; boundary=b"})
        detection.release.set()
        first.join(60)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1" and "waiting" in r.json()["detail"]
        assert sum(sent) < 1 << 20  # answered from the head: 50 MB offered, almost none read


def test_a_request_past_its_time_limit_answers_503(tmp_path, detection, group_faces):
    with TestClient(create_app(settings(tmp_path, request_timeout_s=0.2), pipeline=detection)) as c:
        detection.release.clear()
        r = identify(c, jpeg(group_faces[0]))
        detection.release.set()
        assert r.status_code == 503 and "longer than" in r.json()["detail"]


def test_invented_methods_do_not_grow_the_metrics(client):
    for i in range(20):
        client.request(f"FOO{i}", "/healthz")
    text = client.get("/metrics").text
    assert "FOO" not in text and 'method="other"' in text


def test_probes_follow_the_key_unless_opened(tmp_path):
    with TestClient(create_app(settings(tmp_path, api_key=KEY))) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 401 and c.get("/metrics").status_code == 401
        assert c.get("/readyz", headers={"X-API-Key": KEY}).status_code == 200
    with TestClient(create_app(settings(tmp_path, api_key=KEY, open_probes=True))) as c:
        assert c.get("/readyz").status_code == 200 and c.get("/metrics").status_code == 200
        assert c.get("/persons").status_code == 401


# -- store and index never drift apart -----------------------------------------------------------
def vector(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=512).astype(np.float32)
    return v / np.linalg.norm(v)


def face(seed: int) -> NewFace:
    return NewFace(f"f{seed}.jpg", vector(seed))


def sqlite_gallery(folder, store=None, **index) -> Gallery:
    return Gallery(store if store is not None else open_store(folder), folder, "m@1", IndexSettings(**index))


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_rebuild_and_an_enrolment_or_delete_never_interleave(tmp_path, kind):
    gallery = sqlite_gallery(tmp_path, kind=kind)
    gallery.enroll("a", None, [face(1)])
    gallery.enroll("b", None, [face(2)])
    paused, resume = threading.Event(), threading.Event()
    read = gallery.store.embeddings

    def slow_read():
        snapshot = read()  # the rebuild has its snapshot of the store...
        paused.set()
        resume.wait(30)  # ...and waits while others try to write
        return snapshot

    gallery.store.embeddings = slow_read
    rebuild = threading.Thread(target=gallery.rebuild)
    rebuild.start()
    assert paused.wait(30)
    gallery.store.embeddings = read
    writes = [threading.Thread(target=gallery.enroll, args=("c", None, [face(3)])), threading.Thread(target=gallery.delete, args=("b",))]
    for t in writes:
        t.start()
    resume.set()
    for t in [rebuild, *writes]:
        t.join(30)
    assert gallery.in_sync
    top = [c[0].person_id for c in gallery.search(np.stack([vector(3), vector(2)]), 1)]
    assert top[0] == "c" and top[1] != "b"  # the new face is found; the deleted person is no ghost


def test_a_failed_index_update_leaves_nothing_stored(tmp_path):
    gallery = sqlite_gallery(tmp_path)

    def broken(ids, vectors):
        raise MemoryError("index full")

    gallery.index.add = broken
    with pytest.raises(MemoryError):
        gallery.enroll("a", None, [face(1)])
    assert gallery.store.get_person("a") is None and gallery.store.counts() == (0, 0)


def test_a_failed_commit_takes_the_faces_back_out_of_the_index(tmp_path):
    gallery = sqlite_gallery(tmp_path)
    gallery.enroll("a", None, [face(1)])
    gallery.close()
    file = tmp_path / STORE_FILE
    gallery = sqlite_gallery(tmp_path, SqliteStore(file, max_pages=file.stat().st_size // PAGE))  # as full as a full disk
    with pytest.raises(StorageFull, match="disk is full"):
        gallery.enroll("b", None, [face(i) for i in range(2, 40)])
    assert gallery.in_sync and gallery.index.size == 1 and gallery.store.counts() == (1, 1)


def test_disk_full_answers_507_and_nothing_is_lost(tmp_path, group_faces):
    with TestClient(create_app(settings(tmp_path))) as c:
        assert enroll(c, "p0", [group_faces[0]]).status_code == 200
    file = tmp_path / "gallery" / STORE_FILE
    with TestClient(create_app(settings(tmp_path), store=SqliteStore(file, max_pages=file.stat().st_size // PAGE, sealer=sealer()))) as c:
        r = enroll(c, "p1", [group_faces[1]] * 6)
        assert r.status_code == 507 and "disk is full" in r.json()["detail"]
        assert c.get("/readyz").json()["faces"] == 1
    with TestClient(create_app(settings(tmp_path))) as c:  # space freed: writes work again
        assert enroll(c, "p1", [group_faces[1]]).status_code == 200


def test_a_read_only_store_answers_503_and_readyz_says_so(tmp_path, store, group_faces):
    with TestClient(create_app(settings(tmp_path, **store))) as c:
        assert enroll(c, "p0", [group_faces[0]]).status_code == 200
    with TestClient(create_app(settings(tmp_path, **store, read_only=True))) as c:
        r = enroll(c, "p1", [group_faces[1]])
        assert r.status_code == 503 and "read-only" in r.json()["detail"]
        assert c.delete("/persons/p0").status_code == 503
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["writable"] is False and "read-only" in ready.json()["detail"]
        assert identify(c, jpeg(group_faces[0])).json()["faces"][0]["match"]["person_id"] == "p0"  # still identifies


def test_writes_by_another_process_are_noticed(sqlite_client, group_faces):
    data_dir = sqlite_client.app.state.settings.data_dir
    other = Gallery(open_store(data_dir, sealer=sealer()), data_dir, sqlite_client.app.state.collections.default.gallery.model_id)  # its own connection
    assert enroll(sqlite_client, "p0", [group_faces[0]]).status_code == 200
    crop_vector = sqlite_client.app.state.collections.default.gallery.store.embeddings()[1][0]
    other.enroll("twin", None, [NewFace("twin.jpg", crop_vector)])
    other.close()
    ready = sqlite_client.get("/readyz").json()  # a cheap read: it reports the gap, and never rebuilds itself
    assert ready["faces"] == 2 and (ready["index_size"] == 2 or ("catching up" in ready["detail"] and not ready["ready"]))
    for _ in range(50):  # the lifespan's watcher rebuilds the index within its interval
        if (ready := sqlite_client.get("/readyz").json())["ready"]:
            break
        time.sleep(0.1)
    assert ready["ready"] and ready["faces"] == 2 and ready["index_size"] == 2
    cands = identify(sqlite_client, jpeg(group_faces[0]), top_k="2").json()["faces"][0]["candidates"]
    assert {c["person_id"] for c in cands} == {"p0", "twin"}


def test_a_data_dir_that_cannot_be_made_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from faceid.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("FACEID_DATA_DIR", str(blocker / "gallery"))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data directory" in err and "FACEID_DATA_DIR" in err


def test_sqlite_errors_map_to_store_errors(tmp_path):
    SqliteStore(tmp_path / "s.sqlite3").close()
    store = SqliteStore(tmp_path / "s.sqlite3", read_only=True)
    with pytest.raises(StoreReadOnly):
        with store.write() as w:
            w.add_faces([("a", None, [face(1)])], "m@1")
    assert store.counts() == (0, 0) and not store.writable()


def test_read_only_refuses_a_store_it_would_have_to_migrate(tmp_path):
    import sqlite3

    SqliteStore(tmp_path / "s.sqlite3").close()
    with sqlite3.connect(tmp_path / "s.sqlite3") as db:
        for table in ("index_cells", "collections", "audit", "unknowns"):  # what versions 3 to 5 added: a store as version 2 left it
            db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute("ALTER TABLE persons DROP COLUMN consent")
        db.execute("PRAGMA user_version = 2")
    with pytest.raises(StoreUnavailable, match="start once without FACEID_READ_ONLY"):
        SqliteStore(tmp_path / "s.sqlite3", read_only=True)
    assert SqliteStore(tmp_path / "s.sqlite3").schema_version() == SCHEMA_VERSION  # without it, migrated as usual


def test_the_ivf_index_is_saved_at_shutdown_and_loaded_at_the_next_start(tmp_path, group_faces, monkeypatch):
    """Through the app's lifespan: an IVF gallery past its training size, a restart that loads
    the saved index (no rebuild from the embeddings), the same answer after it."""
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 6)
    with TestClient(create_app(settings(tmp_path, index="ivf", ivf_nprobe=4))) as c:
        for i, photo in enumerate(group_faces):
            enroll(c, f"p{i}", [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
        trained = c.app.state.collections.default.gallery.index.trained_on
        assert trained >= 6 and c.app.state.collections.default.gallery.index.size == 12  # trained once it reached 6 faces
        before = identify(c, jpeg(group_faces[2])).json()["faces"][0]["match"]["person_id"]
    assert (tmp_path / "gallery" / "index.faiss").is_file()

    def no_rebuild(self):
        raise AssertionError("rebuilt from the embeddings")

    monkeypatch.setattr("app.gallery.sqlite.SqliteStore.embeddings", no_rebuild)
    with TestClient(create_app(settings(tmp_path, index="ivf", ivf_nprobe=4))) as c:
        assert c.app.state.collections.default.gallery.index.trained_on == trained
        assert identify(c, jpeg(group_faces[2])).json()["faces"][0]["match"]["person_id"] == before == "p2"
        assert c.get("/readyz").status_code == 200
