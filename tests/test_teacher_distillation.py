"""Distillation from a teacher: the head refit (training/head_refit.py), the whole backbone
(training/backbone_distill.py), and what they stand on: five-point alignment, the teacher, the
similarity-structure loss, landmarks kept by the detection cache."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from facenet_pytorch import InceptionResnetV1
from PIL import Image
from torch import nn

from core.data.crop_cache import DetectionCache, content_key
from core.data.people import carve
from core.embedding.embedder import Embedder
from core.embedding.onnx_runtime import export_onnx
from core.embedding.standardize import standardize
from core.faces.alignment import ARCFACE_SIZE, ARCFACE_TEMPLATE, aligned_chip, similarity_transform
from core.faces.pipeline import DetectedFace, FacePipeline
from core.models.backbone import build_backbone, load_backbone, load_state, resolve_weights
from core.models.model_card import ModelCard
from faceid.cli import main
from training import backbone_distill, teacher
from training.backbone_distill import DistillConfig, batch_rows
from training.checkpoint import load_checkpoint
from training.distillation import similarity_structure_loss
from training.export import export
from training.head_refit import HEAD, Head, RefitConfig, embed_pooled, pooled_features, refit_head, run
from training.teacher import load_teacher, lookalikes, teacher_embeddings


def rotation(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def test_similarity_transform_recovers_a_rotation_scale_and_shift():
    src = np.array([[10.0, 20.0], [50.0, 22.0], [30.0, 40.0], [15.0, 60.0], [45.0, 61.0]])
    dst = 1.7 * src @ rotation(12).T + [5.0, -3.0]
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], 1.7 * rotation(12)) and np.allclose(m[:, 2], [5.0, -3.0])
    with pytest.raises(ValueError, match="matching"):
        similarity_transform(src, dst[:3])
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((5, 2)), dst)


def test_an_aligned_chip_puts_each_landmark_on_the_template():
    # Five coloured dots at landmark places in a tilted, shifted, larger face.
    landmarks = (ARCFACE_TEMPLATE - 56) @ (2.0 * rotation(-15)).T + [150.0, 120.0]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    canvas = np.zeros((260, 300, 3), np.uint8)
    for (x, y), colour in zip(landmarks, colours):
        canvas[int(round(y)) - 3 : int(round(y)) + 4, int(round(x)) - 3 : int(round(x)) + 4] = colour
    chip = aligned_chip(Image.fromarray(canvas), landmarks)
    assert chip.shape == (ARCFACE_SIZE, ARCFACE_SIZE, 3) and chip.dtype == np.uint8
    for (x, y), colour in zip(ARCFACE_TEMPLATE, colours):
        assert tuple(chip[int(round(y)), int(round(x))]) == colour


def test_the_structure_loss_compares_cosines_not_vectors():
    torch.manual_seed(0)
    z = nn.functional.normalize(torch.randn(6, 8), dim=1)
    # A teacher of another width with the same cosines: an orthogonal map of z, padded.
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    same = torch.cat([z @ q, torch.zeros(6, 4)], dim=1)
    assert float(similarity_structure_loss(z, same)) < 1e-10
    other = nn.functional.normalize(torch.randn(6, 12), dim=1)
    assert float(similarity_structure_loss(z, other)) > 0.01
    with pytest.raises(ValueError, match="against"):
        similarity_structure_loss(z, other[:5])


@pytest.fixture(scope="module")
def small_net() -> InceptionResnetV1:
    """Random weights, with batch-norm statistics that are not the identity (the head's matter)."""
    torch.manual_seed(0)
    net = InceptionResnetV1(pretrained=None, classify=False).eval()
    net.last_bn.running_mean.uniform_(-0.5, 0.5)
    net.last_bn.running_var.uniform_(0.5, 2.0)
    return net


def crops_smooth_and_noisy() -> torch.Tensor:
    """Two crops the service embeds as they are and two it median-filters first (impulse noise)."""
    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(40, 220, 160)
    smooth = torch.stack([(ramp[None, :] + ramp[:, None] * k) / (1 + k) for k in (0.5, 1.5)])  # 2×160×160
    smooth = smooth[:, None].expand(2, 3, 160, 160).round().to(torch.uint8)
    noisy = smooth.clone()
    salt = torch.rand(2, 1, 160, 160, generator=g) < 0.2
    noisy[salt.expand_as(noisy)] = 255
    return torch.cat([smooth, noisy])


def test_training_sees_the_pixels_the_service_embeds(small_net):
    """The head refit's pooled features and whole-backbone distillation embed a crop as the
    service's embedder does, impulse-noisy crops restored first: training on pixels the
    service never feeds the network is train/serve skew."""
    crops = crops_smooth_and_noisy()
    served = torch.from_numpy(Embedder(small_net).embed(crops))
    with torch.inference_mode():
        unrestored = torch.nn.functional.normalize(small_net(standardize(crops)), dim=1)
    # Random weights map every face near one point, so "differ" and "agree" are told apart by
    # orders of magnitude: the noisy two move by about 4e-4 when restored, the paths agree to 1e-8.
    assert (served[:2] - unrestored[:2]).abs().max() < 1e-6
    assert (served[2:] - unrestored[2:]).abs().max() > 2e-5
    parts = embed_pooled(pooled_features(small_net, crops, batch_size=2), Head.of(small_net), small_net.last_bn)
    assert torch.allclose(parts, served, rtol=0, atol=1e-6)
    with torch.inference_mode():
        distilled = backbone_distill.embed(small_net, backbone_distill.batch_input(crops, "cpu"), "cpu", bf16=False)
    assert torch.allclose(distilled, served, rtol=0, atol=1e-6)


def synthetic(n: int = 120, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, Head, nn.BatchNorm1d]:
    """Pooled features in two views and a teacher whose cosines follow a hidden projection of them."""
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(n, 64, generator=g)
    views = [clean, clean + 0.05 * torch.randn(n, 64, generator=g)]
    targets = nn.functional.normalize(clean @ torch.randn(64, 16, generator=g), dim=1)
    norm = nn.BatchNorm1d(32).eval()
    start = Head(0.1 * torch.randn(32, 64, generator=g), torch.ones(32), torch.zeros(32))
    return views, targets, start, norm


def structure(views: list[torch.Tensor], targets: torch.Tensor, head: Head, norm: nn.BatchNorm1d, rows: torch.Tensor) -> float:
    with torch.no_grad():
        return float(similarity_structure_loss(embed_pooled(views[0][rows], head, norm), targets[rows]))


def test_the_refit_moves_the_head_toward_the_teachers_structure():
    views, targets, start, norm = synthetic()
    rows = torch.arange(len(targets))
    head, history = refit_head(views, targets, start, norm, RefitConfig(steps=200, batch_size=64, lr=3e-3, anchor=0.0))
    assert structure(views, targets, head, norm, rows) < 0.5 * structure(views, targets, start, norm, rows)
    assert [h["step"] for h in history] == [100, 200] and history[-1]["structure"] < history[0]["structure"]


def test_the_anchor_holds_embeddings_near_the_starting_head():
    views, targets, start, norm = synthetic()
    before = embed_pooled(views[0], start, norm)
    drift = {}
    for anchor in (0.0, 100.0):
        head, _ = refit_head(views, targets, start, norm, RefitConfig(steps=100, batch_size=64, lr=3e-3, anchor=anchor))
        drift[anchor] = float((1 - (embed_pooled(views[0], head, norm) * before).sum(1)).mean())
    assert drift[100.0] < 0.25 * drift[0.0]


def test_photos_without_a_teacher_target_are_never_drawn():
    views, targets, start, norm = synthetic()
    targets[:40] = 0.0
    for view in views:
        view[:40] = float("nan")  # drawn even once, these would poison the head
    head, _ = refit_head(views, targets, start, norm, RefitConfig(steps=50, batch_size=64))
    assert all(torch.isfinite(t).all() for t in (head.weight, head.scale, head.shift))
    targets[:] = 0.0
    targets[0, 0] = 1.0
    with pytest.raises(ValueError, match="1 photos with a teacher target"):
        refit_head(views, targets, start, norm, RefitConfig(steps=1))


class TinyTeacher(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def teacher_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("teacher") / "tiny.onnx"
    export_onnx(TinyTeacher(), path, torch.zeros(1, 3, ARCFACE_SIZE, ARCFACE_SIZE), ["input0"], ["embedding"], {})
    return path


def test_a_teacher_gives_unit_vectors_and_no_target_without_landmarks(teacher_file, tmp_path):
    photo = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 180, 3), dtype=np.uint8)).save(photo)
    teacher = load_teacher(teacher_file)
    assert teacher.name == "tiny" and len(teacher.sha256) == 64
    points = tuple(map(tuple, ARCFACE_TEMPLATE + 30))
    vectors = teacher_embeddings(teacher, [photo, photo], [points, None])
    assert vectors.shape == (2, 16)
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5) and not vectors[1].any()


def test_a_missing_or_foreign_teacher_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        load_teacher(tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.onnx"):
        load_teacher(junk)


def test_the_detection_cache_keeps_landmarks(tmp_path, pipeline: FacePipeline):
    photo = tmp_path / "p.png"
    Image.new("RGB", (40, 40)).save(photo)
    face = DetectedFace((1.0, 2.0, 30.0, 35.0), 0.99, "direct", ((10.0, 12.0), (20.0, 12.0), (15.0, 18.0), (11.0, 25.0), (19.0, 25.0)))
    DetectionCache(tmp_path, pipeline).add(content_key(photo), face)
    assert DetectionCache(tmp_path, pipeline).entries[content_key(photo)] == face


def carved_names(count: int, into: str = "train") -> list[str]:
    """Names the carving puts into the set `into` (the people trained on, chosen or reported on)."""
    names = [f"person_{i}" for i in range(200)]
    return carve(names)[into][:count]


@pytest.fixture(scope="module")
def people_dir(tmp_path_factory: pytest.TempPathFactory, group_faces: list[Image.Image]) -> Path:
    """A folder per person: the group photo's six people, two photos each, all among the train people."""
    root = tmp_path_factory.mktemp("people")
    for name, face in zip(carved_names(len(group_faces)), group_faces):
        (root / name).mkdir()
        face.save(root / name / f"{name}_0001.jpg", quality=92)
        face.transpose(Image.Transpose.FLIP_LEFT_RIGHT).rotate(5).save(root / name / f"{name}_0002.jpg", quality=92)
    return root


def test_lookalikes_are_the_extra_people_whose_photos_are_on_average_near_a_held_persons():
    held = {"held": np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), "none": np.zeros((0, 3))}
    # mean cosine to the held person's photos: ½·(0.8 + 0.6) = 0.7; ½·(0.5 + 0) = 0.25
    near, far = np.array([[0.8, 0.6, 0.0]]), np.array([[0.5, 0.0, np.sqrt(0.75)]])
    assert teacher.LOOKALIKE < 0.7 and teacher.LOOKALIKE > 0.25
    assert lookalikes({"near": near, "far": far, "none": np.zeros((0, 3))}, held) == {"near"}
    assert lookalikes({"near": near}, {}) == set()


def test_extra_folders_add_their_people_but_not_a_copy_of_someone_reported_on(people_dir, teacher_file, group_faces, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(people_dir, data)
    held = carved_names(1, into="report")[0]
    (data / held).mkdir()
    group_faces[0].save(data / held / "held.jpg", quality=92)
    extra = tmp_path / "extra"
    for name, face in [("copycat", group_faces[0]), ("other", group_faces[1])]:
        (extra / name).mkdir(parents=True)
        face.save(extra / name / "a.jpg", quality=92)
    # The tiny teacher finds every face alike; only a copy of the held photo counts as one here.
    monkeypatch.setattr(teacher, "LOOKALIKE", 0.9999)
    photos = teacher.teacher_set(data, load_teacher(teacher_file), cache=tmp_path, also=[extra])
    assert photos.lookalikes == ["extra/copycat"]
    assert photos.names[-1] == "extra/other" and held not in photos.names and "extra/copycat" not in photos.names
    assert photos.paths[-1] == extra / "other" / "a.jpg" and len(photos.paths) == len(photos.crops) == len(photos.targets) == 13
    with pytest.raises(ValueError, match="empty"):
        (tmp_path / "empty").mkdir()
        teacher.teacher_set(data, load_teacher(teacher_file), cache=tmp_path, also=[tmp_path / "empty"])


def test_a_refit_changes_the_head_only_and_exports_as_a_model(people_dir, teacher_file, tmp_path):
    out = run(people_dir, "casia-webface", teacher_file, tmp_path / "refit.pt", config=RefitConfig(steps=20, copies=1), cache=tmp_path)
    state = load_checkpoint(out)
    base = build_backbone(load_state(*resolve_weights("casia-webface"))).state_dict()
    changed = {k for k in base if not torch.equal(state["backbone"][k], base[k])}
    assert changed == set(HEAD)
    config = state["config"]
    assert config["teacher"] == "tiny" and config["photos"] == 12 and config["photos_with_target"] >= 10 and config["steps"] == 20
    model = export(out, tmp_path / "model")
    card = ModelCard.read(model)
    assert card.config["stage"] == "head" and card.n_training_identities == 6 and card.history
    assert load_backbone(str(model)).net.last_linear.weight.shape == (512, 1792)


@pytest.mark.parametrize("command", ["train-head", "distill"])
def test_training_on_a_teacher_names_a_missing_teacher_or_folder(command, people_dir, tmp_path, capsys):
    assert main([command, "--data", str(people_dir), "--teacher", str(tmp_path / "nope.onnx"), "--base", "casia-webface",
                 "--out", str(tmp_path / "r.pt")]) == 2
    assert "nope.onnx" in capsys.readouterr().err
    assert main([command, "--data", str(tmp_path / "gone"), "--teacher", str(tmp_path / "nope.onnx"), "--base", "casia-webface"]) == 2
    assert "gone: no such folder" in capsys.readouterr().err and not (tmp_path / "r.pt").exists()


@pytest.mark.parametrize("per_person", [1, 2])
def test_a_step_draws_its_batch_from_the_seed_and_step_alone(per_person):
    usable = np.arange(4, 50)
    owner = np.arange(50) // 2  # two photos a person
    rows, views = batch_rows(usable, owner, 3, 8, seed=0, step=7, per_person=per_person)
    again, views_again = batch_rows(usable, owner, 3, 8, seed=0, step=7, per_person=per_person)
    assert np.array_equal(rows, again) and np.array_equal(views, views_again)
    assert len(set(rows.tolist())) == 8 and set(rows.tolist()) <= set(usable.tolist()) and set(views.tolist()) <= {0, 1, 2}
    assert not np.array_equal(rows, batch_rows(usable, owner, 3, 8, seed=0, step=8, per_person=per_person)[0])


def test_distill_refuses_more_faces_a_person_than_views_of_a_photo(people_dir, tmp_path, capsys):
    assert main(["distill", "--data", str(people_dir), "--teacher", str(tmp_path / "nope.onnx"), "--base", "casia-webface",
                 "--copies", "1", "--per-person", "3", "--out", str(tmp_path / "r.pt")]) == 2
    assert "--per-person 3" in capsys.readouterr().err and not (tmp_path / "r.pt").exists()


def test_a_batch_drawn_by_person_holds_each_persons_faces_in_pairs_and_in_different_views():
    owner = np.array([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 5])
    usable = np.arange(11)  # person 5's photo has no target
    for step in range(20):
        rows, views = batch_rows(usable, owner, 5, 8, seed=1, step=step, per_person=2)
        assert len(rows) == 8 and set(rows.tolist()) <= set(usable.tolist())
        pairs = rows.reshape(4, 2)
        assert all(owner[a] == owner[b] for a, b in pairs)
        assert len({owner[a] for a, _ in pairs}) == 4
        for (a, b), (va, vb) in zip(pairs, views.reshape(4, 2)):
            assert va != vb
            assert (a == b) == (owner[a] in (1, 3))  # one photo only: the same photo seen two ways
    with pytest.raises(ValueError, match="views"):
        batch_rows(usable, owner, 2, 8, seed=0, step=0, per_person=3)


def test_bf16_only_where_the_hardware_multiplies_it(monkeypatch):
    monkeypatch.setattr(backbone_distill, "cpu_flags", lambda: ("avx512f", "avx512_bf16"))
    assert not backbone_distill.bf16_pays("cpu") and backbone_distill.bf16_pays("cuda")
    monkeypatch.setattr(backbone_distill, "cpu_flags", lambda: ("avx512f", "amx_bf16", "amx_tile"))
    assert backbone_distill.bf16_pays("cpu")


def test_whole_backbone_distillation_trains_every_layer_keeps_batch_norm_statistics_and_resumes(
        people_dir, teacher_file, tmp_path, monkeypatch):
    monkeypatch.setattr(backbone_distill, "bf16_pays", lambda device: False)  # the same arithmetic on every CPU
    config = DistillConfig(steps=2, batch_size=4, copies=1, save_every=1, lr=1e-3)
    straight = backbone_distill.run(people_dir, "casia-webface", teacher_file, tmp_path / "a.pt", config=config, cache=tmp_path)
    state = load_checkpoint(straight)
    base = build_backbone(load_state(*resolve_weights("casia-webface"))).state_dict()
    changed = {k for k in base if not torch.equal(state["backbone"][k], base[k])}
    assert set(HEAD) <= changed and "conv2d_1a.conv.weight" in changed and "block8.conv2d.weight" in changed
    assert not any(k.endswith(("running_mean", "running_var")) for k in changed)
    assert state["step"] == 2 and state["config"]["stage"] == "distill" and len(state["history"]) == 1

    # Stopped after one step and resumed: the same weights as the run that never stopped.
    backbone_distill.run(people_dir, "casia-webface", teacher_file, tmp_path / "b.pt", config=replace(config, steps=1), cache=tmp_path)
    resumed = load_checkpoint(backbone_distill.run(people_dir, "casia-webface", teacher_file, tmp_path / "b.pt", config=config,
                                                   cache=tmp_path, resume=True))
    assert resumed["step"] == 2
    assert all(torch.allclose(resumed["backbone"][k], state["backbone"][k], atol=1e-6) for k in base)
    card = ModelCard.read(export(straight, tmp_path / "model"))
    assert card.config["stage"] == "distill" and card.config["teacher"] == "tiny" and card.n_training_identities == 6
