"""ArcFace head: additive angular margin on normalised weights and features."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ArcMarginHead(nn.Module):
    """logits_j = s·cos(θ_j) for j ≠ y, and s·cos(θ_y + m) for the true class y.

    cos(θ + m) is computed as cos θ·cos m − sin θ·sin m with sin θ = √(1 − cos²θ) clamped,
    so the gradient stays finite at θ = 0 and θ = π. Past θ = π − m, cos(θ + m) would stop
    decreasing; there the logit continues as cos θ − m·sin m (insightface's "easy margin"
    alternative is not used), keeping the target logit monotonic in θ.
    """

    def __init__(self, in_features: int, n_classes: int, s: float = 32.0, m: float = 0.4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.xavier_uniform_(self.weight)
        self.s, self.m = s, m
        self.cos_m, self.sin_m = math.cos(m), math.sin(m)
        self.threshold = math.cos(math.pi - m)
        self.fallback = math.sin(math.pi - m) * m

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # The margin is a small angle: cosines in bf16/fp16 (3 significant digits) would blur it.
        with torch.autocast(embeddings.device.type, enabled=False):
            return self._logits(embeddings, labels)

    def _logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(embeddings.float()), F.normalize(self.weight.float())).clamp(-1.0, 1.0)
        target = cos.gather(1, labels[:, None])
        sin = torch.sqrt((1.0 - target * target).clamp(min=1e-7))
        with_margin = target * self.cos_m - sin * self.sin_m
        with_margin = torch.where(target > self.threshold, with_margin, target - self.fallback)
        return self.s * cos.scatter(1, labels[:, None], with_margin)
