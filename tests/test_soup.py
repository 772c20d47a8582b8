"""The model soup: the exported backbone is the mean of its runs, and only runs from one start mix."""

import json

import pytest
import torch

from core.models.backbone import build_backbone, load_backbone, load_state, resolve_weights
from core.models.model_card import ModelCard
from faceid.cli import main
from training.checkpoint import save_checkpoint
from training.soup import average_backbones


def test_the_mean_of_floats_and_the_first_runs_counters():
    a = {"w": torch.tensor([1.0, 2.0]), "bn.num_batches_tracked": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "bn.num_batches_tracked": torch.tensor(9)}
    soup = average_backbones([a, b])
    assert torch.equal(soup["w"], torch.tensor([2.0, 4.0])) and soup["bn.num_batches_tracked"].item() == 5
    half = average_backbones([{"w": a["w"].half()}, {"w": b["w"].half()}])["w"]
    assert half.dtype == torch.float16 and torch.equal(half, torch.tensor([2.0, 4.0], dtype=torch.float16))
    with pytest.raises(ValueError, match="other tensors"):
        average_backbones([a, {"w": a["w"]}])
    with pytest.raises(ValueError, match="at least one"):
        average_backbones([])


@pytest.fixture()
def runs(tmp_path):
    """Two runs from the same start (the pretrained weights, each nudged its own way) and one from another."""
    start = build_backbone(load_state(*resolve_weights("casia-webface"))).state_dict()
    paths = []
    for seed, init in ((0, "casia"), (1, "casia"), (2, "elsewhere")):
        torch.manual_seed(seed)
        nudged = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in start.items()}
        path = tmp_path / f"run{seed}" / "best.pt"
        path.parent.mkdir()
        save_checkpoint(path, backbone=nudged, config={"init": init}, label_map=["a", "b"], epoch=3, val_report={})
        paths.append(path)
    return paths


def test_export_of_two_runs_is_their_mean_with_a_card_that_says_so(runs, tmp_path, capsys):
    out, report = tmp_path / "soup", tmp_path / "val.json"
    report.write_text(json.dumps({"open_set": {"threshold_for_target": 0.64, "target_stranger_rate": 0.01}, "top1": 0.9}))
    assert main(["export", "--ckpt", str(runs[0]), "--ckpt", str(runs[1]), "--out", str(out), "--fp32",
                 "--threshold-from", str(report)]) == 0
    assert "the mean of 2 checkpoints" in capsys.readouterr().out
    loaded = load_backbone(str(out)).net.state_dict()
    first, second = (torch.load(r, weights_only=True)["backbone"] for r in runs[:2])
    for name in ("conv2d_1a.conv.weight", "last_linear.weight", "last_bn.running_var"):
        assert torch.allclose(loaded[name], (first[name] + second[name]) / 2, rtol=0, atol=1e-7)
        assert not torch.allclose(loaded[name], first[name])
    card = ModelCard.read(out)
    assert card.checkpoint is None and card.config is None and card.n_training_identities == 2
    assert [s["checkpoint"] for s in card.soup] == [str(r) for r in runs[:2]] and card.soup[0]["epoch"] == 4
    # The runs' own validation is not the soup's: the card's figures are the soup's evaluation report's.
    assert card.threshold == 0.64 and card.validation["top1"] == 0.9 and card.history == []
    # Exported again, elsewhere: the same weights, the same sha256 (the model's id in every cache).
    assert main(["export", "--ckpt", str(runs[0]), "--ckpt", str(runs[1]), "--out", str(tmp_path / "again"), "--fp32"]) == 0
    assert ModelCard.read(tmp_path / "again").sha256 == card.sha256


def test_runs_from_another_start_do_not_mix(runs, tmp_path, capsys):
    assert main(["export", "--ckpt", str(runs[0]), "--ckpt", str(runs[2]), "--out", str(tmp_path / "soup")]) == 2
    err = capsys.readouterr().err
    assert str(runs[2]) in err and "init" in err
    assert not (tmp_path / "soup").exists()
