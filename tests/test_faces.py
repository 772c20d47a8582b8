import pytest
import torch
from PIL import Image

from core.errors import NoFaceFound, TooManyFaces
from core.faces import (
    CROP_SIZE,
    DetectedFace,
    FacePipeline,
    PipelineConfig,
    standardize,
)
from core.images import load_image
from tests.conftest import GROUP, PORTRAIT


def test_group_photo_has_six_faces(pipeline):
    faces = pipeline.detect_all(load_image(GROUP))
    assert len(faces) == 6
    assert all(f.path == "direct" and f.score >= 0.9 for f in faces)


def test_enrolment_refuses_several_comparable_faces(pipeline):
    img = load_image(GROUP)
    with pytest.raises(TooManyFaces, match="faces of comparable size and place.*box"):
        pipeline.subject(pipeline.detect_all(img), img.size, "group.jpg")


def test_enrolment_takes_the_central_face_and_a_chosen_one():
    size = (320, 320)
    subject = DetectedFace((100, 100, 200, 220), 0.99, "direct")  # at the centre
    background = DetectedFace((10, 10, 70, 80), 0.99, "direct")  # under half the subject's area
    assert FacePipeline.subject([background, subject], size) == subject
    aside = DetectedFace((230, 0, 320, 110), 0.99, "direct")  # as large, but far off to the side
    assert FacePipeline.subject([background, subject, aside], size) == subject
    beside = DetectedFace((60, 100, 150, 210), 0.99, "direct")  # a pair photo: as central as the other
    pair = [DetectedFace((170, 100, 260, 210), 0.99, "direct"), beside]
    with pytest.raises(TooManyFaces, match="2 faces"):
        FacePipeline.subject(pair, size)
    assert FacePipeline.subject(pair, size, box=(55, 95, 145, 215)) == beside
    with pytest.raises(NoFaceFound, match="no face at box"):
        FacePipeline.subject([subject], size, box=(400, 400, 450, 450))


def test_tiny_images_have_no_face_and_do_not_fail(pipeline):
    for size in [(1, 1), (5, 5), (11, 11), (19, 200), (200, 19)]:
        assert pipeline.detect_batch([Image.new("RGB", size, (128, 100, 90))]) == [[]]


def test_blank_image_has_no_face(pipeline):
    blank = Image.new("RGB", (200, 200), (120, 120, 120))
    faces = pipeline.detect_all(blank)
    assert faces == []
    with pytest.raises(NoFaceFound):
        pipeline.primary(blank, faces)


def test_fallback_box_only_when_enabled():
    blank = Image.new("RGB", (200, 100), (120, 120, 120))
    faces = FacePipeline(PipelineConfig(use_fallback=True)).detect_all(blank)
    assert [f.path for f in faces] == ["fallback"]
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= 200 and 0 <= y1 < y2 <= 100


def test_primary_prefers_the_central_face():
    img = Image.new("RGB", (300, 300))
    edge = DetectedFace((0, 0, 100, 100), 0.99, "direct")
    centre = DetectedFace((110, 110, 190, 190), 0.95, "direct")  # smaller but over half the size
    tiny = DetectedFace((140, 140, 160, 160), 0.99, "direct")
    assert FacePipeline.primary(img, [edge, centre, tiny]) == centre


def test_crop_is_uint8_160(pipeline):
    img = load_image(PORTRAIT)
    face = pipeline.subject(pipeline.detect_all(img), img.size)
    crop = pipeline.crop(img, face.box)
    assert crop.shape == (3, CROP_SIZE, CROP_SIZE) and crop.dtype == torch.uint8


def test_standardize_maps_pixel_range_to_unit_interval():
    out = standardize(torch.tensor([0, 127.5, 255]))
    assert torch.allclose(out, torch.tensor([-127.5 / 128, 0.0, 127.5 / 128]))
