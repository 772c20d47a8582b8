"""Templates encrypted at rest: with a key, no embedding, crop or thumbnail is on disk in the
clear (the saved snapshot included) while everything works; a missing or wrong key is one line at
start; a key is rotated in batches, and the rotation resumes after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import enroll, identify, jpeg, settings
from tests.test_erasure import found_in, traces

KEY_A, KEY_B = "a1" * 32, "b2" * 32


def key_file(tmp_path, *keys: str):
    path = tmp_path / f"keys-{len(list(tmp_path.glob('keys-*')))}"
    path.write_text("# the first seals\n" + "\n".join(keys) + "\n")
    return path


def test_with_a_key_nothing_is_on_disk_in_the_clear_and_everything_works(tmp_path, store, group_faces):
    keys = key_file(tmp_path, KEY_A)
    with TestClient(create_app(settings(tmp_path, encryption_key_file=keys, **store))) as c:
        assert enroll(c, "p0", [group_faces[0]], name="Zero").status_code == 200
        assert enroll(c, "p1", [group_faces[1]]).status_code == 200
        (face,) = identify(c, jpeg(group_faces[0])).json()["faces"]
        assert face["match"]["person_id"] == "p0" and face["evidence"] == ["face", "photo"]
        pieces = traces(c, "p0")  # the export opens what it reads: the clear values
        face_id = c.get("/persons/p0/faces").json()["items"][0]["face_id"]
        assert c.get(f"/persons/p0/faces/{face_id}/crop").content.startswith(b"\x89PNG")  # opened for the answer
    assert found_in(tmp_path / "gallery", pieces) == {}  # the store and the sealed snapshot, after a shutdown
    with TestClient(create_app(settings(tmp_path, encryption_key_file=keys, **store))) as c:  # the sealed snapshot loads
        assert identify(c, jpeg(group_faces[1])).json()["faces"][0]["match"]["person_id"] == "p1"


def serve_error(tmp_path, monkeypatch, capsys, keys) -> str:
    from faceid.cli import main

    monkeypatch.setenv("FACEID_DATA_DIR", str(tmp_path / "gallery"))
    if keys is None:
        monkeypatch.delenv("FACEID_ENCRYPTION_KEY_FILE", raising=False)
    else:
        monkeypatch.setenv("FACEID_ENCRYPTION_KEY_FILE", str(keys))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_a_missing_or_wrong_key_is_one_line_at_start_never_an_empty_gallery(tmp_path, group_faces, monkeypatch, capsys):
    with TestClient(create_app(settings(tmp_path, encryption_key_file=key_file(tmp_path, KEY_A)))) as c:
        enroll(c, "p0", [group_faces[0]])
    from app.gallery.sealing import key_id

    needed = key_id(bytes.fromhex(KEY_A))
    missing = serve_error(tmp_path, monkeypatch, capsys, None)
    assert needed in missing and "FACEID_ENCRYPTION_KEY_FILE" in missing
    assert needed in serve_error(tmp_path, monkeypatch, capsys, key_file(tmp_path, KEY_B))
    bad = tmp_path / "bad-keys"
    bad.write_text("not a key\n")
    assert f"{bad}:1" in serve_error(tmp_path, monkeypatch, capsys, bad)


def test_a_key_is_rotated_in_batches_and_the_rotation_resumes_after_a_kill(tmp_path, group_faces, monkeypatch):
    with TestClient(create_app(settings(tmp_path))) as c:  # enrolled before encryption was on
        for i in range(6):
            enroll(c, f"p{i}", [group_faces[i]])
        pieces = traces(c, "p3")
    assert "embedding" in found_in(tmp_path / "gallery", pieces)
    env = os.environ | {"FACEID_DATA_DIR": str(tmp_path / "gallery"), "FACEID_WEIGHTS": "casia-webface",
                        "FACEID_ENCRYPTION_KEY_FILE": str(key_file(tmp_path, KEY_A))}
    rotate = [sys.executable, "-m", "faceid.cli", "gallery", "rotate-key", "--batch", "1"]
    subprocess.run(rotate, env=env, check=True, capture_output=True, timeout=120)  # the plain gallery, sealed with A
    assert found_in(tmp_path / "gallery", pieces) == {}  # the store sealed, the clear snapshot removed
    env["FACEID_ENCRYPTION_KEY_FILE"] = str(key_file(tmp_path, KEY_B, KEY_A))  # B first: B seals, A still opens
    proc = subprocess.Popen(rotate, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("batch 1:")
    proc.send_signal(signal.SIGKILL)  # kill -9 mid-rotation
    proc.wait(30)
    done = subprocess.run(rotate, env=env, check=True, capture_output=True, text=True, timeout=120).stdout
    assert "resealed with key" in done
    only_b = key_file(tmp_path, KEY_B)
    with TestClient(create_app(settings(tmp_path, encryption_key_file=only_b))) as c:  # A is gone: every row opens with B alone
        assert [identify(c, jpeg(group_faces[i])).json()["faces"][0]["match"]["person_id"] for i in range(6)] == [f"p{i}" for i in range(6)]
        assert c.get("/persons/p3/faces").json()["items"][0]["has_crop"]
