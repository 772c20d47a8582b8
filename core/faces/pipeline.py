"""Faces in photos: detection, the retries, the box regressor, and the complete face each
photo's caller gets back (box in the photo's own pixels, crop, quality) — the one definition
training, evaluation and the service use.

Distorted photos defeat MTCNN (over-exposed ones most of all), so detection retries on a
denoised copy of the image, then asks the box regressor (core/faces/box_regressor.py), a small
net trained to place the face in glared, rainy and noisy photos and to say when there is none.
Glared photos go to the regressor straight after the first pass, without the denoised retry:
MTCNN there finds the people around the glare but not the subject under it, and a median
filter does not bring a blown-out face back. Only where the caller knows its images are face photos
(FACECOM-style data sets) does it fall back to the box where faces usually are. Every face
records which of these paths found it, so evaluation can score each path.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from PIL import Image

from core.constants import DETECT_SIDE
from core.faces.box_regressor import BoxRegressor
from core.faces.crop import MARGIN, crop_face
from core.faces.geometry import OVERLAPS_FACE_IOU, Box, area, iou, scaled, scaled_points
from core.faces.mtcnn import PYRAMID_FACTOR, Mtcnn
from core.faces.mtcnn_nets import NetsRuntime
from core.faces.quality import Quality, assess
from core.images import Decoded
from core.paths import models_dir
from core.pixels import blown_out_share, median

DetectionPath = Literal["direct", "denoised", "regressed", "fallback", "whole-image"]
# MTCNN's five points: the eyes, the nose, the mouth's corners, each pair left to right in the image.
Landmarks = tuple[tuple[float, float], ...]
BOX_REGRESSOR = "box-regressor"  # its folder under the models folder


def denoised(img: Image.Image) -> Image.Image:
    """The photo through a 5×5 median, each channel apart: Pillow's MedianFilter(5) to the
    pixel, in a sixteenth of its time."""
    return Image.fromarray(median(np.asarray(img), 5, "edge", axes=(0, 1)))


# Tried on images where plain detection finds nothing. Equalised and darkened copies were
# tried too, for over-exposed photos; since the box regressor takes those, they only added
# wrong faces: on the validation people's sunny photos detection recall is 92.1% with them
# and 94.9% without (noisy 99.4% either way, which the denoised copy is for).
ENHANCEMENTS: tuple[tuple[DetectionPath, Callable[[Image.Image], Image.Image]], ...] = (
    ("denoised", denoised),
)

# A photo is glared when this share of its central half is blown out (luminance >= 250): on
# the validation people 99% of sunny photos are above 0.41, 99% of every other kind below 0.06.
GLARE_SHARE = 0.2


def glared(img: Image.Image) -> bool:
    """Whether the photo's centre is blown out (the quality check's measure of an over-exposed face)."""
    return min(img.size) >= 2 and blown_out_share(np.asarray(img)) >= GLARE_SHARE


@dataclass(frozen=True)
class PipelineConfig:
    margin: int = MARGIN  # pixels of context around the box, in the 160-px crop
    # The smallest face looked for, in pixels of the image detection runs on (see
    # detect_side): MTCNN's usual 20 px divided by its pyramid factor, i.e. the same pyramid
    # less its first, largest level. That level only finds faces of 20-28 px, which quality
    # flags as too small (under 32 px) anyway, and cost a fifth of the detection time.
    min_face_size: float = 20 / PYRAMID_FACTOR
    # Detection runs on a copy at most this many pixels on its longer side, boxes mapped back
    # to the image's pixels, crops cut from the image itself (which keeps the face's pixels).
    # MTCNN's pyramid costs about the square of the side. The smallest face found grows with
    # the photo: 7% of its longer side, 75 px in a 1024-px photo. FACECOM-sized photos
    # (<= 336 px) are detected as they are.
    detect_side: int = DETECT_SIDE
    min_score: float = 0.90  # MTCNN's face probability for a detection to count as a face
    # Where faces sit in FACECOM/LFW-style face photos (x1, y1, x2, y2 as fractions of the
    # image): the median MTCNN box of clean photos of the validation identities.
    fallback_box: tuple[float, float, float, float] = (0.32, 0.27, 0.70, 0.75)
    retry_enhanced: bool = True
    regress_missing: bool = True  # the box regressor, where MTCNN found nothing and on glared photos
    use_fallback: bool = False  # only for inputs known to be face photos


# The service's detection: nothing but what is in the photo.
SERVICE_PIPELINE = PipelineConfig()
# Data sets of face photos (FACECOM and the like) take the fallback box where MTCNN finds
# nothing; training and `faceid evaluate` both use this configuration.
DATASET_PIPELINE = replace(SERVICE_PIPELINE, use_fallback=True)


@dataclass(frozen=True)
class DetectedFace:
    """What detection found, in the pixels of the image it was given."""

    box: Box
    score: float | None  # MTCNN's or the regressor's probability; None for the fallback box
    path: DetectionPath
    landmarks: Landmarks | None = None  # MTCNN's; the regressor and the fallback place none


@dataclass(frozen=True)
class Face:
    """A face as callers use it: where it is in the photo's own pixels, its crop and its quality."""

    box: Box  # x1, y1, x2, y2 in the original photo's pixels
    score: float | None
    path: DetectionPath
    crop: torch.Tensor  # uint8 3×160×160, cut from the decoded image
    quality: Quality
    photo_size: tuple[int, int]  # the original photo's width and height
    landmarks: Landmarks | None = None  # in the original photo's pixels, as the box

    @property
    def area(self) -> float:
        return area(self.box)

    def png(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.crop.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        return buf.getvalue()


class FacePipeline:
    """Detects faces with MTCNN (core/faces/mtcnn.py) and the box regressor, and turns them into
    normalised 160×160 crops. Holds loaded nets only: `load_pipeline` loads them."""

    def __init__(self, config: PipelineConfig, mtcnn: Mtcnn, regressor: BoxRegressor | None = None) -> None:
        self.config = config
        self.mtcnn = mtcnn
        self.regressor = regressor if config.regress_missing else None

    # -- whole faces -------------------------------------------------------------------------
    def faces(self, photos: Sequence[Decoded], helper: Executor | None = None) -> list[list[Face]]:
        """Every face of each decoded photo, whole; same-sized photos share detection passes.
        `helper`: a thread that takes half of MTCNN's work meanwhile (Mtcnn.detect)."""
        return self.faces_from(photos, self.detect_batch([p.image for p in photos], helper))

    def faces_from(self, photos: Sequence[Decoded], found: Sequence[Sequence[DetectedFace]]) -> list[list[Face]]:
        """The whole faces of what `detect_batch` found in each photo (here, or in another process)."""
        return [[self.face(photo, d) for d in detected] for photo, detected in zip(photos, found)]

    def face(self, photo: Decoded, detected: DetectedFace) -> Face:
        crop = self.crop(photo.image, detected.box)
        box = scaled(detected.box, photo.scale)
        quality = assess(crop.permute(1, 2, 0).numpy(), box, detected.score)
        landmarks = scaled_points(detected.landmarks, photo.scale) if detected.landmarks is not None else None
        return Face(box, detected.score, detected.path, crop, quality, photo.original_size, landmarks)

    def crop(self, img: Image.Image, box: Sequence[float]) -> torch.Tensor:
        """uint8 3×160×160 crop of `box` (in `img`'s pixels) widened by the margin."""
        return crop_face(img, box, self.config.margin)

    # -- detection ---------------------------------------------------------------------------
    def detect_all(self, img: Image.Image) -> list[DetectedFace]:
        """Every face in the image, after the retries if plain detection finds none."""
        return self.detect_batch([img])[0]

    def detect_batch(self, images: Sequence[Image.Image], helper: Executor | None = None) -> list[list[DetectedFace]]:
        """`detect_all` for many images. Each step runs on the images still without a face
        (glared ones go from the first pass to the regressor), same-sized images in one MTCNN pass."""
        found: list[list[DetectedFace]] = [[] for _ in images]
        # No face fits an image smaller than the smallest face looked for.
        detectable = [i for i, img in enumerate(images) if self._detectable(img.size)]
        self._mtcnn_into(found, images, detectable, "direct", None, helper)
        # Measured on the training people's 1,926 glared photos: the denoised retry found a face
        # on 4 of the 1,808 it ran on (the regressor runs on all of them), at a third of a sunny
        # photo's detection time.
        glare = {i for i in detectable if glared(images[i])} if self.regressor is not None else set()
        for path, enhance in ENHANCEMENTS if self.config.retry_enhanced else ():
            self._mtcnn_into(found, images, [i for i in detectable if not found[i] and i not in glare], path, enhance, helper)
        if self.regressor is not None:
            self._regressed_into(found, images, [i for i in detectable if not found[i] or i in glare])
        if self.config.use_fallback:
            for i, faces in enumerate(found):
                if not faces:
                    found[i] = [self.fallback(images[i])]
        return found

    def _mtcnn_into(self, found: list[list[DetectedFace]], images: Sequence[Image.Image], todo: Sequence[int],
                    path: DetectionPath, enhance: Callable[[Image.Image], Image.Image] | None, helper: Executor | None) -> None:
        """MTCNN on images `todo` (enhanced first, if asked), each reduced to `detect_side`;
        their boxes, in their own pixels, go into `found`."""
        by_size: dict[tuple[int, int], list[int]] = {}
        for i in todo:
            by_size.setdefault(images[i].size, []).append(i)
        for size, indices in by_size.items():
            scale = self._detect_scale(size)
            batch = [enhance(images[i]) if enhance else images[i] for i in indices]
            if scale < 1.0:
                reduced = (round(size[0] * scale), round(size[1] * scale))
                batch = [img.resize(reduced, Image.Resampling.BILINEAR, reducing_gap=2.0) for img in batch]
            for i, detections in zip(indices, self.mtcnn.detect(batch, helper)):
                found[i] = [DetectedFace(scaled(d.box, 1 / scale), d.score, path, scaled_points(d.landmarks, 1 / scale))
                            for d in detections if d.score >= self.config.min_score]

    def _regressed_into(self, found: list[list[DetectedFace]], images: Sequence[Image.Image], todo: Sequence[int]) -> None:
        """The regressor's face on images `todo`, where it is sure of one that MTCNN did not find
        (glared photos: MTCNN finds the people around the glare, not the subject under it)."""
        assert self.regressor is not None
        for i, guess in zip(todo, self.regressor.find([images[i] for i in todo])):
            if guess is not None and all(iou(guess.box, f.box) < OVERLAPS_FACE_IOU for f in found[i]):
                found[i] = [*found[i], DetectedFace(guess.box, guess.score, "regressed")]

    def _detect_scale(self, size: tuple[int, int]) -> float:
        """The factor an image of this size is reduced by for detection (1: as it is)."""
        return min(1.0, self.config.detect_side / max(size))

    def _detectable(self, size: tuple[int, int]) -> bool:
        return min(size) * self._detect_scale(size) >= self.config.min_face_size

    def fallback(self, img: Image.Image) -> DetectedFace:
        w, h = img.size
        x1, y1, x2, y2 = self.config.fallback_box
        return DetectedFace((x1 * w, y1 * h, x2 * w, y2 * h), None, "fallback")


def load_pipeline(config: PipelineConfig = SERVICE_PIPELINE, device: str | torch.device = "cpu",
                  nets: NetsRuntime = "auto") -> FacePipeline:
    """The pipeline with its nets loaded: MTCNN's three (on `nets`, core/faces/mtcnn_nets.py),
    and the box regressor from the models folder when the configuration asks for it."""
    regressor = BoxRegressor.load(models_dir() / BOX_REGRESSOR, device) if config.regress_missing else None
    return FacePipeline(config, Mtcnn(config.min_face_size, device, nets), regressor)
