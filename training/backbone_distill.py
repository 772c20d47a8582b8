"""The whole backbone distilled from a teacher: every layer trained so that how alike any two faces
of a batch look matches the teacher, with an anchor to the starting model's own embeddings.

The head refit (training/head_refit.py) changes the last layer only, on features computed once;
this trains the rest too, on crops, and so costs a full forward and backward pass a photo: a long
run on a CPU, minutes on a GPU. Same people, same loss, same anchor as the refit; the batch
norms' statistics stay as trained (the network runs them in eval mode, as stage 1 does). Where
the CPU multiplies bf16 in hardware (AMX), the passes run in bf16 autocast (twice fp32's speed
on such a CPU; slower than fp32 without it, benchmarks/train_step.py).

Checkpoints every `save_every` steps hold the optimiser and the step, and each step's batch is
drawn from (seed, step) alone, so `--resume` continues the run as if it had not stopped.

    faceid distill --data ../data/lfw-dev/lfw --teacher ../shared/teachers/MobileFaceNet.onnx --base models/facecom-ft --out runs/distill/last.pt [--resume]
    faceid export --ckpt runs/distill/last.pt --out runs/distilled --threshold-from ... --verify-from ...
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence, Set
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from torch.nn import functional as F

from core.device import cpu_flags
from core.embedding.standardize import network_input
from core.models.backbone import load_backbone
from training.checkpoint import load_checkpoint, save_checkpoint
from training.distillation import similarity_structure_loss
from training.head_refit import HEAD, distorted_crops
from training.inputs import set_train_mode
from training.teacher import load_teacher, run_record, teacher_set

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-5  # the body's layers
    head_lr: float = 3e-4  # the bottleneck and its batch norm, as the head refit
    anchor: float = 0.3  # weight of (1 − cos) to the starting model's embedding of the same crop
    copies: int = 4  # training-distorted copies of each crop, beside the clean one
    per_person: int = 1  # faces each person drawn brings to a batch; 1: photos drawn at random
    seed: int = 0
    save_every: int = 250


def bf16_pays(device: str) -> bool:
    """bf16 autocast where it is faster than fp32: CUDA, and CPUs with AMX."""
    return device.startswith("cuda") or "amx_bf16" in cpu_flags()


def batch_input(crops: torch.Tensor, device: str) -> torch.Tensor:
    """uint8 crops → the network's input (core/embedding/standardize.py), channels-last on
    `device`: made once a step for both the starting model and the one trained."""
    return network_input(crops, device).contiguous(memory_format=torch.channels_last)


def embed(net: InceptionResnetV1, x: torch.Tensor, device: str, bf16: bool) -> torch.Tensor:
    """`batch_input` → unit embeddings (with the graph, when grad is on)."""
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
        return F.normalize(net(x).float(), dim=1)


def batch_rows(usable: np.ndarray, owner: np.ndarray, views: int, size: int, seed: int, step: int,
               per_person: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The step's photos and the view each is seen in, from (seed, step) alone: a resumed run
    draws what the uninterrupted run would have. With `per_person` > 1 the batch is drawn by
    person (`owner`: a person's number for each photo): each brings `per_person` faces, as many
    different photos as they have, each in a different view, so that the batch holds the pairs
    the teacher finds alike (a random draw of photos holds almost none)."""
    rng = np.random.default_rng([seed, step])
    if per_person <= 1:
        return rng.choice(usable, size, replace=False), rng.integers(views, size=size)
    if per_person > views:
        raise ValueError(f"{per_person} faces a person need as many views of a photo; there are {views}")
    order = usable[np.argsort(owner[usable], kind="stable")]
    groups = np.split(order, np.flatnonzero(np.diff(owner[order])) + 1)
    people = rng.choice(len(groups), min(size // per_person, len(groups)), replace=False)
    rows = [np.resize(rng.permutation(groups[p]), per_person) for p in people]
    seen = [rng.choice(views, per_person, replace=False) for _ in people]
    return np.concatenate(rows), np.concatenate(seen)


def distill(net: InceptionResnetV1, start: InceptionResnetV1, views: list[torch.Tensor], targets: torch.Tensor,
            owner: np.ndarray, config: DistillConfig, device: str, out: Path, run_config: dict, names: list[str], resume: bool = False) -> list[dict]:
    """Train `net` (a copy of `start`) on `views` (uint8 crops of the same photos: clean, then
    copies) toward `targets` (the teacher's unit vectors; rows of zeros are never drawn), `owner`
    the person of each photo, checkpointing to `out`. Returns the loss every 50 steps."""
    usable = np.flatnonzero(targets.abs().sum(1).numpy() > 0)
    if len(usable) < 2:
        raise ValueError(f"{len(usable)} photos with a teacher target; distillation needs at least two")
    size = min(config.batch_size, len(usable))
    bf16 = bf16_pays(device)
    head = [p for n, p in net.named_parameters() if n in HEAD]
    body = [p for n, p in net.named_parameters() if n not in HEAD and not n.startswith("logits")]
    opt = torch.optim.AdamW([{"params": body, "lr": config.lr}, {"params": head, "lr": config.head_lr}], weight_decay=0.0)
    first, history = 0, []
    if resume and out.is_file():
        state = load_checkpoint(out)
        net.load_state_dict(state["backbone"])
        opt.load_state_dict(state["optimizer"])
        first, history = int(state["step"]), list(state["history"])
        log.info("resumed %s at step %d", out, first)
    start.eval()
    running: list[tuple[float, float]] = []
    for step in range(first, config.steps):
        rows, seen = batch_rows(usable, owner, len(views), size, config.seed, step, config.per_person)
        torch.manual_seed(config.seed * 1_000_003 + step)  # the dropout's mask too comes from (seed, step)
        x = batch_input(torch.stack([views[v][r] for v, r in zip(seen.tolist(), rows.tolist())]), device)
        with torch.no_grad():
            anchors = embed(start, x, device, bf16)
        set_train_mode(net)
        z = embed(net, x, device, bf16)
        structure = similarity_structure_loss(z, targets[torch.from_numpy(rows)].to(device))
        anchor = (1 - (z * anchors).sum(1)).mean()
        loss = structure + config.anchor * anchor
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append((structure.item(), anchor.item()))
        done = step + 1
        if done % 50 == 0 or done == config.steps:
            s, a = np.mean(running, axis=0)
            history.append({"step": done, "structure": float(s), "anchor": float(a)})
            log.info("step %d: structure %.5f, anchor %.4f", done, s, a)
            running = []
        if done % config.save_every == 0 or done == config.steps:
            state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            save_checkpoint(out, backbone=state, optimizer=opt.state_dict(), step=done, config=run_config,
                            label_map=names, history=history, epoch=0)
    return history


def run(data: Path, base: str, teacher_path: Path, out: Path, exclude: Set[str] = frozenset(),
        config: DistillConfig = DistillConfig(), cache: Path = Path(".cache"), device: str = "cpu",
        resume: bool = False, also: Sequence[Path] = ()) -> Path:
    """Distil the teacher into all of `base` on the train people of `data` and the people of
    `also` (training/teacher.py); the checkpoint at
    `out` is what `faceid export` takes."""
    if config.per_person > config.copies + 1:
        raise ValueError(f"--per-person {config.per_person}: a photo has {config.copies + 1} views (clean and {config.copies} copies)")
    teacher = load_teacher(teacher_path)
    photos = teacher_set(data, teacher, exclude, cache, also)
    backbone = load_backbone(base)
    start = backbone.net.to(device).to(memory_format=torch.channels_last).eval()
    net = copy.deepcopy(start)
    views = [photos.crops] + [distorted_crops(photos.crops, c) for c in range(config.copies)]
    run_config = {**run_record("distill", data, base, backbone.sha256, teacher, photos, also), "bf16": bf16_pays(device), **asdict(config)}
    out.parent.mkdir(parents=True, exist_ok=True)
    owner = np.unique([str(p.parent) for p in photos.paths], return_inverse=True)[1]  # a folder per person
    distill(net, start, views, photos.targets, owner, config, device, out, run_config, photos.names, resume)
    return out
