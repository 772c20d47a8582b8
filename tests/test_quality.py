"""Quality: each measurement names its reason on a crop made to have that fault, only a
blown-out or black face is refused as an enrolment reference, and only a face blown out almost
whole (or black) is gone: never named by its looks."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from core.faces.quality import assess
from training.distortions import build_distortions

BOX = (0, 0, 100, 100)


@pytest.fixture(scope="module")
def crop(group_faces) -> np.ndarray:
    return np.asarray(group_faces[1].crop((56, 40, 168, 184)).resize((160, 160)))


def test_a_clear_face_has_no_reasons(crop):
    q = assess(crop, BOX, 0.999)
    assert q.reasons == () and q.score > 0.5 and q.refusal() is None


@pytest.mark.parametrize(("fault", "reason"), [
    (lambda c: np.asarray(Image.fromarray(c).filter(ImageFilter.GaussianBlur(4))), "blurred"),
    (lambda c: build_distortions()["noisy"](c, np.random.default_rng(0)), "noisy"),
    (lambda c: (c // 12).astype(np.uint8), "too_dark"),
    (lambda c: build_distortions()["sunny"](c, np.random.default_rng(3)), "over_exposed"),
])
def test_each_fault_is_named(crop, fault, reason):
    q = assess(fault(crop), BOX, 0.999)
    assert reason in q.reasons and q.score < 0.5


def test_small_faces_and_unsure_detections_are_named(crop):
    assert "too_small" in assess(crop, (0, 0, 20, 20), 0.999).reasons
    assert "uncertain_detection" in assess(crop, BOX, 0.91).reasons


def test_only_a_face_that_is_gone_is_refused_as_a_reference(crop):
    white, black = assess(np.full_like(crop, 255), BOX, 0.99), assess(np.zeros_like(crop), BOX, 0.99)
    assert white.gone == ("over_exposed",) and "over_exposed" in white.refusal()
    assert black.gone == ("too_dark",) and "too_dark" in black.refusal()
    assert assess(crop, BOX, 0.99).gone == ()
    blurred = np.asarray(Image.fromarray(crop).filter(ImageFilter.GaussianBlur(6)))
    assert assess(blurred, BOX, 0.99).refusal() is None  # poor, but still a reference


def glared(crop: np.ndarray, share: float) -> np.ndarray:
    """`crop` with the top `share` of its central half's rows blown out to white."""
    out = crop.copy()
    h, w = crop.shape[:2]
    out[h // 4 : h // 4 + round(share * h / 2), w // 4 : 3 * w // 4] = 255
    return out


def test_a_partly_glared_face_is_refused_as_a_reference_but_not_gone(crop):
    partly, whole = assess(glared(crop, 0.6), BOX, 0.99), assess(glared(crop, 0.95), BOX, 0.99)
    assert partly.measures["over_exposed"] >= 0.6 and whole.measures["over_exposed"] >= 0.95
    assert "over_exposed" in partly.refusal() and partly.gone == ()  # still named by its looks
    assert whole.gone == ("over_exposed",) and "over_exposed" in whole.refusal()


def test_the_fast_median_is_scipys_median_filter():
    import numpy as np
    from scipy import ndimage

    from core.pixels import median3x3

    rng = np.random.default_rng(0)
    for shape in ((160, 160), (7, 5), (3, 3), (1, 4)):
        x = (rng.random(shape) * 255).astype(np.float32)
        x[0, 0] = x[-1, -1]  # ties too
        assert np.array_equal(median3x3(x), ndimage.median_filter(x, size=3)), shape


def test_the_fast_5x5_median_is_scipys_and_pillows_on_each_channel():
    import numpy as np
    from PIL import Image, ImageFilter
    from scipy import ndimage

    from core.faces.pipeline import denoised
    from core.pixels import median

    rng = np.random.default_rng(1)
    for shape in ((61, 47, 3), (5, 3, 3), (2, 9, 3), (1, 1, 3)):
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        x[: shape[0] // 2] //= 16  # ties too
        expected = ndimage.median_filter(x, size=(5, 5, 1), mode="nearest")
        assert np.array_equal(median(x, 5, "edge", axes=(0, 1)), expected), shape
        img = Image.fromarray(x)
        assert np.array_equal(np.asarray(denoised(img)), np.asarray(img.filter(ImageFilter.MedianFilter(5)))), shape
