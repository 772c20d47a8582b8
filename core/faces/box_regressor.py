"""Where the face is when MTCNN finds none: a small CNN that places one face box in a photo
and says how sure it is that there is a face at all.

Glare blows a face out to white and rain or heavy noise break MTCNN's 12-px proposals, but the
head's outline, the hair, the shoulders and where the glare sits still show where the face is.
The net is trained (training/box_regressor.py) on FACECOM photos of the training people, the
distorted copies labelled with the box MTCNN finds in their clean source, and on face-free
pictures (backgrounds, and photos whose face was painted out, then distorted the same ways),
so that it answers "no face" where there is none. The pipeline (core/faces/pipeline.py) runs it on
photos where MTCNN and its retries found nothing, and on glared photos, where MTCNN finds the
people around the glare but not the subject under it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from core.faces.geometry import Box, scaled
from core.files import sha256_of

INPUT_SIDE = 96  # the photo, letterboxed into a square this size
WORK_SIDE = 128  # photos are first shrunk to this (longer side); training cuts windows from it
PAD_VALUE = 127  # letterbox padding: zero after standardisation
WEIGHTS_FILE = "box_regressor.pt"
CARD_FILE = "box_regressor.json"


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class BoxNet(nn.Module):
    """96×96 letterboxed RGB → (face logit, box as x1, y1, x2, y2 fractions of the square;
    predicted as centre and size, so it is never inside out). Flattened, not pooled, at the
    end: where a feature is matters for the box."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _block(3, 16, 2), _block(16, 32, 2), _block(32, 32, 1), _block(32, 64, 2), _block(64, 64, 1),
            _block(64, 96, 2), _block(96, 32, 1),  # 6×6
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 6 * 6, 128), nn.ReLU(inplace=True), nn.Linear(128, 5))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.head(self.features(x))
        centre, size = torch.sigmoid(out[:, 1:3]), torch.sigmoid(out[:, 3:5])
        return out[:, 0], torch.cat([centre - size / 2, centre + size / 2], dim=1)


def standardize(pixels: torch.Tensor) -> torch.Tensor:
    """N×3×H×W uint8-range → the net's input. The same numbers as the backbone's
    (core.embedding.standardize) but this net's own: its weights were trained with them, and must
    not follow the backbone if that ever changes."""
    return (pixels.float() - 127.5) / 128.0


def shrink(img: Image.Image) -> tuple[np.ndarray, float]:
    """The photo at WORK_SIDE px on its longer side (uint8 H×W×3), and that size per photo pixel."""
    scale = WORK_SIDE / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return np.asarray(img.convert("RGB").resize(size, Image.Resampling.BILINEAR)), scale


def window(pixels: np.ndarray, x: float, y: float, side: float) -> np.ndarray:
    """The square [x, x+side) × [y, y+side) of a shrunk photo at INPUT_SIDE px (uint8), the
    part outside the photo in the letterbox grey. Training cuts its examples with this too."""
    img = Image.fromarray(np.ascontiguousarray(pixels))
    out = img.transform((INPUT_SIDE, INPUT_SIDE), Image.Transform.EXTENT, (x, y, x + side, y + side),
                        Image.Resampling.BILINEAR, fillcolor=(PAD_VALUE,) * 3)
    return np.asarray(out)


def letterbox(img: Image.Image) -> tuple[np.ndarray, float]:
    """The whole photo as the net sees it: shrunk, at the top left of the padded square; and
    the photo's pixels per input pixel."""
    pixels, scale = shrink(img)
    side = max(pixels.shape[:2])
    return window(pixels, 0.0, 0.0, side), side / INPUT_SIDE / scale


@dataclass(frozen=True)
class Found:
    box: Box  # x1, y1, x2, y2 in the photo's pixels
    score: float  # the net's face probability


class BoxRegressor:
    """The trained net and its threshold (the face probability its card chose on validation
    people's face-free pictures)."""

    def __init__(self, net: BoxNet, threshold: float, sha256: str, device: str | torch.device = "cpu") -> None:
        self.net = net.to(device).eval()
        self.threshold = threshold
        self.sha256 = sha256
        self.device = torch.device(device)

    @classmethod
    def load(cls, folder: Path, device: str | torch.device = "cpu") -> BoxRegressor:
        """From a folder with the weights and their card (models/box-regressor)."""
        weights, card_path = folder / WEIGHTS_FILE, folder / CARD_FILE
        for path in (weights, card_path):
            if not path.is_file():
                raise FileNotFoundError(f"box regressor: {path} is missing")
        card = json.loads(card_path.read_text())
        sha256 = sha256_of(weights)
        if card.get("sha256") != sha256:
            raise ValueError(f"box regressor: {weights} does not match the sha256 in {card_path}")
        net = BoxNet()
        state = torch.load(weights, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        return cls(net, float(card["threshold"]), sha256, device)

    def scores(self, images: Sequence[Image.Image]) -> list[Found]:
        """Each photo's most likely face box and its probability, whatever that is."""
        if not images:
            return []
        squares, scales = zip(*(letterbox(img) for img in images))
        batch = torch.from_numpy(np.stack(squares)).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            logits, boxes = self.net(standardize(batch))
        probs = torch.sigmoid(logits).tolist()
        return [Found(scaled(box, INPUT_SIDE * scale), p) for box, p, scale in zip(boxes.tolist(), probs, scales)]

    def find(self, images: Sequence[Image.Image]) -> list[Found | None]:
        """Each photo's face where the net is at least `threshold` sure there is one."""
        return [f if f.score >= self.threshold else None for f in self.scores(images)]
