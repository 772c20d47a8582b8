"""Detection recall and open-set figures against hand-computed values on small cases."""

from pathlib import Path

import numpy as np
import pytest

from core.data.dataset import Sample
from core.faces.geometry import iou
from core.faces.pipeline import DetectedFace
from evaluation import detection, open_set


def unit(*v):
    x = np.asarray(v, dtype=np.float32)
    return x / np.linalg.norm(x)


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_detection_recall_by_kind():
    s = lambda kind, source="a": Sample("p", Path(f"{source}_{kind}.jpg"), kind, source)
    f = lambda box, path="direct": DetectedFace(box, 0.99, path)
    samples = [s("clean"), s("noisy"), s("noisy"), s("noisy"), s("sunny"), s("clean", "b"), s("sunny", "b")]
    faces = [f((0, 0, 10, 10)), f((1, 1, 10, 10)), f((30, 30, 40, 40)), f((0, 0, 10, 10), "fallback"),
             f((0, 0, 9, 9), "regressed"), f((0, 0, 5, 5), "fallback"), f((0, 0, 5, 5))]
    rec = detection.recall(samples, faces)
    # b's clean photo has no detected face: its sunny copy carries no label.
    assert rec == {
        "noisy": {"n": 3, "found": pytest.approx(1 / 3), "wrong_face": pytest.approx(1 / 3), "missed": pytest.approx(1 / 3)},
        "sunny": {"n": 1, "found": 1.0, "wrong_face": 0.0, "missed": 0.0},
    }


@pytest.fixture()
def case():
    # Gallery: two photos of A, one of B, one of C. Queries: A (clear), B (close to C), C (clear).
    gallery = np.stack([unit(1, 0, 0), unit(1, 0.2, 0), unit(0, 1, 0), unit(0, 0, 1)])
    labels = ["A", "A", "B", "C"]
    queries = np.stack([unit(1, 0.1, 0), unit(0, 0.6, 0.8), unit(0.1, 0, 1)])
    return gallery, labels, queries, ["A", "B", "C"]


def test_scores_take_each_persons_template_and_score_strangers_without_them(case):
    gallery, labels, queries, qlabels = case
    s = open_set.scores(gallery, labels, queries, qlabels)
    a = unit(1 + 0.9805807, 0.19611615, 0)  # A's two photos' mean, made unit: not either photo
    sim = queries @ np.stack([a, gallery[2], gallery[3]]).T  # A, B, C
    assert s["right"].tolist() == [True, False, True]  # B's query is nearer C (0.8 > 0.6)
    assert s["top"] == pytest.approx([sim[0, 0], sim[1, 2], sim[2, 2]])
    assert s["top"][0] > (queries[0] @ gallery[:2].T).max()  # A's query lies between her photos
    assert s["stranger_top"] == pytest.approx([max(sim[0, 1], sim[0, 2]), sim[1, 2], max(sim[2, 0], sim[2, 1])])


def test_report_at_a_threshold(case):
    gallery, labels, queries, qlabels = case
    r = open_set.report(gallery, labels, queries, qlabels, ["noisy", "noisy", "rainy"], [True, True, False], threshold=0.5,
                        flagged=[False, True, True])
    # A: named correctly. B: wrong person on top (C at 0.8). C: not detected, so no answer at all.
    assert r["overall"]["named_correctly"] == pytest.approx(1 / 3)
    assert r["overall"]["no_face"] == pytest.approx(1 / 3)
    # As strangers: A's best other is B or C at ~0.1 (not named); B's best other is C at 0.8 (named).
    assert r["overall"]["strangers_named"] == pytest.approx(1 / 3)
    assert r["per_distortion"]["rainy"] == {"n": 1, "named_correctly": 0.0, "strangers_named": 0.0, "no_face": 1.0, "face_gone": 0.0,
                                           "strangers_named_ucb95": 0.95,  # 0 of 1 bounds nothing
                                           "right_but_below_threshold": 0.0, "wrong_name": 0.0}
    assert r["overall"]["wrong_name"] == pytest.approx(1 / 3)  # B's query named C
    # The flagged face (B's) is the one named wrongly; C's was not detected and counts in neither.
    assert r["by_quality"]["flagged"]["n"] == 1 and r["by_quality"]["flagged"]["wrong_name"] == 1.0
    assert r["by_quality"]["not_flagged"]["n"] == 1 and r["by_quality"]["not_flagged"]["named_correctly"] == 1.0




def test_a_face_gone_is_never_named_and_the_threshold_is_chosen_without_it(case):
    """B's query (nearer C at 0.8) is gone to glare: the service names nobody for it, so it is
    neither a wrong name nor a stranger named, and it leaves the strangers the threshold is chosen on."""
    gallery, labels, queries, qlabels = case
    kinds, found = ["sunny"] * 3, [True] * 3
    before = open_set.report(gallery, labels, queries, qlabels, kinds, found, threshold=0.5)
    after = open_set.report(gallery, labels, queries, qlabels, kinds, found, threshold=0.5, gone=[False, True, False])
    assert before["overall"]["wrong_name"] == pytest.approx(1 / 3) and after["overall"]["wrong_name"] == 0.0
    assert before["overall"]["strangers_named"] == pytest.approx(1 / 3) and after["overall"]["strangers_named"] == 0.0
    assert after["overall"]["face_gone"] == pytest.approx(1 / 3) and after["overall"]["no_face"] == 0.0
    assert after["overall"]["named_correctly"] == before["overall"]["named_correctly"] == pytest.approx(2 / 3)
    # Chosen on A's and C's strangers alone: just above the higher of their best other people.
    sim = queries @ gallery.T
    expected = max(max(sim[0, 2], sim[0, 3]), max(sim[2, :2].max(), sim[2, 2]))
    assert after["threshold_for_target_point"] == pytest.approx(expected)

def test_an_empty_group_is_nan_without_a_warning(case):
    """No query flagged by the quality check: that group's rates are NaN (nothing to say), not a
    numpy warning, and its bound says nothing either."""
    import warnings

    gallery, labels, queries, qlabels = case
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = open_set.report(gallery, labels, queries, qlabels, ["noisy"] * 3, [True] * 3, threshold=0.5, flagged=[False] * 3)
    empty = r["by_quality"]["flagged"]
    assert empty["n"] == 0 and empty["strangers_named_ucb95"] == 1.0
    assert all(np.isnan(empty[k]) for k in ("named_correctly", "strangers_named", "no_face", "right_but_below_threshold", "wrong_name"))
    assert r["by_quality"]["not_flagged"]["n"] == 3

def test_threshold_keeps_the_stranger_rate_on_the_data_it_was_chosen_on():
    rng = np.random.default_rng(0)
    stranger = rng.normal(0.2, 0.1, 5000)
    for rate in (0.01, 0.05, 0.2):
        t = open_set.threshold_for_stranger_rate(stranger, rate)
        assert (stranger >= t).mean() <= rate
        assert (stranger >= t - 1e-3).mean() > (stranger >= t).mean()  # and no higher than it needs to be


def test_the_confident_threshold_keeps_the_rate_on_new_strangers_where_the_point_one_does_not():
    rng = np.random.default_rng(1)
    chosen_on = rng.normal(0.2, 0.1, 1200)  # about what 100 validation people give
    point = open_set.threshold_for_stranger_rate(chosen_on, 0.01)
    confident = open_set.threshold_for_stranger_rate(chosen_on, 0.01, confidence=0.95)
    named = int((chosen_on >= confident).sum())
    assert confident > point and open_set.rate_upper_bound(named, 1200) <= 0.01 < open_set.rate_upper_bound(named + 1, 1200)
    new_people = [rng.normal(0.2, 0.1, 1200) for _ in range(200)]
    over = lambda t: np.mean([(s >= t).mean() > 0.01 for s in new_people])
    assert over(confident) < 0.05 < over(point)  # the point threshold is over the target about half the time
    assert open_set.threshold_for_stranger_rate(chosen_on[:50], 0.01, confidence=0.95) > chosen_on[:50].max()  # too few: names none


def test_the_upper_bound_is_clopper_pearsons():
    assert open_set.rate_upper_bound(0, 300) == pytest.approx(1 - 0.05 ** (1 / 300))
    assert open_set.rate_upper_bound(10, 1000) == pytest.approx(0.01683, abs=1e-4)
    assert open_set.rate_upper_bound(5, 5) == 1.0
