"""The FAISS index and the gallery without HTTP: exact vs approximate search, deletes."""

import faiss
import numpy as np
import pytest

from app.gallery.face_owners import FaceOwners
from app.gallery.gallery import Gallery
from app.gallery.records import Cells, NewFace
from app.gallery.store import open_store
from app.gallery.vector_index import IndexSettings, VectorIndex


def sqlite_gallery(folder, model_id="m@1", **index) -> Gallery:
    """A gallery on the SQLite store in `folder`, with its snapshot beside it."""
    return Gallery(open_store(folder), folder, model_id, IndexSettings(**index))


def unit_rows(n, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_agrees_with_flat_on_a_small_gallery():
    vectors, queries = unit_rows(500), unit_rows(50, seed=1)
    flat, hnsw = VectorIndex(IndexSettings("flat")), VectorIndex(IndexSettings("hnsw"))
    ids = np.arange(500, dtype=np.int64) + 10
    flat.add(ids, vectors)
    hnsw.add(ids, vectors)
    _, exact = flat.search(queries, 1)
    _, approx = hnsw.search(queries, 1)
    assert np.mean(exact[:, 0] == approx[:, 0]) >= 0.95
    assert np.array_equal(exact[:, 0], (queries @ vectors.T).argmax(1) + 10)


def test_removed_faces_are_never_returned():
    vectors = unit_rows(20)
    for kind in ("flat", "hnsw"):
        index = VectorIndex(IndexSettings(kind))
        index.add(np.arange(20), vectors)
        index.remove([3])
        sims, ids = index.search(vectors[3:4], 5)
        assert 3 not in ids[0] and index.size == 19
        assert list(sims[0]) == sorted(sims[0], reverse=True)


def test_search_pads_when_gallery_is_small():
    index = VectorIndex()
    index.add(np.array([7]), unit_rows(1))
    sims, ids = index.search(unit_rows(2), 3)
    assert ids.shape == (2, 3) and list(ids[0]) == [7, -1, -1]


def test_gallery_ranks_persons_by_their_template(tmp_path):
    v = unit_rows(3)
    gallery = sqlite_gallery(tmp_path)
    gallery.enroll("a", None, [NewFace("a1", v[0]), NewFace("a2", v[1])])
    gallery.enroll("b", "Bee", [NewFace("b1", v[2])])
    (row,) = gallery.search(v[1:2], 5)
    assert [c.person_id for c in row] == ["a", "b"]  # a once
    # a by the mean of her two faces made unit, b by his one face
    assert row[0].similarity == pytest.approx((v[0] @ v[1] + 1) / np.linalg.norm(v[0] + v[1]), abs=1e-5)
    assert row[1].similarity == pytest.approx(float(v[2] @ v[1]), abs=1e-5)
    assert gallery.delete("a") and not gallery.delete("a")
    (row,) = gallery.search(v[1:2], 5)
    assert [(c.person_id, c.name) for c in row] == [("b", "Bee")]
    gallery.close()


def near(q, cosine, seed):
    """A unit vector at `cosine` to the unit vector q."""
    r = unit_rows(1, seed)[0]
    r = r - (r @ q) * q
    return (cosine * q + np.sqrt(1 - cosine**2) * r / np.linalg.norm(r)).astype(np.float32)


def test_a_person_whose_faces_agree_outranks_one_with_a_single_nearer_face(tmp_path):
    q = unit_rows(1, seed=5)[0]
    gallery = sqlite_gallery(tmp_path)
    gallery.enroll("a", None, [NewFace("a1", near(q, 0.9, 1)), NewFace("a2", near(q, -0.3, 2))])  # one close face, one far
    gallery.enroll("b", None, [NewFace("b1", near(q, 0.85, 3)), NewFace("b2", near(q, 0.85, 4))])  # two agreeing faces
    (row,) = gallery.search(q[None], 2)
    assert [c.person_id for c in row] == ["b", "a"]  # by their best faces it would be a, 0.9 against 0.85
    assert row[0].similarity > 0.85 and row[1].similarity < 0.6
    # A third face moves a's template: the gallery does not answer from the old one.
    gallery.enroll("a", None, [NewFace("a3", q)])
    a = np.stack([near(q, 0.9, 1), near(q, -0.3, 2), q]).sum(0)
    (row,) = gallery.search(q[None], 2)
    assert row[[c.person_id for c in row].index("a")].similarity == pytest.approx(float(a @ q / np.linalg.norm(a)), abs=1e-5)
    gallery.close()


def test_face_owners_count_each_persons_faces_once():
    owners = FaceOwners([(1, "a"), (2, "a"), (3, "b")])
    owners.add([2, 4], ["a", "a"])  # face 2 is held already: a catch-up applying a replica's own write
    assert owners.faces("a") == 3 and owners.faces("b") == 1 and len(owners) == 4
    owners.remove([1, 9])  # 9 was never held
    assert owners.faces("a") == 2 and owners.person(1) is None and owners.person(4) == "a"
    owners.remove([3])
    assert owners.faces("b") == 0 and 3 not in owners and owners.face_ids() == [2, 4]
    copy = owners.copy()
    owners.remove([2])
    assert copy.faces("a") == 2 and owners.faces("a") == 1


def clustered(n_people, per_person, seed=0, spread=0.35):
    """Face-like vectors: people as centres, photos around them."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(n_people, seed)
    x = np.repeat(centres, per_person, axis=0) + spread / np.sqrt(512) * rng.standard_normal((n_people * per_person, 512))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), centres


def enrol_people(gallery, vectors, people, per_person=5):
    gallery.enroll_many([(f"p{i}", None, [NewFace(f"{i}-{j}.jpg", vectors[per_person * i + j]) for j in range(per_person)])
                         for i in people])


def test_ivf_is_exact_until_it_has_enough_faces(monkeypatch):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 4000)
    vectors, _ = clustered(300, 5)
    small = VectorIndex.over(np.arange(1500), vectors, IndexSettings("ivf"))
    assert small.trained_on == 0 and not small.needs_training
    _, exact = small.search(vectors[:50], 1)
    assert exact[:, 0].tolist() == list(range(50))


def test_ivf_finds_the_person_exact_search_finds_and_forgets_deleted_faces(monkeypatch):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 4000)
    vectors, centres = clustered(1000, 5)
    ids = np.arange(len(vectors), dtype=np.int64) + 100
    ivf = VectorIndex.over(ids, vectors, IndexSettings("ivf", nprobe=16))
    assert ivf.trained_on == 5000 and ivf.size == 5000
    queries = centres + 0.5 / np.sqrt(512) * np.random.default_rng(2).standard_normal(centres.shape)
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    _, approx = ivf.search(queries, 1)
    person = (approx[:, 0] - 100) // 5
    assert np.mean(person == np.arange(1000)) >= 0.99
    ivf.remove([100, 101, 102, 103, 104])  # person 0, every photo
    _, after = ivf.search(queries[:1], 5)
    assert not set(after[0].tolist()) & {100, 101, 102, 103, 104} and ivf.size == 4995


def test_the_gallery_trains_its_ivf_cells_once_it_has_outgrown_flat_search(tmp_path, monkeypatch):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 3000)
    vectors, _ = clustered(700, 5)
    gallery = sqlite_gallery(tmp_path, kind="ivf")
    enrol_people(gallery, vectors, range(500))
    assert gallery.index.trained_on == 0  # 2,500 faces: still exact
    enrol_people(gallery, vectors, range(500, 700))
    assert gallery.index.trained_on == 3500 and gallery.in_sync
    (best, *_), = gallery.search(vectors[5 * 650 + 2][None], 3)
    assert best.person_id == "p650"
    gallery.delete("p650")
    (best, *_), = gallery.search(vectors[5 * 650 + 2][None], 3)
    assert best.person_id != "p650" and gallery.in_sync
    gallery.close()


def test_a_saved_index_is_loaded_at_the_next_start_instead_of_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 1000)
    vectors, _ = clustered(300, 5)
    gallery = sqlite_gallery(tmp_path, kind="ivf", nprobe=8)
    enrol_people(gallery, vectors, range(300))
    assert gallery.index.trained_on == 1500
    before = gallery.search(vectors[:20], 1)
    gallery.save_snapshot()
    gallery.close()

    def no_rebuild(self):
        raise AssertionError("rebuilt from the embeddings")

    with monkeypatch.context() as m:
        m.setattr("app.gallery.sqlite.SqliteStore.embeddings", no_rebuild)
        again = sqlite_gallery(tmp_path, kind="ivf", nprobe=8)
    assert again.index.trained_on == 1500 and again.in_sync
    assert again.search(vectors[:20], 1) == before
    again.close()


def test_a_stale_or_damaged_saved_index_is_rebuilt_from_the_store(tmp_path):
    vectors, _ = clustered(40, 5)
    gallery = sqlite_gallery(tmp_path)
    enrol_people(gallery, vectors, range(30))
    gallery.save_snapshot()
    enrol_people(gallery, vectors, range(30, 40))  # a write after the save: the saved index is stale
    gallery.close()
    again = sqlite_gallery(tmp_path)
    assert again.index.size == 200 and again.in_sync
    again.save_snapshot()
    again.close()
    (tmp_path / "index.faiss").write_bytes(b"not an index")
    third = sqlite_gallery(tmp_path)
    assert third.index.size == 200 and third.in_sync
    (best, *_), = third.search(vectors[5 * 35][None], 1)
    assert best.person_id == "p35"
    third.close()


def test_an_index_saved_for_another_model_or_kind_is_not_used(tmp_path, caplog):
    vectors, _ = clustered(20, 5)
    gallery = sqlite_gallery(tmp_path)
    enrol_people(gallery, vectors, range(20))
    gallery.save_snapshot()
    gallery.close()
    for kind in ("hnsw", "ivf"):
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = sqlite_gallery(tmp_path, kind=kind)
        assert "saved for another gallery, model or index setting" in caplog.text
        assert again.index.kind == kind and again.index.size == 100 and again.in_sync
        again.close()


def test_a_failed_retraining_keeps_the_enrolment_and_the_index(tmp_path, monkeypatch):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 1000)
    vectors, _ = clustered(300, 5)
    gallery = sqlite_gallery(tmp_path, kind="ivf")

    def broken(*args, **kwargs):
        raise RuntimeError("faiss ran out of something")

    monkeypatch.setattr(VectorIndex, "over", broken)
    enrol_people(gallery, vectors, range(300))  # crosses 1,000 faces: retraining fails
    assert gallery.index.size == 1500 and gallery.in_sync and gallery.index.trained_on == 0
    (best, *_), = gallery.search(vectors[5 * 250][None], 1)
    assert best.person_id == "p250"
    gallery.close()


def ivf_gallery(store_kind, folder, request):
    """A gallery with an IVF index on the store the test is parametrised with; no snapshot is
    ever saved, so every open builds from the store."""
    location = folder if store_kind == "sqlite" else request.getfixturevalue("postgres_url")
    return Gallery(open_store(location), folder, "m@1", IndexSettings("ivf", nprobe=8))


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_ivf_cells_are_trained_once_per_gallery_and_kept_in_the_store(tmp_path, monkeypatch, request, store_kind):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 1000)
    vectors, _ = clustered(300, 5)
    first = ivf_gallery(store_kind, tmp_path, request)
    enrol_people(first, vectors, range(300))
    kept = first.store.index_cells("faces m@1")
    assert kept is not None and kept.trained_on == 1500 and kept.centroids.shape == (first.index.cells.centroids.shape)
    assert np.array_equal(kept.centroids, first.index.cells.centroids)
    # Cells that differ from anything training would make (the kept ones, in reverse order):
    # a replica or restart that uses them, rather than training its own, ends up with exactly these.
    first.store.keep_index_cells("faces m@1", Cells(kept.centroids[::-1].copy(), 1500))
    first.close()
    second = ivf_gallery(store_kind, tmp_path, request)  # no snapshot was saved: built from the store
    assert np.array_equal(second.index.cells.centroids, kept.centroids[::-1]) and second.index.trained_on == 1500
    assert second.in_sync
    (best, *_), = second.search(vectors[5 * 123 + 1][None], 1)
    assert best.person_id == "p123"
    second.close()


@pytest.mark.parametrize("store_kind", ["sqlite", "postgresql"])
def test_outgrown_cells_are_trained_anew_and_replace_the_kept_ones(tmp_path, monkeypatch, request, store_kind):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 1000)
    vectors, _ = clustered(1000, 5)
    gallery = ivf_gallery(store_kind, tmp_path, request)
    enrol_people(gallery, vectors, range(200))  # 1,000 faces: trained
    assert gallery.store.index_cells("faces m@1").trained_on == 1000
    enrol_people(gallery, vectors, range(200, 800))  # 4,000: four times as many, trained anew
    kept = gallery.store.index_cells("faces m@1")
    assert kept.trained_on == 4000 == gallery.index.trained_on
    assert np.array_equal(kept.centroids, gallery.index.cells.centroids)
    gallery.store.keep_index_cells("faces m@1", Cells(kept.centroids[:8], 1000))  # older, fewer: not kept over newer
    assert gallery.store.index_cells("faces m@1").trained_on == 4000
    gallery.close()


def test_cells_fit_a_build_of_the_same_dimension_and_a_size_the_retraining_rule_keeps():
    cells = Cells(unit_rows(16), trained_on=1000)
    assert cells.fit(1000, 512) and cells.fit(250, 512) and cells.fit(3999, 512)
    assert not cells.fit(4000, 512) and not cells.fit(249, 512) and not cells.fit(1000, 256)


def scramble_vectors(path, seed=3):
    """The issue's reproducer, done through faiss: the same ids and size, the vectors noise."""
    index = faiss.read_index(str(path))
    flat = faiss.downcast_index(index.index)
    codes = faiss.vector_to_array(flat.codes).view(np.float32)
    noise = np.random.default_rng(seed).standard_normal(codes.shape).astype(np.float32)
    faiss.copy_array_to_vector(noise.view(np.uint8), flat.codes)
    faiss.write_index(index, str(path))
    assert faiss.read_index(str(path)).ntotal == len(codes) // 512


def test_a_saved_index_whose_vectors_were_damaged_is_rebuilt(tmp_path, caplog):
    vectors, _ = clustered(20, 5)
    gallery = sqlite_gallery(tmp_path)
    enrol_people(gallery, vectors, range(20))
    gallery.save_snapshot()
    gallery.close()
    scramble_vectors(tmp_path / "index.faiss")
    with caplog.at_level("WARNING"):
        again = sqlite_gallery(tmp_path)
    assert any("sha256 differs" in r.getMessage() for r in caplog.records)
    assert [row[0].person_id for row in again.search(vectors[::5], 1)] == [f"p{i}" for i in range(20)]
    again.close()


def test_a_damaged_index_with_a_note_that_matches_it_fails_the_spot_check(tmp_path, caplog):
    """Even a note rewritten to the damaged file's digest does not make it trusted: a sample of
    the store's faces must find themselves in it."""
    import json

    from core.files import sha256_of

    vectors, _ = clustered(20, 5)
    gallery = sqlite_gallery(tmp_path)
    enrol_people(gallery, vectors, range(20))
    gallery.save_snapshot()
    gallery.close()
    scramble_vectors(tmp_path / "index.faiss")
    note = json.loads((tmp_path / "index.json").read_text())
    (tmp_path / "index.json").write_text(json.dumps(note | {"sha256": sha256_of(tmp_path / "index.faiss")}))
    with caplog.at_level("WARNING"):
        again = sqlite_gallery(tmp_path)
    assert any("is not in it as stored" in r.getMessage() for r in caplog.records)
    assert [row[0].person_id for row in again.search(vectors[::5], 1)] == [f"p{i}" for i in range(20)]
    again.close()


def test_the_index_and_its_note_reach_the_disk_before_they_are_renamed(tmp_path, monkeypatch):
    import os

    vectors, _ = clustered(5, 2)
    gallery = sqlite_gallery(tmp_path)
    enrol_people(gallery, vectors, range(5), per_person=2)
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    gallery.save_snapshot()
    gallery.close()
    names = [os.path.basename(p) for p in synced]
    assert any(n.startswith(".index.") and n.endswith(".faiss") for n in names)  # the data, before the rename
    assert any(n.startswith(".index.") and n.endswith(".json") for n in names)
    assert str(tmp_path) in synced  # and the rename itself


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_a_wider_search_visits_as_many_cells_or_candidates_as_a_wider_index(monkeypatch, kind):
    monkeypatch.setattr("app.gallery.vector_index.IVF_MIN_FACES", 4000)
    vectors = unit_rows(5000, seed=3)
    queries = unit_rows(200, seed=4)  # far from every face: the breadth of the search decides
    ids = np.arange(len(vectors), dtype=np.int64)
    narrow = VectorIndex.over(ids, vectors, IndexSettings(kind, nprobe=2, ef_search=8, hnsw_m=8))
    wide = VectorIndex.over(ids, vectors, IndexSettings(kind, nprobe=8, ef_search=32, hnsw_m=8))
    _, usual = narrow.search(queries, 5)
    _, wider = narrow.search(queries, 5, wider=4)
    _, reference = wide.search(queries, 5)
    assert (usual != wider).any()
    np.testing.assert_array_equal(wider, reference)
