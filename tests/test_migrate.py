"""`faceid gallery migrate`: SQLite → PostgreSQL → SQLite keeps every person, face and embedding,
resumes after an interruption, and refuses a target holding another gallery's faces."""

from __future__ import annotations

import numpy as np
import pytest

from app.gallery.gallery import Gallery
from app.gallery.migrate import migrate
from app.gallery.records import FACE_COLUMNS, Cells, NewFace, PhotoRecord
from app.gallery.sqlite import STORE_FILE, SqliteStore
from app.gallery.store import open_store
from core.errors import FaceIdError
from core.photos.descriptor import PROJECTED_DIM, THUMB_SIDE
from faceid.cli import main


def unit(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, 512)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def photo(seed: int) -> PhotoRecord:
    rng = np.random.default_rng(seed)
    vector = rng.normal(size=PROJECTED_DIM).astype(np.float32)
    return PhotoRecord(rng.integers(0, 255, (THUMB_SIDE, THUMB_SIDE), dtype=np.uint8), vector / np.linalg.norm(vector), (0.1, 0.2, 0.5, 0.6))


def sqlite_gallery(folder, persons: int = 30, faces_each: int = 3) -> SqliteStore:
    store = SqliteStore(folder / STORE_FILE)
    v = unit(persons * faces_each)
    with store.write() as w:
        w.add_faces([(f"p{p}", f"Person {p}" if p % 2 else None,
                      [NewFace(f"{p}-{i}.jpg", v[p * faces_each + i], b"png%d" % i, photo(p * 10 + i) if i else None)
                       for i in range(faces_each)]) for p in range(persons)], "m@1")
        w.add_faces([("nobody", "Has no faces", [])], "m@1")
    with store.write() as w:  # a gap in the ids, as deletes leave
        w.delete_person("p3")
    return store


def everything(store) -> tuple:
    return store.all_persons(), store.face_rows(0, 10_000)


def test_sqlite_to_postgresql_and_back_keeps_every_person_face_and_embedding(tmp_path, postgres_url):
    source = sqlite_gallery(tmp_path / "a")
    pg = open_store(postgres_url)
    result = migrate(source, pg, batch=7)
    assert (result.persons, result.faces, result.copied) == (30, 87, 87)
    back = open_store(str(tmp_path / "b"))
    migrate(pg, back, batch=10)
    assert everything(source) == everything(pg) == everything(back)
    assert len(FACE_COLUMNS) == len(back.face_rows(0, 1)[0])
    pg.close()

    shared = Gallery(open_store(postgres_url), tmp_path / "replica", "m@1")
    assert shared.index.size == 87 and shared.photos.size == 58
    assert [c.person_id for c in shared.search(unit(90)[4:5], 1)[0]] == ["p1"]
    shared.enroll("new", None, [NewFace("n.jpg", unit(1, seed=9)[0])])  # the id sequence starts past the copied ids
    assert max(r[0] for r in shared.store.face_rows(0, 10_000)) > max(r[0] for r in source.face_rows(0, 10_000))
    shared.close(), source.close(), back.close()


def test_the_sources_ivf_cells_come_along(tmp_path, postgres_url):
    source = sqlite_gallery(tmp_path / "a")
    cells = Cells(unit(16, seed=3), trained_on=60_000)
    source.keep_index_cells("faces m@1", cells)
    pg = open_store(postgres_url)
    migrate(source, pg)
    copied = pg.index_cells("faces m@1")
    assert copied is not None and copied.trained_on == 60_000 and np.array_equal(copied.centroids, cells.centroids)
    assert pg.index_cells("photos") is None  # the source had none
    pg.close(), source.close()


def test_an_interrupted_migration_resumes_where_it_stopped(tmp_path, postgres_url, monkeypatch):
    source = sqlite_gallery(tmp_path / "a")
    pg = open_store(postgres_url)
    real, calls = pg.write, []

    def failing_after_two():
        calls.append(1)
        if len(calls) > 2:
            raise ConnectionError("the network went away")
        return real()

    monkeypatch.setattr(pg, "write", failing_after_two)
    with pytest.raises(ConnectionError):
        migrate(source, pg, batch=10)
    assert pg.counts()[1] == 20  # two committed batches
    monkeypatch.setattr(pg, "write", real)
    result = migrate(source, pg, batch=10)
    assert result.copied == 67 and everything(source) == everything(pg)
    pg.close(), source.close()


def test_a_target_holding_other_faces_is_refused_before_anything_is_written(tmp_path, postgres_url):
    source = sqlite_gallery(tmp_path / "a")
    other = sqlite_gallery(tmp_path / "other", persons=2)
    with other.write() as w:
        w.add_faces([("stranger", None, [NewFace("s.jpg", unit(1, seed=5)[0])])], "m@1")
    before = everything(other)
    with pytest.raises(FaceIdError, match="not the source's"):
        migrate(source, other)
    assert everything(other) == before
    source.close(), other.close()


def test_the_command_copies_and_names_what_it_cannot_open(tmp_path, postgres_url, capsys):
    sqlite_gallery(tmp_path / "a").close()
    assert main(["gallery", "migrate", str(tmp_path / "a"), postgres_url]) == 0
    assert "30 persons and 87 faces" in capsys.readouterr().out
    assert main(["gallery", "migrate", str(tmp_path / "a"), "postgresql://u:hunter2@/x?host=/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "cannot open the gallery store" in err and "hunter2" not in err
