"""False-face measurement: the background strips and the counting, by hand."""

from core.faces.pipeline import DetectedFace
from evaluation.false_faces import background_strip, count_false


def test_the_largest_strip_clear_of_the_grown_face():
    # face 90..150 x 60..120 in a 300x200 photo; grown by 20 px: 70..170 x 40..140
    assert background_strip((300, 200), (90, 60, 150, 120)) == (171, 0, 300, 200)  # right: 129x200
    assert background_strip((100, 100), (20, 20, 80, 80)) is None  # no strip reaches 64 px


def test_only_detections_off_the_face_count():
    label = (100, 100, 200, 200)
    faces = [DetectedFace((105, 98, 198, 205), 0.99, "direct"),  # the face itself
             DetectedFace((10, 10, 40, 40), 0.95, "direct"),  # background
             DetectedFace((150, 150, 260, 260), 0.93, "direct")]  # IoU 0.14 with the face: background
    assert count_false(faces, label) == 2
    assert count_false([], label) == 0
