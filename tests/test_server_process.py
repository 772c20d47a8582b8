"""`faceid serve` as a real uvicorn process, talked to over HTTP on loopback."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, jpeg

FACEID = Path(sys.executable).with_name("faceid")


@pytest.fixture()
def server(tmp_path):
    port = free_port()
    env = os.environ | {"FACEID_DATA_DIR": str(tmp_path / "gallery"), "FACEID_WEIGHTS": "casia-webface", "FACEID_DEVICE": "cpu"}
    proc = subprocess.Popen([str(FACEID), "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited early:\n{proc.stdout.read()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("server not ready within 120 s")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_enrol_and_identify_over_http(server, group_faces):
    with httpx.Client(base_url=server, timeout=60) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        r = http.post("/enroll", data={"person_id": "p4", "name": "Four"},
                      files=[("images", ("p4.jpg", jpeg(group_faces[4]), "image/jpeg"))])
        assert r.status_code == 200, r.text
        r = http.post("/identify", files={"image": ("q.jpg", jpeg(group_faces[4].rotate(5)), "image/jpeg")})
        assert r.status_code == 200 and r.json()["faces"][0]["match"]["person_id"] == "p4"
        assert http.post("/identify", files={"image": ("x.jpg", b"nope", "image/jpeg")}).status_code == 400
        assert http.get("/readyz").json()["faces"] == 1
        assert "faceid_requests_total" in http.get("/metrics").text
