"""Embeddings: normalised face crops → L2-normalised 512-d vectors, in batches."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.constants import EMBEDDING_DIM
from core.faces import standardize


class Embedder:
    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.inference_mode()
    def embed(self, crops: torch.Tensor, progress: bool = False) -> np.ndarray:
        """uint8 crops N×3×160×160 → float32 N×512, unit norm."""
        if len(crops) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        out = []
        for start in tqdm(range(0, len(crops), self.batch_size), desc="embed", disable=not progress):
            batch = standardize(crops[start : start + self.batch_size].to(self.device))
            out.append(nn.functional.normalize(self.net(batch), dim=1).float().cpu())
        return torch.cat(out).numpy()
