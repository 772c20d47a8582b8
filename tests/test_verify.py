"""/verify: two photos, or a photo and an enrolled person, one person or not, by which evidence."""

from __future__ import annotations

from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from app.main import create_app
from tests.conftest import enroll, jpeg, settings
from tests.test_photo_evidence import blown_out


def verify(client, a: bytes, b: bytes | None = None, **form):
    files = [("image", ("a.jpg", a, "image/jpeg"))] + ([("image2", ("b.jpg", b, "image/jpeg"))] if b is not None else [])
    return client.post("/verify", files=files, data=form)


def another_photo(photo: Image.Image) -> Image.Image:
    """The same face seen otherwise: mirrored, turned a little, softer."""
    return photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(6).filter(ImageFilter.GaussianBlur(1.2))


def test_one_person_is_the_same_and_two_people_are_not(client, group_faces):
    r = verify(client, jpeg(group_faces[2]), jpeg(another_photo(group_faces[2])))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["same"] and "face" in body["evidence"] and body["similarity"] >= body["threshold"]
    assert [f["photo"] for f in body["faces"]] == ["a.jpg", "b.jpg"] and all(f["box"] for f in body["faces"])
    r = verify(client, jpeg(group_faces[2]), jpeg(group_faces[3])).json()
    assert not r["same"] and r["evidence"] == [] and r["similarity"] < r["threshold"]
    assert verify(client, jpeg(group_faces[2]), jpeg(group_faces[3]), threshold="-1").json()["evidence"] == ["face"]  # the caller's own threshold


def test_a_photo_against_an_enrolled_person(client, group_faces):
    assert enroll(client, "p4", [group_faces[4]], name="Four").status_code == 200
    r = verify(client, jpeg(another_photo(group_faces[4])), person_id="p4").json()
    assert r["same"] and "face" in r["evidence"] and r["person"]["person_id"] == "p4" and r["person"]["name"] == "Four"
    r = verify(client, jpeg(group_faces[1]), person_id="p4").json()
    assert not r["same"] and r["photo_match"] is None
    assert verify(client, jpeg(group_faces[1]), person_id="nobody").status_code == 404


def test_against_a_person_with_two_photos_their_template_counts(client, group_faces):
    first, second = group_faces[4], another_photo(group_faces[4])
    query = group_faces[4].rotate(-8).filter(ImageFilter.GaussianBlur(2))
    assert enroll(client, "p4", [first, second]).status_code == 200
    c1, c2, c12 = (verify(client, jpeg(a), jpeg(b)).json()["similarity"] for a, b in ((query, first), (query, second), (first, second)))
    template = (c1 + c2) / (2 + 2 * c12) ** 0.5  # the query against the mean of the two faces, made unit
    r = verify(client, jpeg(query), person_id="p4").json()
    assert abs(r["similarity"] - template) < 2e-3 and abs(template - max(c1, c2)) > 1e-2


def test_a_face_gone_to_glare_is_not_verified_by_its_looks_but_a_copy_is_by_photo_evidence(client, group_faces):
    glared = blown_out(group_faces[0])
    r = verify(client, jpeg(glared), jpeg(group_faces[0]), threshold="-1").json()  # any cosine would do: the looks are not used
    assert r["same"] and r["evidence"] == ["photo"] and r["photo_similarity"] >= r["photo_threshold"]
    assert "over_exposed" in r["faces"][0]["quality"]["reasons"]
    assert enroll(client, "p0", [group_faces[0]]).status_code == 200
    r = verify(client, jpeg(glared), person_id="p0").json()
    assert r["same"] and r["evidence"] == ["photo"] and r["photo_match"]["person_id"] == "p0"


def test_the_request_says_one_comparison_and_a_photo_without_a_face_is_422(client, group_faces):
    a = jpeg(group_faces[0])
    assert verify(client, a).status_code == 422  # neither a second photo nor a person
    r = verify(client, a, jpeg(group_faces[1]), person_id="p0")
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    r = verify(client, a, jpeg(Image.new("RGB", (200, 200), (90, 90, 90))))
    assert r.status_code == 422 and "b.jpg" in r.json()["detail"] and "no face" in r.json()["detail"]


def test_without_photo_evidence_the_answer_is_the_face_evidence_alone(tmp_path, group_faces):
    with TestClient(create_app(settings(tmp_path, photo_evidence=False))) as c:
        r = verify(c, jpeg(group_faces[2]), jpeg(group_faces[2])).json()
        assert r["evidence"] == ["face"] and r["photo_similarity"] is None and r["photo_threshold"] is None
