"""One loader for every backbone: a pretrained name, a state_dict file, or an exported model folder."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1

from core.embedder import Embedder
from core.errors import WeightsError
from core.model_card import ModelCard, ModelCardError, is_model_folder
from core.onnx_embedder import OnnxEmbedder
from core.paths import shipped_model
from core.weights import PRETRAINED_NAMES, WeightsNote, ensure_pretrained, sha256_of


def resolve_device(choice: str = "auto") -> str:
    """"auto" → CUDA when present, else CPU; asking for CUDA without one is an error."""
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA device is available")
    if choice not in {"cpu", "cuda"}:
        raise ValueError(f"unknown device {choice!r}; choose auto, cpu or cuda")
    return choice


def default_weights() -> str:
    """The shipped fine-tuned model when present, else the pretrained CASIA-WebFace backbone."""
    shipped = shipped_model()
    return str(shipped) if is_model_folder(shipped) else "casia-webface"


# Cosine thresholds at FAR 1e-3 on clean-vs-distorted pairs of the validation identities
# (`faceid evaluate`); exported models carry their own in their card. Only measured values
# belong here; other backbones fall back to casia-webface's.
PRETRAINED_THRESHOLDS = {"casia-webface": 0.523}


def model_threshold(source: str) -> float:
    """The default 'unknown' threshold for a backbone: from its model card, else the table above."""
    if is_model_folder(Path(source)) and (threshold := ModelCard.read(Path(source)).threshold) is not None:
        return threshold
    return PRETRAINED_THRESHOLDS.get(source, PRETRAINED_THRESHOLDS["casia-webface"])


@dataclass(frozen=True)
class Backbone:
    net: InceptionResnetV1
    model_id: str  # identifies the weights: embeddings of different ids never mix
    source: str
    sha256: str  # of the weights file


RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def make_embedder(backbone: Backbone, device: str, batch_size: int = 32, runtime: str = "auto") -> Embedder:
    """The embedder that fits the hardware: ONNX Runtime on the CPU when installed (3× faster
    at batch 1), torch on CUDA. `runtime` "torch", "onnx" or "onnx-int8" (core/int8.py) forces one."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose {', '.join(RUNTIMES)}")
    if runtime.startswith("onnx") and device != "cpu":
        raise ValueError(f"the {runtime} runtime runs on the CPU here; use runtime torch for CUDA")
    if embeds_on_onnx(device, runtime):
        return OnnxEmbedder(backbone.net, backbone.sha256, batch_size, int8=runtime == "onnx-int8")
    return Embedder(backbone.net, device, batch_size)


def embeds_on_onnx(device: str, runtime: str = "auto") -> bool:
    """Whether `make_embedder` picks ONNX Runtime for this device and runtime setting."""
    return runtime.startswith("onnx") or (runtime == "auto" and device == "cpu" and importlib.util.find_spec("onnxruntime") is not None)


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
