"""The training loop both stages share: optimiser, warm-up schedule, AMP, clipping, validation,
best-checkpoint keeping, early stop, resume, and a loss/top-1 plot."""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from evaluation.facecom import Sample
from evaluation.run import report_from_embeddings
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
    total = max(warmup + 1, config.epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def validate(run: Run) -> dict:
    run.net.eval()
    with torch.inference_mode():
        embeddings = run.embed_val()
    return report_from_embeddings(run.val_samples, embeddings)


def fit(run: Run, resume: bool = False) -> Path:
    """Train; return the path of the best checkpoint (by `validation_score`)."""
    c = run.config
    device = c.resolved_device()
    use_amp = c.amp and device == "cuda"
    optimizer = _optimizer(run)
    scheduler = _scheduler(optimizer, c, run.steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    out = Path(c.out_dir)
    start_epoch, best, stale = 0, -1.0, 0
    if resume:
        state = load_checkpoint(out / "last.pt")
        run.net.load_state_dict(state["backbone"])
        if run.head is not None:
            run.head.load_state_dict(state["head"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best, stale, run.history = state["epoch"] + 1, state["best"], state["stale"], state["history"]
        torch.set_rng_state(state["rng"])
        log.info("resumed %s at epoch %d", out / "last.pt", start_epoch)

    for epoch in range(start_epoch, c.epochs):
        run.train_modes()
        losses = []
        bar = tqdm(run.batches(epoch), total=run.steps_per_epoch, desc=f"{c.stage} epoch {epoch + 1}/{c.epochs}")
        for batch in bar:
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
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
        entry = {
            "epoch": epoch + 1, "loss": float(np.mean(losses)), "val_top1": report["top1"],
            "val_source_left_out": report["source_left_out"]["top1"], "val_per_distortion": report["per_distortion"],
            "val_clean_tar@far=1e-3": report["clean_verification"]["tar@far=0.001"], "score": score,
        }
        run.history.append(entry)
        log.info("epoch %d: %s", epoch + 1, json.dumps(entry))
        improved = score > best
        best, stale = (score, 0) if improved else (best, stale + 1)
        state = {
            "backbone": run.net.state_dict(), "head": run.head.state_dict() if run.head is not None else {},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "step": (epoch + 1) * run.steps_per_epoch, "best": best, "stale": stale,
            "history": run.history, "label_map": list(run.label_map.identities), "config": as_dict(c),
            "val_report": report, "rng": torch.get_rng_state(),
        }
        save_checkpoint(out / "last.pt", **state)
        if improved:
            save_checkpoint(out / "best.pt", **state)
        plot_history(run.history, out / "history.png")
        (out / "history.json").write_text(json.dumps(run.history, indent=2))
        if stale >= c.patience:
            log.info("early stop: no better validation score for %d epochs", stale)
            break
    return out / "best.pt"


def plot_history(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(epochs, [h["loss"] for h in history], "o-", color="#c44e52", label="train loss")
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
