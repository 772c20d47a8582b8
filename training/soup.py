"""A uniform model soup: the mean of several fine-tuned backbones' weights.

Runs fine-tuned from the same starting weights stay in one basin, so their mean is a model
of its own, costing nothing at inference, that is often more robust than any one of them
(Wortsman et al., "Model soups", ICML 2022). Runs from different starts average to noise,
hence the check on `init`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def average_backbones(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point tensors, in float32 and then in each tensor's own
    dtype; integer buffers (BatchNorm's step counts) are taken from the first."""
    if not states:
        raise ValueError("a soup needs at least one backbone")
    keys = set(states[0])
    for i, state in enumerate(states[1:], start=1):
        if set(state) != keys:
            raise ValueError(f"backbone {i} has other tensors than backbone 0, e.g. {sorted(set(state) ^ keys)[:3]}")
    soup = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            soup[name] = (torch.stack([s[name].float() for s in states]).mean(dim=0)).to(first.dtype)
        else:
            soup[name] = first.clone()
    return soup


def check_ingredients(ckpts: Sequence[Path], states: Sequence[Mapping[str, Any]]) -> None:
    """Every checkpoint fine-tuned from the same weights on the same people, or a ValueError naming one that was not."""
    first = states[0]
    for path, state in zip(ckpts[1:], states[1:]):
        for what, value in (("init", lambda s: (s.get("config") or {}).get("init")), ("label_map", lambda s: s.get("label_map"))):
            if value(state) != value(first):
                raise ValueError(f"{path}: its {what} differs from {ckpts[0]}'s; a soup averages runs from one start on one set of people")
