"""Contrastive loss pulling a person's distorted embeddings onto their clean ones."""

from __future__ import annotations

import torch
from torch import nn


class ContrastiveLoss(nn.Module):
    """L = ½·mean(d(a, p)²) + ½·mean(max(0, margin − d(a, n))²).

    d is the Euclidean distance between L2-normalised embeddings, so it lies in [0, 2]
    (d² = 2 − 2·cos) and the default margin 1.0 asks negatives to be at cosine ≤ 0.5.
    """

    def __init__(self, margin: float = 1.0) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        d_pos = (anchor - positive).norm(dim=1)
        d_neg = (anchor - negative).norm(dim=1)
        return 0.5 * d_pos.pow(2).mean() + 0.5 * (self.margin - d_neg).clamp(min=0).pow(2).mean()


def hardest_negatives(anchor: torch.Tensor, candidates: torch.Tensor, anchor_labels: torch.Tensor, candidate_labels: torch.Tensor) -> torch.Tensor:
    """For each anchor, the nearest candidate of another person (in-batch hard-negative mining)."""
    dist = torch.cdist(anchor, candidates)
    same = anchor_labels[:, None] == candidate_labels[None, :]
    dist = dist.masked_fill(same, float("inf"))
    return candidates[dist.argmin(dim=1)]
