"""Faces: detection, selection, crop and pixel normalisation — the one definition used everywhere.

Distorted photos defeat MTCNN (over-exposed ones most of all), so detection retries on
a denoised copy of the image, then asks the box regressor (core/box_regressor.py), a small
net trained to place the face in glared, rainy and noisy photos and to say when there is
none; on glared photos it asks the regressor too, since MTCNN there finds the people around
the glare but not the subject under it. Only where the caller knows its images are face
photos (FACECOM-style data sets) does it fall back to the box where faces usually are.
Every face records which of these paths found it, so evaluation can score each path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageFilter

from core.box_regressor import BoxRegressor
from core.constants import CROP_SIZE, DETECT_SIDE
from core.errors import NoFaceFound, TooManyFaces
from core.mtcnn import PYRAMID_FACTOR, Mtcnn
from core.paths import models_dir
from core.quality import blown_out_share

# A photo's subject is among the faces at least this share of the largest face's area...
COMPARABLE_AREA = 0.5
# ...and, for enrolment, nearer the centre than any other of them by this share of the image's
# longer side. On held-out FACECOM photos subjects sit within 0.07 of the centre and the
# large background faces 0.16 and farther.
CENTRE_MARGIN = 0.1
MIN_BOX_IOU = 0.3  # a caller's box names the face it overlaps at least this much

DetectionPath = Literal["direct", "denoised", "regressed", "fallback", "whole-image"]
BOX_REGRESSOR = "box-regressor"  # its folder under the models folder


def standardize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-range RGB → network input; the normalisation Sandberg's model was trained with."""
    return (pixels.float() - 127.5) / 128.0


# Tried on images where plain detection finds nothing. Equalised and darkened copies were
# tried too, for over-exposed photos; since the box regressor takes those, they only added
# wrong faces: on the validation people's sunny photos detection recall is 92.1% with them
# and 94.9% without (noisy 99.4% either way, which the denoised copy is for).
ENHANCEMENTS: tuple[tuple[DetectionPath, Callable[[Image.Image], Image.Image]], ...] = (
    ("denoised", lambda img: img.filter(ImageFilter.MedianFilter(5))),
)


# A photo is glared when this share of its central half is blown out (luminance >= 250): on
# the validation people 99% of sunny photos are above 0.41, 99% of every other kind below 0.06.
GLARE_SHARE = 0.2


def glared(img: Image.Image) -> bool:
    """Whether the photo's centre is blown out (core.quality's measure of an over-exposed face)."""
    return min(img.size) >= 2 and blown_out_share(np.asarray(img)) >= GLARE_SHARE


@dataclass(frozen=True)
class PipelineConfig:
    margin: int = 32  # pixels of context around the box, in the 160-px crop (facenet-pytorch's convention)
    # The smallest face looked for, in pixels of the image detection runs on (see
    # detect_side): MTCNN's usual 20 px divided by its pyramid factor, i.e. the same pyramid
    # less its first, largest level. That level only finds faces of 20-28 px, which quality
    # flags as too small (under 32 px) anyway, and cost a fifth of the detection time (26 ->
    # 21 ms on 250x250 photos, 31 -> 25 ms on 1024-px portraits, one thread).
    min_face_size: float = 20 / PYRAMID_FACTOR
    # Detection runs on a copy at most this many pixels on its longer side, boxes mapped back
    # to the image's pixels, crops cut from the image itself (which keeps the face's pixels).
    # MTCNN's pyramid costs about the square of the side (here 224x336: 16 ms, 512 px: 30
    # ms, a 1024-px photo: 93 ms). The smallest face found grows with the photo: 7% of its
    # longer side, 75 px in a 1024-px photo. FACECOM-sized photos (<= 336 px) are detected
    # as they are.
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
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    score: float | None  # MTCNN probability; None for the fallback box
    path: DetectionPath


class FacePipeline:
    """Detects faces with MTCNN (core/mtcnn.py) and turns them into normalised 160×160 crops."""

    def __init__(self, config: PipelineConfig = PipelineConfig(), device: str | torch.device = "cpu",
                 regressor: BoxRegressor | None = None) -> None:
        self.config = config
        self._mtcnn = Mtcnn(config.min_face_size, device)
        self.regressor = None
        if config.regress_missing:
            self.regressor = regressor or BoxRegressor.load(models_dir() / BOX_REGRESSOR, device)

    # -- detection ---------------------------------------------------------------------
    def _mtcnn_faces(self, images: Sequence[Image.Image], path: DetectionPath) -> list[list[DetectedFace]]:
        """MTCNN over same-sized images, each reduced to `detect_side`; boxes in their pixels."""
        scale = self._detect_scale(images[0].size)
        if scale < 1.0:
            size = (round(images[0].width * scale), round(images[0].height * scale))
            images = [img.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0) for img in images]
        return [[DetectedFace(tuple(v / scale for v in d.box), d.score, path)  # type: ignore[arg-type]
                 for d in detections if d.score >= self.config.min_score]
                for detections in self._mtcnn.detect(images)]

    def detect_all(self, img: Image.Image) -> list[DetectedFace]:
        """Every face in the image, after the enhancement retries if plain detection finds none."""
        return self.detect_batch([img])[0]

    def detect_batch(self, images: Sequence[Image.Image]) -> list[list[DetectedFace]]:
        """`detect_all` for many images; same-sized images share one MTCNN pass."""
        results: list[list[DetectedFace]] = [[] for _ in images]
        # No face fits an image smaller than the smallest face looked for.
        detectable = [i for i, img in enumerate(images) if self._detectable(img.size)]
        for group in _group_by_size([images[i] for i in detectable]):
            indices = [detectable[g] for g in group]
            for i, faces in zip(indices, self._mtcnn_faces([images[i] for i in indices], "direct")):
                results[i] = faces
        for path, enhance in ENHANCEMENTS if self.config.retry_enhanced else ():
            todo = [i for i in detectable if not results[i]]
            for indices in _group_by_size([images[i] for i in todo]):
                batch = [enhance(images[todo[i]]) for i in indices]
                for i, faces in zip(indices, self._mtcnn_faces(batch, path)):
                    results[todo[i]] = faces
        # The regressor: where nothing was found, and on glared photos, where MTCNN finds the
        # people around the glare but not the subject under it (its face is added there).
        if self.regressor is not None and (todo := [i for i in detectable if not results[i] or glared(images[i])]):
            for i, found in zip(todo, self.regressor.find([images[i] for i in todo])):
                if found is not None and all(iou(found.box, f.box) < MIN_BOX_IOU for f in results[i]):
                    results[i] = [*results[i], DetectedFace(found.box, found.score, "regressed")]
        if self.config.use_fallback:
            for i, faces in enumerate(results):
                if not faces:
                    results[i] = [self.fallback(images[i])]
        return results

    def _detect_scale(self, size: tuple[int, int]) -> float:
        """The factor an image of this size is reduced by for detection (1: as it is)."""
        return min(1.0, self.config.detect_side / max(size))

    def _detectable(self, size: tuple[int, int]) -> bool:
        return min(size) * self._detect_scale(size) >= self.config.min_face_size

    def fallback(self, img: Image.Image) -> DetectedFace:
        w, h = img.size
        x1, y1, x2, y2 = self.config.fallback_box
        return DetectedFace((x1 * w, y1 * h, x2 * w, y2 * h), None, "fallback")

    @staticmethod
    def primary(img: Image.Image, faces: Sequence[DetectedFace], source: str = "image") -> DetectedFace:
        """The subject of a photo: among faces at least half the largest, the one nearest the centre."""
        if not faces:
            raise NoFaceFound(source, "no face found")
        return _big_faces_by_centrality(img.size, faces)[0][1]

    @staticmethod
    def subject(faces: Sequence[DetectedFace], image_size: tuple[int, int], source: str = "image",
                box: Sequence[float] | None = None) -> DetectedFace:
        """The person an enrolment photo is of: the face at `box` when the caller gives one, else
        the photo's subject as `primary` finds it (large, nearest the centre). Smaller faces and
        faces off to the side (press photos, snapshots) are not in the way; two large faces about
        as near the centre are, since either could be the subject."""
        if not faces:
            raise NoFaceFound(source, "no face found")
        if box is not None:
            best = max(faces, key=lambda f: iou(f.box, box))
            if iou(best.box, box) < MIN_BOX_IOU:
                raise NoFaceFound(source, f"no face at box {[round(v) for v in box]}; faces found at {_boxes(faces)}")
            return best
        ranked = _big_faces_by_centrality(image_size, faces)
        nearest, subject = ranked[0]
        rivals = [f for distance, f in ranked[1:] if distance < nearest + CENTRE_MARGIN]
        if rivals:
            raise TooManyFaces(source, f"{1 + len(rivals)} faces of comparable size and place found at "
                                       f"{_boxes([subject, *rivals])}; send `box` with the one to enrol")
        return subject

    # -- crop and normalise ------------------------------------------------------------
    def crop(self, img: Image.Image, box: Sequence[float]) -> torch.Tensor:
        """uint8 3×160×160 crop of `box` widened by the margin, clamped to the image."""
        margin = self.config.margin
        x1, y1, x2, y2 = box
        pad_x = margin * (x2 - x1) / (CROP_SIZE - margin) / 2
        pad_y = margin * (y2 - y1) / (CROP_SIZE - margin) / 2
        w, h = img.size
        region = (
            int(max(x1 - pad_x, 0)),
            int(max(y1 - pad_y, 0)),
            int(min(x2 + pad_x, w)),
            int(min(y2 + pad_y, h)),
        )
        if region[2] - region[0] < 2 or region[3] - region[1] < 2:
            raise NoFaceFound("image", f"face box {tuple(round(v) for v in box)} is degenerate")
        face = img.crop(region).resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(face, dtype=np.uint8).copy()).permute(2, 0, 1)


def _area(box: Sequence[float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _big_faces_by_centrality(size: tuple[int, int], faces: Sequence[DetectedFace]) -> list[tuple[float, DetectedFace]]:
    """(distance of the box centre from the image centre / longer side, face) for the faces
    at least COMPARABLE_AREA of the largest, nearest first."""
    largest = max(_area(f.box) for f in faces)
    cx, cy, scale = size[0] / 2, size[1] / 2, max(size)
    big = [f for f in faces if _area(f.box) >= COMPARABLE_AREA * largest]
    return sorted(((math.hypot((f.box[0] + f.box[2]) / 2 - cx, (f.box[1] + f.box[3]) / 2 - cy) / scale, f) for f in big),
                  key=lambda pair: pair[0])


def _boxes(faces: Sequence[DetectedFace]) -> list[list[int]]:
    return [[round(v) for v in f.box] for f in faces]


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes."""
    inter = _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _group_by_size(images: Sequence[Image.Image]) -> list[list[int]]:
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(img.size, []).append(i)
    return list(groups.values())
