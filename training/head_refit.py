"""The head refit: the served backbone's head (the 1792→512 bottleneck and its batch norm)
retrained so that how alike any two faces of a batch look matches a stronger teacher, with the
rest of the network frozen.

Fine-tuning on FACECOM's distorted copies taught the backbone to find a photo's own copy; telling
that a *different* photo shows the same person is what a teacher trained on many more people
does better (training/teacher.py). Only the head changes, so each photo's pooled features are
computed once and the refit takes minutes on a CPU. An anchor term keeps each embedding near
where the starting head put it, which is what keeps FACECOM's figures.

The photos are the `train` people of a folder-per-person set (core/data/people.py), never the
people thresholds are chosen or reported on: clean, and as training-distorted copies of their
crops (training/distortions.py). The teacher sees the clean photo, so a distorted copy is asked
for its clean photo's place. Faces are found by the service's own pipeline; a photo without
MTCNN's landmarks has no teacher target and is left out.

    faceid train-head --data ../data/lfw-dev/lfw --teacher ../shared/teachers/MobileFaceNet.onnx --base runs/soup --out runs/head/refit.pt
    faceid export --ckpt runs/head/refit.pt --out models/facecom-ft --threshold-from ... --verify-from ...
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from torch import nn
from torch.nn import functional as F

from core.embedding.standardize import network_input
from core.models.backbone import load_backbone
from training.checkpoint import save_checkpoint
from training.distillation import similarity_structure_loss
from training.distortions import build_distortions
from training.split_backbone import pooled
from training.teacher import load_teacher, run_record, teacher_set

HEAD = ("last_linear.weight", "last_bn.weight", "last_bn.bias")


@dataclass(frozen=True)
class RefitConfig:
    steps: int = 600
    batch_size: int = 256
    lr: float = 3e-4
    anchor: float = 0.3  # weight of (1 − cos) to the starting head's embedding of the same view
    copies: int = 2  # training-distorted copies of each crop, beside the clean one
    seed: int = 0


@dataclass(frozen=True)
class Head:
    """The trainable part: the bottleneck's weights and the batch norm's scale and shift; the batch
    norm's running statistics stay as trained (the head runs in eval mode)."""

    weight: torch.Tensor
    scale: torch.Tensor
    shift: torch.Tensor

    @classmethod
    def of(cls, net: InceptionResnetV1) -> Head:
        return cls(net.last_linear.weight.detach().clone(), net.last_bn.weight.detach().clone(), net.last_bn.bias.detach().clone())

    def state(self) -> dict[str, torch.Tensor]:
        return dict(zip(HEAD, (self.weight, self.scale, self.shift)))


def embed_pooled(features: torch.Tensor, head: Head, norm: nn.BatchNorm1d) -> torch.Tensor:
    """Pooled features → unit embeddings: what the network's head does in eval mode."""
    z = F.batch_norm(features @ head.weight.T, norm.running_mean, norm.running_var, head.scale, head.shift, training=False, eps=norm.eps)
    return F.normalize(z, dim=1)


def pooled_features(net: InceptionResnetV1, crops: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """uint8 N×3×160×160 crops → N×1792 pooled features (standardised as everywhere else)."""
    out = [torch.zeros(0, net.last_linear.in_features)]
    with torch.inference_mode():
        for start in range(0, len(crops), batch_size):
            out.append(pooled(net, network_input(crops[start : start + batch_size])))
    return torch.cat(out)


def distorted_crops(crops: torch.Tensor, copy: int) -> torch.Tensor:
    """One training-distorted copy of every crop, each of a kind drawn at random; `copy` seeds it."""
    distortions = build_distortions()
    kinds = list(distortions)
    rng = np.random.default_rng(copy)
    out = []
    for img in crops.permute(0, 2, 3, 1).numpy():
        kind = kinds[int(rng.integers(len(kinds)))]
        out.append(distortions[kind](np.ascontiguousarray(img), rng))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous() if out else crops.clone()


def refit_head(views: Sequence[torch.Tensor], targets: torch.Tensor, start: Head, norm: nn.BatchNorm1d,
               config: RefitConfig) -> tuple[Head, list[dict]]:
    """Train the head on `views` (pooled features of the same photos: clean, then copies) toward
    `targets` (the teacher's unit vectors; rows of zeros: no target, never drawn). Returns the
    head and the loss every 100 steps."""
    usable = np.flatnonzero(targets.abs().sum(1).numpy() > 0)
    if len(usable) < 2:
        raise ValueError(f"{len(usable)} photos with a teacher target; the refit needs at least two")
    batch = min(config.batch_size, len(usable))
    weight, scale, shift = (t.clone().requires_grad_(True) for t in (start.weight, start.scale, start.shift))
    opt = torch.optim.Adam([weight, scale, shift], lr=config.lr)
    with torch.no_grad():
        anchors = [embed_pooled(v, start, norm) for v in views]
    rng = np.random.default_rng(config.seed)
    history, running = [], []
    for step in range(config.steps):
        rows = torch.from_numpy(rng.choice(usable, batch, replace=False))
        view = int(rng.integers(len(views)))
        z = embed_pooled(views[view][rows], Head(weight, scale, shift), norm)
        structure = similarity_structure_loss(z, targets[rows])
        anchor = (1 - (z * anchors[view][rows]).sum(1)).mean()
        loss = structure + config.anchor * anchor
        opt.zero_grad()
        loss.backward()
        opt.step()
        running.append((structure.item(), anchor.item()))
        if (step + 1) % 100 == 0 or step + 1 == config.steps:
            s, a = np.mean(running, axis=0)
            history.append({"step": step + 1, "structure": float(s), "anchor": float(a)})
            running = []
    return Head(weight.detach(), scale.detach(), shift.detach()), history


def run(data: Path, base: str, teacher_path: Path, out: Path, exclude: Set[str] = frozenset(),
        config: RefitConfig = RefitConfig(), cache: Path = Path(".cache"), also: Sequence[Path] = ()) -> Path:
    """Refit `base`'s head on the train people of `data` and the people of `also`
    (training/teacher.py); write a checkpoint `faceid export` takes."""
    teacher = load_teacher(teacher_path)
    photos = teacher_set(data, teacher, exclude, cache, also)
    backbone = load_backbone(base)
    net = backbone.net.eval()
    views = [pooled_features(net, photos.crops)] + [pooled_features(net, distorted_crops(photos.crops, c)) for c in range(config.copies)]
    head, history = refit_head(views, photos.targets, Head.of(net), net.last_bn, config)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()} | head.state()
    run_config = {**run_record("head", data, base, backbone.sha256, teacher, photos, also), **asdict(config)}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out, backbone=state, config=run_config, label_map=photos.names, history=history, epoch=0)
    return out
