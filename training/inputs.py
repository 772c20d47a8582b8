"""Sample indices → embeddings through the network being trained.

With a frozen trunk the trunk's features are computed once and cached, and each step runs
only the tail; with nothing frozen each step runs the whole network on augmented crops.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from torch import nn

from core.faces import standardize
from training.augment import build_augment, synthetic_distortion
from training.data import trunk_features
from training.split_backbone import frozen_stages, tail


class FaceInputs:
    def __init__(
        self, net: InceptionResnetV1, crops: torch.Tensor, first_trainable: str, cache_dir: Path, device: str, augment: bool
    ) -> None:
        self.net, self.first_trainable, self.device = net, first_trainable, device
        self.cached = bool(frozen_stages(first_trainable))
        self.data = trunk_features(net, crops, first_trainable, cache_dir, device) if self.cached else crops
        self.augment = build_augment() if augment and not self.cached else None

    def __len__(self) -> int:
        return len(self.data)

    def embed(self, idx: torch.Tensor, train: bool) -> torch.Tensor:
        x = self.data[idx]
        if self.cached:
            return tail(self.net, x.to(self.device).float(), self.first_trainable)
        if train and self.augment is not None:
            x = self.augment(synthetic_distortion(x))
        return tail(self.net, standardize(x.to(self.device)), self.first_trainable)

    @torch.inference_mode()
    def embed_all(self, batch_size: int = 256) -> np.ndarray:
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
