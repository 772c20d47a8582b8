"""InceptionResnetV1 cut into a frozen trunk and a trainable tail.

Freezing the early layers is what makes CPU fine-tuning affordable: the trunk's output
can then be computed once per image and cached, and only the tail runs every epoch.
"""

from __future__ import annotations

import torch
from facenet_pytorch import InceptionResnetV1
from torch import nn
from torch.nn import functional as F

# facenet-pytorch's forward(), in order; the tail ends with the 512-d bottleneck.
LAYERS = (
    "conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b",
    "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3", "block8",
)


def _check(first_trainable: str) -> int:
    if first_trainable not in LAYERS:
        raise ValueError(f"unknown layer {first_trainable!r}; choose from {', '.join(LAYERS)}")
    return LAYERS.index(first_trainable)


def frozen_stages(first_trainable: str) -> tuple[str, ...]:
    """The stages before the cut: frozen, and computed once when features are cached."""
    return LAYERS[: _check(first_trainable)]


def trunk(net: InceptionResnetV1, x: torch.Tensor, first_trainable: str) -> torch.Tensor:
    for name in frozen_stages(first_trainable):
        x = getattr(net, name)(x)
    return x


def tail(net: InceptionResnetV1, x: torch.Tensor, first_trainable: str) -> torch.Tensor:
    """Trunk features → L2-normalised embeddings (what net(x) returns, from the cut on)."""
    for name in LAYERS[_check(first_trainable) :]:
        x = getattr(net, name)(x)
    x = net.avgpool_1a(x)
    x = net.dropout(x)
    x = net.last_bn(net.last_linear(x.flatten(1)))
    return F.normalize(x, dim=1)


def pooled(net: InceptionResnetV1, x: torch.Tensor) -> torch.Tensor:
    """Network input → the 1792-d pooled features that the head (bottleneck + batch norm) turns
    into the embedding: everything but the head."""
    for name in LAYERS:
        x = getattr(net, name)(x)
    return net.avgpool_1a(x).flatten(1)


def freeze_trunk(net: InceptionResnetV1, first_trainable: str) -> list[nn.Parameter]:
    """Freeze everything before the cut; return the trainable parameters."""
    frozen = {f"{name}." for name in frozen_stages(first_trainable)}
    trainable = []
    for name, param in net.named_parameters():
        param.requires_grad = not any(name.startswith(prefix) for prefix in frozen)
        if param.requires_grad:
            trainable.append(param)
    for name in frozen_stages(first_trainable):
        getattr(net, name).eval()  # frozen batch-norm statistics stay pretrained
    return trainable
