"""What cameras and weather do to whole photos: the evaluation's own distortions, written apart
from training's (training/distortions.py) so that the evaluation does not grade the training
recipe on its own noise. Each is modelled on the physics rather than on FACECOM's copies:
defocus is a disk, not a Gaussian; low light is few photons (shot and read noise in linear
light), not a tone curve; glare is over-exposure in linear light plus a flare; fog is the
scattering model (the scene faded toward the airlight, more with distance up the photo).
Motion blur is one a camera makes that FACECOM lacks.

Deterministic: the same photo, kind and seed give the same pixels (`seed_of` a file name).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import cv2
import numpy as np
from PIL import Image

Distortion = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def seed_of(name: str, kind: str) -> int:
    """A seed from a photo's name and the kind: the same photo is distorted the same way each run."""
    return int(hashlib.sha1(f"{kind}|{name}".encode()).hexdigest()[:8], 16)


def _to_linear(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / 255.0) ** 2.2


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    return (np.clip(linear, 0.0, 1.0) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def defocus(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Out of focus: each point spread over a disk (the aperture), radius relative to the photo."""
    radius = rng.uniform(0.010, 0.016) * max(img.shape[:2])
    size = 2 * int(np.ceil(radius)) + 1
    yy, xx = np.mgrid[:size, :size] - size // 2
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    return cv2.filter2D(img, -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT)


def motion(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera shake: a straight streak of random direction."""
    length = int(rng.uniform(0.035, 0.06) * max(img.shape[:2])) | 1
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0
    turn = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    kernel = cv2.warpAffine(kernel, turn, (length, length))
    return cv2.filter2D(img, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def fog(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scattering: I = J t + A (1 - t), the transmission t falling toward the photo's top (farther)."""
    h, w = img.shape[:2]
    near = rng.uniform(0.35, 0.5)
    t = near - rng.uniform(0.05, 0.15) * (1 - np.linspace(0, 1, h, dtype=np.float32))[:, None, None]
    airlight = rng.uniform(0.75, 0.92)
    linear = _to_linear(img) * t + airlight * (1 - t)
    return _to_srgb(linear)


def low_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Few photons: the exposure cut, Poisson shot noise and Gaussian read noise in linear light,
    then the camera's gain lifting part of the loss back (the noise with it)."""
    exposure = rng.uniform(0.02, 0.05)
    photons = rng.uniform(150, 400)  # photons a fully exposed pixel would have collected
    linear = _to_linear(img) * exposure
    counted = rng.poisson(linear * photons).astype(np.float32) / photons
    counted += rng.normal(0, rng.uniform(0.002, 0.004), counted.shape).astype(np.float32)
    return _to_srgb(counted * rng.uniform(2.0, 4.0))


def sensor_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A noisy sensor at high ISO: Gaussian luminance noise and weaker colour noise."""
    h, w = img.shape[:2]
    luminance = rng.normal(0, rng.uniform(18, 30), (h, w, 1))
    colour = rng.normal(0, rng.uniform(5, 10), (h, w, 3))
    return np.clip(img.astype(np.float32) + luminance + colour, 0, 255).astype(np.uint8)


def rain(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rain: slanted bright streaks over a darker, softer scene."""
    h, w = img.shape[:2]
    streaks = np.zeros((h, w), np.float32)
    angle = np.deg2rad(rng.uniform(-25, 25))
    for _ in range(int(rng.uniform(0.004, 0.008) * h * w)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        length = rng.uniform(0.04, 0.1) * h
        end = (int(x + length * np.sin(angle)), int(y + length * np.cos(angle)))
        cv2.line(streaks, (int(x), int(y)), end, float(rng.uniform(0.5, 1.0)), 1, cv2.LINE_AA)
    streaks = cv2.GaussianBlur(streaks, (3, 3), 0.8)[..., None]
    scene = cv2.GaussianBlur(img, (3, 3), 0.7).astype(np.float32) * rng.uniform(0.7, 0.85)
    out = scene * (1 - 0.7 * streaks) + rng.uniform(200, 235) * 0.7 * streaks
    return np.clip(out, 0, 255).astype(np.uint8)


def low_resolution(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A far-away face: the photo taken at a fraction of its size, then shown enlarged."""
    h, w = img.shape[:2]
    scale = rng.uniform(0.18, 0.24)
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def glare(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Over-exposure in linear light (highlights clip to white) and a flare near the centre."""
    h, w = img.shape[:2]
    linear = _to_linear(img) * rng.uniform(2.0, 3.5)
    cy, cx = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7)
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    sigma = rng.uniform(0.15, 0.3) * max(h, w)
    flare = rng.uniform(0.4, 0.9) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    return _to_srgb(linear + flare[..., None])


def jpeg(img: np.ndarray, rng: np.random.Generator, quality: int = 8) -> np.ndarray:
    """A photo sent through a messenger at its harshest: JPEG at quality 8."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


KINDS: dict[str, Distortion] = {
    "blur": defocus, "motion": motion, "fog": fog, "lowlight": low_light, "noise": sensor_noise,
    "rain": rain, "lowres": low_resolution, "glare": glare, "jpeg": jpeg,
}


def distort(img: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """`img` (H×W×3 uint8 RGB) under distortion `kind`, the same for the same seed."""
    if kind not in KINDS:
        raise ValueError(f"unknown distortion {kind!r}; known: {', '.join(KINDS)}")
    return KINDS[kind](np.ascontiguousarray(img), np.random.default_rng(seed))
