"""Training on tiny fixtures: the loss falls, resume reproduces the state, export round-trips."""

import json

import numpy as np
import pytest
import torch

from core.data.dataset import write_split
from core.embedding.embedder import Embedder
from core.models.backbone import build_backbone, load_backbone, load_state, resolve_weights
from core.models.model_card import ModelCard
from core.models.thresholds import PRETRAINED_THRESHOLDS, model_threshold, verify_threshold
from evaluation.metrics import threshold_at
from training.checkpoint import load_checkpoint
from training.config import load_config
from training.data import LabelMap
from training.export import export
from training.loop import fit
from training.stages import build_stage1, build_stage2


@pytest.fixture()
def config_for(facecom_dir, tmp_path):
    split = tmp_path / "val.txt"
    write_split(split, ["person_4", "person_5"], "test split")

    def make(stage, out, **extra):
        sets = [f"data={facecom_dir}", f"val_split={split}", f"out_dir={tmp_path / out}", f"cache_dir={tmp_path / 'cache'}",
                "batch_size=8", "epochs=3", "lr=0.01", "warmup_epochs=0", "patience=10", "device=cpu", f"stage={stage}",
                "first_trainable=repeat_3"]  # the frozen-trunk path, fast; the whole network is tested below
        return load_config(None, sets + [f"{k}={v}" for k, v in extra.items()])

    return make


def test_stage1_loss_falls_and_best_checkpoint_is_kept(config_for):
    config = config_for("stage1", "s1")
    best = fit(build_stage1(config))
    history = json.loads((config.out_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]  # epoch 0: the starting weights, validated
    assert history[-1]["loss"] < history[1]["loss"]
    state = load_checkpoint(best)
    assert state["label_map"] == [f"person_{i}" for i in range(4)]  # validation people never trained on
    for key in ("backbone", "head", "optimizer", "scheduler", "scaler", "epoch", "config"):
        assert key in state
    assert (config.out_dir / "history.png").is_file()


@pytest.mark.parametrize(("channels_last", "bf16"), [(True, True), (True, False), (False, True)])
def test_whole_network_trains_on_cpu(config_for, channels_last, bf16):
    """The default schedule: every layer trains, with fresh distortions, in bf16 or fp32."""
    config = config_for("stage1", f"full-{channels_last}-{bf16}", first_trainable="conv2d_1a", cpu_bf16=str(bf16),
                        channels_last=str(channels_last), backbone_lr_mult=0.01, synthetic_share=0.5, epochs=4)
    run = build_stage1(config)
    assert all(p.requires_grad for p in run.net.parameters())
    assert run.net.conv2d_1a.conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    layouts = []  # the batches the stem sees: channels_last inputs, not only weights
    run.net.conv2d_1a.register_forward_pre_hook(lambda _, x: layouts.append(x[0].is_contiguous(memory_format=torch.channels_last)))
    start = {k: v.clone() for k, v in run.net.state_dict().items()}
    fit(run)
    assert layouts and set(layouts) == {channels_last}
    history = json.loads((config.out_dir / "history.json").read_text())
    assert history[-1]["loss"] < history[1]["loss"]
    assert not torch.equal(run.net.conv2d_1a.conv.weight, start["conv2d_1a.conv.weight"])  # the stem trained too


def test_resume_reproduces_an_uninterrupted_run(config_for):
    straight = config_for("stage1", "straight", epochs=2)
    fit(build_stage1(straight))
    resumed = config_for("stage1", "resumed", epochs=2)
    interrupted = build_stage1(resumed)
    batches = interrupted.batches

    def crash_in_second_epoch(epoch):
        if epoch == 1:
            raise KeyboardInterrupt  # the run dies after epoch 1 was checkpointed
        return batches(epoch)

    interrupted.batches = crash_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        fit(interrupted)
    fit(build_stage1(resumed), resume=True)
    a = load_checkpoint(straight.out_dir / "last.pt")
    b = load_checkpoint(resumed.out_dir / "last.pt")
    assert a["epoch"] == b["epoch"] == 1
    for key in a["backbone"]:
        assert torch.equal(a["backbone"][key], b["backbone"][key]), key
    assert torch.equal(a["head"]["weight"], b["head"]["weight"])


def test_stage2_reuses_the_stage1_label_map_and_trains(config_for):
    s1 = config_for("stage1", "s1", epochs=1)
    best = fit(build_stage1(s1))
    s2 = config_for("stage2", "s2", epochs=2, init=str(best), batch_size=4)
    run = build_stage2(s2)
    assert run.label_map == LabelMap(tuple(load_checkpoint(best)["label_map"]))
    fit(run)
    assert len(json.loads((s2.out_dir / "history.json").read_text())) == 3


def test_best_is_never_an_epoch_that_forgot_clean_photos(config_for):
    """With no clean-verification drop allowed at all, and a bar above the start, no trained
    epoch qualifies: best.pt must be the untouched starting weights."""
    config = config_for("stage1", "guarded", epochs=2, max_clean_drop=-2.0)
    best = load_checkpoint(fit(build_stage1(config)))
    assert best["epoch"] == -1
    history = json.loads((config.out_dir / "history.json").read_text())
    assert [h.get("eligible") for h in history] == [None, False, False]
    start = build_backbone(load_state(*resolve_weights("casia-webface"))).state_dict()
    assert all(torch.equal(best["backbone"][k], start[k]) for k in start)


def test_export_then_load_gives_identical_embeddings(config_for, tmp_path):
    config = config_for("stage1", "s1", epochs=1)
    best = fit(build_stage1(config))
    crops = torch.randint(0, 255, (4, 3, 160, 160), dtype=torch.uint8)
    trained = build_backbone(load_checkpoint(best)["backbone"])
    expected = Embedder(trained).embed(crops)
    exact = load_backbone(str(export(best, tmp_path / "fp32", half=False)))
    assert np.array_equal(Embedder(exact.net).embed(crops), expected)
    half = load_backbone(str(export(best, tmp_path / "fp16")))
    assert np.abs(Embedder(half.net).embed(crops) - expected).max() < 5e-3
    card = ModelCard.read(tmp_path / "fp16")
    assert card.dtype == "float16" and card.n_training_identities == 4 and "per_distortion" in card.validation
    # The service's default "unknown" threshold comes from the card's validation figures.
    assert card.threshold == threshold_at(card.validation["verification"], 1e-3)
    assert model_threshold(str(tmp_path / "fp16")) == card.threshold
    # Or the open-set threshold of an evaluation on validation people (1% of strangers named).
    report = tmp_path / "val.json"
    report.write_text(json.dumps({"open_set": {"threshold_for_target": 0.61, "target_stranger_rate": 0.01}}))
    chosen = ModelCard.read(export(best, tmp_path / "open-set", threshold_report=report))
    assert chosen.threshold == 0.61 and "1% of strangers" in chosen.threshold_rule
    with pytest.raises(ValueError, match="open-set"):
        export(best, tmp_path / "bad", threshold_report=tmp_path / "fp16" / "model_card.json")
    # Or the strictest of several rules: here a real-photo report's, chosen on real strangers.
    strangers = tmp_path / "real-strangers.json"
    strangers.write_text(json.dumps({"threshold_for_strangers": {"rate": 0.01, "threshold": 0.64}}))
    both = ModelCard.read(export(best, tmp_path / "both", threshold_report=[report, strangers]))
    assert both.threshold == 0.64 and "real photos" in both.threshold_rule and "(0.610)" in both.threshold_rule
    # /verify's threshold from a real-photo report: the one chosen on the choose people.
    real = tmp_path / "real-photos.json"
    real.write_text(json.dumps({"verification_1to1": {"choose": {"far_target": 1e-3, "threshold": 0.52, "tar": 0.9, "impostor_pairs": 1000},
                                                      "report": {"tar": 0.88, "far": 0.0011}}}))
    paired = ModelCard.read(export(best, tmp_path / "paired", verify_report=real))
    assert paired.verify_threshold == 0.52 and "TAR 0.880" in paired.verify_rule and verify_threshold(str(tmp_path / "paired")) == 0.52
    with pytest.raises(ValueError, match="1:1 verification"):
        export(best, tmp_path / "bad", verify_report=report)
    assert model_threshold("casia-webface") == PRETRAINED_THRESHOLDS["casia-webface"]


def test_config_rejects_unknown_keys_and_coerces_values(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: 4\nlr: 0.5\n")
    config = load_config(cfg, ["augment=false", "batch_size=16"])
    assert (config.epochs, config.lr, config.augment, config.batch_size) == (4, 0.5, False, 16)
    with pytest.raises(ValueError, match="unknown config key 'lrr'"):
        load_config(None, ["lrr=1"])
    with pytest.raises(ValueError, match="boolean"):
        load_config(None, ["augment=maybe"])


def test_train_all_runs_the_schedule_and_exports_with_the_validation_threshold(facecom_dir, tmp_path):
    """`faceid train all`: the packaged schedule (stage 1 only) on a data set, then the export of
    its best checkpoint with the threshold of the validation people, and the card says how."""
    from faceid.cli import main
    from training.schedule import Schedule

    assert Schedule.read().stages == ("stage1",)  # stage 2 was measured and never kept
    split = tmp_path / "val.txt"
    write_split(split, ["person_4", "person_5"], "test split")
    sets = [f"val_split={split}", f"cache_dir={tmp_path / 'cache'}", "batch_size=8", "epochs=1", "warmup_epochs=0",
            "device=cpu", "first_trainable=repeat_3"]
    argv = ["train", "all", "--data", str(facecom_dir), "--out", str(tmp_path / "model"), "--runs", str(tmp_path / "runs")]
    assert main(argv + [a for s in sets for a in ("--set", s)]) == 0
    card = ModelCard.read(tmp_path / "model")
    report = json.loads((tmp_path / "runs" / "val_candidate.json").read_text())
    assert card.threshold == report["open_set"]["threshold_for_target"] and card.threshold_rule
    assert card.checkpoint == str(tmp_path / "runs" / "stage1" / "best.pt")
    assert card.command is not None and card.command.startswith("faceid train all --data ")
    assert load_backbone(str(tmp_path / "model")).model_id.startswith("model@")


def test_a_schedule_must_start_with_stage1_and_train_all_refuses_an_empty_folder(tmp_path, capsys):
    from faceid.cli import main
    from training.schedule import Schedule

    for stages in ("[stage2]", "[stage1, stage1]", "[stage1, stage3]", "[]"):
        (tmp_path / "s.yaml").write_text(f"stages: {stages}\n")
        with pytest.raises(ValueError, match="must start with stage1"):
            Schedule.read(tmp_path / "s.yaml")
    (tmp_path / "empty").mkdir()
    assert main(["train", "all", "--data", str(tmp_path / "empty"), "--runs", str(tmp_path / "runs")]) == 2
    assert "empty: no clean photo found" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # nothing trained


def test_distillation_keeps_the_clean_photos_near_the_starting_embeddings(config_for):
    """The same whole-network run with and without the pull toward the starting weights: with it,
    clean photos of people never trained on end nearer where those weights put them."""
    def drift(weight: float) -> float:
        config = config_for("stage1", f"distill-{weight}", first_trainable="conv2d_1a", backbone_lr_mult=0.03,
                            synthetic_share=0.5, epochs=3, distill_weight=weight)
        run = build_stage1(config)
        inputs = run.embed_val.__self__  # the validation people's FaceInputs: crops never trained on
        everyone = torch.arange(len(inputs))
        start = inputs.mirrored(everyone)
        fit(run)
        return float(1 - (inputs.mirrored(everyone) * start).sum(1).mean())

    # measured: 0.36 against 0.53 (the validation people are not distilled themselves; the pull carries over)
    assert drift(50.0) < 0.8 * drift(0.0)


def test_distillation_targets_do_not_change_when_a_crop_is_mirrored(config_for):
    run = build_stage1(config_for("stage1", "mirror", first_trainable="conv2d_1a"))
    inputs = run.embed_val.__self__
    mirrored_inputs = type(inputs).__new__(type(inputs))
    mirrored_inputs.__dict__ = inputs.__dict__ | {"data": inputs.data.flip(3)}
    idx = torch.arange(len(inputs))
    targets = inputs.mirrored(idx)
    assert torch.allclose(targets, mirrored_inputs.mirrored(idx), atol=1e-5)
    assert not torch.allclose(targets[0], targets[1], atol=1e-3)  # distinct photos, distinct targets


def test_a_time_budget_shortens_the_schedule_and_still_anneals(config_for):
    config = config_for("stage1", "budget", epochs=5, max_minutes=1e-4)  # 6 ms: room for the first epoch only
    fit(build_stage1(config))
    history = json.loads((config.out_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    last = load_checkpoint(config.out_dir / "last.pt")
    assert last["config"]["epochs"] == 1  # a resumed run keeps the shortened schedule


def test_the_cosine_follows_a_lowered_epoch_count_to_zero():
    from training.config import TrainConfig
    from training.loop import _scheduler

    config = TrainConfig(epochs=5, warmup_epochs=0, lr=1.0)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = _scheduler(optimizer, config, steps_per_epoch=10)
    for _ in range(10):
        optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr()[0] > 0.8  # epoch 1 of 5: still near the top
    config.epochs = 2  # what a time budget does after epoch 1
    lrs = []
    for _ in range(12):  # to the new end, and past it
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[9] == pytest.approx(0.0, abs=1e-12) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_epochs_within_a_budget_are_bounded_by_the_config_and_the_epochs_done():
    from training.loop import epochs_within

    assert epochs_within(10, done=2, seconds_per_epoch=60, seconds_left=250) == 6
    assert epochs_within(10, done=2, seconds_per_epoch=60, seconds_left=10_000) == 10
    assert epochs_within(10, done=2, seconds_per_epoch=60, seconds_left=-5) == 2
