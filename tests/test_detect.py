"""/detect: every face with its box, landmarks and quality in the photo's own (upright) pixels,
without the gallery."""

from __future__ import annotations

import base64
import io

from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from tests.conftest import GROUP, jpeg, settings

ORIENTATION = 0x0112  # the EXIF tag


def detect(client, data: bytes, name: str = "q.jpg", **form):
    return client.post("/detect", files={"image": (name, data, "image/jpeg")}, data=form)


def sideways(photo: Image.Image) -> bytes:
    """The photo stored a quarter turn to the left, with the EXIF orientation (6) that shows it upright."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    buf = io.BytesIO()
    photo.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    return buf.getvalue()


def test_every_face_of_a_group_with_its_landmarks(client):
    r = detect(client, GROUP.read_bytes(), "group.jpg")
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    areas = [(f["box"][2] - f["box"][0]) * (f["box"][3] - f["box"][1]) for f in faces]
    assert len(faces) == 6 and areas == sorted(areas, reverse=True)
    for face in faces:
        x1, y1, x2, y2 = face["box"]
        marks = face["landmarks"]
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in marks.values())
        assert marks["left_eye"][0] < marks["right_eye"][0] and marks["mouth_left"][0] < marks["mouth_right"][0]
        assert max(marks["left_eye"][1], marks["right_eye"][1]) < marks["nose"][1] < min(marks["mouth_left"][1], marks["mouth_right"][1])
        assert face["quality"]["score"] > 0 and face["crop"] is None
    assert len(detect(client, GROUP.read_bytes(), max_faces="2").json()["faces"]) == 2


def test_landmarks_of_an_exif_rotated_photo_are_in_its_upright_pixels(client, group_faces):
    upright = group_faces[1].resize((320, 320))
    expected = detect(client, jpeg(upright)).json()["faces"][0]
    r = detect(client, sideways(upright), "sideways.jpg")
    assert r.status_code == 200 and r.json()["photo_size"] == [320, 320]
    (face, *_) = r.json()["faces"]
    for name, (x, y) in face["landmarks"].items():  # the same places as in the upright photo, not a quarter turn away
        ex, ey = expected["landmarks"][name]
        assert abs(x - ex) < 6 and abs(y - ey) < 6, name
    marks = face["landmarks"]
    assert marks["left_eye"][0] < marks["right_eye"][0] and marks["nose"][1] > marks["left_eye"][1]


def test_crops_on_request_and_an_empty_answer_for_a_photo_without_faces(client, group_faces):
    (face,) = detect(client, jpeg(group_faces[0]), crops="true").json()["faces"]
    crop = Image.open(io.BytesIO(base64.b64decode(face["crop"])))
    assert crop.size == (160, 160) and crop.format == "PNG"
    r = detect(client, jpeg(Image.new("RGB", (200, 200), (90, 90, 90))))
    assert r.status_code == 200 and r.json()["faces"] == []
    assert detect(client, b"not an image", "x.jpg").status_code == 400


def test_detection_works_while_the_gallery_takes_no_writes(tmp_path, group_faces):
    with TestClient(create_app(settings(tmp_path))):
        pass  # the store is made
    with TestClient(create_app(settings(tmp_path, read_only=True))) as c:
        assert c.get("/readyz").status_code == 503
        assert len(detect(c, jpeg(group_faces[2])).json()["faces"]) == 1
