"""The HTTP service in-process (lifespan included), on real face photos and the real backbone."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from app.config import Settings
from app.gallery.sqlite import SqliteStore
from app.main import create_app
from tests.conftest import GROUP, KEY, enroll, identify, jpeg, png_header_only, sealer, settings


def test_enrolled_person_is_identified_from_a_blurred_photo(client, group_faces):
    for i in range(4):
        assert enroll(client, f"p{i}", [group_faces[i]], name=f"Person {i}").status_code == 200
    r = identify(client, jpeg(group_faces[2].filter(ImageFilter.GaussianBlur(2))))
    assert r.status_code == 200, r.text
    (face,) = r.json()["faces"]
    assert face["match"]["person_id"] == "p2" and face["match"]["name"] == "Person 2"
    sims = [c["similarity"] for c in face["candidates"]]
    assert sims == sorted(sims, reverse=True) and len(sims) == 4
    assert face["match"]["similarity"] >= r.json()["threshold"]


def test_a_stranger_is_unknown(client, group_faces):
    for i in range(3):
        enroll(client, f"p{i}", [group_faces[i]])
    r = identify(client, jpeg(group_faces[5]))
    (face,) = r.json()["faces"]
    assert face["match"] is None and len(face["candidates"]) == 3


def test_every_face_in_a_group_photo(client, group_faces):
    for i in range(6):
        enroll(client, f"p{i}", [group_faces[i]])
    r = identify(client, GROUP.read_bytes(), "group.jpg")
    faces = r.json()["faces"]
    assert len(faces) == 6
    left_to_right = sorted(faces, key=lambda f: f["box"][0])
    assert [f["match"]["person_id"] for f in left_to_right] == [f"p{i}" for i in range(6)]
    assert len(identify(client, GROUP.read_bytes(), max_faces="2").json()["faces"]) == 2


def test_enrolment_is_all_or_nothing(client, group_faces):
    files = [
        ("images", ("good.jpg", jpeg(group_faces[0]), "image/jpeg")),
        ("images", ("group.jpg", GROUP.read_bytes(), "image/jpeg")),
    ]
    r = client.post("/enroll", data={"person_id": "x"}, files=files)
    assert r.status_code == 422 and "group.jpg" in r.json()["detail"] and "comparable size" in r.json()["detail"]
    assert client.get("/persons/x").status_code == 404


def test_enrolling_an_existing_person_adds_faces(client, group_faces):
    first = enroll(client, "p0", [group_faces[0]]).json()
    assert first["created"] is True and "second, different photo" in first["advice"]
    r = enroll(client, "p0", [group_faces[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert r.json()["created"] is False and r.json()["person"]["n_faces"] == 2
    assert r.json()["advice"] is None


@pytest.mark.parametrize(
    ("payload", "status", "fragment"),
    [
        (b"definitely not an image", 400, "not an image"),
        (b"", 400, "empty"),
        (jpeg(Image.new("RGB", (100, 100)))[:300], 400, "corrupt"),
        (png_header_only(60_000, 60_000), 413, "exceeds"),
        (jpeg(Image.new("RGB", (200, 200), (90, 90, 90))), 422, "no face"),
    ],
)
def test_bad_images_get_clear_errors(client, payload, status, fragment):
    r = identify(client, payload, "upload.jpg")
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"] and "upload.jpg" in r.json()["detail"]


def test_unsupported_format_is_415(client):
    buf = io.BytesIO()
    Image.new("RGB", (50, 50)).save(buf, format="PPM")
    r = identify(client, buf.getvalue(), "img.ppm")
    assert r.status_code == 415 and "PPM" in r.json()["detail"]


def test_upload_over_the_byte_limit_is_413(tmp_path, group_faces):
    with TestClient(create_app(settings(tmp_path, max_upload_bytes=2048))) as c:
        r = identify(c, jpeg(group_faces[0]), "big.jpg")
    assert r.status_code == 413 and "big.jpg" in r.json()["detail"]


def test_oversized_body_is_refused_before_parsing(tmp_path):
    with TestClient(create_app(settings(tmp_path, max_upload_bytes=2048, max_images_per_enroll=1))) as c:
        r = c.post("/identify", content=b"x" * (2048 + (1 << 20) + 1), headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


def test_missing_fields_are_422(client, group_faces):
    assert client.post("/identify").status_code == 422
    r = client.post("/enroll", files=[("images", ("a.jpg", jpeg(group_faces[0]), "image/jpeg"))])
    assert r.status_code == 422 and "person_id" in r.text
    assert enroll(client, "bad id with spaces", [group_faces[0]]).status_code == 422
    assert identify(client, jpeg(group_faces[0]), top_k="0").status_code == 422


def test_list_get_and_delete_persons(client, group_faces):
    for i in range(3):
        enroll(client, f"p{i}", [group_faces[i]])
    page = client.get("/persons", params={"offset": 1, "limit": 1}).json()
    assert page["total"] == 3 and [p["person_id"] for p in page["items"]] == ["p1"]
    assert client.get("/persons/p1").json()["n_faces"] == 1
    assert client.delete("/persons/p1").status_code == 200
    assert client.get("/persons/p1").status_code == 404
    assert client.delete("/persons/p1").status_code == 404
    (face,) = identify(client, jpeg(group_faces[1])).json()["faces"]
    assert all(c["person_id"] != "p1" for c in face["candidates"])
    assert client.get("/readyz").json()["faces"] == 2


def test_api_key_is_required_when_configured(tmp_path, group_faces):
    with TestClient(create_app(settings(tmp_path, api_key=KEY))) as c:
        assert enroll(c, "p0", [group_faces[0]]).status_code == 401
        assert enroll(c, "p0", [group_faces[0]], headers={"X-API-Key": "wrong" * 5}).status_code == 401
        assert enroll(c, "p0", [group_faces[0]], headers={"X-API-Key": KEY}).status_code == 200
        assert c.get("/persons").status_code == 401
        assert c.get("/healthz").status_code == 200


def test_short_api_key_is_refused_at_start():
    with pytest.raises(ValueError, match="16 characters"):
        Settings(api_key="short")


def test_restart_keeps_the_gallery(tmp_path, group_faces):
    with TestClient(create_app(settings(tmp_path))) as c:
        enroll(c, "p3", [group_faces[3]])
    with TestClient(create_app(settings(tmp_path))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200 and ready.json()["faces"] == 1 and ready.json()["index_size"] == 1
        (face,) = identify(c, jpeg(group_faces[3])).json()["faces"]
        assert face["match"]["person_id"] == "p3"


def test_gallery_of_another_model_is_refused_until_reembedded(tmp_path, group_faces, monkeypatch):
    with TestClient(create_app(settings(tmp_path))) as c:
        enroll(c, "p0", [group_faces[0]])
    store = SqliteStore(tmp_path / "gallery" / "gallery.sqlite3", sealer=sealer())
    with store.write() as w:
        w.replace_embeddings([(1, np.eye(512, dtype=np.float32)[0])], "other-model@123")
    store.close()
    with TestClient(create_app(settings(tmp_path))) as c:
        r = c.get("/readyz")
        detail = r.json()["detail"]
        assert r.status_code == 503 and f"faceid gallery reembed --data-dir {tmp_path / 'gallery'}" in detail
        assert identify(c, jpeg(group_faces[0])).status_code == 503
    monkeypatch.setenv("FACEID_WEIGHTS", "casia-webface")
    from faceid.cli import main

    assert main(["gallery", "reembed", "--data-dir", str(tmp_path / "gallery")]) == 0
    with TestClient(create_app(settings(tmp_path))) as c:
        assert c.get("/readyz").status_code == 200
        assert identify(c, jpeg(group_faces[0])).json()["faces"][0]["match"]["person_id"] == "p0"


def test_identify_by_embedding(client, group_faces, tmp_path):
    enroll(client, "p0", [group_faces[0]])
    enroll(client, "p1", [group_faces[1]])
    store = client.app.state.collections.default.gallery.store
    _, vectors, persons = store.embeddings()
    query = (vectors[persons.index("p1")] * 3.0).tolist()  # any scale: the service normalises
    r = client.post("/identify/embedding", json={"embedding": query})
    assert r.status_code == 200 and r.json()["match"]["person_id"] == "p1"
    assert r.json()["match"]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert client.post("/identify/embedding", json={"embedding": [0.1] * 100}).status_code == 422
    assert client.post("/identify/embedding", json={"embedding": [0.0] * 512}).status_code == 422


def test_metrics_count_requests(client, group_faces):
    enroll(client, "p0", [group_faces[0]])
    identify(client, jpeg(group_faces[0]))
    text = client.get("/metrics").text
    assert 'faceid_requests_total{method="POST",route="/identify",status="200"} 1.0' in text
    assert "faceid_gallery_faces 1.0" in text
    assert "faceid_embed_batch_size_count" in text


def test_concurrent_enrol_and_identify(client, group_faces):
    enroll(client, "p0", [group_faces[0]])

    def work(i):
        if i % 2:  # six people, from three photos: the second three mirrored (a copy would be a 409)
            photo = group_faces[i % 6] if i < 6 else group_faces[i % 6].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            return enroll(client, f"c{i}", [photo]).status_code
        return identify(client, jpeg(group_faces[0])).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(work, range(12)))
    assert codes == [200] * 12
    ready = client.get("/readyz").json()
    assert ready["faces"] == 7 and ready["index_size"] == 7


def test_gallery_import_enrols_a_folder_and_resumes(facecom_dir, tmp_path, monkeypatch, capsys):
    from faceid.cli import main

    monkeypatch.setenv("FACEID_DATA_DIR", str(tmp_path / "gallery"))
    monkeypatch.setenv("FACEID_WEIGHTS", "casia-webface")
    assert main(["gallery", "import", str(facecom_dir), "--batch", "4"]) == 0
    assert "enrolled 7 faces; 0 already there" in capsys.readouterr().out
    assert main(["gallery", "import", str(facecom_dir)]) == 0  # a rerun stores nothing twice
    assert "enrolled 0 faces; 7 already there" in capsys.readouterr().out
    with TestClient(create_app(settings(tmp_path))) as c:
        assert c.get("/persons").json()["total"] == 6
        assert c.get("/persons/person_0").json()["n_faces"] == 2
        r = identify(c, (facecom_dir / "person_3" / "distortion" / "person_3_0001_blurred.jpg").read_bytes())
        assert r.json()["faces"][0]["match"]["person_id"] == "person_3"


def test_a_method_a_path_does_not_take_gets_405_naming_every_method_it_does(client):
    r = client.options("/persons/ada")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD", "DELETE"}
    assert client.put("/identify").headers["allow"] == "POST"


def test_every_answer_carries_the_security_headers(client):
    for r in (client.get("/healthz"), client.get("/persons/nobody"), client.post("/identify")):
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"] and r.headers["referrer-policy"] == "no-referrer"


def test_the_document_says_what_forms_and_embeddings_may_hold(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    identify = schemas["Body_identify_identify_post"]["properties"]
    assert identify["max_faces"] == {"type": "integer", "maximum": 100.0, "minimum": 1.0, "title": "Max Faces"}  # no null: forms cannot send one
    assert identify["image"]["minLength"] == 1
    assert schemas["Body_enroll_enroll_post"]["properties"]["images"]["items"]["minLength"] == 1
    embedding = schemas["EmbeddingQuery"]["properties"]["embedding"]
    assert embedding["not"] == {"items": {"const": 0}} and embedding["items"]["anyOf"][0] == {"const": 0}


def test_every_embedding_the_schema_admits_is_answered_and_the_rest_are_422(client):
    tiny = [1e-30] + [0.0] * 511  # the smallest the schema admits: it still has a direction
    r = client.post("/identify/embedding", json={"embedding": tiny})
    assert r.status_code == 200 and r.json()["match"] is None
    r = client.post("/identify/embedding", json={"embedding": [0.0] * 512})
    assert r.status_code == 422 and "all zeros" in json.dumps(r.json())


def test_no_route_resolves_a_dependency_in_a_worker_thread(tmp_path):
    """FastAPI runs a plain-function dependency in a worker thread: a thread hop per dependency
    per request, for what is an attribute read. The routes' dependencies are coroutines."""
    import inspect

    def calls(dependant):
        for dep in dependant.dependencies:
            yield dep.call
            yield from calls(dep)

    def routes(app):  # included routers hold their routes with the router's own dependencies added
        for route in app.routes:
            if hasattr(route, "effective_route_contexts"):
                yield from route.effective_route_contexts()
            elif hasattr(route, "dependant"):
                yield route

    found = [(route.path, call) for route in routes(create_app(settings(tmp_path))) for call in calls(route.dependant)]
    plain = {f"{path}: {getattr(call, '__name__', type(call).__name__)}" for path, call in found
             if not (inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__))}
    assert len({path for path, _ in found}) >= 20  # every route was seen
    assert not plain, sorted(plain)
