"""The network's input: the one pixel normalisation every embedder and training use."""

from __future__ import annotations

import torch


def standardize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-range RGB → network input; the normalisation Sandberg's model was trained with."""
    return (pixels.float() - 127.5) / 128.0
