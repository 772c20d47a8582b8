"""The default "unknown" threshold of a backbone: the policy the service and evaluation share.

An exported model carries its own in its card (chosen on validation people when it was
exported); a pretrained backbone takes the measured value below.
"""

from __future__ import annotations

from pathlib import Path

from core.models.model_card import ModelCard, is_model_folder

# Cosine thresholds at FAR 1e-3 on clean-vs-distorted pairs of the validation identities
# (`faceid evaluate`). Only measured values belong here; other backbones fall back to
# casia-webface's.
PRETRAINED_THRESHOLDS = {"casia-webface": 0.523}


def model_threshold(source: str) -> float:
    """The default threshold for a backbone: from its model card, else the table above."""
    if is_model_folder(Path(source)) and (threshold := ModelCard.read(Path(source)).threshold) is not None:
        return threshold
    return PRETRAINED_THRESHOLDS.get(source, PRETRAINED_THRESHOLDS["casia-webface"])
