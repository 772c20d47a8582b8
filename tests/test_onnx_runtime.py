"""ONNX Runtime embeds as torch does: same vectors on real face crops, same answers."""

import numpy as np
import pytest
import torch

from core.embedding.embedder import Embedder
from core.embedding.onnx_embedder import OnnxEmbedder, RuntimeUnavailable
from core.embedding.runtime import make_embedder
from core.faces.subject import subject
from core.models.backbone import load_backbone
from tests.conftest import DISTORTIONS


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("casia-webface")


@pytest.fixture(scope="module")
def crops(pipeline, group_faces) -> torch.Tensor:
    photos = list(group_faces) + [d(p) for d in DISTORTIONS.values() for p in group_faces]
    return torch.stack([pipeline.crop(p, subject(pipeline.detect_all(p), p.size).box) for p in photos])


@pytest.fixture(scope="module")
def onnx(backbone, tmp_path_factory) -> OnnxEmbedder:
    return OnnxEmbedder(backbone.net, backbone.sha256, batch_size=8, cache_dir=tmp_path_factory.mktemp("onnx"))


def test_onnx_and_torch_embeddings_agree_on_real_faces(backbone, onnx, crops):
    ours, reference = onnx.embed(crops), Embedder(backbone.net, batch_size=8).embed(crops)
    assert ours.shape == reference.shape == (len(crops), 512)
    assert np.sum(ours * reference, axis=1).min() >= 0.9999


def test_a_sessions_threads_stop_spinning_when_its_run_returns(onnx, crops):
    """Spinning threads after a run would take the cores the next detection needs: the process
    burns no CPU once the answer is back (ONNX Runtime's default spins about a quarter of the
    following 100 ms on two threads)."""
    import time

    from core.embedding.onnx_runtime import open_session
    from core.embedding.standardize import standardize

    session = open_session(onnx.path, threads=2)
    batch = standardize(crops[:1]).numpy()
    burnt = []
    for _ in range(3):
        session.run(None, {"crops": batch})
        start = time.process_time()
        time.sleep(0.1)
        burnt.append(time.process_time() - start)
    assert min(burnt) < 0.005, burnt


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


def test_the_runtime_follows_the_hardware(backbone):
    auto = make_embedder(backbone, "cpu", runtime="auto")  # on the CPU: the int8 copy, once it has passed its check here
    assert isinstance(auto, OnnxEmbedder) and auto.runtime == "onnx-int8"
    assert make_embedder(backbone, "cpu", runtime="onnx").runtime == "onnx"
    assert type(make_embedder(backbone, "cpu", runtime="torch")) is Embedder
    with pytest.raises(ValueError, match="choose auto, torch, onnx, onnx-int8"):
        make_embedder(backbone, "cpu", runtime="tensorrt")


@pytest.fixture(scope="module")
def int8(backbone, onnx) -> OnnxEmbedder:
    return OnnxEmbedder(backbone.net, backbone.sha256, batch_size=8, cache_dir=onnx.path.parent, int8=True)


def test_int8_embeddings_stay_close_and_give_the_same_answers(backbone, onnx, int8, crops):
    """On this CPU, whatever its kind: the int8 model passed its load-time check (it is the one
    embedding), its embeddings of the test faces stay close to fp32, and the answers are the same."""
    assert int8.runtime == "onnx-int8" and int8.refusal is None
    assert int8.path.name.startswith(backbone.sha256) and "int8" in int8.path.name
    assert np.sum(int8.embed(crops) * onnx.embed(crops), axis=1).min() >= 0.98
    n = 6
    vectors = int8.embed(crops)
    assert (vectors[n:] @ vectors[:n].T).argmax(axis=1).tolist() == [i % n for i in range(len(crops) - n)]


def test_int8_weights_cannot_saturate_without_vnni(int8):
    """u8 activations × s8 weights summed pairwise in int16 (VPMADDUBSW, x86 without VNNI) stay
    below 32,767 only if every weight is in [-64, 63]: the 7-bit range the quantizer is asked for."""
    import onnx as onnx_lib
    from onnx import numpy_helper

    model = onnx_lib.load(str(int8.path))
    weights = [numpy_helper.to_array(init) for init in model.graph.initializer if init.data_type == onnx_lib.TensorProto.INT8]
    assert len(weights) > 100  # every convolution and the bottleneck
    assert max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    assert 2 * 255 * 64 < 2**15


def test_a_wrong_int8_model_is_refused_on_load_and_fp32_embeds(backbone, onnx, int8, crops, tmp_path, caplog):
    """A cached int8 file that disagrees with fp32 on this CPU (here: its weights scrambled, as a
    file made by another recipe or on another machine might be) is not trusted."""
    import onnx as onnx_lib
    from onnx import numpy_helper

    model = onnx_lib.load(str(int8.path))
    rng = np.random.default_rng(0)
    for init in model.graph.initializer:
        if init.data_type == onnx_lib.TensorProto.INT8:
            values = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(rng.permutation(values.ravel()).reshape(values.shape), init.name))
    (tmp_path / onnx.path.name).write_bytes(onnx.path.read_bytes())
    onnx_lib.save(model, str(tmp_path / int8.path.name))
    with caplog.at_level("ERROR"):
        refused = OnnxEmbedder(backbone.net, backbone.sha256, batch_size=8, cache_dir=tmp_path, int8=True)
    assert refused.runtime == "onnx" and refused.path.name == onnx.path.name
    assert "int8 embeddings refused on this CPU" in refused.refusal and "flags:" in refused.refusal
    assert any("refused" in r.getMessage() and "fp32 ONNX Runtime instead" in r.getMessage() for r in caplog.records)
    assert np.allclose(refused.embed(crops), onnx.embed(crops), atol=1e-5)


def test_a_pass_on_this_machine_is_recorded_and_another_machine_checks_again(backbone, onnx, int8, monkeypatch):
    import json

    from core.embedding import int8 as int8_module

    record = int8.path.with_suffix(".checked.json")
    assert json.loads(record.read_text())["worst_cosine"] >= int8_module.MIN_COSINE

    def no_check(*args):
        raise AssertionError("checked again on the same machine")

    with monkeypatch.context() as m:
        m.setattr(int8_module, "check", no_check)
        assert OnnxEmbedder(backbone.net, backbone.sha256, cache_dir=onnx.path.parent, int8=True).runtime == "onnx-int8"
    checked = []
    real = int8_module.check
    monkeypatch.setattr(int8_module, "check", lambda *a: checked.append(1) or real(*a))
    monkeypatch.setattr(int8_module, "cpu_flags", lambda: ("avx2",))  # as if on another CPU
    assert OnnxEmbedder(backbone.net, backbone.sha256, cache_dir=onnx.path.parent, int8=True).runtime == "onnx-int8"
    assert checked == [1] and json.loads(record.read_text())["flags"] == ["avx2"]


def test_the_int8_model_is_made_once(backbone, int8, monkeypatch):
    def no_quantizing(*args, **kwargs):
        raise AssertionError("quantized twice")

    monkeypatch.setattr("core.embedding.int8.quantize", no_quantizing)
    again = OnnxEmbedder(backbone.net, backbone.sha256, cache_dir=int8.path.parent, int8=True)
    assert again.path == int8.path


def test_a_failed_quantization_is_a_clear_error_and_leaves_nothing(backbone, onnx, tmp_path, monkeypatch):
    import onnxruntime.quantization

    def broken(*args, **kwargs):
        raise ValueError("unsupported node")

    monkeypatch.setattr(onnxruntime.quantization, "quantize_static", broken)
    (tmp_path / onnx.path.name).write_bytes(onnx.path.read_bytes())
    with pytest.raises(RuntimeUnavailable, match="could not quantize the backbone to int8.*unsupported node"):
        OnnxEmbedder(backbone.net, backbone.sha256, cache_dir=tmp_path, int8=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [onnx.path.name]


def test_int8_is_a_runtime_the_settings_accept(backbone, monkeypatch, tmp_path):
    from app.config import Settings

    assert Settings(runtime="onnx-int8").runtime == "onnx-int8"
    with pytest.raises(ValueError, match="runs on the CPU"):
        make_embedder(backbone, "cuda", runtime="onnx-int8")
