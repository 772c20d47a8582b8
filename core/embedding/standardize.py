"""The network's input: the one pixel normalisation every embedder and training use."""

from __future__ import annotations

import torch

from core.embedding.restoration import restore


def standardize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-range RGB → network input; the normalisation Sandberg's model was trained with."""
    return (pixels.float() - 127.5) / 128.0


def network_input(crops: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 face crops → what the network is fed wherever it sees them (the embedders, their int8
    calibration, every training stage): impulse-noisy crops restored, then standardised on
    `device`. Training on crops the service would have restored is train/serve skew."""
    return standardize(restore(crops).to(device))
