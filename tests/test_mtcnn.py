"""The MTCNN driver: the reference cascade's boxes, on either runtime, and its parts by hand."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Executor, ThreadPoolExecutor

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from PIL import Image
from torch.nn import functional as F

from core.faces import mtcnn_nets
from core.faces.geometry import iou
from core.faces.mtcnn import LEVEL_OVERHEAD_PIXELS, AreaSampler, Mtcnn, _levels_here, nms, pyramid_scales
from core.faces.mtcnn_nets import OpenVinoNet, TorchNet, load_nets
from core.faces.pipeline import PipelineConfig, load_pipeline
from core.images import load_image
from tests.conftest import GROUP, PORTRAIT


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    group = load_image(GROUP)
    return [group, load_image(PORTRAIT), group.resize((group.width // 2, group.height // 2)),
            group.rotate(8, expand=True)]


@pytest.mark.parametrize("runtime", ["torch", "openvino"])
def test_finds_the_faces_facenet_pytorchs_driver_finds(photos, runtime):
    """Same cascade, weights and resampling: the boxes the shipped model was trained on."""
    reference, mine = MTCNN(min_face_size=20, keep_all=True), Mtcnn(20, runtime=runtime)
    for img in photos:
        boxes, probs = reference.detect(img)
        (found,) = mine.detect([img])
        assert len(found) == len(boxes) > 0
        for box, prob in zip(boxes, probs):
            best = max(found, key=lambda d: iou(d.box, box))
            assert iou(best.box, box) > 0.99
            assert abs(best.score - prob) < 1e-3


def test_a_batch_finds_what_each_image_finds_alone(photos):
    detector = Mtcnn(20)
    group, flipped = photos[0], photos[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    together = detector.detect([group, flipped])
    assert [len(faces) for faces in together] == [len(detector.detect([group])[0]), len(detector.detect([flipped])[0])]


class Watched(Executor):
    """A thread pool that counts the jobs it was given."""

    def __init__(self) -> None:
        self.pool, self.jobs = ThreadPoolExecutor(1), 0

    def submit(self, fn, /, *args, **kwargs):
        self.jobs += 1
        return self.pool.submit(fn, *args, **kwargs)


def test_a_helper_thread_takes_part_of_torchs_work_and_the_same_faces_are_found(photos):
    detector, helper = Mtcnn(20, runtime="torch"), Watched()
    for img in photos:
        (alone,) = detector.detect([img])
        (helped,) = detector.detect([img], helper)
        assert len(helped) == len(alone) > 0
        for a, b in zip(sorted(alone, key=lambda d: d.box), sorted(helped, key=lambda d: d.box)):
            assert np.allclose(a.box, b.box, atol=1e-3) and abs(a.score - b.score) < 1e-5
            assert np.allclose(a.landmarks, b.landmarks, atol=1e-3)
    assert helper.jobs >= 3 * len(photos)  # the pyramid's smaller levels, half of RNet's crops, half of ONet's
    helper.pool.shutdown()


def test_openvinos_nets_give_torchs_outputs_in_fp32():
    """To float rounding, at any thread count: a bf16 run (OpenVINO's own choice on a CPU with
    AMX or AVX-512 BF16) would be off by about 1e-2."""
    torch.manual_seed(0)
    cases = {0: [(1, 3, 12, 12), (1, 3, 75, 106), (2, 3, 40, 31)], 1: [(1, 3, 24, 24), (37, 3, 24, 24)], 2: [(1, 3, 48, 48), (9, 3, 48, 48)]}
    ours, reference = load_nets(torch.device("cpu"), "openvino"), load_nets(torch.device("cpu"), "torch")
    assert ours[3] and not reference[3]  # OpenVINO spreads a call over its threads; torch takes a helper
    for k, shapes in cases.items():
        for shape in shapes:
            batch = torch.randn(*shape).contiguous(memory_format=torch.channels_last)  # as the sampler gives it
            expected = reference[k](batch)
            for threads in (1, 2):
                got = ours[k](batch, threads)
                assert [g.shape for g in got] == [e.shape for e in expected]
                assert all(torch.allclose(g, e, atol=1e-5) for g, e in zip(got, expected))


def test_openvino_spends_the_helpers_core_inside_each_call(photos):
    detector, helper = Mtcnn(20, runtime="openvino"), Watched()
    for img in photos:
        (alone,) = detector.detect([img])
        (helped,) = detector.detect([img], helper)
        assert [d.box for d in helped] == pytest.approx([d.box for d in alone], abs=1e-3)
    assert helper.jobs == 0
    pnet = detector.nets[0]
    assert isinstance(pnet, OpenVinoNet) and {1, 2} <= set(pnet.copies.compiled())  # a copy compiled for each thread count
    helper.pool.shutdown()


def test_photos_detected_side_by_side_on_openvino_get_their_own_faces(photos):
    """Each thread takes a compiled copy of its own, and the outputs are copied out of the
    request before another call can reuse it."""
    detector = Mtcnn(20, runtime="openvino")
    alone = [detector.detect([img])[0] for img in photos]
    results: dict[int, list] = {}

    def detect_all(worker: int) -> None:
        order = photos if worker % 2 else photos[::-1]
        for _ in range(3):
            for img in order:
                results.setdefault(worker, []).append((photos.index(img), detector.detect([img])[0]))

    threads = [threading.Thread(target=detect_all, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for found in results.values():
        for index, faces in found:
            assert [d.box for d in faces] == pytest.approx([d.box for d in alone[index]], abs=1e-3)


def test_an_openvino_answer_survives_the_next_call():
    """The request's output buffers are reused by its next call: an answer must be a copy."""
    onet = load_nets(torch.device("cpu"), "openvino")[2]
    first, second = torch.randn(4, 3, 48, 48), torch.randn(4, 3, 48, 48)
    answer = onet(first)
    kept = [t.clone() for t in answer]
    onet(second)
    assert all(torch.equal(a, k) for a, k in zip(answer, kept))


def test_where_openvino_cannot_load_torch_detects(monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise RuntimeError("this CPU is not supported")

    monkeypatch.setattr(mtcnn_nets, "OpenVinoNet", refuse)
    with caplog.at_level(logging.ERROR):
        *nets, spread = load_nets(torch.device("cpu"), "auto")
    assert all(isinstance(net, TorchNet) for net in nets) and not spread
    assert "detecting with torch" in caplog.text
    with pytest.raises(ValueError, match="CPU"):
        load_nets(torch.device("cuda"), "openvino")


def test_the_helper_gets_the_smaller_levels_worth_about_as_much_as_this_threads():
    fixed = LEVEL_OVERHEAD_PIXELS
    assert _levels_here([100 * fixed, fixed, fixed]) == 1  # one level outweighs the rest: it alone stays
    assert _levels_here([0] * 6) == 3  # equal levels: half each
    assert _levels_here([9 * fixed, 3 * fixed, fixed, 0, 0, 0]) == 1  # 10 here against 4 + 2 + 4 × 1 there
    assert _levels_here([4 * fixed, 3 * fixed, 2 * fixed, fixed, 0, 0, 0, 0]) == 2  # 5 + 4 here against 3 + 2 + 4 × 1 there
    assert _levels_here([fixed]) == 1  # a single level is never handed away whole


def test_landmarks_lie_inside_their_box(photos):
    (faces,) = Mtcnn(20).detect([photos[1]])
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert len(face.landmarks) == 5
        assert all(x1 <= x <= x2 and y1 <= y <= y2 for x, y in face.landmarks)


def test_blank_and_tiny_images_have_no_faces():
    detector = Mtcnn(20)
    assert detector.detect([Image.new("RGB", (300, 200), (128, 128, 128))]) == [[]]
    assert detector.detect([Image.new("RGB", (11, 40))]) == [[]]  # below PNet's 12-px window


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [2, 2, 6, 6]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], dtype=np.float32)
    # union: box 1 overlaps box 0 by 81/100 and goes; the small box 3 overlaps box 0 by 16/100 and stays
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # min: box 3 lies inside box 0 (overlap 25/25 of the smaller, counting pixels inclusively) and
    # removes it, being the better; box 1 overlaps box 3 by the whole of box 3 and goes too
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [3, 2]


def test_pyramid_by_hand():
    # 12/20 = 0.6, then ×0.709 while the shorter side (100 px) stays >= 12 px: 60, 42.5, 30.2, 21.4, 15.2
    assert np.allclose(pyramid_scales(200, 100, 20), [0.6 * 0.709**k for k in range(5)])
    assert pyramid_scales(200, 100, 120) == []


def test_the_pipeline_detects_large_photos_at_its_detection_side(photos):
    """A 4× upscaled group photo is detected on a copy at `detect_side` and its boxes come back
    in its own pixels, where the same faces are."""
    group = photos[0]
    big = group.resize((group.width * 4, group.height * 4))
    pipeline = load_pipeline(PipelineConfig(detect_side=max(group.size)))
    small = sorted(pipeline.detect_all(group), key=lambda f: f.box[0])
    large = sorted(pipeline.detect_all(big), key=lambda f: f.box[0])
    assert len(small) == len(large) > 0
    for a, b in zip(small, large):
        assert iou([4 * v for v in a.box], b.box) > 0.85  # resampled twice: close, not equal


def test_an_extreme_aspect_ratio_is_no_face_not_a_crash():
    assert load_pipeline(PipelineConfig()).detect_all(Image.new("RGB", (20000, 30))) == []


@pytest.mark.parametrize("in_torch", [False, True], ids=["numpy", "torch"])
def test_area_sampling_is_torchs_area_interpolation_to_the_bit(in_torch):
    pixels = torch.randint(0, 256, (2, 37, 53, 3), dtype=torch.uint8)
    planes = pixels.permute(0, 3, 1, 2).float()
    sample = AreaSampler(pixels, in_torch)
    whole = torch.tensor([[0, 0, 53, 37], [0, 0, 53, 37]])
    for out in ((23, 33), (12, 12), (37, 53), (50, 70)):  # shrinking, to PNet's window, same size, enlarging
        assert torch.equal(sample(torch.arange(2), whole, *out), F.interpolate(planes, size=out, mode="area"))
    regions = torch.tensor([[5, 7, 30, 20], [0, 0, 3, 2], [40, 1, 53, 37]])  # crops as RNet gets them, one tiny
    got = sample(torch.tensor([1, 0, 1]), regions, 24, 24)
    for k, (image, region) in enumerate(zip((1, 0, 1), regions.tolist())):
        x1, y1, x2, y2 = region
        assert torch.equal(got[k : k + 1], F.adaptive_avg_pool2d(planes[image : image + 1, :, y1:y2, x1:x2], 24))


def test_the_gpus_way_of_resampling_finds_the_same_faces(photos):
    """The summed-area table in torch (what a GPU uses) and in numpy (the CPU) over one batch."""
    in_numpy, in_torch = Mtcnn(20), Mtcnn(20)
    in_torch.sample_in_torch = True
    batch = [photos[0], photos[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    for a, b in zip(in_numpy.detect(batch), in_torch.detect(batch)):
        assert len(a) == len(b) > 0
        assert sorted(a, key=lambda d: d.box) == sorted(b, key=lambda d: d.box)
