"""Synthetic distortions: deterministic under a seed, uint8 in and out, same shape, and real."""

import numpy as np
import pytest

from training.config import load_config
from training.distortions import KINDS, SyntheticDistortions, build_distortions


@pytest.fixture(scope="module")
def crop(group_faces) -> np.ndarray:
    return np.asarray(group_faces[0].resize((160, 160)))


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_is_seeded_keeps_shape_and_range_and_changes_the_photo(crop, kind):
    distort = build_distortions()[kind]
    a = distort(crop, np.random.default_rng(7))
    b = distort(crop, np.random.default_rng(7))
    c = distort(crop, np.random.default_rng(8))
    assert a.shape == crop.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a.astype(int) - crop.astype(int)).mean() > 2  # visibly distorted


def test_only_eligible_crops_are_distorted_at_the_share_asked(crop):
    crops = np.stack([crop] * 200)
    eligible = np.arange(200) < 100
    out = SyntheticDistortions(seed=0, share=0.5)(crops, eligible)
    changed = np.array([not np.array_equal(o, crop) for o in out])
    assert not changed[100:].any()
    assert 30 <= changed[:100].sum() <= 70
    again = SyntheticDistortions(seed=0, share=0.5)(crops, eligible)
    assert np.array_equal(out, again)
    assert not (SyntheticDistortions(seed=0, share=0.0)(crops, eligible) != crops).any()


def test_sunny_saturates_the_face_centre(crop):
    out = build_distortions()["sunny"](crop, np.random.default_rng(0))
    centre = out[60:100, 60:100].astype(int)
    assert (centre >= 250).mean() > 0.5  # the face is blown out, as in FACECOM's sunny photos


def test_the_kinds_drawn_can_be_weighted_and_unknown_ones_are_refused():
    crops = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    drawn = SyntheticDistortions(seed=0, share=1.0, kinds=("sunny",))(crops, np.ones(3, dtype=bool))
    rng, glare = np.random.default_rng(0), build_distortions()["sunny"]  # the same draws, by hand
    rng.random(3)
    by_hand = [glare(np.ascontiguousarray(c), rng) for c in crops if rng.integers(1) == 0]
    assert np.array_equal(drawn, np.stack(by_hand))
    weighted = SyntheticDistortions(seed=0, share=1.0, kinds=("noisy", "noisy", "blurred"))
    picks = [weighted.draw[int(weighted.rng.integers(len(weighted.draw)))] for _ in range(3000)]
    assert 0.6 < picks.count("noisy") / 3000 < 0.73
    with pytest.raises(ValueError, match="drizzle"):
        SyntheticDistortions(seed=0, kinds=("rainy", "drizzle"))
    with pytest.raises(ValueError, match="drizzle"):  # a training config says so as it is read
        load_config(None, ["synthetic_kinds=rainy,drizzle"])
    assert load_config(None, ["synthetic_kinds=rainy, noisy,rainy"]).distortion_kinds == ("rainy", "noisy", "rainy")
    assert load_config(None, []).distortion_kinds == KINDS
