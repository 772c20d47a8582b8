"""The audit log: every enrolment, deletion, identification, verification, export and key use,
with the key's id, the collection, the persons and the outcome; append-only, in the same store
(both stores), and in step with the gallery across a kill -9."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient

from app.gallery.records import AuditEvent, AuditQuery
from app.gallery.store import open_store
from app.main import create_app
from tests.conftest import enroll, identify, jpeg, sealer, settings
from tests.test_server_process import Server

KEYS = {"admin": "a" * 20, "hr": "h" * 20, "desk": "d" * 20}


@pytest.fixture()
def keyed(tmp_path, store):
    keys = tmp_path / "keys"
    keys.write_text("admin admin * " + KEYS["admin"] + "\nhr enrol default " + KEYS["hr"] + "\ndesk identify default " + KEYS["desk"] + "\n")
    with TestClient(create_app(settings(tmp_path, api_keys_file=keys, **store))) as c:
        yield c


def as_(key: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[key]}


def audit(client, **params) -> list[dict]:
    r = client.get("/audit", params=params, headers=as_("admin"))
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_who_enrolled_named_and_erased_a_person_and_what_was_refused(keyed, group_faces):
    photo = group_faces[0]
    r = keyed.post("/enroll", data={"person_id": "ada", "consent": "form 2026-117, signed"}, headers=as_("hr"),
                   files=[("images", ("ada.jpg", jpeg(photo), "image/jpeg"))])
    assert r.status_code == 200 and r.json()["person"]["consent"] == "form 2026-117, signed"
    assert identify(keyed, jpeg(photo), headers=as_("desk")).json()["faces"][0]["match"]["person_id"] == "ada"
    assert enroll(keyed, "bob", [group_faces[1]], headers=as_("desk")).status_code == 403  # recorded too (refused unread: no person)
    assert identify(keyed, jpeg(photo), headers={"X-API-Key": "w" * 20}).status_code == 401
    assert keyed.delete("/persons/ada", headers=as_("hr")).status_code == 200
    trail = [(e["action"], e["key_id"], e["outcome"], e["persons"]) for e in audit(keyed, person="ada")]
    assert trail == [("enrol", "hr", "ok", ["ada"]), ("identify", "desk", "ok", ["ada"]), ("delete", "hr", "ok", ["ada"])]
    entries = audit(keyed)
    enrol_entry = next(e for e in entries if e["action"] == "enrol" and e["outcome"] == "ok")
    assert "faces 1" in enrol_entry["detail"] and "consent" in enrol_entry["detail"] and enrol_entry["collection"] == "default"
    assert ("enrol", "desk", "403", []) in [(e["action"], e["key_id"], e["outcome"], e["persons"]) for e in entries]
    assert ("identify", "(unknown key)", "401") in [(e["action"], e["key_id"], e["outcome"]) for e in entries]
    assert next(e for e in entries if e["action"] == "delete")["detail"] == "faces 1, crops 1, photos 1"
    assert [e["action"] for e in audit(keyed, key="desk", action="identify")] == ["identify"]
    assert all(len(e["detail"] or "") < 200 and all(len(p) < 129 for p in e["persons"]) for e in entries)  # no image, no embedding
    assert keyed.get("/audit", headers=as_("desk")).status_code == 403
    assert audit(keyed, since="2999-01-01") == []


def test_the_audit_log_takes_no_update_and_no_delete(tmp_path, store):
    """Not even from a connection of one's own: the database refuses it."""
    import sqlite3

    import psycopg

    location = store.get("store", tmp_path)
    gallery_store = open_store(location)
    gallery_store.append_audit([AuditEvent("identify", "default", "k")])
    for statement in ("DELETE FROM audit", "UPDATE audit SET key_id = 'someone else'"):
        with pytest.raises((sqlite3.DatabaseError, psycopg.Error), match="append-only"):
            if "store" in store:
                with psycopg.connect(store["store"]) as conn:
                    conn.execute(statement)
            else:
                with sqlite3.connect(tmp_path / "gallery.sqlite3") as conn:
                    conn.execute(statement)
    entries, total = gallery_store.audit_page(AuditQuery(), 0, 10)
    assert total == 1 and entries[0].event.key_id == "k"
    gallery_store.close()


def test_a_kill_mid_storm_leaves_the_audit_and_the_gallery_in_step(tmp_path, group_faces):
    server = Server(tmp_path / "gallery").start()
    acknowledged: list[str] = []
    lock, stop = threading.Lock(), threading.Event()

    def storm(client: int) -> None:
        for i in range(1000):
            if stop.is_set():
                return
            person = f"c{client}-{i}"
            try:
                r = httpx.post(f"{server.base}/enroll", data={"person_id": person, "confirm_copy": "true"},
                               files=[("images", (f"{person}.jpg", jpeg(group_faces[(client + i) % 6]), "image/jpeg"))], timeout=30)
            except httpx.TransportError:
                continue
            if r.status_code == 200:
                with lock:
                    acknowledged.append(person)

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(storm, c) for c in range(3)]
        deadline = threading.Event()
        while len(acknowledged) < 10 and not deadline.wait(0.05):
            pass
        server.kill()  # kill -9, mid-storm
        stop.set()
        for f in futures:
            f.result()
    store = open_store(tmp_path / "gallery", sealer=sealer())
    persons = {p[0] for p in store.all_persons()}
    entries, _ = store.audit_page(AuditQuery(action="enrol"), 0, 100_000)
    written = [e.event.persons[0] for e in entries if e.event.outcome == "ok"]
    assert set(acknowledged) <= persons  # nothing acknowledged was lost
    assert sorted(written) == sorted(persons) and len(written) == len(set(written))  # one row per write, no row without one
    store.close()


def test_the_command_reads_the_audit_log(keyed, group_faces, tmp_path, monkeypatch, capsys, store):
    from faceid.cli import main

    if store:
        pytest.skip("the command reads FACEID_STORE's store as the service does; the SQLite case says what it prints")
    enroll(keyed, "cy", [group_faces[3]], headers=as_("hr"))
    keyed.get("/audit", headers=as_("admin"))  # flushes nothing it need not: the enrolment is in the store already
    monkeypatch.setenv("FACEID_DATA_DIR", str(tmp_path / "gallery"))
    assert main(["audit", "--person", "cy"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    at, key, collection, action, persons, outcome, detail = line.split("\t")
    assert (key, collection, action, persons, outcome) == ("hr", "default", "enrol", "cy", "ok") and at.startswith("20")
