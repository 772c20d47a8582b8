"""Embeddings: normalised face crops → L2-normalised 512-d vectors, in batches."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from core.constants import EMBEDDING_DIM
from core.embedding.standardize import network_input


class Embedder:
    """On torch. Other runtimes (`OnnxEmbedder`) subclass it and replace `_unit_vectors`."""

    runtime = "torch"  # what embeds, as FACEID_RUNTIME names it

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size

    def embed(self, crops: torch.Tensor, progress: bool = False, one_core: bool = False) -> np.ndarray:
        """uint8 crops N×3×160×160 → float32 N×512, unit norm (impulse-noisy crops restored first).
        `one_core`: on a single thread, for callers embedding side by side (the CPU runtimes)."""
        if len(crops) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        starts = tqdm(range(0, len(crops), self.batch_size), desc="embed", disable=not progress)
        return np.concatenate([self._unit_vectors(crops[start : start + self.batch_size], one_core) for start in starts])

    @torch.inference_mode()
    def _unit_vectors(self, crops: torch.Tensor, one_core: bool = False) -> np.ndarray:
        batch = network_input(crops, self.device)
        return nn.functional.normalize(self.net(batch), dim=1).float().cpu().numpy()
