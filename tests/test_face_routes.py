"""A person's stored faces, and each face's crop: what a gallery browser shows."""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import enroll


def test_a_persons_faces_are_listed_with_their_crops(client, group_faces):
    assert enroll(client, "ada", group_faces[:2], name="Ada").status_code == 200
    assert enroll(client, "bob", [group_faces[2]]).status_code == 200
    page = client.get("/persons/ada/faces").json()
    assert page["person_id"] == "ada" and page["total"] == 2 and [f["source"] for f in page["items"]] == ["ada_0.jpg", "ada_1.jpg"]
    first = page["items"][0]
    assert first["has_crop"] and first["photo_evidence"] and first["model_id"] and first["created_at"]
    assert client.get("/persons/ada/faces", params={"offset": 1, "limit": 1}).json()["items"][0]["source"] == "ada_1.jpg"
    crop = client.get(f"/persons/ada/faces/{first['face_id']}/crop")
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/png" and crop.headers["cache-control"] == "no-store"
    assert Image.open(io.BytesIO(crop.content)).size == (160, 160)


def test_unknown_people_and_other_peoples_faces_are_404(client, group_faces):
    enroll(client, "ada", [group_faces[0]])
    enroll(client, "bob", [group_faces[1]])
    bobs = client.get("/persons/bob/faces").json()["items"][0]["face_id"]
    assert client.get("/persons/nobody/faces").status_code == 404
    assert client.get(f"/persons/ada/faces/{bobs}/crop").status_code == 404  # bob's face is not ada's
    assert client.get("/persons/ada/faces/999999/crop").status_code == 404
    assert client.get("/persons/ada/faces/0/crop").status_code == 422
    client.delete("/persons/bob")
    assert client.get(f"/persons/bob/faces/{bobs}/crop").status_code == 404
