"""Proven erasure: after a person is deleted, no byte of their embedding, crop or photo thumbnail
is left anywhere in the data folder (the SQLite file, its write-ahead log, the saved index
snapshot), before and after a restart; on PostgreSQL, nowhere in the tables' files once vacuumed
and checkpointed."""

from __future__ import annotations

import base64
import gzip
import json
from pathlib import Path

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import enroll, settings


def traces(client, person_id: str) -> dict[str, bytes]:
    """Distinctive pieces of what the gallery holds of a person, from its own export."""
    lines = [json.loads(line) for line in gzip.decompress(client.get("/export", params={"crops": "true"}).content).splitlines()]
    (face,) = [line["face"] for line in lines if "face" in line and line["face"]["person_id"] == person_id]
    embedding, crop, thumb = (base64.b64decode(face[k] if k != "thumb" else face["photo"]["thumb"]) for k in ("embedding", "crop", "thumb"))
    return {"embedding": embedding[1024:1088], "crop": crop[len(crop) // 2 : len(crop) // 2 + 256], "thumbnail": thumb[2048:2304]}


def found_in(folder: Path, pieces: dict[str, bytes], skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Which pieces appear in which files under `folder`."""
    out: dict[str, list[str]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not any(s in p.parts for s in skip)):
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a running server's scratch file (PostgreSQL's relcache init file) went meanwhile
            continue
        for name, piece in pieces.items():
            if piece in data:
                out.setdefault(name, []).append(str(path.relative_to(folder)))
    return out


def test_a_deleted_person_leaves_no_byte_in_the_data_folder(tmp_path, group_faces):
    folder = tmp_path / "gallery"
    with TestClient(create_app(settings(tmp_path))) as c:
        assert enroll(c, "gone", [group_faces[0]]).status_code == 200
        assert enroll(c, "kept", [group_faces[1]]).status_code == 200
        pieces = traces(c, "gone")
    before = found_in(folder, pieces)  # the scan finds them while they are there (the snapshot saved at shutdown too)
    assert set(before) == {"embedding", "crop", "thumbnail"} and any("index.faiss" in f for f in before["embedding"])
    with TestClient(create_app(settings(tmp_path))) as c:
        r = c.delete("/persons/gone")
        assert r.status_code == 200, r.text
        receipt = r.json()
        assert (receipt["faces"], receipt["crops"], receipt["photos"], receipt["index_entries"]) == (1, 1, 1, 2)
        assert receipt["snapshot_removed"] and "write-ahead log" in receipt["store"] and receipt["erased_at"]
        assert found_in(folder, pieces) == {}
        assert c.get("/persons/kept").status_code == 200
    assert found_in(folder, pieces) == {}  # and after the shutdown's snapshot
    with TestClient(create_app(settings(tmp_path))) as c:
        assert c.get("/persons/gone").status_code == 404 and c.get("/readyz").json()["faces"] == 1
    assert found_in(folder, pieces) == {}  # and after a restart


def test_on_postgresql_the_tables_files_hold_none_of_it_once_vacuumed(tmp_path, postgres, postgres_url, group_faces):
    import psycopg

    with TestClient(create_app(settings(tmp_path, store=postgres_url))) as c:
        assert enroll(c, "gone", [group_faces[0]]).status_code == 200
        assert enroll(c, "kept", [group_faces[1]]).status_code == 200
        pieces = traces(c, "gone")
        with psycopg.connect(postgres.admin, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
            data_dir = Path(conn.execute("SHOW data_directory").fetchone()[0])
        assert {"crop", "thumbnail"} <= set(found_in(data_dir, pieces, skip=("pg_wal",)))  # the embedding is compressed in its row
        receipt = c.delete("/persons/gone").json()
        assert receipt["faces"] == 1 and "vacuumed" in receipt["store"] and "compact" in receipt["store"]
        assert c.get("/persons/gone").status_code == 404
        assert found_in(tmp_path / "gallery", pieces) == {}  # nor the replica's snapshot folder
    with psycopg.connect(postgres_url) as conn:  # the rows are gone, dead ones included
        assert conn.execute("SELECT count(*) FROM faces WHERE person_id = 'gone'").fetchone()[0] == 0

    from app.gallery.store import open_store

    store = open_store(postgres_url)
    assert "VACUUM FULL" in store.compact()  # what the receipt says to run, in a maintenance window
    store.close()
    with psycopg.connect(postgres.admin, autocommit=True) as conn:
        conn.execute("CHECKPOINT")  # what the tables' files hold now, on disk
    assert found_in(data_dir, pieces, skip=("pg_wal",)) == {}
