"""The box regressor: what the net sees, how its answer maps back to the photo, when the
pipeline asks it, how it is trained, and what the shipped one finds in a glared photo."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from core.faces.box_regressor import (
    CARD_FILE,
    INPUT_SIDE,
    PAD_VALUE,
    WEIGHTS_FILE,
    BoxNet,
    BoxRegressor,
    Found,
    letterbox,
    window,
)
from core.faces.geometry import OVERLAPS_FACE_IOU, iou
from core.faces.mtcnn import Mtcnn
from core.faces.pipeline import BOX_REGRESSOR, SERVICE_PIPELINE, FacePipeline, glared, load_pipeline
from core.faces.subject import subject
from core.images import load_image
from core.paths import models_dir
from evaluation.open_set import threshold_for_stranger_rate
from tests.conftest import PORTRAIT
from training.box_regressor import (
    Examples,
    Photo,
    face_free_scores,
    fit,
    negative,
    positive,
    save,
)
from training.distortions import build_distortions

FACE = (250, 40, 40)  # the colour of the drawn "faces" below


class FixedNet(BoxNet):
    """A net that always answers the same: a face probability and a box (fractions of the square)."""

    def __init__(self, prob: float, box: tuple[float, float, float, float]) -> None:
        super().__init__()
        self.answer = torch.logit(torch.tensor(prob)), torch.tensor(box)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logit, box = self.answer
        return logit.expand(len(x)), box.expand(len(x), 4)


def drawn_photo(size: tuple[int, int] = (120, 96), box: tuple[int, int, int, int] = (50, 30, 80, 66), seed: int = 0) -> Photo:
    """A noisy grey photo with a red rectangle for a face; its erased copy has the rectangle gone."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(60, 120, (size[1], size[0], 3), dtype=np.uint8)
    erased = pixels.copy()
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = FACE
    return Photo(pixels, (float(x1), float(y1), float(x2), float(y2)), "clean", erased)


def is_face_colour(pixels: np.ndarray) -> np.ndarray:
    return (pixels[..., 0] > 200) & (pixels[..., 1] < 90)


def test_letterbox_puts_the_photo_top_left_and_pads_with_grey():
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    square, scale = letterbox(img)
    assert square.shape == (INPUT_SIDE, INPUT_SIDE, 3) and square.dtype == np.uint8
    assert scale == pytest.approx(200 / INPUT_SIDE)
    assert (square[: INPUT_SIDE // 2 - 2, :, 2] > 200).all()  # the photo: its upper half
    assert (square[INPUT_SIDE // 2 + 2 :] == PAD_VALUE).all()  # the padding below it


def test_window_outside_the_photo_is_padding():
    pixels = np.full((50, 50, 3), 10, np.uint8)
    out = window(pixels, -50.0, 0.0, 100.0)  # left half outside, right half the photo
    assert (out[:, : INPUT_SIDE // 2 - 2] == PAD_VALUE).all()
    assert (out[: INPUT_SIDE // 2 - 2, INPUT_SIDE // 2 + 2 :] == 10).all()


def test_find_maps_the_box_to_photo_pixels_and_applies_the_threshold():
    img = Image.new("RGB", (300, 150))
    sure = BoxRegressor(FixedNet(0.9, (0.25, 0.1, 0.5, 0.4)), threshold=0.5, sha256="")
    (found,) = sure.find([img])
    assert isinstance(found, Found) and found.score == pytest.approx(0.9)
    assert found.box == pytest.approx((75.0, 30.0, 150.0, 120.0), abs=0.01)  # fractions of the 300-px square
    unsure = BoxRegressor(FixedNet(0.3, (0.25, 0.1, 0.5, 0.4)), threshold=0.5, sha256="")
    assert unsure.find([img]) == [None]


def test_boxes_are_never_inside_out():
    net = BoxNet().eval()
    with torch.inference_mode():
        _, boxes = net(torch.randn(16, 3, INPUT_SIDE, INPUT_SIDE) * 3)
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def test_load_checks_the_weights_against_their_card(tmp_path):
    folder = save(BoxNet(), tmp_path / "boxes", {"threshold": 0.7})
    assert BoxRegressor.load(folder).threshold == 0.7
    card = json.loads((folder / CARD_FILE).read_text())
    (folder / CARD_FILE).write_text(json.dumps(card | {"sha256": hashlib.sha256(b"other").hexdigest()}))
    with pytest.raises(ValueError, match="does not match"):
        BoxRegressor.load(folder)
    (folder / WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=WEIGHTS_FILE):
        BoxRegressor.load(folder)


class Recording:
    """A regressor stand-in that records which photos it was asked about."""

    def __init__(self, answer: Found | None) -> None:
        self.answer, self.asked, self.sha256 = answer, [], "recording"

    def find(self, images):
        self.asked.extend(img.size for img in images)
        return [self.answer for _ in images]


def with_regressor(config, regressor) -> FacePipeline:
    return FacePipeline(config, Mtcnn(config.min_face_size), regressor)


def test_the_pipeline_asks_the_regressor_only_where_mtcnn_finds_nothing():
    config = replace(SERVICE_PIPELINE, retry_enhanced=False)
    answer = Found((10.0, 20.0, 60.0, 90.0), 0.8)
    recording = Recording(answer)
    pipeline = with_regressor(config, recording)
    portrait, blank = load_image(PORTRAIT), Image.new("RGB", (200, 160), (90, 90, 90))
    found = pipeline.detect_batch([portrait, blank])
    assert recording.asked == [(200, 160)]
    assert [f.path for f in found[0]] == ["direct"]
    assert len(found[1]) == 1 and found[1][0].path == "regressed"
    assert found[1][0].box == answer.box and found[1][0].score == 0.8
    unsure = with_regressor(config, Recording(None))
    assert unsure.detect_batch([blank]) == [[]]
    assert load_pipeline(replace(config, regress_missing=False)).regressor is None


def test_a_positive_window_holds_the_face_where_its_box_says():
    photo, rng = drawn_photo(), np.random.default_rng(1)
    for _ in range(20):
        pixels, box = positive(photo, rng)
        assert pixels.shape == (INPUT_SIDE, INPUT_SIDE, 3) and ((box >= -0.01) & (box <= 1.01)).all()
        x1, y1, x2, y2 = (box * INPUT_SIDE).round().astype(int)
        assert is_face_colour(pixels[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]).mean() > 0.95  # inside the box: the face
        inside = np.zeros(pixels.shape[:2], bool)
        inside[max(0, y1 - 2) : y2 + 2, max(0, x1 - 2) : x2 + 2] = True
        assert not is_face_colour(pixels[~inside]).any()  # and nowhere else


@pytest.mark.parametrize("size", [(200, 200), (85, 128), (128, 60)])
def test_negative_windows_hold_no_face(size):
    w, h = size
    photo = drawn_photo(size=size, box=(int(0.4 * w), int(0.4 * h), int(0.6 * w), int(0.6 * h)))
    rng = np.random.default_rng(2)
    windows = [negative(photo, rng) for _ in range(40)]
    assert sum(w is not None for w in windows) >= 20  # most photos have background to spare
    assert not any(is_face_colour(w).any() for w in windows if w is not None)


def test_batches_are_half_faces_and_label_only_faces_with_boxes():
    images, faces, boxes = Examples([drawn_photo(seed=i) for i in range(4)], seed=0).batch(16)
    assert images.shape == (16, INPUT_SIDE, INPUT_SIDE, 3) and faces.tolist() == [1.0, 0.0] * 8
    assert (boxes[faces == 0] == 0).all() and (boxes[faces == 1][:, 2] > boxes[faces == 1][:, 0]).all()


def test_training_learns_to_find_the_drawn_face():
    photos = [drawn_photo(box=(x, y, x + 30, y + 36), seed=i) for i, (x, y) in enumerate([(10, 10), (60, 40), (30, 50), (80, 5)] * 3)]

    def mean_iou(net: BoxNet) -> float:
        regressor = BoxRegressor(net, 0.0, "")
        return float(np.mean([iou(f.box, p.box) for f, p in zip(regressor.scores([Image.fromarray(p.pixels) for p in photos]), photos)]))

    torch.manual_seed(0)
    before = mean_iou(BoxNet().eval())
    after = mean_iou(fit(photos, epochs=4, steps=25, batch_size=32, log=False))
    assert after > 0.5 and after > before + 0.3


def test_the_threshold_keeps_the_false_share_on_the_pictures_it_was_chosen_on():
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(50)]
    torch.manual_seed(1)
    regressor = BoxRegressor(BoxNet(), 0.0, "")
    for target in (0.0, 0.1, 0.3):
        regressor.threshold = threshold_for_stranger_rate(face_free_scores(regressor, pictures), target)
        given = sum(f is not None for f in regressor.find([Image.fromarray(p) for p in pictures]))
        assert given <= target * len(pictures)


@pytest.fixture(scope="module")
def shipped() -> BoxRegressor:
    return BoxRegressor.load(models_dir() / BOX_REGRESSOR)


def test_the_shipped_regressor_places_glared_faces(shipped, group_faces):
    """FACECOM-like glare (training/distortions.py) over the six loosely cropped faces of the
    group photo, where MTCNN finds none: each box is centred in the face MTCNN finds in the
    unglared photo and overlaps it as much as the pipeline asks of a face a caller names
    (these crops are framed tighter than FACECOM's, so the boxes run large)."""
    mtcnn = load_pipeline(replace(SERVICE_PIPELINE, regress_missing=False))
    labels = [subject(mtcnn.detect_all(p), p.size).box for p in group_faces]
    glare = build_distortions()["sunny"]
    glared = [Image.fromarray(glare(np.asarray(p), np.random.default_rng(i))) for i, p in enumerate(group_faces)]
    assert mtcnn.detect_batch(glared) == [[]] * len(glared)
    for found, (x1, y1, x2, y2) in zip(shipped.find(glared), labels):
        assert found is not None
        cx, cy = (found.box[0] + found.box[2]) / 2, (found.box[1] + found.box[3]) / 2
        assert x1 < cx < x2 and y1 < cy < y2 and iou(found.box, (x1, y1, x2, y2)) >= OVERLAPS_FACE_IOU


def test_the_shipped_regressor_sees_no_face_in_face_free_pictures(shipped):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:200, 0:240]
    blob = np.clip(90 + 400 * np.exp(-((xx - 120) ** 2 + (yy - 90) ** 2) / 50**2), 0, 255).astype(np.uint8)
    pictures = [
        Image.new("RGB", (240, 200), (128, 128, 128)),
        Image.fromarray(rng.integers(0, 256, (200, 240, 3), dtype=np.uint8)),
        Image.fromarray(np.repeat(blob[..., None], 3, axis=2)),  # a glare blob with no head under it
        Image.fromarray(np.tile(np.linspace(0, 255, 240, dtype=np.uint8)[None, :, None], (200, 1, 3))),
    ]
    assert shipped.find(pictures) == [None] * len(pictures)


def test_on_a_glared_photo_the_regressor_adds_the_face_mtcnn_missed():
    """MTCNN finds the face in the corner; the blown-out centre is where the regressor looks,
    and its face is added unless it is one MTCNN already has."""
    photo = Image.new("RGB", (400, 400), (90, 90, 90))
    photo.paste(Image.new("RGB", (200, 200), (255, 255, 255)), (100, 100))  # the glare: the central half
    photo.paste(load_image(PORTRAIT), (0, 0))
    assert glared(photo) and not glared(load_image(PORTRAIT))
    config = replace(SERVICE_PIPELINE, retry_enhanced=False)
    centre = with_regressor(config, Recording(Found((150.0, 140.0, 250.0, 260.0), 0.9)))
    (faces,) = centre.detect_batch([photo])
    assert [f.path for f in faces] == ["direct", "regressed"] and faces[1].box == (150.0, 140.0, 250.0, 260.0)
    (mtcnn_face,) = [f for f in faces if f.path == "direct"]
    same = with_regressor(config, Recording(Found(mtcnn_face.box, 0.9)))
    assert [f.path for f in same.detect_batch([photo])[0]] == ["direct"]


class CountingMtcnn:
    """MTCNN as the pipeline uses it, counting the images of each pass."""

    def __init__(self, mtcnn: Mtcnn) -> None:
        self.mtcnn, self.passes = mtcnn, []

    def detect(self, images, helper=None):
        self.passes.append(len(images))
        return self.mtcnn.detect(images, helper)


def test_a_glared_photo_goes_from_the_first_pass_to_the_regressor_without_the_denoised_retry():
    """A median filter does not bring a blown-out face back; the retry is for the other photos."""
    white, grey = Image.new("RGB", (200, 160), (255, 255, 255)), Image.new("RGB", (200, 160), (90, 90, 90))
    assert glared(white) and not glared(grey)
    counting = CountingMtcnn(Mtcnn(SERVICE_PIPELINE.min_face_size))
    recording = Recording(None)
    pipeline = FacePipeline(SERVICE_PIPELINE, counting, recording)
    assert pipeline.detect_batch([white, grey]) == [[], []]
    assert counting.passes == [2, 1]  # both photos, then the grey one's denoised copy
    assert recording.asked == [(200, 160), (200, 160)]
    without = FacePipeline(SERVICE_PIPELINE, counting, None)  # no regressor: every photo gets the retry
    counting.passes.clear()
    without.detect_batch([white, grey])
    assert counting.passes == [2, 2]
