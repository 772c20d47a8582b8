"""The full training state in one file, so `--resume` continues exactly where a run stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.files import atomic_write


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no checkpoint there")
    # Checkpoints hold only tensors, numbers, strings and lists/dicts of them.
    return torch.load(path, map_location="cpu", weights_only=True)
