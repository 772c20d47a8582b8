"""Training of the box regressor (core/box_regressor.py): where the face is when MTCNN finds none.

Free labels: every distorted FACECOM photo is pixel-aligned with its clean source, so the box
MTCNN finds in the clean photo is where the face is in all seven copies, glared ones included.
Positives are the training people's photos (clean, the seven real distortions, and fresh
synthetic ones), cut to random windows that hold the face at another place and size, so the
net has to find the head rather than learn where FACECOM puts it. Negatives are face-free:
windows of the background, and whole photos with the face painted out (OpenCV inpainting)
and then distorted the same ways, so a white glare blob or a head-shaped frame alone is not
a face. The face-probability threshold is chosen on the validation people's face-free
pictures; the card records recall per distortion there.

    faceid train-box-regressor [--epochs 20] [--out models/box-regressor]
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from core.data.dataset import read_split, scan
from core.faces.box_regressor import (
    CARD_FILE,
    INPUT_SIDE,
    PAD_VALUE,
    WEIGHTS_FILE,
    BoxNet,
    BoxRegressor,
    Found,
    shrink,
    standardize,
    window,
)
from core.faces.geometry import SAME_FACE_IOU, Box, grown, iou, scaled
from core.faces.pipeline import SERVICE_PIPELINE, FacePipeline, load_pipeline
from core.faces.subject import subject
from core.files import save_tensors_atomic, sha256_of, write_text_atomic
from core.images import load_image
from evaluation.open_set import threshold_for_stranger_rate
from training.distortions import build_distortions

TARGET_FALSE = 0.01  # the threshold lets at most this share of validation face-free pictures through


@dataclass(frozen=True)
class Photo:
    pixels: np.ndarray  # uint8 H×W×3, shrunk as the net's input is (core.faces.box_regressor.shrink)
    box: Box  # the face, in these pixels
    kind: str  # clean or a distortion's name
    erased: np.ndarray | None  # clean photos: the same with the face painted out


def _erase(pixels: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The photo with the face (its box grown by a third each way, to take hair and chin) painted
    out from its surroundings."""
    x1, y1, x2, y2 = grown(box)
    mask = np.zeros(pixels.shape[:2], np.uint8)
    mask[max(0, int(y1)): int(y2) + 1, max(0, int(x1)): int(x2) + 1] = 255
    return cv2.inpaint(np.ascontiguousarray(pixels), mask, 5, cv2.INPAINT_TELEA)


def load_photos(data: Path, identities: set[str], pipeline: FacePipeline) -> list[Photo]:
    """The people's photos, each with its clean source's face box (MTCNN on the clean photo;
    sources where it finds none carry no label and are left out)."""
    samples = scan(data, identities)
    labels: dict[tuple[str, str | None], tuple[float, ...]] = {}
    for sample in (s for s in samples if s.is_clean):
        img = load_image(sample.path)
        if faces := pipeline.detect_all(img):
            labels[(sample.identity, sample.source)] = subject(faces, img.size).box
    photos = []
    for sample in samples:
        if (label := labels.get((sample.identity, sample.source))) is None:
            continue
        pixels, scale = shrink(load_image(sample.path))
        box = scaled(label, scale)
        photos.append(Photo(pixels, box, sample.kind, _erase(pixels, box) if sample.is_clean else None))
    return photos


def _framed(pixels: np.ndarray, x: float, y: float, width: float, height: float) -> np.ndarray:
    """The rectangle as the net would see a photo of that shape: letterboxed, top left."""
    side = max(width, height)
    out = window(pixels, x, y, side).copy()
    out[:, round(width / side * INPUT_SIDE):] = PAD_VALUE
    out[round(height / side * INPUT_SIDE):] = PAD_VALUE
    return out


def _shape(rng: np.random.Generator, longer: float, widest: float) -> tuple[float, float]:
    """Width and height of a rectangle with this longer side: square half the time, else of a
    random aspect up to `widest`:1 either way (photos come in every shape)."""
    aspect = 1.0 if rng.random() < 0.5 else float(np.exp(rng.uniform(-np.log(widest), np.log(widest))))
    return (longer, longer / aspect) if aspect >= 1 else (longer * aspect, longer)


def positive(photo: Photo, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle holding the whole face at a random place and size; the face's box in the
    net's input (fractions)."""
    h, w = photo.pixels.shape[:2]
    x1, y1, x2, y2 = photo.box
    width, height = _shape(rng, rng.uniform(0.5, 1.4) * max(w, h), 2.0)
    width, height = max(width, 1.15 * (x2 - x1)), max(height, 1.15 * (y2 - y1))
    x = rng.uniform(x2 - width + 0.05 * (x2 - x1), x1 - 0.05 * (x2 - x1))
    y = rng.uniform(y2 - height + 0.05 * (y2 - y1), y1 - 0.05 * (y2 - y1))
    side = max(width, height)
    box = np.array([(x1 - x) / side, (y1 - y) / side, (x2 - x) / side, (y2 - y) / side], np.float32)
    return _framed(photo.pixels, x, y, width, height), box


def negative(photo: Photo, rng: np.random.Generator) -> np.ndarray | None:
    """A face-free picture: the face-erased photo (any part), or background clear of the face
    grown by a third (`core.faces.geometry.grown`). None when the photo has no such background."""
    h, w = photo.pixels.shape[:2]
    if photo.erased is not None and rng.random() < 0.4:
        width, height = _shape(rng, rng.uniform(0.6, 1.4) * max(w, h), 2.0)
        x, y = rng.uniform(min(0, w - width), max(0, w - width)), rng.uniform(min(0, h - height), max(0, h - height))
        return _framed(photo.erased, x, y, width, height)
    x1, y1, x2, y2 = grown(photo.box)
    for _ in range(8):
        width, height = _shape(rng, rng.uniform(0.25, 0.9) * max(w, h), 4.0)
        # Up to a tenth may hang off the photo (as letterbox padding would).
        x = rng.uniform(-0.1 * width, max(-0.1 * width, w - 0.9 * width))
        y = rng.uniform(-0.1 * height, max(-0.1 * height, h - 0.9 * height))
        if x + width <= x1 or x >= x2 or y + height <= y1 or y >= y2:
            return _framed(photo.pixels, x, y, width, height)
    return None


class Examples:
    """Batches of (input uint8 N×96×96×3, is-face, box), half positives, half negatives, with
    fresh synthetic distortions on a share of the clean ones."""

    def __init__(self, photos: Sequence[Photo], seed: int, synthetic_share: float = 0.5) -> None:
        self.photos = list(photos)
        self.clean = [p for p in photos if p.erased is not None]
        self.rng = np.random.default_rng(seed)
        self.distortions = list(build_distortions().values())
        self.synthetic_share = synthetic_share

    def _distorted(self, photo: Photo, erased: bool) -> Photo:
        if photo.erased is None or self.rng.random() >= self.synthetic_share:
            return photo
        distort = self.distortions[self.rng.integers(len(self.distortions))]
        pixels = distort(photo.erased if erased else photo.pixels, self.rng)
        return replace(photo, pixels=pixels, erased=pixels if erased else photo.erased)

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        images: list[np.ndarray] = []
        faces: list[float] = []
        boxes: list[np.ndarray] = []
        while len(images) < size:
            is_face = len(images) % 2 == 0
            if is_face:
                photo = self._distorted(self.photos[self.rng.integers(len(self.photos))], erased=False)
                pixels, box = positive(photo, self.rng)
            else:
                source = self.photos[self.rng.integers(len(self.photos))]
                if source.erased is None and self.rng.random() < 0.5:
                    source = self.clean[self.rng.integers(len(self.clean))]
                free, box = negative(self._distorted(source, erased=True), self.rng), np.zeros(4, np.float32)
                if free is None:
                    continue
                pixels = free
            if self.rng.random() < 0.5:  # mirror
                pixels = pixels[:, ::-1]
                box = np.array([1 - box[2], box[1], 1 - box[0], box[3]], np.float32) if is_face else box
            images.append(np.ascontiguousarray(pixels))
            faces.append(float(is_face))
            boxes.append(box)
        return np.stack(images), np.array(faces, np.float32), np.stack(boxes)


def _tensor(images: np.ndarray) -> torch.Tensor:
    return standardize(torch.from_numpy(images).permute(0, 3, 1, 2))


def fit(photos: Sequence[Photo], epochs: int, steps: int = 200, batch_size: int = 128, lr: float = 2e-3,
        seed: int = 0, log: bool = True) -> BoxNet:
    torch.manual_seed(seed)
    net, examples = BoxNet(), Examples(photos, seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.1)
    bce, box_loss = nn.BCEWithLogitsLoss(), nn.SmoothL1Loss(beta=0.05)
    for epoch in range(epochs):
        net.train()
        started, total = time.perf_counter(), 0.0
        for _ in range(steps):
            images, faces, boxes = examples.batch(batch_size)
            x, y, b = _tensor(images), torch.from_numpy(faces), torch.from_numpy(boxes)
            logits, pred = net(x)
            face = y > 0
            loss = bce(logits, y) + 5.0 * box_loss(pred[face], b[face])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if log:
            print(f"epoch {epoch + 1}/{epochs}: loss {total / steps:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    return net.eval()


def face_free(photos: Sequence[Photo], seed: int, per_photo: int = 2) -> list[np.ndarray]:
    """Face-free pictures of held-out people, as the service would meet them (letterboxed whole
    pictures): background strips and face-erased photos, clean and distorted."""
    rng = np.random.default_rng(seed)
    distortions = list(build_distortions().values())
    out = []
    for photo in photos:
        x1, y1, x2, _ = grown(photo.box)  # strips left, right and above the face
        strips = [photo.pixels[:, : max(0, int(x1))], photo.pixels[:, int(x2) + 1:], photo.pixels[: max(0, int(y1))]]
        strips = [s for s in strips if min(s.shape[:2]) >= 24]
        if strips:
            out.append(max(strips, key=lambda s: s.size))
        if photo.erased is not None:
            for _ in range(per_photo):
                out.append(distortions[rng.integers(len(distortions))](photo.erased, rng))
    return out


def _scores(regressor: BoxRegressor, pictures: Sequence[np.ndarray]) -> list[Found]:
    found = []
    for start in range(0, len(pictures), 256):
        found += regressor.scores([Image.fromarray(np.ascontiguousarray(p)) for p in pictures[start:start + 256]])
    return found


def face_free_scores(regressor: BoxRegressor, negatives: Sequence[np.ndarray]) -> list[float]:
    """The net's face probability for each face-free picture."""
    return [f.score for f in _scores(regressor, negatives)]


def measure(regressor: BoxRegressor, photos: Sequence[Photo], negative_scores: Sequence[float]) -> dict:
    """Per kind: the share of photos whose box overlaps the label (IoU >= 0.5) with a face
    probability over the threshold; and the share of face-free pictures given a face."""
    found = _scores(regressor, [p.pixels for p in photos])
    per_kind: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for photo, f in zip(photos, found):
        per_kind[photo.kind][0] += 1
        per_kind[photo.kind][1] += f.score >= regressor.threshold and iou(f.box, photo.box) >= SAME_FACE_IOU
    false = sum(score >= regressor.threshold for score in negative_scores)
    return {"found": {k: round(v[1] / v[0], 4) for k, v in sorted(per_kind.items())},
            "face_free_pictures": len(negative_scores), "face_free_given_a_face": round(false / max(1, len(negative_scores)), 4)}


def save(net: BoxNet, folder: Path, card: dict) -> Path:
    weights = folder / WEIGHTS_FILE
    save_tensors_atomic({k: v.detach().clone() for k, v in net.state_dict().items()}, weights)
    card = {"sha256": sha256_of(weights), **card}
    write_text_atomic(folder / CARD_FILE, json.dumps(card, indent=1) + "\n")
    return folder


def train(data: Path, val_split: Path, test_split: Path, out: Path, epochs: int, seed: int = 0) -> dict:
    """Train on everyone outside both splits, choose the threshold on the validation people,
    measure on the test people; write the weights and their card to `out`."""
    held_out = read_split(val_split) | read_split(test_split)
    everyone = {s.identity for s in scan(data)}
    pipeline = load_pipeline(replace(SERVICE_PIPELINE, regress_missing=False))  # labels: MTCNN only
    started = time.perf_counter()
    train_photos = load_photos(data, everyone - held_out, pipeline)
    val_photos = load_photos(data, read_split(val_split), pipeline)
    test_photos = load_photos(data, read_split(test_split), pipeline)
    print(f"photos: {len(train_photos)} training, {len(val_photos)} validation, {len(test_photos)} test "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    started = time.perf_counter()
    net = fit(train_photos, epochs, seed=seed)
    train_s = time.perf_counter() - started
    regressor = BoxRegressor(net, 0.5, "")
    val_negatives = face_free_scores(regressor, face_free(val_photos, seed + 1))
    test_negatives = face_free_scores(regressor, face_free(test_photos, seed + 2))
    # The open-set rule, face-free pictures standing for strangers: the lowest face probability
    # that lets at most TARGET_FALSE of them through.
    regressor.threshold = threshold_for_stranger_rate(val_negatives, TARGET_FALSE)
    card = {
        "threshold": regressor.threshold,
        "threshold_rule": f"face probability letting at most {TARGET_FALSE:.0%} of the validation people's face-free pictures through",
        "input_side": INPUT_SIDE,
        "epochs": epochs,
        "training_photos": len(train_photos),
        "training_seconds": round(train_s),
        "validation": measure(regressor, val_photos, val_negatives),
        "test": measure(regressor, test_photos, test_negatives),
        "data": str(data),
        "splits": [str(val_split), str(test_split)],
    }
    save(net, out, card)
    return card
