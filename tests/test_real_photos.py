"""The real-photo protocol's bookkeeping (evaluation/real_photos.py) on small hand-made embeddings:
who is enrolled, who is a query, who is a stranger, and what is counted as named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.data.people import SETS, carve
from evaluation.real_photos import Embedded, one_photo_enrolled


def unit(*values: float) -> np.ndarray:
    v = np.zeros(8, dtype=np.float32)
    v[: len(values)] = values
    return v / np.linalg.norm(v)


def embedded(photos: list[tuple[str, np.ndarray]], found: list[bool] | None = None) -> Embedded:
    n = len(photos)
    return Embedded(people=[p for p, _ in photos], paths=[Path(f"{p}_{i}.jpg") for i, (p, _) in enumerate(photos)],
                    vectors=np.stack([v for _, v in photos]), found=np.array(found or [True] * n), gone=np.zeros(n, dtype=bool))


# Ann's first photo is far from her later ones; her second is close to them. Bob's three are alike.
# Cy has one photo: a stranger, close to nobody.
PHOTOS = [
    ("ann", unit(1, 1)), ("ann", unit(0, 1)), ("ann", unit(0, 1, 0.1)), ("ann", unit(0.1, 1)),
    ("bob", unit(0, 0, 1)), ("bob", unit(0, 0, 1, 0.1)), ("bob", unit(0, 0, 1, 0.2)),
    ("cy", unit(0, 0, 0, 0, 1)),
]


def test_a_second_enrolled_photo_is_measured_on_the_same_queries():
    data = embedded(PHOTOS)
    one = one_photo_enrolled(data, threshold=0.9, enrolled_photos=1, queries_from=2)
    two = one_photo_enrolled(data, threshold=0.9, enrolled_photos=2, queries_from=2)
    assert one["queries"] == two["queries"] == 3  # ann's photos 3–4, bob's photo 3
    assert one["enrolled_people"] == two["enrolled_people"] == 2 and one["strangers"] == two["strangers"] == 1
    # ann's later photos are right but below the threshold against her first photo (cos 0.70-0.78)
    assert one["top1"] == 1.0 and one["named_correctly"] == pytest.approx(1 / 3)
    assert two["named_correctly"] == 1.0
    assert one["strangers_named"] == two["strangers_named"] == 0.0


def test_without_queries_from_the_queries_follow_the_enrolled_photos():
    data = embedded(PHOTOS)
    one = one_photo_enrolled(data, threshold=0.9)
    assert one["queries"] == 5 and one["photos_enrolled_each"] == 1  # ann 3, bob 2


def test_a_query_without_a_found_face_is_a_miss_even_when_its_vector_is_right():
    found = [True] * len(PHOTOS)
    found[5] = False  # bob's second photo: the service found no face in it
    result = one_photo_enrolled(embedded(PHOTOS, found), threshold=0.5)
    assert result["no_face"] == pytest.approx(1 / 5) and result["top1"] == pytest.approx(4 / 5)


def test_a_person_lands_in_the_same_set_whatever_else_the_folder_holds():
    names = [f"person_{i}" for i in range(200)]
    whole, half = carve(names), carve(names[::2], exclude={"person_0"})
    assert sorted(sum(whole.values(), [])) == sorted(names)
    assert all(set(half[s]) <= set(whole[s]) for s in SETS) and "person_0" not in sum(half.values(), [])
    assert all(whole[s] for s in SETS)


def test_distorted_queries_are_asked_against_the_clean_enrolled_photos():
    """The enrolled photos stay clean; queries and strangers come from the distorted copies, in
    the same order. Here the distortion moves bob's later photos onto ann, and hides one face."""
    clean = embedded(PHOTOS)
    moved = list(PHOTOS)
    moved[5] = ("bob", unit(1, 1))  # bob's second photo now looks like ann's first
    found = [True] * len(PHOTOS)
    found[6] = False  # bob's third: no face found once distorted
    distorted = embedded(moved, found)
    as_clean = one_photo_enrolled(clean, threshold=0.9)
    asked = one_photo_enrolled(clean, threshold=0.9, queries=distorted)
    assert as_clean["top1"] == 1.0 and as_clean["no_face"] == 0.0
    assert asked["queries"] == as_clean["queries"] == 5 and asked["enrolled_people"] == 2
    assert asked["no_face"] == pytest.approx(1 / 5) and asked["top1"] == pytest.approx(3 / 5)
    # bob's second photo is ann's first to the cosine: named, but wrongly
    assert asked["named_correctly"] == pytest.approx(as_clean["named_correctly"] - 2 / 5)


def test_tar_counts_each_query_against_its_own_and_every_other_enrolled_person():
    """Two people enrolled, five queries with a face: five genuine similarities, five impostor
    ones; at FAR 1e-3 the threshold sits above every impostor, so only genuine ones above all
    impostors are accepted."""
    data = embedded(PHOTOS)
    result = one_photo_enrolled(data, threshold=0.9)
    people = np.array(data.people)
    enrolled = {"ann": data.vectors[0], "bob": data.vectors[4]}
    queries = [1, 2, 3, 5, 6]
    genuine = [float(data.vectors[i] @ enrolled[people[i]]) for i in queries]
    impostor = [float(data.vectors[i] @ v) for i in queries for p, v in enrolled.items() if p != people[i]]
    assert result["tar_at_far_0.001"] == pytest.approx(np.mean([g > max(impostor) for g in genuine]))


def test_distorted_copies_are_written_once_beside_each_other_by_kind_and_person(tmp_path):
    from PIL import Image

    from evaluation.real_photos import distorted_copies
    from tests.conftest import GROUP

    photo = tmp_path / "lfw" / "Ada_Lovelace" / "Ada_Lovelace_0001.jpg"
    photo.parent.mkdir(parents=True)
    Image.open(GROUP).convert("RGB").resize((250, 173)).save(photo)
    (copy,) = distorted_copies([photo], "blur", tmp_path / "cache")
    assert copy == tmp_path / "cache" / "blur" / "Ada_Lovelace" / "Ada_Lovelace_0001.png"
    first = copy.read_bytes()
    copy.write_bytes(b"kept")  # a copy already there is not made again
    assert distorted_copies([photo], "blur", tmp_path / "cache") == [copy] and copy.read_bytes() == b"kept"
    copy.unlink()
    assert distorted_copies([photo], "blur", tmp_path / "cache")[0].read_bytes() == first  # the same pixels every run
