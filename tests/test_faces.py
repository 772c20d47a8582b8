import pytest
import torch
from PIL import Image

from core.constants import CROP_SIZE
from core.embedding.standardize import standardize
from core.errors import NoFaceFound, TooManyFaces, UnusableFace
from core.faces.pipeline import DetectedFace, PipelineConfig, load_pipeline
from core.faces.subject import reference, subject
from core.images import Decoded, load_image
from tests.conftest import GROUP, PORTRAIT


def test_group_photo_has_six_faces(pipeline):
    faces = pipeline.detect_all(load_image(GROUP))
    assert len(faces) == 6
    assert all(f.path == "direct" and f.score >= 0.9 for f in faces)


def test_enrolment_refuses_several_comparable_faces(pipeline):
    img = load_image(GROUP)
    with pytest.raises(TooManyFaces, match="faces of comparable size and place.*box"):
        subject(pipeline.detect_all(img), img.size, "group.jpg", require_clear=True)
    assert subject(pipeline.detect_all(img), img.size) in pipeline.detect_all(img)  # caches take the nearest anyway


def test_enrolment_takes_the_central_face_and_a_chosen_one():
    size = (320, 320)
    central = DetectedFace((100, 100, 200, 220), 0.99, "direct")  # at the centre
    background = DetectedFace((10, 10, 70, 80), 0.99, "direct")  # under half the subject's area
    assert subject([background, central], size, require_clear=True) == central
    aside = DetectedFace((230, 0, 320, 110), 0.99, "direct")  # as large, but far off to the side
    assert subject([background, central, aside], size, require_clear=True) == central
    beside = DetectedFace((60, 100, 150, 210), 0.99, "direct")  # a pair photo: as central as the other
    pair = [DetectedFace((170, 100, 260, 210), 0.99, "direct"), beside]
    with pytest.raises(TooManyFaces, match="2 faces"):
        subject(pair, size, require_clear=True)
    assert subject(pair, size, box=(55, 95, 145, 215), require_clear=True) == beside
    with pytest.raises(NoFaceFound, match="no face at box"):
        subject([central], size, box=(400, 400, 450, 450))


def test_tiny_images_have_no_face_and_do_not_fail(pipeline):
    for size in [(1, 1), (5, 5), (11, 11), (19, 200), (200, 19)]:
        assert pipeline.detect_batch([Image.new("RGB", size, (128, 100, 90))]) == [[]]


def test_blank_image_has_no_face(pipeline):
    blank = Image.new("RGB", (200, 200), (120, 120, 120))
    faces = pipeline.detect_all(blank)
    assert faces == []
    with pytest.raises(NoFaceFound):
        subject(faces, blank.size)
    with pytest.raises(NoFaceFound):
        reference([], "blank.png")


def test_fallback_box_only_when_enabled():
    blank = Image.new("RGB", (200, 100), (120, 120, 120))
    faces = load_pipeline(PipelineConfig(use_fallback=True)).detect_all(blank)
    assert [f.path for f in faces] == ["fallback"]
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 100


def test_the_subject_is_the_central_face_among_the_large_ones():
    img = Image.new("RGB", (300, 300))
    edge = DetectedFace((0, 0, 100, 100), 0.99, "direct")
    centre = DetectedFace((110, 110, 190, 190), 0.95, "direct")  # smaller but over half the size
    tiny = DetectedFace((140, 140, 160, 160), 0.99, "direct")
    assert subject([edge, centre, tiny], img.size) == centre


def test_whole_faces_carry_the_box_in_the_photos_own_pixels(pipeline):
    img = load_image(PORTRAIT).resize((448, 448))
    (full,) = pipeline.faces([Decoded.whole(img)])
    half = img.resize((img.width // 2, img.height // 2))
    (reduced,) = pipeline.faces([Decoded(half, 2.0, img.size)])
    assert len(full) == len(reduced) == 1
    assert all(abs(a - b) < 0.05 * img.width for a, b in zip(full[0].box, reduced[0].box))
    assert full[0].crop.shape == (3, CROP_SIZE, CROP_SIZE) and full[0].crop.dtype == torch.uint8
    assert full[0].photo_size == reduced[0].photo_size == img.size
    assert reference(full, "portrait.png") is full[0]


def test_a_blown_out_face_is_no_reference(pipeline):
    img = load_image(PORTRAIT)
    (faces,) = pipeline.faces([Decoded.whole(img)])
    white = Image.new("RGB", img.size, (255, 255, 255))
    (blown,) = [[pipeline.face(Decoded.whole(white), pipeline.detect_all(img)[0])]]
    assert faces and blown[0].quality.refusal() is not None
    with pytest.raises(UnusableFace, match="unusable as a reference"):
        reference(blown, "white.png")


def test_crop_is_uint8_160(pipeline):
    img = load_image(PORTRAIT)
    face = subject(pipeline.detect_all(img), img.size)
    crop = pipeline.crop(img, face.box)
    assert crop.shape == (3, CROP_SIZE, CROP_SIZE) and crop.dtype == torch.uint8


def test_standardize_maps_pixel_range_to_unit_interval():
    out = standardize(torch.tensor([0, 127.5, 255]))
    assert torch.allclose(out, torch.tensor([-127.5 / 128, 0.0, 127.5 / 128]))
