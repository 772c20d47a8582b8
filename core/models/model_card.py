"""The model card: what an exported backbone is, how it scored, and its default threshold.

Export writes it, the backbone loader and the service read it; this class is the one
definition of its fields, so no caller parses keys out of a report by string.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.files import write_text_atomic

MODEL_CARD = "model_card.json"
BACKBONE_FILE = "backbone.pt"
ARCHITECTURE = "facenet-pytorch InceptionResnetV1, 512-d, L2-normalised"
# The operating point the service's default "unknown" threshold is taken at.
DEFAULT_FAR = 1e-3


class ModelCardError(ValueError):
    """A model card that is missing, unreadable or lacks a required field."""


@dataclass(frozen=True)
class ModelCard:
    name: str
    sha256: str  # of the weights file, checked when the model loads
    # Cosine threshold at FAR `threshold_far` on clean-vs-distorted pairs of the validation
    # identities; the service's default "unknown" threshold. None: not measured.
    threshold: float | None
    threshold_far: float = DEFAULT_FAR
    # How `threshold` was chosen, in words; the default is the FAR rule above.
    threshold_rule: str | None = None
    # 1:1 verification's (/verify) threshold: two photos are one person from this cosine. A
    # pair's false-accept rate is not the stranger rate of a search among many people, so it is
    # chosen apart (on real photos of people never trained on); `verify_rule` says how.
    verify_threshold: float | None = None
    verify_rule: str | None = None
    weights_file: str = BACKBONE_FILE
    dtype: str = "float32"
    architecture: str = ARCHITECTURE
    checkpoint: str | None = None
    epoch: int | None = None
    n_training_identities: int | None = None
    config: dict[str, Any] | None = None
    soup: list[dict[str, Any]] | None = None  # the checkpoints averaged into these weights (training/soup.py), if several
    validation: dict[str, Any] = field(default_factory=dict)  # the evaluation report of the kept epoch
    history: list[dict[str, Any]] = field(default_factory=list)  # every epoch of the run
    git_commit: str | None = None
    command: str | None = None  # how to make this model again (`faceid train all ...`)
    exported_at: str | None = None

    @classmethod
    def read(cls, folder: Path) -> ModelCard:
        path = Path(folder) / MODEL_CARD
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelCardError(f"{path}: cannot read model card ({exc})") from exc
        known = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:  # a required field is missing
            raise ModelCardError(f"{path}: {exc}") from exc

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MODEL_CARD
        write_text_atomic(path, json.dumps(dataclasses.asdict(self), indent=2))
        return path


def is_model_folder(path: Path) -> bool:
    return (Path(path) / MODEL_CARD).is_file()
