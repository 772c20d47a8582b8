"""The two fine-tuning stages: ArcFace classification, then clean↔distorted contrastive learning."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch.nn import functional as F

from core.constants import EMBEDDING_DIM
from core.data.dataset import Sample
from core.models.backbone import build_backbone, load_state, resolve_weights
from training.arcface import ArcMarginHead
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.contrastive import ContrastiveLoss, hardest_negatives
from training.data import LabelMap, load_crops, split_samples
from training.distillation import clean_sources, distillation_loss
from training.inputs import FaceInputs, set_train_mode
from training.loop import Batch, Run, seed_everything
from training.split_backbone import freeze_trunk


def _common(config: TrainConfig, label_map: LabelMap | None = None):
    seed_everything(config.seed)
    device = config.resolved_device()
    train, val = split_samples(config.data, config.val_split, config.test_split)
    label_map = label_map or LabelMap.from_samples(train)
    path, expected = resolve_weights(config.init)
    net = build_backbone(load_state(path, expected)).to(device)
    if config.channels_last:
        net = net.to(memory_format=torch.channels_last)  # the faster convolution layout on CPU (and tensor cores)
    trainable = freeze_trunk(net, config.first_trainable)

    def make(samples: list, augment: bool) -> FaceInputs:
        return FaceInputs(
            net, load_crops(samples, config.cache_dir, device), torch.tensor([s.is_clean for s in samples]),
            config.first_trainable, config.cache_dir, device, augment, seed=config.seed,
            synthetic_share=config.synthetic_share, channels_last=config.channels_last,
            synthetic_kinds=config.distortion_kinds,
        )

    return device, train, val, label_map, net, trainable, make(train, config.augment), make(val, False)


def _steps(n: int, config: TrainConfig) -> int:
    """Steps per epoch: one pass over `n` samples, or fewer where the config caps an epoch
    (shorter epochs validate, checkpoint and early-stop more often on a slow machine)."""
    full = n // config.batch_size
    return min(full, config.steps_per_epoch) if config.steps_per_epoch > 0 else full


def _distillation_targets(train: Sequence[Sample], train_in: FaceInputs, device: str) -> torch.Tensor:
    """Per training sample, the starting weights' (mirror-averaged) embedding of its clean source
    photo; zeros where that is unknown. Computed before the first step, so from the weights the
    run starts from."""
    sources = clean_sources(train)
    known = sources >= 0
    clean, which = torch.unique(sources[known], return_inverse=True)
    targets = torch.zeros(len(train), EMBEDDING_DIM, device=device)
    targets[known.to(device)] = train_in.mirrored(clean).to(device)[which.to(device)]
    return targets


def build_stage1(config: TrainConfig) -> Run:
    """Backbone + ArcFace head over all training photos, clean and distorted."""
    device, train, val, label_map, net, trainable, train_in, val_in = _common(config)
    labels = label_map.labels(train)
    head = ArcMarginHead(EMBEDDING_DIM, len(label_map), s=config.arc_s, m=config.arc_m).to(device)
    steps = _steps(len(train), config)
    targets = _distillation_targets(train, train_in, device) if config.distill_weight > 0 else None

    def batches(epoch: int) -> Iterator[Batch]:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed + epoch))
        for s in range(steps):
            idx = order[s * config.batch_size : (s + 1) * config.batch_size]
            yield {"idx": idx, "labels": labels[idx]}

    def loss(batch: Batch) -> torch.Tensor:
        embeddings, target = train_in.embed(batch["idx"], train=True), batch["labels"].to(device)
        arcface = F.cross_entropy(head(embeddings, target), target)
        if targets is None:
            return arcface
        return arcface + config.distill_weight * distillation_loss(embeddings.float(), targets[batch["idx"]])

    def train_modes() -> None:
        set_train_mode(net)
        head.train()

    return Run(config, net, head, label_map, loss, batches, steps, val_in.embed_all, val, trainable, train_modes)


def build_stage2(config: TrainConfig) -> Run:
    """(clean anchor, distorted positive of the same person, hardest in-batch negative of another).

    The positive is one of the data set's distorted photos or, for a `synthetic_share` of
    them when the whole network trains, a fresh synthetic distortion of the anchor photo."""
    label_map = None
    if config.init.endswith(".pt") and "label_map" in (ckpt := load_checkpoint(Path(config.init))):
        label_map = LabelMap(tuple(ckpt["label_map"]))  # the stage-1 mapping, never rebuilt
    device, train, val, label_map, net, trainable, train_in, val_in = _common(config, label_map)
    labels = label_map.labels(train)
    clean_of = defaultdict(list)
    for i, s in enumerate(train):
        if s.is_clean:
            clean_of[s.identity].append(i)
    distorted = torch.tensor([i for i, s in enumerate(train) if not s.is_clean])
    criterion = ContrastiveLoss(config.margin)
    steps = _steps(len(distorted), config)

    def batches(epoch: int) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(config.seed + epoch)
        order = distorted[torch.randperm(len(distorted), generator=g)]
        for s in range(steps):
            pos = order[s * config.batch_size : (s + 1) * config.batch_size]
            anchors = torch.tensor([
                (c := clean_of[train[int(p)].identity])[int(torch.randint(len(c), (1,), generator=g))] for p in pos
            ])
            labels_pos = labels[pos]
            if train_in.distort is not None:
                synthetic = torch.rand(len(pos), generator=g) < config.synthetic_share
                pos = torch.where(synthetic, anchors, pos)
            yield {"anchor": anchors, "positive": pos, "labels": labels_pos}

    def loss(batch: Batch) -> torch.Tensor:
        a = train_in.embed(batch["anchor"], train=True, distort_share=0.0)  # the anchor is the clean photo
        p = train_in.embed(batch["positive"], train=True, distort_share=1.0)  # clean positives: always distorted
        lab = batch["labels"].to(device)
        return criterion(a, p, hardest_negatives(a, p, lab, lab))

    return Run(config, net, None, label_map, loss, batches, steps, val_in.embed_all, val, trainable, lambda: set_train_mode(net))


BUILDERS = {"stage1": build_stage1, "stage2": build_stage2}
