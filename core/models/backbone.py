"""The embedding network and one loader for every form of its weights: a pretrained name, a
state_dict file, a training checkpoint, or an exported model folder (weights + model card)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1

from core.errors import WeightsError
from core.files import sha256_of
from core.models.model_card import ModelCard, ModelCardError, is_model_folder
from core.models.pretrained import PRETRAINED_NAMES, WeightsNote, ensure_pretrained
from core.paths import shipped_model


@dataclass(frozen=True)
class Backbone:
    net: InceptionResnetV1
    model_id: str  # identifies the weights: embeddings of different ids never mix
    source: str
    sha256: str  # of the weights file


def default_weights() -> str:
    """The shipped fine-tuned model when present, else the pretrained CASIA-WebFace backbone."""
    shipped = shipped_model()
    return str(shipped) if is_model_folder(shipped) else "casia-webface"


def resolve_weights(source: str) -> tuple[Path, str | None]:
    """Map a weights source to (state file, expected sha256 or None)."""
    if source in PRETRAINED_NAMES:
        path = ensure_pretrained(source)
        return path, WeightsNote.read(path).sha256
    path = Path(source)
    if path.is_dir():
        try:
            card = ModelCard.read(path)
        except ModelCardError as exc:
            raise WeightsError(source, str(exc)) from exc
        return path / card.weights_file, card.sha256
    if path.is_file():
        return path, None
    choices = ", ".join(PRETRAINED_NAMES)
    raise WeightsError(source, f"not a pretrained name ({choices}), a weights file or a model folder")


def load_state(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read a backbone state_dict from a plain state_dict or a training checkpoint."""
    if expected_sha256 is not None and sha256_of(path) != expected_sha256:
        raise WeightsError(str(path), "sha256 does not match the one recorded with it")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise WeightsError(str(path), f"not a readable torch file ({type(exc).__name__})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("backbone"), dict):
        obj = obj["backbone"]  # a full training checkpoint
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(str(path), "does not hold a state_dict")
    return {k.removeprefix("module."): v.float() if v.is_floating_point() else v for k, v in obj.items()}


def build_backbone(state: dict[str, torch.Tensor] | None = None) -> InceptionResnetV1:
    net = InceptionResnetV1(pretrained=None, classify=False)
    if state is not None:
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise WeightsError("state_dict", f"not an InceptionResnetV1 backbone: {str(exc)[:200]}") from exc
    return net


def load_backbone(source: str | None = None, device: str | torch.device = "cpu") -> Backbone:
    source = source or default_weights()
    path, expected = resolve_weights(source)
    digest = expected or sha256_of(path)
    net = build_backbone(load_state(path, expected)).to(device).eval()
    name = source if source in PRETRAINED_NAMES else Path(source).stem
    return Backbone(net=net, model_id=f"{name}@{digest[:12]}", source=source, sha256=digest)
