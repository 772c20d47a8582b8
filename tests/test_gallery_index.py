"""The FAISS index and the gallery without HTTP: exact vs approximate search, deletes."""

import numpy as np

from app.gallery.gallery import Gallery
from app.gallery.index import FaceIndex
from app.gallery.store import NewFace


def unit_rows(n, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_hnsw_agrees_with_flat_on_a_small_gallery():
    vectors, queries = unit_rows(500), unit_rows(50, seed=1)
    flat, hnsw = FaceIndex("flat"), FaceIndex("hnsw")
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
        index = FaceIndex(kind)
        index.add(np.arange(20), vectors)
        index.remove([3])
        sims, ids = index.search(vectors[3:4], 5)
        assert 3 not in ids[0] and index.size == 19
        assert list(sims[0]) == sorted(sims[0], reverse=True)


def test_search_pads_when_gallery_is_small():
    index = FaceIndex("flat")
    index.add(np.array([7]), unit_rows(1))
    sims, ids = index.search(unit_rows(2), 3)
    assert ids.shape == (2, 3) and list(ids[0]) == [7, -1, -1]


def test_gallery_ranks_persons_by_their_best_face(tmp_path):
    v = unit_rows(3)
    gallery = Gallery(tmp_path, "m@1")
    gallery.enroll("a", None, [NewFace("a1", v[0]), NewFace("a2", v[1])])
    gallery.enroll("b", "Bee", [NewFace("b1", v[2])])
    (row,) = gallery.search(v[1:2], 5)
    assert [c.person_id for c in row] == ["a", "b"]  # a once, by its best face
    assert row[0].similarity == np.float32(1.0) or abs(row[0].similarity - 1.0) < 1e-5
    assert gallery.delete("a") and not gallery.delete("a")
    (row,) = gallery.search(v[1:2], 5)
    assert [(c.person_id, c.name) for c in row] == [("b", "Bee")]
    gallery.close()
