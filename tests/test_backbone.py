"""The converted pretrained backbone: equal to OpenCV's reading of the same graph, and a working face model."""

import numpy as np
import pytest
import torch

from core.embedding.embedder import Embedder
from core.embedding.standardize import standardize
from core.errors import WeightsError
from core.faces.subject import subject
from core.images import load_image
from core.models.backbone import load_backbone, load_state
from core.models.model_card import ModelCard
from tests.conftest import DISTORTIONS, PORTRAIT


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("casia-webface")


def test_converted_backbone_matches_opencv(backbone, pipeline):
    cv2 = pytest.importorskip("cv2")  # the `convert` extra; only this test needs it
    from core.models.sandberg import graph_path

    img = load_image(PORTRAIT)
    crop = pipeline.crop(img, subject(pipeline.detect_all(img), img.size).box)
    x = standardize(crop)[None].numpy()
    net = cv2.dnn.readNetFromTensorflow(str(graph_path()))
    net.setInput(x)
    reference = net.forward()
    with torch.inference_mode():
        ours = backbone.net(torch.from_numpy(x)).numpy()
    assert ours.shape == (1, 512)
    assert np.abs(ours - reference).max() < 1e-4


def test_same_person_is_closer_than_other_people(backbone, pipeline, group_faces):
    """Each person's distorted photo is nearer their clean photo than anyone else's."""
    embedder = Embedder(backbone.net)

    def embed(photos):
        crops = [pipeline.crop(p, subject(pipeline.detect_all(p), p.size).box) for p in photos]
        return embedder.embed(torch.stack(crops))

    clean = embed(group_faces)
    for kind, distort in DISTORTIONS.items():
        sim = embed([distort(p) for p in group_faces]) @ clean.T
        assert np.all(np.diag(sim) > sim.max(axis=1, where=~np.eye(len(sim), dtype=bool), initial=-1)), kind


def test_embeddings_are_unit_norm(backbone):
    vectors = Embedder(backbone.net).embed(torch.randint(0, 255, (3, 3, 160, 160), dtype=torch.uint8))
    assert vectors.shape == (3, 512)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_corrupt_weights_file_is_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="bad.pt"):
        load_backbone(str(bad))


def test_wrong_state_dict_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightsError, match="not an InceptionResnetV1"):
        load_backbone(str(path))


def test_sha256_mismatch_is_refused(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match="sha256"):
        load_state(path, expected_sha256="0" * 64)


def test_unknown_source_names_the_choices():
    with pytest.raises(WeightsError, match="casia-webface"):
        load_backbone("no-such-model")


def test_default_weights_are_the_shipped_model():
    from core.models.backbone import default_weights
    from core.models.thresholds import model_threshold
    from core.paths import shipped_model

    backbone = load_backbone()  # what `faceid serve` and `faceid evaluate` use without --weights
    assert backbone.model_id.startswith("facecom-ft@") and default_weights() == str(shipped_model())
    card = ModelCard.read(shipped_model())
    assert model_threshold(default_weights()) == card.threshold
    assert "1% of strangers" in card.threshold_rule  # chosen on validation people, as the service answers
    assert card.validation["top1"] > 0.8  # the card records what it was shipped for


def test_models_dir_follows_its_setting(tmp_path, monkeypatch):
    from core.models.backbone import default_weights
    from core.paths import MODELS_ENV, pretrained_dir

    monkeypatch.setenv(MODELS_ENV, str(tmp_path))
    assert default_weights() == "casia-webface"  # no shipped model there
    assert pretrained_dir() == tmp_path / "pretrained"


def test_device_choice():
    from core.device import resolve_device

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="choose auto, cpu or cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")
