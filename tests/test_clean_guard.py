"""The clean-verification guard: TAR weighted by resampled people, its interval, the paired difference."""

import numpy as np
import pytest

from evaluation.clean_guard import _WeightedTar, clean_guard
from evaluation.metrics import clean_verification, tar_at


def _on_circle(degrees: list[float]) -> np.ndarray:
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


# Person A at 0° and 40°, B at 90° and 150°, C at 210°. Genuine pairs: A 0.766, B 0.500.
# Impostor pairs, most similar first: A2·B1 0.643, B2·C 0.500, A1·B1 0.000, A2·B2 −0.342, B1·C −0.500,
# A1·B2 and A1·C −0.866, A2·C −0.985.
HAND = _on_circle([0, 40, 90, 150, 210])
HAND_PEOPLE = np.array([0, 0, 1, 1, 2])


def test_unweighted_tar_is_the_plain_one_worked_by_hand():
    # FAR 0.1 of 8 impostor pairs: none may pass, so the threshold is the most similar (0.643):
    # A's pair passes, B's does not.
    assert _WeightedTar(HAND, HAND_PEOPLE, 0.1)(np.ones(3)) == pytest.approx(0.5)
    # FAR 0.25: two may pass, the threshold is the third (0.000), both genuine pairs pass.
    assert _WeightedTar(HAND, HAND_PEOPLE, 0.25)(np.ones(3)) == pytest.approx(1.0)


def test_people_drawn_twice_weigh_twice_and_people_not_drawn_not_at_all():
    # A twice, B once, C not drawn: the impostor pairs left are A·B's, each of weight 2, so the
    # threshold at FAR 0.1 is again 0.643; A's genuine pair weighs 2, B's 1: TAR 2/3.
    assert _WeightedTar(HAND, HAND_PEOPLE, 0.1)(np.array([2.0, 1.0, 0.0])) == pytest.approx(2 / 3)
    # Without C, FAR 0.25 of weight 8 lets weight 2 pass: the threshold is the second A·B pair
    # (0.000), and both genuine pairs pass.
    assert _WeightedTar(HAND, HAND_PEOPLE, 0.25)(np.array([2.0, 1.0, 0.0])) == pytest.approx(1.0)
    # Only people with one photo: no genuine pair, no TAR.
    assert np.isnan(_WeightedTar(HAND, HAND_PEOPLE, 0.1)(np.array([0.0, 0.0, 3.0])))


def _clusters(people: int, photos: int, spread: float, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((people, 64))
    x = np.repeat(centres, photos, axis=0) + spread * rng.standard_normal((people * photos, 64))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"p{i}" for i in range(people) for _ in range(photos)]


def test_point_estimate_is_the_reports_clean_tar_and_lies_in_its_interval():
    gallery, labels = _clusters(40, 3, 1.0, seed=1)
    guard = clean_guard(gallery, labels, resamples=300)
    assert guard["tar"] == pytest.approx(tar_at(clean_verification(gallery, labels), 1e-3))
    lo, hi = guard["tar_interval"]
    assert lo <= guard["tar"] <= hi and lo < hi  # 40 people: the interval has a width
    assert guard["people"] == 40 and guard["genuine_pairs"] == 40 * 3


def test_the_same_embeddings_differ_by_nothing_and_worse_ones_by_a_clear_interval():
    tight, labels = _clusters(40, 3, 0.8, seed=2)
    same = clean_guard(tight, labels, baseline=tight, resamples=200)
    assert same["difference"] == 0.0 and same["difference_interval"] == [0.0, 0.0]
    rng = np.random.default_rng(3)
    worse = tight + 0.07 * rng.standard_normal(tight.shape).astype(np.float32)  # the same people, blurred together
    worse /= np.linalg.norm(worse, axis=1, keepdims=True)
    guard = clean_guard(worse, labels, baseline=tight, resamples=300)
    assert guard["difference"] < 0 and guard["difference_interval"][1] < 0


def test_no_pairs_give_no_figures_rather_than_an_error():
    gallery, labels = _clusters(5, 1, 0.5, seed=4)  # one photo each: no genuine pair
    guard = clean_guard(gallery, labels, baseline=gallery, resamples=20)
    assert np.isnan(guard["tar"]) and all(np.isnan(guard["tar_interval"])) and np.isnan(guard["difference"])
