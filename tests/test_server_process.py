"""`faceid serve` as a real uvicorn process, talked to over HTTP (and raw sockets) on loopback."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import KEY, free_port, jpeg

FACEID = Path(sys.executable).with_name("faceid")


class Server:
    def __init__(self, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"FACEID_DATA_DIR": str(data_dir), "FACEID_WEIGHTS": "casia-webface", "FACEID_DEVICE": "cpu"} | env
        self.log_path = Path(data_dir).parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Server":
        return self.launch().wait_ready()

    def launch(self) -> "Server":
        """Start the process without waiting (several replicas start side by side)."""
        # Its output goes to a file: a pipe nobody reads would stall a chatty server once full.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([str(FACEID), "serve", "--host", "127.0.0.1", "--port", str(self.port)], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT)
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> "Server":
        assert self.proc is not None
        headers = {"X-API-Key": self.env["FACEID_API_KEY"]} if "FACEID_API_KEY" in self.env else {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited early:\n{self.output()}")
            try:
                if httpx.get(f"{self.base}/readyz", timeout=2, headers=headers).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail("server not ready within 120 s")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture()
def serve(tmp_path):
    servers: list[Server] = []

    def start(**env: str) -> Server:
        servers.append(Server(tmp_path / "gallery", **env).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def test_enrol_and_identify_over_http(serve, group_faces):
    server = serve()
    with httpx.Client(base_url=server.base, timeout=60) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        r = http.post("/enroll", data={"person_id": "p4", "name": "Four"},
                      files=[("images", ("p4.jpg", jpeg(group_faces[4]), "image/jpeg"))])
        assert r.status_code == 200, r.text
        r = http.post("/identify", files={"image": ("q.jpg", jpeg(group_faces[4].rotate(5)), "image/jpeg")})
        assert r.status_code == 200 and r.json()["faces"][0]["match"]["person_id"] == "p4"
        assert http.post("/identify", files={"image": ("x.jpg", b"nope", "image/jpeg")}).status_code == 400
        assert http.get("/readyz").json()["faces"] == 1
        assert "faceid_requests_total" in http.get("/metrics").text


def send_chunked(port: int, headers: str, total: int) -> tuple[int, bytes]:
    """Stream up to `total` bytes of a chunked multipart body; return (bytes the server took
    before answering or closing, its answer)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
        sock.sendall(("POST /identify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      f"Content-Type: multipart/form-data; boundary=b\r\n{headers}\r\n").encode())
        sock.sendall(b"%x\r\n%s\r\n" % (len(head), head))
        chunk = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        sock.setblocking(False)
        answer = b""
        while sent < total and not answer:
            try:
                answer = sock.recv(4096)
                break
            except BlockingIOError:
                pass
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                break
        sock.settimeout(10)
        try:
            answer = answer or sock.recv(4096)
        except OSError:
            pass
    return sent, answer


def test_a_stranger_cannot_fill_the_disk_with_a_chunked_body(serve):
    server = serve(FACEID_API_KEY=KEY)
    sent, answer = send_chunked(server.port, "", 300 << 20)
    assert answer.startswith(b"HTTP/1.1 401")
    assert sent < 32 << 20  # 300 MB offered; only what sockets buffer was taken


def test_a_chunked_body_is_cut_off_at_the_limit(serve):
    server = serve(FACEID_MAX_UPLOAD_BYTES="4096", FACEID_MAX_IMAGES_PER_ENROLL="1")
    sent, answer = send_chunked(server.port, "", 300 << 20)
    assert answer.startswith(b"HTTP/1.1 413")
    assert sent < 32 << 20


def test_every_acknowledged_enrolment_survives_kill_9(serve, group_faces):
    acknowledged = []
    for round_ in range(2):
        server = serve()
        with httpx.Client(base_url=server.base, timeout=60) as http:
            for person in acknowledged:  # everything acknowledged before the last kill is there
                assert http.get(f"/persons/{person}").status_code == 200, person
            for i in range(3):
                person = f"r{round_}p{i}"
                r = http.post("/enroll", data={"person_id": person},
                              files=[("images", (f"{person}.jpg", jpeg(group_faces[(round_ * 3 + i) % 6]), "image/jpeg"))])
                assert r.status_code == 200
                acknowledged.append(person)
        server.kill()
    server = serve()
    with httpx.Client(base_url=server.base, timeout=60) as http:
        ready = http.get("/readyz").json()
        assert ready["ready"] and ready["persons"] == len(acknowledged) == 6
        assert all(http.get(f"/persons/{p}").status_code == 200 for p in acknowledged)


def grey16_png(side: int) -> bytes:
    """The issue's reproducer: a blank 16-bit greyscale PNG of side² pixels, a few dozen KB."""
    import struct
    import zlib

    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", side, side, 16, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (1 + 2 * side) * side, 9)) + chunk(b"IEND", b"")


def peak_resident_mib(pid: int) -> float:
    """The process's high-water mark of resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


# What sixteen at once may add to the server's peak: the decodes take turns and keep one
# 16-bit full-size copy (76 MiB for 6324²) at a time. Before the fix each took +1 GB.
BOMB_BUDGET_MIB = 400


def test_sixteen_sixteen_bit_bombs_at_once_stay_within_a_memory_budget(serve, group_faces):
    from concurrent.futures import ThreadPoolExecutor

    server = serve()
    with httpx.Client(base_url=server.base, timeout=60) as http:  # everything loaded and warm first
        assert http.post("/identify", files={"image": ("q.jpg", jpeg(group_faces[0]), "image/jpeg")}).status_code == 200
    before = peak_resident_mib(server.proc.pid)
    bomb = grey16_png(6324)  # just under the 40-megapixel cap
    assert len(bomb) < 100_000

    def send(_: int) -> int:
        return httpx.post(f"{server.base}/identify", files={"image": ("b16.png", bomb, "image/png")}, timeout=120).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(send, range(16)))
    assert statuses == [422] * 16, statuses  # blank: no face, each answered
    grown = peak_resident_mib(server.proc.pid) - before
    assert grown < BOMB_BUDGET_MIB, f"peak resident memory grew by {grown:.0f} MiB"
    assert time.monotonic() - started < 60


def raw(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_slowloris_heads_are_closed_within_the_timeout_and_others_are_served(serve):
    server = serve(FACEID_HEADER_TIMEOUT_S="2")
    slow = [raw(server) for _ in range(20)]
    started = time.monotonic()
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    served = httpx.get(f"{server.base}/healthz", timeout=5)  # meanwhile, a whole request is served
    assert served.status_code == 200
    for sock in slow:
        sock.sendall(b"X-A: b\r\n")
    replies = [answer(sock) for sock in slow]
    assert time.monotonic() - started < 6
    assert all(r.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in r for r in replies)


def test_a_body_sent_at_a_trickle_is_cut_off(serve):
    server = serve(FACEID_MIN_BODY_RATE="65536", FACEID_BODY_GRACE_S="1")
    sock = raw(server)
    sock.sendall(b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000\r\n\r\n")
    started, closed = time.monotonic(), False
    while time.monotonic() - started < 15:
        try:
            sock.sendall(b"x" * 1024)  # 1 KB every 0.25 s: far under 64 KB/s
            time.sleep(0.25)
            if sock.recv(1, socket.MSG_DONTWAIT) == b"":  # the server closed it
                closed = True
                break
        except BlockingIOError:  # nothing to read yet: still open
            continue
        except OSError:  # reset while sending
            closed = True
            break
    assert closed and time.monotonic() - started < 6
    assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200


def test_past_the_connection_cap_a_new_connection_gets_503_at_once(serve):
    server = serve(FACEID_MAX_CONNECTIONS="5")
    held = [raw(server) for _ in range(5)]  # open, silent
    time.sleep(0.3)
    extra = raw(server)
    reply = answer(extra)
    assert reply.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in reply.lower() and b"too many connections" in reply
    for sock in held:
        sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200


def test_an_oversized_request_head_gets_431_not_a_reset(serve):
    server = serve()
    sock = raw(server)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
    reply = answer(sock)
    assert reply.startswith(b"HTTP/1.1 431") and b"over 65536 bytes" in reply
    r = httpx.get(f"{server.base}/healthz", headers={"X-Fine": "a" * 30_000}, timeout=5)  # under the limit: served
    assert r.status_code == 200


def test_the_shipped_healthchecks_pass_with_a_key_set(serve):
    """The Dockerfile's and the compose file's healthcheck commands, run against a server with
    FACEID_API_KEY set: ready with the key in the environment, unhealthy with a wrong one."""
    import json
    import shlex

    import yaml

    root = Path(__file__).resolve().parents[1]
    docker = next(line for line in (root / "Dockerfile").read_text().replace("\\\n", " ").splitlines() if line.startswith("HEALTHCHECK"))
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]["api"]["healthcheck"]["test"]
    assert compose[0] == "CMD"
    commands = [json.loads(docker.split(" CMD ", 1)[1]), compose[1:]]
    server = serve(FACEID_API_KEY=KEY)
    url = f"{server.base}/readyz"
    bin_dir = str(Path(sys.executable).parent)
    for argv in commands:
        env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FACEID_API_KEY": KEY}
        assert subprocess.run([*argv, "--url", url], env=env, timeout=60).returncode == 0, shlex.join(argv)
        wrong = subprocess.run([*argv, "--url", url], env=env | {"FACEID_API_KEY": "w" * 24}, capture_output=True, text=True, timeout=60)
        assert wrong.returncode == 1 and "answered 401" in wrong.stderr
