"""Collections: independent galleries in one service, on both stores; and API keys scoped to a
collection and a role."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from app.gallery.store import collection_folder
from app.main import create_app
from tests.conftest import enroll, identify, jpeg, settings


def within(name: str, key: str | None = None) -> dict[str, str]:
    return {"X-Collection": name} | ({"X-API-Key": key} if key else {})


def test_two_collections_with_the_same_person_id_never_see_each_others_faces(client, group_faces):
    for name in ("alpha", "beta"):
        r = client.post("/collections", json={"name": name})
        assert r.status_code == 201 and r.json()["name"] == name and r.json()["faces"] == 0
    assert enroll(client, "p", [group_faces[0]], headers=within("alpha")).status_code == 200
    assert enroll(client, "p", [group_faces[1]], headers=within("beta")).status_code == 200
    (face,) = identify(client, jpeg(group_faces[0]), headers=within("alpha")).json()["faces"]
    assert face["match"]["person_id"] == "p"
    (face,) = identify(client, jpeg(group_faces[0]), headers=within("beta")).json()["faces"]
    assert face["match"] is None and face["photo_match"] is None  # beta's "p" is someone else; alpha's photo is not there
    (face,) = identify(client, jpeg(group_faces[1]), headers=within("beta")).json()["faces"]
    assert face["match"]["person_id"] == "p"
    assert client.get("/persons").json()["total"] == 0  # the default collection holds neither
    assert client.get("/persons/p/faces", headers=within("beta")).json()["total"] == 1
    assert client.get("/collections/alpha").json()["persons"] == 1
    assert [c["name"] for c in client.get("/collections").json()] == ["default", "alpha", "beta"]


def test_a_collection_is_named_created_once_and_deleted_for_good(client, group_faces, tmp_path):
    assert client.get("/persons", headers=within("nowhere")).status_code == 404
    assert client.get("/persons", headers=within("Not A Name")).status_code == 422
    assert client.post("/collections", json={"name": "alpha"}).status_code == 201
    assert client.post("/collections", json={"name": "alpha"}).status_code == 409
    assert client.post("/collections", json={"name": "default"}).status_code == 409
    assert client.delete("/collections/default").status_code == 409
    assert enroll(client, "p", [group_faces[0]], headers=within("alpha")).status_code == 200
    assert client.delete("/collections/alpha").status_code == 204
    assert client.get("/persons", headers=within("alpha")).status_code == 404
    assert not collection_folder(tmp_path / "gallery", "alpha").exists()
    assert client.post("/collections", json={"name": "alpha"}).json()["faces"] == 0  # a new one: nothing of the old
    assert client.get("/readyz").json()["behind"] == 0  # the registry is not the default collection's data: no rebuild


def test_a_collection_keeps_its_own_thresholds_and_outlives_a_restart(tmp_path, store, group_faces):
    with TestClient(create_app(settings(tmp_path, **store))) as c:
        assert c.post("/collections", json={"name": "lenient", "threshold": -1.0}).status_code == 201
        enroll(c, "p0", [group_faces[0]], headers=within("lenient"))
        enroll(c, "p0", [group_faces[0]])
    with TestClient(create_app(settings(tmp_path, **store))) as c:
        stranger = jpeg(group_faces[5])
        assert identify(c, stranger, headers=within("lenient")).json()["faces"][0]["match"]["person_id"] == "p0"  # -1: anyone is named
        assert identify(c, stranger).json()["faces"][0]["match"] is None
        assert c.get("/collections/lenient").json()["threshold"] == -1.0 and c.get("/readyz", headers=within("lenient")).status_code == 200


KEYS = {"root": "r" * 20, "enrol_a": "e" * 20, "look_a": "l" * 20, "admin_a": "a" * 20}


@pytest.fixture()
def keyed(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("# id role collection key\n"
                    f"root admin * sha256:{hashlib.sha256(KEYS['root'].encode()).hexdigest()}\n"
                    f"enrol_a enrol alpha {KEYS['enrol_a']}\n"
                    f"look_a identify alpha {KEYS['look_a']}\n"
                    f"admin_a admin alpha {KEYS['admin_a']}\n")
    with TestClient(create_app(settings(tmp_path, api_keys_file=keys))) as c:
        for name in ("alpha", "beta"):
            assert c.post("/collections", json={"name": name}, headers={"X-API-Key": KEYS["root"]}).status_code == 201
        yield c


def test_keys_are_scoped_to_a_collection_and_a_role(keyed, group_faces):
    photo = jpeg(group_faces[0])
    assert enroll(keyed, "p", [group_faces[0]], headers=within("alpha", KEYS["enrol_a"])).status_code == 200
    r = enroll(keyed, "p", [group_faces[0]], headers=within("beta", KEYS["enrol_a"]))
    assert r.status_code == 403 and "collection 'beta'" in r.json()["detail"] and KEYS["enrol_a"] not in r.text
    assert enroll(keyed, "q", [group_faces[1]], headers=within("alpha", KEYS["look_a"])).status_code == 403  # identify may not enrol
    assert keyed.delete("/persons/p", headers=within("alpha", KEYS["look_a"])).status_code == 403
    assert identify(keyed, photo, headers=within("alpha", KEYS["look_a"])).json()["faces"][0]["match"]["person_id"] == "p"
    assert identify(keyed, photo, headers=within("beta", KEYS["look_a"])).status_code == 403
    assert identify(keyed, photo, headers={"X-API-Key": KEYS["look_a"]}).status_code == 403  # the default collection is another
    assert identify(keyed, photo, headers=within("alpha", "x" * 20)).status_code == 401
    assert identify(keyed, photo, headers=within("alpha")).status_code == 401


def test_collections_are_made_by_an_admin_of_every_collection_and_each_key_sees_its_own(keyed):
    assert keyed.post("/collections", json={"name": "gamma"}, headers={"X-API-Key": KEYS["admin_a"]}).status_code == 403
    assert keyed.delete("/collections/beta", headers={"X-API-Key": KEYS["admin_a"]}).status_code == 403
    assert keyed.get("/collections/beta", headers={"X-API-Key": KEYS["look_a"]}).status_code == 403
    assert [c["name"] for c in keyed.get("/collections", headers={"X-API-Key": KEYS["look_a"]}).json()] == ["alpha"]
    assert len(keyed.get("/collections", headers={"X-API-Key": KEYS["root"]}).json()) == 3
    assert keyed.delete("/collections/alpha", headers={"X-API-Key": KEYS["admin_a"]}).status_code == 204  # its own


@pytest.mark.parametrize(("line", "said"), [
    ("only three fields", "expected"),
    ("k1 superuser * " + "s" * 20, "role must be one of"),
    ("k1 admin Bad " + "s" * 20, "collection must be"),
    ("k1 admin * short", "at least 16"),
])
def test_a_bad_keys_file_is_one_line_naming_the_file_and_line_never_the_key(tmp_path, monkeypatch, capsys, line, said):
    from faceid.cli import main

    keys = tmp_path / "keys"
    keys.write_text("# a comment\n" + line + "\n")
    monkeypatch.setenv("FACEID_DATA_DIR", str(tmp_path / "gallery"))
    monkeypatch.setenv("FACEID_API_KEYS_FILE", str(keys))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{keys}:2" in err and said in err and ("s" * 20) not in err
