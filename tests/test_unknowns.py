"""The unknown-faces log: unknown faces kept, grouped into clusters, a cluster enrolled as a person
("seen before as unknown"), discarded, erased with the person, purged after its own period."""

from __future__ import annotations

import io
import time
from datetime import timedelta

from fastapi.testclient import TestClient
from PIL import Image, ImageFilter

from app.main import create_app
from tests.conftest import enroll, identify, jpeg, settings
from tests.test_retention import Clock, until


def sightings(photo: Image.Image) -> list[bytes]:
    """The same stranger seen three times, a little differently each time."""
    return [jpeg(photo), jpeg(photo.filter(ImageFilter.GaussianBlur(1))), jpeg(photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT))]


def test_unknown_faces_are_clustered_and_a_cluster_enrolled_as_a_person(tmp_path, store, group_faces):
    with TestClient(create_app(settings(tmp_path, unknowns=True, **store))) as c:
        enroll(c, "p0", [group_faces[0]])
        for photo in sightings(group_faces[3]) + [jpeg(group_faces[4])] + [jpeg(group_faces[0])]:  # p0 is named: not kept
            assert identify(c, photo).status_code == 200
        page = c.get("/unknowns").json()
        assert [cl["count"] for cl in page["items"]] == [3, 1] and page["total"] == 2
        three = page["items"][0]
        crop = Image.open(io.BytesIO(c.get(f"/unknowns/faces/{three['faces'][0]}/crop").content))
        assert crop.size == (160, 160)
        r = c.post(f"/unknowns/{three['cluster']}/enroll", data={"person_id": "p3", "name": "Three", "consent": "asked at the desk"})
        assert r.status_code == 200, r.text
        assert r.json()["faces_added"] == 3 and len(r.json()["seen_before_as_unknown"]) == 3 and r.json()["person"]["consent"] == "asked at the desk"
        assert identify(c, jpeg(group_faces[3])).json()["faces"][0]["match"]["person_id"] == "p3"
        assert [cl["count"] for cl in c.get("/unknowns").json()["items"]] == [1]  # the enrolled cluster left the log's list
        assert c.post(f"/unknowns/{three['cluster']}/enroll", data={"person_id": "again"}).status_code == 404
        r = enroll(c, "p4", [group_faces[4].rotate(3)])  # an ordinary enrolment says it was seen before too
        assert len(r.json()["seen_before_as_unknown"]) == 1
        receipt = c.delete("/persons/p3").json()
        assert receipt["unknowns"] == 3 and receipt["faces"] == 3
        (one,) = c.get("/unknowns").json()["items"]
        assert c.delete(f"/unknowns/{one['cluster']}").status_code == 204 and c.get("/unknowns").json()["total"] == 0
        actions = [(e["action"], e["persons"]) for e in c.get("/audit").json()["items"]]
        assert ("enrol", ["p3"]) in actions and ("discard_unknowns", []) in actions


def test_the_log_is_off_by_default_and_keeps_faces_for_its_own_period(tmp_path, group_faces):
    with TestClient(create_app(settings(tmp_path))) as c:
        identify(c, jpeg(group_faces[3]))
        assert c.get("/unknowns").status_code == 404
    clock = Clock()
    with TestClient(create_app(settings(tmp_path, unknowns=True, retention_check_s=0.05), clock=clock)) as c:
        identify(c, jpeg(group_faces[3]))
        assert c.get("/unknowns").json()["total"] == 1
        time.sleep(0.3)
        assert c.get("/unknowns").json()["total"] == 1  # not yet
        clock.now += timedelta(days=8)
        until(lambda: c.get("/unknowns").json()["total"] == 0)
        assert "purge_unknowns" in [e["action"] for e in c.get("/audit").json()["items"]]
