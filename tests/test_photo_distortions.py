"""The evaluation's own distortions (evaluation/photo_distortions.py): each does what its name
says to a real photo, the same way every run, and the unknown kind is refused."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from core.images import load_image
from evaluation.photo_distortions import KINDS, distort, seed_of
from tests.conftest import GROUP


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A colour news photo at LFW's size."""
    return np.asarray(load_image(GROUP).convert("RGB").resize((250, 173)))


def sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def grey(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)


def residual(img: np.ndarray) -> float:
    """How far the pixels stray from a smooth version of themselves."""
    return float(np.abs(grey(img) - cv2.medianBlur(grey(img).astype(np.uint8), 5)).mean())


def blockiness(img: np.ndarray) -> float:
    """Steps across JPEG's 8-pixel block edges, against steps inside the blocks."""
    steps = np.abs(np.diff(grey(img), axis=1))
    return float(steps[:, 7::8].mean() / np.delete(steps, np.s_[7::8], axis=1).mean())


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_keeps_the_photo_s_shape_and_is_the_same_every_run(photo, kind):
    seed = seed_of("Ada_0001.jpg", kind)
    once, again = distort(photo, kind, seed), distort(photo, kind, seed)
    assert once.shape == photo.shape and once.dtype == np.uint8
    assert np.array_equal(once, again)
    assert not np.array_equal(once, photo)
    assert not np.array_equal(once, distort(photo, kind, seed + 1)) or kind == "jpeg"  # JPEG q8 has nothing random


def test_each_kind_does_what_its_name_says(photo):
    out = {kind: distort(photo, kind, seed_of("Ada_0001.jpg", kind)) for kind in KINDS}
    base_sharp, base_mean = sharpness(photo), photo.mean()
    for kind in ("blur", "motion", "lowres"):
        assert sharpness(out[kind]) < 0.5 * base_sharp, kind
    assert out["lowlight"].mean() < 0.6 * base_mean
    assert (out["glare"] >= 250).mean() > (photo >= 250).mean() + 0.2
    assert out["fog"].std() < 0.6 * photo.std() and out["fog"].mean() > base_mean  # faded toward a bright airlight
    assert residual(out["noise"]) > 2 * residual(photo)
    change = grey(out["rain"]) - grey(photo)
    assert (change < -10).mean() > 0.5 and (change > 40).mean() > 0.005  # bright streaks over a darker scene
    assert blockiness(out["jpeg"]) > 1.5 * blockiness(photo)


def test_an_unknown_kind_is_refused_with_the_known_ones(photo):
    with pytest.raises(ValueError, match="unknown distortion 'smudge'.*blur"):
        distort(photo, "smudge", 1)


def test_seeds_differ_by_photo_and_by_kind():
    assert seed_of("a.jpg", "blur") != seed_of("b.jpg", "blur") != seed_of("a.jpg", "rain")
