"""Photo evidence: copies of enrolled photos are named as copies, kept apart from face evidence."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw, ImageFilter

from app.gallery.sqlite import SCHEMA_VERSION, SqliteStore
from app.main import create_app
from core.data.dataset import Sample
from core.faces.geometry import fractions_of
from core.faces.pipeline import DetectedFace
from core.photos.descriptor import (
    EXACT_GROW,
    FLOOR,
    GLARED,
    HEAD_SUPPORT,
    PHOTO_THRESHOLD,
    SATURATED,
    SEARCH_GROW,
    SHRINK,
    THUMB_SIDE,
    WIDER,
    WINDOW,
    describe,
    describe_many,
    rerank,
    search_breadth,
    similarity,
    thumbnail,
)
from evaluation.photo_strangers import report as stranger_grid
from evaluation.photos import report
from tests.conftest import enroll, identify, jpeg, sealer, settings
from training.distortions import KINDS, build_distortions


def distorted(photo: Image.Image, kind: str, seed: int = 0) -> Image.Image:
    return Image.fromarray(build_distortions()[kind](np.asarray(photo.convert("RGB")), np.random.default_rng(seed)))


def blown_out(photo: Image.Image) -> Image.Image:
    """FACECOM's sunny at its worst: the face itself saturated to white, nothing left to embed."""
    out = photo.convert("RGB").copy()
    w, h = out.size
    ImageDraw.Draw(out).ellipse((0.25 * w, 0.15 * h, 0.75 * w, 0.8 * h), fill=(255, 255, 255))
    return out.filter(ImageFilter.GaussianBlur(3))


def backdrop(size: int = 224, seed: int = 5) -> Image.Image:
    """A textured background (a wall, a curtain): plenty of gradients for a descriptor to match."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(40, 220, (12, 12, 3), dtype=np.uint8)).resize((size, size), Image.Resampling.BICUBIC)


def pasted(face_photo: Image.Image, seed: int = 5) -> Image.Image:
    """The face (the middle of a loose face photo, in an ellipse) pasted onto the backdrop's centre."""
    bg = backdrop(seed=seed)
    head = face_photo.resize((224, 224)).crop((62, 40, 162, 170))
    mask = Image.new("L", head.size, 0)
    ImageDraw.Draw(mask).ellipse((0, 0, *head.size), fill=255)
    bg.paste(head, (62, 40), mask)
    return bg


def photo_face(response) -> dict:
    """The face that carries photo evidence (exactly one must)."""
    (face,) = [f for f in response.json()["faces"] if f["photo_match"] is not None]
    return face


# -- the descriptor ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_a_distorted_copy_is_most_like_its_original(group_faces, kind):
    gallery = describe_many(np.stack([thumbnail(p) for p in group_faces]), EXACT_GROW)
    for i, photo in enumerate(group_faces):
        sims = similarity(describe(thumbnail(distorted(photo, kind, seed=i)), EXACT_GROW), gallery)
        assert int(np.argmax(sims)) == i and sims[i] >= PHOTO_THRESHOLD, (kind, i, sims)
        assert np.delete(sims, i).max() < PHOTO_THRESHOLD


def test_two_people_before_one_backdrop_are_two_photos(group_faces, pipeline):
    a, b = pasted(group_faces[1]), pasted(group_faces[3])
    (face,) = pipeline.detect_all(a)
    box = fractions_of(face.box, a.size)
    whole = similarity(describe(thumbnail(b), EXACT_GROW), describe_many(thumbnail(a)[None], EXACT_GROW))[0]  # no head checked
    with_head = rerank(thumbnail(b), [thumbnail(a)], [box])[0]
    assert with_head < PHOTO_THRESHOLD <= rerank(thumbnail(a), [thumbnail(a)], [box])[0]
    assert with_head < whole  # the backdrop alone agrees: the head check is what tells them apart


# -- through the service ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", [*KINDS, "blown_out"])
def test_a_copy_of_an_enrolled_photo_is_named_by_photo_evidence(client, group_faces, kind):
    for i in range(3):
        enroll(client, f"p{i}", [group_faces[i]])
    copy = blown_out(group_faces[1]) if kind == "blown_out" else distorted(group_faces[1], kind)
    r = identify(client, jpeg(copy))
    assert r.status_code == 200, r.text
    face = photo_face(r)
    assert face["photo_match"]["person_id"] == "p1" and face["photo_match"]["photo"] == "p1_0.jpg"
    assert face["photo_match"]["similarity"] >= r.json()["photo_threshold"]
    assert face["match"]["person_id"] == "p1" and "photo" in face["evidence"]
    if kind == "blown_out":  # nothing of the face is left: the photo alone names it
        assert face["evidence"] == ["photo"]


def test_a_different_person_before_the_same_backdrop_gets_no_photo_evidence(client, group_faces):
    assert enroll(client, "a", [pasted(group_faces[1])]).status_code == 200
    assert photo_face(identify(client, jpeg(distorted(pasted(group_faces[1]), "blurred"))))["match"]["person_id"] == "a"
    r = identify(client, jpeg(pasted(group_faces[3])))
    assert r.status_code == 200
    assert all(f["photo_match"] is None and "photo" not in f["evidence"] for f in r.json()["faces"])


def test_a_two_person_copy_gets_photo_evidence_on_the_enrolled_face_only(client, group_faces):
    pair = Image.new("RGB", (448, 224))
    pair.paste(group_faces[0], (0, 0))
    pair.paste(group_faces[4], (224, 0))
    faces = identify(client, jpeg(pair)).json()["faces"]  # no one enrolled yet: both unknown
    assert len(faces) == 2
    left = min((f["box"] for f in faces), key=lambda b: b[0])
    r = client.post("/enroll", data={"person_id": "left", "box": ",".join(f"{v:.0f}" for v in left)},
                    files=[("images", ("pair.jpg", jpeg(pair), "image/jpeg"))])
    assert r.status_code == 200, r.text
    answer = identify(client, jpeg(pair.filter(ImageFilter.GaussianBlur(2)))).json()["faces"]
    assert len(answer) == 2
    with_photo = [f for f in answer if f["photo_match"] is not None]
    assert len(with_photo) == 1 and with_photo[0]["box"][0] < 224
    (right,) = [f for f in answer if f["box"][0] >= 224]
    assert right["match"] is None and right["evidence"] == []


def test_enrolling_a_copy_under_another_person_is_409_unless_confirmed(client, group_faces):
    assert enroll(client, "p0", [group_faces[0]]).status_code == 200
    copy = jpeg(distorted(group_faces[0], "noisy"))
    files = [("images", ("copy.jpg", copy, "image/jpeg"))]
    r = client.post("/enroll", data={"person_id": "someone_else"}, files=files)
    assert r.status_code == 409
    assert "copy.jpg" in r.json()["detail"] and "'p0'" in r.json()["detail"] and "confirm_copy" in r.json()["detail"]
    assert client.get("/persons/someone_else").status_code == 404
    r = client.post("/enroll", data={"person_id": "someone_else", "confirm_copy": "true"}, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["faces"][0]["copy_of"]["person_id"] == "p0"
    same = client.post("/enroll", data={"person_id": "p0"}, files=files)  # the same person: stored, and said
    assert same.status_code == 200 and same.json()["faces"][0]["copy_of"]["photo"] == "p0_0.jpg"


def test_gallery_import_refuses_a_copy_of_another_persons_photo_as_enroll_does(tmp_path, group_faces, monkeypatch, capsys):
    """The import goes through /enroll's rules: a copy of a photo enrolled for someone else is
    refused (also one earlier in the same batch), one's own is not, and confirming takes it."""
    from faceid.cli import main

    monkeypatch.setenv("FACEID_DATA_DIR", str(tmp_path / "gallery"))
    monkeypatch.setenv("FACEID_WEIGHTS", "casia-webface")
    with TestClient(create_app(settings(tmp_path))) as c:
        assert enroll(c, "p0", [group_faces[0]]).status_code == 200
    folder = tmp_path / "folder"
    photos = {"p0": group_faces[0], "x_copies_p0": distorted(group_faces[0], "noisy"), "p1": group_faces[1], "y_copies_p1": group_faces[1]}
    for person, photo in photos.items():
        (folder / person).mkdir(parents=True)
        photo.save(folder / person / f"{person}_0001.jpg", quality=92)
    capsys.readouterr()
    assert main(["gallery", "import", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "enrolled 2 faces" in out and "2 refused" in out  # p0's own photo again and p1 go in; the two copies do not
    assert "x_copies_p0_0001.jpg: a copy of 'p0_0.jpg', enrolled for 'p0'" in out
    assert "y_copies_p1_0001.jpg: a copy of 'p1_0001.jpg', enrolled for 'p1'" in out  # p1 came in the same batch
    assert main(["gallery", "import", str(folder), "--confirm-copies"]) == 0
    assert "enrolled 2 faces; 2 already there" in capsys.readouterr().out


def test_with_photo_evidence_off_the_answers_are_the_face_evidence_alone(tmp_path, group_faces, client):
    queries = [jpeg(blown_out(group_faces[1])), jpeg(distorted(group_faces[2], "rainy")), jpeg(group_faces[5])]
    with TestClient(create_app(settings(tmp_path / "off", photo_evidence=False))) as off:
        for c in (client, off):
            for i in range(3):
                enroll(c, f"p{i}", [group_faces[i]])
        for q in queries:
            on_faces, off_r = identify(client, q).json()["faces"], identify(off, q)
            assert off_r.status_code in (200, 422)
            off_faces = off_r.json().get("faces", [])
            assert all(f["photo_match"] is None and f["conflict"] is False and "photo" not in f["evidence"] for f in off_faces)
            detected = [f for f in on_faces if f["detection_score"] is not None]  # those not placed by photo evidence
            assert [(f["box"], f["candidates"]) for f in off_faces] == [(f["box"], f["candidates"]) for f in detected]
            for f_off, f_on in zip(off_faces, detected):
                assert f_off["match"] == (f_on["match"] if "face" in f_on["evidence"] else None)
        assert identify(off, queries[0]).json().get("photo_threshold") is None


# -- a store enrolled before photo evidence ---------------------------------------------------
def test_a_version_1_store_migrates_and_gallery_import_fills_its_photo_evidence(tmp_path, facecom_dir, monkeypatch, capsys):
    from faceid.cli import main

    monkeypatch.setenv("FACEID_DATA_DIR", str(tmp_path / "gallery"))
    monkeypatch.setenv("FACEID_WEIGHTS", "casia-webface")
    assert main(["gallery", "import", str(facecom_dir)]) == 0
    db = sqlite3.connect(tmp_path / "gallery" / "gallery.sqlite3")
    with db:  # back to version 1: what versions 2 to 5 added (photo evidence, IVF cells, collections, audit) is dropped
        for column in ("photo_thumb", "photo_vector", "photo_box"):
            db.execute(f"ALTER TABLE faces DROP COLUMN {column}")
        for table in ("index_cells", "collections", "audit", "unknowns"):
            db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute("ALTER TABLE persons DROP COLUMN consent")
        db.execute("PRAGMA user_version = 0")
    db.close()
    store = SqliteStore(tmp_path / "gallery" / "gallery.sqlite3", sealer=sealer())
    assert store.schema_version() == SCHEMA_VERSION and len(store.faces_without_photos()) == 7
    assert store.counts() == (6, 7)  # nothing lost on the way
    store.close()
    capsys.readouterr()
    assert main(["gallery", "import", str(facecom_dir)]) == 0
    assert "enrolled 0 faces; 7 already there; 7 given photo evidence" in capsys.readouterr().out
    with TestClient(create_app(settings(tmp_path))) as c:
        r = identify(c, jpeg(blown_out(Image.open(facecom_dir / "person_2" / "person_2_0001.jpg"))))
        match = photo_face(r)["photo_match"]
        assert (match["person_id"], match["photo"]) == ("person_2", "person_2_0001.jpg")


# -- the report's figures ---------------------------------------------------------------------
def test_the_reports_separate_figures_match_a_hand_computed_case(tmp_path):
    """Two people, one clean photo each; four queries. Photos: the first three are exact copies of
    their person's photo, the fourth a photo unlike any. Faces: the second query's face looks
    like the other person. So face-only names 3 of 4, face + photo 4 of 4 (the photo corrects
    the second query, one conflict, the photo right); photo evidence names 3 queries, 0 strangers."""
    rng = np.random.default_rng(0)
    texture = lambda: np.asarray(Image.fromarray(rng.integers(0, 240, (8, 8), dtype=np.uint8)).resize((64, 64), Image.Resampling.BICUBIC))
    ta, tb, other = texture(), texture(), texture()
    samples = [Sample("a", tmp_path / "a.jpg", "clean", "a"), Sample("b", tmp_path / "b.jpg", "clean", "b"),
               Sample("a", tmp_path / "a_blurred.jpg", "blurred", "a"), Sample("a", tmp_path / "a_sunny.jpg", "sunny", "a"),
               Sample("b", tmp_path / "b_blurred.jpg", "blurred", "b"), Sample("b", tmp_path / "b_sunny.jpg", "sunny", "b")]
    thumbs = np.stack([ta, tb, ta, ta, tb, other])
    e_a, e_b = np.eye(512, dtype=np.float32)[0], np.eye(512, dtype=np.float32)[1]
    embeddings = np.stack([e_a, e_b, e_a, e_b, e_b, e_b])  # a_sunny's face looks like b
    faces = [DetectedFace((16.0, 16.0, 48.0, 48.0), 0.99, "mtcnn")] * 6
    out = report(samples, embeddings, faces, [(64, 64)] * 6, thumbs, face_threshold=0.5, photo_threshold=PHOTO_THRESHOLD)
    assert out["face_only_top1"] == 0.75 and out["face_and_photo_top1"] == 1.0
    assert out["per_distortion"]["sunny"] == {"face_only": 0.5, "face_and_photo": 1.0, "named_by_photo": 0.5}
    assert out["per_distortion"]["blurred"] == {"face_only": 1.0, "face_and_photo": 1.0, "named_by_photo": 1.0}
    assert out["named_by_photo"] == 0.75 and out["photo_right_when_it_names"] == 1.0
    assert out["strangers_named_by_photo"] == 0.0
    assert out["conflicts"] == {"n": 1, "photo_right": 1, "face_right": 0}
    # with each query's own photo out, no other photo of its person is left: nothing is named
    assert out["other_photos_of_enrolled"] == {"n": 4, "named_same_person": 0.0, "named_another_person": 0.0}
    # open set: every query named rightly; of the strangers, a_sunny's face (like b's) names b
    assert out["open_set"]["named_correctly"] == 1.0 and out["open_set"]["strangers_named"] == 0.25



def test_the_stranger_grid_counts_and_bounds_by_hand():
    """1,000 strangers: three score at or above 0.50 (0.55, 0.52, 0.50), one at 0.45, the rest low."""
    sims = np.concatenate([[0.55, 0.52, 0.50, 0.45], np.full(996, 0.1)]).astype(np.float32)
    r = stranger_grid(sims, gallery_size=7)
    assert r["strangers"] == 1000 and r["gallery_photos"] == 7
    assert [r["grid"][t]["named"] for t in ("0.45", "0.50", "0.52", "0.55", "0.56")] == [4, 3, 2, 1, 0]
    assert r["grid"]["0.56"]["ucb95"] == pytest.approx(1 - 0.05 ** (1 / 1000))  # 0 of 1,000 bounds 0.3%
    assert r["lowest_threshold_for_target"] is None  # 1,000 strangers cannot show a 0.1% rate at 95%
    assert stranger_grid(np.full(5000, 0.1, dtype=np.float32), 7)["lowest_threshold_for_target"] == 0.4  # 0 of 5,000: 0.06%


def test_similarity_is_the_masked_correlation_written_out_with_the_head_check():
    """The fast form (matrix-vector products over zeroed fields) against the definition: the
    correlation over the entries valid in both, shrunk by their share, and the head's part too
    where enough of it is left."""

    def correlation(q, fields, both):
        qq, gg = q[None] * both, fields * both
        corr = (qq * gg).sum(1) / np.sqrt((qq * qq).sum(1) * (gg * gg).sum(1))
        return corr * both.mean(1) / (both.mean(1) + SHRINK) * (1 + SHRINK)

    def region(box):
        x1, y1, x2, y2 = box
        centres = np.arange(THUMB_SIDE) + 0.5
        xs = (centres >= (x1 - (x2 - x1) / 3) * THUMB_SIDE) & (centres <= (x2 + (x2 - x1) / 3) * THUMB_SIDE)
        ys = (centres >= (y1 - (y2 - y1) / 3) * THUMB_SIDE) & (centres <= (y2 + (y2 - y1) / 3) * THUMB_SIDE)
        return np.tile((ys[:, None] & xs[None, :]).reshape(-1), 2)

    rng = np.random.default_rng(4)
    thumbs = rng.integers(0, 200, (12, THUMB_SIDE, THUMB_SIDE)).astype(np.uint8)  # no pixel blown out but the glare
    thumbs[:4, 8:40, 12:52] = 255  # glare over some heads
    thumbs[6:8] = np.clip(thumbs[6:8].astype(int) + 60, 0, 255)
    query_thumb = thumbs[9].copy()
    query_thumb[52:, :] = 255  # the query has lost its bottom
    fields, masks = describe_many(thumbs)
    q, q_mask = describe(query_thumb)
    boxes = [(0.1 + 0.05 * i, 0.15, 0.45 + 0.04 * i, 0.6) for i in range(12)]
    both = masks & q_mask
    whole = correlation(q, fields, both)
    expected = whole.copy()
    for i, box in enumerate(boxes):
        shared = both[i] & region(box)
        if shared.sum() >= HEAD_SUPPORT * region(box).sum():
            expected[i] = min(expected[i], correlation(q, fields[i:i + 1], shared[None])[0])
    assert 0 < np.sum(expected < whole) < 12  # the head decides for some photos, not for others
    np.testing.assert_allclose(similarity((q, q_mask), (fields, masks), boxes), expected, atol=1e-5)
    np.testing.assert_allclose(similarity((q, q_mask), (fields, masks)), whole, atol=1e-5)


@pytest.mark.parametrize("grow", [SEARCH_GROW, EXACT_GROW])
def test_the_descriptor_is_its_definition_written_out(grow):
    """describe_many's local means (two matrix products) against scipy's mirrored box filter, and
    the field built step by step: masked (the blown pixels, and for search their neighbours),
    divided by the local gradient RMS, centred."""
    from scipy.ndimage import uniform_filter

    rng = np.random.default_rng(5)
    thumbs = rng.integers(0, 256, (5, THUMB_SIDE, THUMB_SIDE)).astype(np.uint8)
    thumbs[1, 10:30, 20:50] = 255
    grey = thumbs.astype(np.float64)
    blown = grey >= SATURATED
    if grow:
        blown = blown | np.roll(blown, 1, 1) | np.roll(blown, -1, 1) | np.roll(blown, 1, 2) | np.roll(blown, -1, 2)
    valid = (~blown).astype(np.float64)
    gx, gy = np.zeros_like(grey), np.zeros_like(grey)
    gx[:, :, 1:-1] = grey[:, :, 2:] - grey[:, :, :-2]
    gy[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    window = (1, WINDOW, WINDOW)
    energy = uniform_filter((gx ** 2 + gy ** 2) * valid, window) / np.maximum(uniform_filter(valid, window), 1e-3)
    field = np.stack([gx, gy], 1) * (valid / np.sqrt(energy + FLOOR))[:, None]
    field -= (field.sum((1, 2, 3)) / (2 * valid.sum((1, 2))))[:, None, None, None] * valid[:, None]
    fields, masks = describe_many(thumbs, grow)
    np.testing.assert_allclose(fields, field.reshape(5, -1), atol=2e-5)
    np.testing.assert_array_equal(masks, np.repeat(valid[:, None] > 0, 2, 1).reshape(5, -1))


def test_a_query_glare_has_mostly_erased_is_searched_wider():
    rng = np.random.default_rng(6)
    photo = rng.integers(0, 200, (THUMB_SIDE, THUMB_SIDE)).astype(np.uint8)
    glared = photo.copy()
    glared[: int(THUMB_SIDE * (1 - GLARED / 2))] = 255  # about three quarters blown out
    half = photo.copy()
    half[: THUMB_SIDE // 4] = 255
    assert search_breadth(describe(photo)) == 1 and search_breadth(describe(half)) == 1
    assert search_breadth(describe(glared)) == WIDER


def test_the_rerank_compares_exact_descriptors_and_the_search_keeps_the_stored_ones():
    """The stored, projected vectors come from SEARCH_GROW descriptors (a blown pixel's neighbours
    masked too), so `describe` keeps making them; the re-rank describes the query and the shortlist
    at EXACT_GROW, which keeps the band beside a glare (on FACECOM's glared copies that band is
    much of what is left: docs/photo-evidence.md)."""
    rng = np.random.default_rng(7)
    photo = np.asarray(Image.fromarray(rng.integers(0, 220, (8, 8), dtype=np.uint8)).resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BICUBIC))
    others = [np.roll(photo, 9 * (i + 1), axis=1) for i in range(3)]
    yy, xx = np.mgrid[:THUMB_SIDE, :THUMB_SIDE]
    glare = (yy - 28) ** 2 + (xx - 32) ** 2 < 18 ** 2
    glared = np.where(glare, 255, photo).astype(np.uint8)
    boxes = [(0.3, 0.25, 0.7, 0.7)] * 4
    scores = rerank(glared, [photo, *others], boxes)
    exact = similarity(describe(glared, EXACT_GROW), describe_many(np.stack([photo, *others]), EXACT_GROW), boxes)
    np.testing.assert_allclose(scores, exact, atol=1e-6)
    assert int(np.argmax(scores)) == 0 and scores[0] >= PHOTO_THRESHOLD > scores[1:].max()
    beside = ~glare & (np.roll(glare, 1, 0) | np.roll(glare, -1, 0) | np.roll(glare, 1, 1) | np.roll(glare, -1, 1))
    search_valid = describe(glared)[1].reshape(2, THUMB_SIDE, THUMB_SIDE)[0]
    exact_valid = describe(glared, EXACT_GROW)[1].reshape(2, THUMB_SIDE, THUMB_SIDE)[0]
    assert not search_valid[beside].any() and exact_valid[beside].all()
    np.testing.assert_array_equal(exact_valid, ~glare)
