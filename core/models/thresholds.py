"""The default thresholds of a backbone: the policy the service and evaluation share.

An exported model carries its own in its card (chosen on validation people when it was
exported); a pretrained backbone takes the measured values below. Two thresholds: "unknown"
for identification among the enrolled (`model_threshold`), and "the same person" for 1:1
verification of two photos (`verify_threshold`).
"""

from __future__ import annotations

from pathlib import Path

from core.models.model_card import ModelCard, is_model_folder

# Identification: the lowest cosine at which one photo enrolled per person names at most 1% of
# strangers at the rate's 95% upper bound, on real photos of people never trained on (LFW A-L,
# the choose people of evaluation/real_photos.py; docs/results.md). The FAR-1e-3 threshold of
# FACECOM's clean-vs-distorted pairs (0.523) named a tenth of real strangers. Only measured
# values belong here; other backbones fall back to casia-webface's.
PRETRAINED_THRESHOLDS = {"casia-webface": 0.674}


# 1:1: the cosine at a false-accept rate of 1e-3 over every pair of two different people's real
# photos (LFW, people never trained on, the `choose` set of evaluation/real_photos.py).
PRETRAINED_VERIFY_THRESHOLDS = {"casia-webface": 0.507}


def verify_threshold(source: str) -> float:
    """The default 1:1 threshold: from the model card, else the table above, else the
    identification threshold (a stricter rule for a single pair)."""
    if is_model_folder(Path(source)) and (threshold := ModelCard.read(Path(source)).verify_threshold) is not None:
        return threshold
    return PRETRAINED_VERIFY_THRESHOLDS.get(source, model_threshold(source))


def model_threshold(source: str) -> float:
    """The default threshold for a backbone: from its model card, else the table above."""
    if is_model_folder(Path(source)) and (threshold := ModelCard.read(Path(source)).threshold) is not None:
        return threshold
    return PRETRAINED_THRESHOLDS.get(source, PRETRAINED_THRESHOLDS["casia-webface"])
