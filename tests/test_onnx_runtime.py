"""ONNX Runtime embeds as torch does: same vectors on real face crops, same answers."""

import numpy as np
import pytest
import torch

from core.backbone import load_backbone, make_embedder
from core.embedder import Embedder
from core.onnx_embedder import OnnxEmbedder, RuntimeUnavailable
from tests.conftest import DISTORTIONS


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("casia-webface")


@pytest.fixture(scope="module")
def crops(pipeline, group_faces) -> torch.Tensor:
    photos = list(group_faces) + [d(p) for d in DISTORTIONS.values() for p in group_faces]
    return torch.stack([pipeline.crop(p, pipeline.primary(p, pipeline.detect_all(p)).box) for p in photos])


@pytest.fixture(scope="module")
def onnx(backbone, tmp_path_factory) -> OnnxEmbedder:
    return OnnxEmbedder(backbone.net, backbone.sha256, batch_size=8, cache_dir=tmp_path_factory.mktemp("onnx"))


def test_onnx_and_torch_embeddings_agree_on_real_faces(backbone, onnx, crops):
    ours, reference = onnx.embed(crops), Embedder(backbone.net, batch_size=8).embed(crops)
    assert ours.shape == reference.shape == (len(crops), 512)
    assert np.sum(ours * reference, axis=1).min() >= 0.9999


def test_onnx_gives_the_same_top1_answers(backbone, onnx, crops):
    n = 6  # the clean photos are the gallery; their distorted copies the queries
    for embedder in (onnx, Embedder(backbone.net)):
        vectors = embedder.embed(crops)
        answers = (vectors[n:] @ vectors[:n].T).argmax(axis=1)
        assert answers.tolist() == [i % n for i in range(len(crops) - n)]


def test_export_is_cached_by_the_weights_digest(backbone, onnx, monkeypatch):
    def no_export(*args, **kwargs):
        raise AssertionError("exported twice")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = OnnxEmbedder(backbone.net, backbone.sha256, cache_dir=onnx.path.parent)
    assert again.path == onnx.path


def test_a_failed_export_is_a_clear_error(backbone, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RuntimeUnavailable, match="could not export the backbone to ONNX.*unsupported operator"):
        OnnxEmbedder(backbone.net, "0" * 64, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_a_missing_runtime_is_a_clear_error(backbone, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(RuntimeUnavailable, match="pip install onnxruntime"):
        OnnxEmbedder(backbone.net, backbone.sha256)


def test_the_runtime_follows_the_hardware(backbone, monkeypatch, tmp_path):
    monkeypatch.setenv("FACEID_MODELS_DIR", str(tmp_path))
    assert isinstance(make_embedder(backbone, "cpu", runtime="auto"), OnnxEmbedder)
    assert type(make_embedder(backbone, "cpu", runtime="torch")) is Embedder
    with pytest.raises(ValueError, match="choose auto, torch or onnx"):
        make_embedder(backbone, "cpu", runtime="tensorrt")
