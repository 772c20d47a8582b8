"""Augmentation for training the whole network: geometry, photometry and synthetic distortions.

Only used where the trunk is trained; with a frozen trunk the cached features come from the
data set's own distorted photos instead.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2


def synthetic_distortion(crops: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per crop, one of: noise, over-exposure glare, darkening, or nothing (uint8 in and out)."""
    x = crops.float()
    n = len(x)
    choice = torch.randint(0, 4, (n,), generator=generator)
    noise = torch.randn(x.shape, generator=generator) * 25
    x = torch.where((choice == 0)[:, None, None, None], x + noise, x)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, x.shape[-2]), torch.linspace(-1, 1, x.shape[-1]), indexing="ij")
    glare = 255 * torch.exp(-(xx**2 + yy**2) / 0.3)  # a bright blob centred on the face, like "sunny"
    x = torch.where((choice == 1)[:, None, None, None], x + 0.8 * glare, x)
    x = torch.where((choice == 2)[:, None, None, None], x * 0.3, x)
    return x.clamp(0, 255).to(torch.uint8)


def build_augment() -> v2.Compose:
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomResizedCrop(160, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        v2.RandomApply([v2.ColorJitter(0.3, 0.3, 0.3, 0.05)], p=0.5),
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 2.0))], p=0.2),
    ])
