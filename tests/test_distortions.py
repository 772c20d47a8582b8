"""Synthetic distortions: deterministic under a seed, uint8 in and out, same shape, and real."""

import numpy as np
import pytest

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
