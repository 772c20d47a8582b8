"""Sample indices → embeddings through the network being trained.

With a frozen trunk the trunk's features are computed once and cached, and each step runs
only the tail. With nothing frozen each step runs the whole network on augmented crops, and
clean crops are replaced at random by fresh synthetic distortions of themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from core.constants import CROP_SIZE
from core.embedding.standardize import network_input
from training.data import trunk_features
from training.distortions import KINDS, SyntheticDistortions
from training.split_backbone import frozen_stages, tail


def build_augment() -> v2.Compose:
    """Geometry and mild photometry; the distortions themselves come from `SyntheticDistortions`."""
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomResizedCrop(CROP_SIZE, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomApply([v2.ColorJitter(0.2, 0.2, 0.2, 0.03)], p=0.3),
    ])


class FaceInputs:
    def __init__(
        self, net: InceptionResnetV1, crops: torch.Tensor, clean: torch.Tensor, first_trainable: str, cache_dir: Path,
        device: str, augment: bool, seed: int = 0, synthetic_share: float = 0.5, channels_last: bool = False,
        synthetic_kinds: tuple[str, ...] = KINDS,
    ) -> None:
        self.net, self.first_trainable, self.device = net, first_trainable, device
        self.cached = bool(frozen_stages(first_trainable))
        self.data = trunk_features(net, crops, first_trainable, cache_dir, device) if self.cached else crops
        self.clean = clean.numpy().astype(bool)
        trains_trunk = augment and not self.cached
        self.augment = build_augment() if trains_trunk else None
        self.distort = SyntheticDistortions(seed, synthetic_share, synthetic_kinds) if trains_trunk and synthetic_share > 0 else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __len__(self) -> int:
        return len(self.data)

    def embed(self, idx: torch.Tensor, train: bool, distort_share: float | None = None) -> torch.Tensor:
        """Embeddings of samples `idx`. In training they are augmented, and clean ones are
        distorted afresh with probability `distort_share` (default: the configured share)."""
        x = self.data[idx]
        if self.cached:
            return tail(self.net, x.to(self.device).float(), self.first_trainable)
        if train and self.distort is not None and distort_share != 0:
            hwc = x.permute(0, 2, 3, 1).numpy()
            x = torch.from_numpy(self.distort(hwc, self.clean[idx.numpy()], distort_share)).permute(0, 3, 1, 2)
        if train and self.augment is not None:
            x = self.augment(x)
        return tail(self.net, network_input(x, self.device).contiguous(memory_format=self.memory_format), self.first_trainable)

    @torch.inference_mode()
    def mirrored(self, idx: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """Unit embeddings of samples `idx` as evaluated (no augmentation, no distortion), averaged
        with their mirror images' where training flips crops: targets the flips do not change.
        Cached trunk features are never flipped (nor augmented), so there they are as they are."""
        self.net.eval()
        if self.cached:
            return torch.cat([self.embed(idx[s : s + batch_size], train=False) for s in range(0, len(idx), batch_size)]).float()
        out = []
        for s in range(0, len(idx), batch_size):
            x = network_input(self.data[idx[s : s + batch_size]], self.device)
            both = torch.cat([x, x.flip(3)]).contiguous(memory_format=self.memory_format)
            e = tail(self.net, both, self.first_trainable).float()
            out.append(F.normalize(e[: len(x)] + e[len(x) :], dim=1))
        return torch.cat(out)

    @torch.inference_mode()
    def embed_all(self, batch_size: int = 128) -> np.ndarray:
        out = [self.embed(torch.arange(s, min(s + batch_size, len(self))), train=False) for s in range(0, len(self), batch_size)]
        return torch.cat(out).float().cpu().numpy()


def set_train_mode(net: nn.Module) -> None:
    """Dropout on, batch-norm statistics frozen: the converted weights fold BN into the
    convolutions, so batch statistics would replace the pretrained function, and small
    batches would make them noisy anyway. BN's affine parameters still train."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
