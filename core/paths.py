"""Where models live, for a checkout and an installed package alike.

The wheel carries the repository's `models/` folder as the data package `faceid_models`
(see pyproject.toml), so the shipped model is found through package data, never through
the working directory. `FACEID_MODELS_DIR` points elsewhere (a volume, a read-only image).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MODELS_ENV = "FACEID_MODELS_DIR"
SHIPPED_MODEL_NAME = "facecom-ft"


def models_dir() -> Path:
    """$FACEID_MODELS_DIR, else the `faceid_models` data package (the checkout's models/ when editable)."""
    if override := os.environ.get(MODELS_ENV):
        return Path(override)
    spec = importlib.util.find_spec("faceid_models")
    # A namespace package: its search path may also hold an editable install's import hook.
    for entry in (spec.submodule_search_locations or []) if spec else []:
        if Path(entry).is_dir():
            return Path(entry)
    return Path(__file__).resolve().parents[1] / "models"  # a source tree that was never installed


def shipped_model() -> Path:
    return models_dir() / SHIPPED_MODEL_NAME


def pretrained_dir() -> Path:
    """The cache of pretrained weights (`faceid weights`); git-ignored in a checkout."""
    return models_dir() / "pretrained"
