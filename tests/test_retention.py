"""Retention: after the period, crops and photo evidence go and the embeddings stay (or the
person goes entirely); the service does it by itself, on a clock the test moves, and says so in
the audit log."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import enroll, identify, jpeg, settings


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def until(check, bound: float = 20.0):
    deadline = time.monotonic() + bound
    while not (value := check()):
        assert time.monotonic() < deadline, "not within the bound"
        time.sleep(0.05)
    return value


def test_after_the_period_only_the_embeddings_remain(tmp_path, store, group_faces):
    clock = Clock()
    with TestClient(create_app(settings(tmp_path, retention_days=30, retention_check_s=0.05, **store), clock=clock)) as c:
        assert enroll(c, "p0", [group_faces[0]], name="Zero").status_code == 200
        time.sleep(0.3)  # rounds run at the time they should: nothing is due yet
        (face,) = c.get("/persons/p0/faces").json()["items"]
        assert face["has_crop"] and face["photo_evidence"]
        clock.now += timedelta(days=31)
        face = until(lambda: (f := c.get("/persons/p0/faces").json()["items"][0]) and not f["has_crop"] and f)
        assert not face["photo_evidence"]
        assert c.get(f"/persons/p0/faces/{face['face_id']}/crop").status_code == 404
        (answer,) = identify(c, jpeg(group_faces[0])).json()["faces"]
        assert answer["match"]["person_id"] == "p0" and answer["evidence"] == ["face"] and answer["photo_match"] is None
        (entry,) = [e for e in c.get("/audit").json()["items"] if e["action"] == "purge"]
        assert entry["key_id"] == "(retention)" and "faces 1" in entry["detail"] and entry["persons"] == []


def test_with_expiry_the_person_goes_entirely(tmp_path, group_faces):
    clock = Clock()
    with TestClient(create_app(settings(tmp_path, retention_days=30, retention_expire_persons=True, retention_check_s=0.05), clock=clock)) as c:
        assert enroll(c, "old", [group_faces[0]]).status_code == 200
        clock.now += timedelta(days=29)
        time.sleep(0.5)  # several rounds at 29 days: not yet
        assert c.get("/persons/old").status_code == 200
        clock.now += timedelta(days=2)
        until(lambda: c.get("/persons/old").status_code == 404)
        (entry,) = [e for e in c.get("/audit").json()["items"] if e["action"] == "expire" and e["persons"]]
        assert entry["persons"] == ["old"] and "persons expired 1" in entry["detail"]
