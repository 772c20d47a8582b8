"""The training loop both stages share: optimiser, warm-up schedule, AMP, clipping, validation,
best-checkpoint keeping, early stop, resume, and a loss/top-1 plot."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.data.dataset import Sample
from evaluation.metrics import tar_at
from evaluation.report import report_from_embeddings
from training.checkpoint import load_checkpoint, save_checkpoint
from training.config import TrainConfig, as_dict
from training.data import LabelMap

log = logging.getLogger(__name__)

Batch = dict[str, torch.Tensor]
LossFn = Callable[[Batch], torch.Tensor]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def clean_tar(report: dict) -> float:
    return tar_at(report["clean_verification"], 1e-3)


def validation_score(report: dict) -> float:
    """Best-checkpoint criterion: the standard top-1 and the source-left-out top-1 weigh equally,
    so a model cannot win by matching backgrounds of the gallery photo."""
    left_out = report["source_left_out"]["top1"]
    return report["top1"] if math.isnan(left_out) else 0.5 * (report["top1"] + left_out)


@dataclass
class Run:
    """What a stage hands to `fit`."""

    config: TrainConfig
    net: nn.Module
    head: nn.Module | None
    label_map: LabelMap
    loss: LossFn
    batches: Callable[[int], Iterator[Batch]]  # epoch → batches
    steps_per_epoch: int
    embed_val: Callable[[], np.ndarray]
    val_samples: list[Sample]
    trainable: list[nn.Parameter]
    train_modes: Callable[[], None]  # puts the right submodules in train mode
    history: list[dict] = field(default_factory=list)


def _optimizer(run: Run) -> torch.optim.Optimizer:
    c = run.config
    groups = [{"params": run.trainable, "lr": c.lr * c.backbone_lr_mult}]
    if run.head is not None:
        groups.append({"params": list(run.head.parameters()), "lr": c.lr})
    return torch.optim.AdamW(groups, weight_decay=c.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        total = max(warmup + 1, config.epochs * steps_per_epoch)  # read each step: a time budget may lower `epochs`
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epochs_within(planned: int, done: int, seconds_per_epoch: float, seconds_left: float) -> int:
    """The epochs a run can finish in the time left at its measured pace: never more than
    planned, never fewer than those already done."""
    return max(done, min(planned, done + int(seconds_left // max(seconds_per_epoch, 1e-9))))


def validate(run: Run) -> dict:
    run.net.eval()
    with torch.inference_mode():
        embeddings = run.embed_val()
    return report_from_embeddings(run.val_samples, embeddings)


def fit(run: Run, resume: bool = False) -> Path:
    """Train; return the path of the best checkpoint (by `validation_score`)."""
    c = run.config
    device = c.resolved_device()
    # CUDA: fp16 with loss scaling. CPU: bf16, whose fp32-sized exponent needs no scaler.
    use_amp = c.amp if device == "cuda" else c.cpu_bf16
    amp_dtype = torch.float16 if device == "cuda" else torch.bfloat16
    optimizer = _optimizer(run)
    scheduler = _scheduler(optimizer, c, run.steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device == "cuda")
    out = Path(c.out_dir)
    start_epoch, best, stale = 0, -1.0, 0

    def state(epoch: int, report: dict) -> dict:
        return {
            "backbone": run.net.state_dict(), "head": run.head.state_dict() if run.head is not None else {},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "step": (epoch + 1) * run.steps_per_epoch, "best": best, "stale": stale,
            "baseline_clean_tar": baseline_clean, "history": run.history, "label_map": list(run.label_map.identities),
            "config": as_dict(c), "val_report": report, "rng": torch.get_rng_state(),
        }

    if resume:
        saved = load_checkpoint(out / "last.pt")
        run.net.load_state_dict(saved["backbone"])
        if run.head is not None:
            run.head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        start_epoch, best, stale, run.history = saved["epoch"] + 1, saved["best"], saved["stale"], saved["history"]
        baseline_clean = saved["baseline_clean_tar"]
        if c.max_minutes > 0:  # a schedule an earlier launch shortened to its time budget stays short
            c.epochs = min(c.epochs, int(saved["config"]["epochs"]))
        torch.set_rng_state(saved["rng"])
        log.info("resumed %s at epoch %d", out / "last.pt", start_epoch)
    else:
        # Epoch 0 is the starting weights: the run never keeps anything worse than its start,
        # and clean-photo verification may not fall more than max_clean_drop below it.
        report = validate(run)
        baseline_clean, best = clean_tar(report), validation_score(report)
        run.history.append(_entry(0, None, report))
        log.info("epoch 0 (start): %s", json.dumps(run.history[-1]))
        save_checkpoint(out / "best.pt", **state(-1, report))

    deadline = time.monotonic() + 60 * c.max_minutes if c.max_minutes > 0 else None
    epoch = start_epoch
    while epoch < c.epochs:
        epoch_start = time.monotonic()
        run.train_modes()
        losses = []
        bar = tqdm(run.batches(epoch), total=run.steps_per_epoch, desc=f"{c.stage} epoch {epoch + 1}/{c.epochs}")
        for batch in bar:
            with torch.autocast(device, dtype=amp_dtype, enabled=use_amp):
                loss = run.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip true gradients, not scaled ones
            params = run.trainable + (list(run.head.parameters()) if run.head is not None else [])
            nn.utils.clip_grad_norm_(params, c.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        report = validate(run)
        score = validation_score(report)
        eligible = clean_tar(report) >= baseline_clean - c.max_clean_drop
        run.history.append(_entry(epoch + 1, float(np.mean(losses)), report) | {"eligible": eligible})
        log.info("epoch %d: %s", epoch + 1, json.dumps(run.history[-1]))
        improved = eligible and score > best
        best, stale = (score, 0) if improved else (best, stale + 1)
        if deadline is not None:  # before the save, so that a resumed run keeps the shortened schedule
            planned = c.epochs
            c.epochs = epochs_within(planned, epoch + 1, time.monotonic() - epoch_start, deadline - time.monotonic())
            if c.epochs < planned:
                log.info("time budget %.1f min: %d epochs instead of %d", c.max_minutes, c.epochs, planned)
        save_checkpoint(out / "last.pt", **state(epoch, report))
        if improved:
            save_checkpoint(out / "best.pt", **state(epoch, report))
        plot_history(run.history, out / "history.png")
        (out / "history.json").write_text(json.dumps(run.history, indent=2))
        if stale >= c.patience:
            log.info("early stop: no better validation score for %d epochs", stale)
            break
        epoch += 1
    return out / "best.pt"


def _entry(epoch: int, loss: float | None, report: dict) -> dict:
    return {
        "epoch": epoch, "loss": loss, "val_top1": report["top1"], "val_source_left_out": report["source_left_out"]["top1"],
        "val_per_distortion": report["per_distortion"], "val_clean_tar@far=1e-3": clean_tar(report),
        "score": validation_score(report),
    }


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    trained = [h for h in history if h["loss"] is not None]  # epoch 0 is the start: no loss
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([h["epoch"] for h in trained], [h["loss"] for h in trained], "o-", color="#c44e52", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_top1"] * 100 for h in history], "s-", color="#4c72b0", label="val top-1")
    ax2.plot(epochs, [h["val_source_left_out"] * 100 for h in history], "^--", color="#55a868", label="val top-1, source left out")
    ax2.set_ylabel("top-1 (%)")
    fig.legend(loc="lower center", ncol=3, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
