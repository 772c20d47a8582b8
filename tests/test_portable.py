"""A gallery in one file: export → import into an empty gallery names every person by the same
photos as before, on both stores; another model's export is re-embedded from its crops, or
refused without them."""

from __future__ import annotations

import gzip
import json

from PIL import Image, ImageFilter

from tests.conftest import enroll, identify, jpeg

PEOPLE = {"ada": ("Ada", 0), "bob": ("Bob", 1), "cy": (None, 3), "di": ("Di", 5)}


def enrol_people(client, group_faces) -> None:
    for person_id, (name, face) in PEOPLE.items():
        photos = [group_faces[face], group_faces[face].transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
        assert enroll(client, person_id, photos, name=name).status_code == 200


def named(client, photo: bytes, collection: str) -> list[str | None]:
    faces = identify(client, photo, headers={"X-Collection": collection}).json()["faces"]
    return [f["match"] and f["match"]["person_id"] for f in faces]


def rewritten(export: bytes, model_id: str, crops: bool = True) -> bytes:
    """The export as another model would have made it (its model id), with or without crops."""
    lines = [json.loads(line) for line in gzip.decompress(export).splitlines()]
    header = lines[0]
    header["models"] = {model_id: sum(header["models"].values())}
    header["crops"] = crops
    for line in lines[1:]:
        if "face" in line:
            line["face"]["model_id"] = model_id
            if not crops:
                line["face"]["crop"] = None
    return gzip.compress(b"\n".join(json.dumps(line).encode() for line in lines) + b"\n")


def test_export_then_import_into_an_empty_gallery_names_everyone_by_the_same_photos(client, group_faces):
    enrol_people(client, group_faces)
    r = client.get("/export", params={"crops": "true"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    export = r.content
    assert client.post("/collections", json={"name": "restored"}).status_code == 201
    r = client.post("/import", files={"file": ("g.jsonl.gz", export, "application/gzip")}, headers={"X-Collection": "restored"})
    assert r.status_code == 200, r.text
    assert (r.json()["persons"], r.json()["faces"], r.json()["reembedded"]) == (4, 8, 0)
    queries = [jpeg(group_faces[i].filter(ImageFilter.GaussianBlur(1.5))) for i in range(6)] + [jpeg(group_faces[0])]
    assert [named(client, q, "restored") for q in queries] == [named(client, q, "default") for q in queries]
    assert [named(client, jpeg(group_faces[PEOPLE[p][1]]), "restored") for p in PEOPLE] == [[p] for p in PEOPLE]
    for person_id in PEOPLE:
        before, after = client.get(f"/persons/{person_id}").json(), client.get(f"/persons/{person_id}", headers={"X-Collection": "restored"}).json()
        assert after == before  # name, faces, created_at
        crops = [client.get(f"/persons/{person_id}/faces/{f['face_id']}/crop", headers=h).content
                 for h in ({}, {"X-Collection": "restored"})
                 for f in client.get(f"/persons/{person_id}/faces", headers=h).json()["items"][:1]]
        assert crops[0] == crops[1]
    copy = jpeg(group_faces[1].filter(ImageFilter.GaussianBlur(3)))  # photo evidence came along too
    faces = identify(client, copy, headers={"X-Collection": "restored"}).json()["faces"]
    assert faces[0]["photo_match"]["person_id"] == "bob"


def test_another_models_export_is_re_embedded_from_its_crops_or_refused_without_them(client, group_faces):
    enrol_people(client, group_faces)
    export = client.get("/export", params={"crops": "true"}).content
    assert client.post("/collections", json={"name": "other"}).status_code == 201
    into_other = {"X-Collection": "other"}
    r = client.post("/import", files={"file": ("g", rewritten(export, "elsewhere@000000000000", crops=False), "application/gzip")}, headers=into_other)
    assert r.status_code == 409 and "elsewhere@000000000000" in r.json()["detail"] and client.get("/readyz").json()["model_id"] in r.json()["detail"]
    assert client.get("/persons", headers=into_other).json()["total"] == 0  # refused before anything was stored
    r = client.post("/import", files={"file": ("g", rewritten(export, "elsewhere@000000000000"), "application/gzip")}, headers=into_other)
    assert r.status_code == 200 and r.json()["reembedded"] == 8
    assert named(client, jpeg(group_faces[5]), "other") == ["di"]
    models = {f["model_id"] for f in client.get("/persons/ada/faces", headers=into_other).json()["items"]}
    assert models == {client.get("/readyz").json()["model_id"]}


def test_what_is_not_an_export_is_400(client):
    for body in (b"not gzip at all", gzip.compress(b"not json\n"), gzip.compress(b'{"format": "something-else"}\n'),
                 gzip.compress(b'{"format": "faceid-gallery", "version": 99}\n')):
        r = client.post("/import", files={"file": ("g", body, "application/gzip")})
        assert r.status_code == 400, (body, r.text)


def test_the_command_line_exports_and_imports_a_collection(tmp_path, group_faces, monkeypatch, capsys):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from faceid.cli import main
    from tests.conftest import settings

    with TestClient(create_app(settings(tmp_path))) as c:
        enrol_people(c, group_faces)
        assert c.post("/collections", json={"name": "copy"}).status_code == 201
    monkeypatch.setenv("FACEID_DATA_DIR", str(tmp_path / "gallery"))
    monkeypatch.setenv("FACEID_WEIGHTS", "casia-webface")
    out = tmp_path / "backup.jsonl.gz"
    assert main(["gallery", "export", str(out)]) == 0 and "exported 4 persons and 8 faces" in capsys.readouterr().out
    assert main(["gallery", "import", str(out), "--collection", "copy"]) == 0
    assert "imported 4 persons and 8 faces" in capsys.readouterr().out
    with TestClient(create_app(settings(tmp_path))) as c:
        assert named(c, jpeg(group_faces[3]), "copy") == ["cy"]
    assert main(["gallery", "import", str(tmp_path / "nothing-here")]) == 2
    assert "nothing-here" in capsys.readouterr().err
