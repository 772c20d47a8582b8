"""Fresh synthetic versions of FACECOM's seven distortions, applied to face crops on the fly.

Each epoch then sees new noise, rain, glare, fog, blur, darkness and down-scaling rather than
the same seven fixed copies of each photo. Blur, rain and down-scaling come from
albumentations (well kept, fast OpenCV kernels, seedable). The other four are a few lines
each here, because FACECOM's versions differ from the library's (checked side by side on
training photos): its "noisy" is coloured impulse noise, its "sunny" blows the face itself out
to white (the library's sun flare leaves the face intact), its fog is an even haze, and its
low light is a dimming, where the library's brightness shift crushes dark hair to black.
The library's fog also took 140 ms a crop, against under 1 ms here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no version check over the network
import albumentations as A

KINDS = ("blurred", "foggy", "lowlight", "noisy", "rainy", "resized", "sunny")
Distortion = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def _impulse_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coloured impulse noise: a random share of pixels replaced by random colours."""
    out = img.copy()
    hit = rng.random(img.shape[:2]) < rng.uniform(0.04, 0.2)
    out[hit] = rng.integers(0, 256, (int(hit.sum()), img.shape[2]), dtype=np.uint8)
    return out


def _haze(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Fog: the photo blended with a light grey veil, and slightly softened."""
    veil = rng.uniform(170, 235)
    alpha = rng.uniform(0.3, 0.65)
    out = img.astype(np.float32) * (1 - alpha) + veil * alpha
    return cv2.GaussianBlur(np.clip(out, 0, 255).astype(np.uint8), (3, 3), rng.uniform(0.3, 1.0))


def _dim(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Low light: fewer photons (a gain below one) and a darker tone curve."""
    x = img.astype(np.float32) / 255.0
    out = rng.uniform(0.3, 0.6) * x ** rng.uniform(1.0, 1.6)
    return np.clip(out * 255.0, 0, 255).astype(np.uint8)


def _glare(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Over-exposure: the whole photo brightened, and a white blob saturating the face centre."""
    h, w = img.shape[:2]
    cx, cy = w * rng.uniform(0.42, 0.58), h * rng.uniform(0.38, 0.55)
    radius = rng.uniform(0.2, 0.4) * min(h, w)
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(rng.uniform(1.0, 2.5) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / radius**2), 0.0, 1.0)[..., None]
    bright = img.astype(np.float32) * rng.uniform(1.0, 1.3) + rng.uniform(0, 50)
    return np.clip(bright * (1 - alpha) + 255.0 * alpha, 0, 255).astype(np.uint8)


def _seeded(transform: A.BasicTransform) -> Distortion:
    def apply(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        transform.set_random_seed(int(rng.integers(2**31)))
        return transform(image=img)["image"]

    return apply


def build_distortions() -> dict[str, Distortion]:
    """kind → function(uint8 H×W×3 image, generator) → distorted image of the same shape."""
    return {
        "blurred": _seeded(A.OneOf([
            A.GaussianBlur(blur_limit=(5, 11), sigma_limit=(1.5, 3.5), p=1),
            A.Defocus(radius=(2, 5), p=1),
            A.MotionBlur(blur_limit=(5, 11), p=1),
        ], p=1)),
        "foggy": _haze,
        "lowlight": _dim,
        "noisy": _impulse_noise,
        "rainy": _seeded(A.RandomRain(slant_range=(-20, 20), drop_length=12, drop_width=1, blur_value=3,
                                      brightness_coefficient=0.85, rain_type="default", p=1)),
        "resized": _seeded(A.Downscale(scale_range=(0.2, 0.5), p=1,
                                       interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR})),
        "sunny": _glare,
    }


def check_kinds(kinds: tuple[str, ...]) -> None:
    """Raise unless `kinds` names at least one distortion, and only known ones."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise ValueError(f"synthetic distortions are among {', '.join(KINDS)}; got {', '.join(unknown) or 'none'}")


class SyntheticDistortions:
    """Distorts a share of a batch's crops with a random kind each, reproducibly from a seed."""

    def __init__(self, seed: int, share: float = 0.5, kinds: tuple[str, ...] = KINDS) -> None:
        """`kinds`: drawn from uniformly, so a kind listed twice is drawn twice as often."""
        check_kinds(kinds)
        self.rng = np.random.default_rng(seed)
        self.share = share
        self.draw = kinds
        self.kinds = build_distortions()

    def __call__(self, crops: np.ndarray, eligible: np.ndarray, share: float | None = None) -> np.ndarray:
        """uint8 N×H×W×3 crops; only rows where `eligible` (clean photos) may be distorted."""
        out = crops.copy()
        share = self.share if share is None else share
        for i in np.flatnonzero(eligible & (self.rng.random(len(crops)) < share)):
            kind = self.draw[int(self.rng.integers(len(self.draw)))]
            out[i] = self.kinds[kind](np.ascontiguousarray(crops[i]), self.rng)
        return out
