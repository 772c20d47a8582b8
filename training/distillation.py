"""Distillation toward the starting backbone: each training crop's embedding is pulled toward
what the starting (pretrained) weights make of its *clean* source photo.

ArcFace over 677 training people reshapes the embedding space it was handed; this term keeps
the clean photos where the pretrained backbone put them (its clean-photo verification is what
fine-tuning must not lose) and asks a distorted copy for its clean photo's embedding.

Distillation from a teacher (training/head_refit.py) matches *similarity structure* instead:
the cosines between every two faces of a batch, which a teacher of another width can give.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from core.data.dataset import Sample


def clean_sources(samples: Sequence[Sample]) -> torch.Tensor:
    """For each sample, the index of the clean photo it was made from: itself when clean; for a
    distorted copy whose source is unknown or absent, -1 (no target)."""
    index = {(s.identity, s.path.stem): i for i, s in enumerate(samples) if s.is_clean}
    return torch.tensor([i if s.is_clean else index.get((s.identity, s.source or ""), -1) for i, s in enumerate(samples)])


def distillation_loss(embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """mean(1 − cos) between unit embeddings and their (unit) targets; rows whose target is all
    zeros (none known) count as nothing."""
    known = targets.abs().sum(1) > 0
    if not known.any():
        return embeddings.sum() * 0.0
    return (1 - (embeddings[known] * targets[known]).sum(1)).mean()


def similarity_structure_loss(embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the batch's cosine matrix and the teacher's (both sets of
    rows unit vectors; the widths may differ)."""
    if len(embeddings) != len(targets):
        raise ValueError(f"{len(embeddings)} embeddings against {len(targets)} teacher vectors")
    return ((embeddings @ embeddings.T - targets @ targets.T) ** 2).mean()
