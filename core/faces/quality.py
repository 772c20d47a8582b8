"""How fit a face crop is to be recognised, from cheap measurements, with named reasons.

Measured on the 160×160 crop that is embedded (and the face's size in the photo):
- over_exposed: share of the face's central pixels blown out to white;
- too_dark: mean luminance of the face;
- noisy: mean distance of each pixel from its 3×3 median (impulse noise, rain streaks);
- blurred: variance of the Laplacian (little fine detail);
- too_small: the face's shorter side in the photo, in pixels;
- uncertain_detection: the detector's probability.
Each measurement maps to a factor in [0, 1] between a level where it does not matter and one
where it makes a face unrecognisable; the score is the smallest factor, and the reasons are
the measurements whose factor is below one half. Levels are set on the validation people so
that a reason means "answers go wrong here" (`faceid evaluate`, open_set.by_quality): with the
shipped model, noise/rain texture and an unsure detection are where right answers fall from
~95% to ~50%, while blur and darkness as FACECOM has them cost almost nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from core.pixels import BLOWN_OUT, central_half, luminance, median3x3

# (measurement, fine at, hopeless at): the factor falls linearly from 1 to 0 between them.
# On the validation people's crops (median, clean → distorted): central share at 255: 0 → 1.0
# (sunny); luminance 125 → 37 (lowlight); median residual 0.3 → 9.6 (noisy), 4.2 (rainy);
# Laplacian variance 53 → 4.5 (blurred); face side ~83 px. Named right at the service's
# threshold: 47% below detection probability 0.987, 55% above residual 4.1, ~95% elsewhere.
LEVELS: dict[str, tuple[float, float]] = {
    "over_exposed": (0.05, 0.45),  # share of the central face at luminance >= 250
    "too_dark": (25.0, 8.0),  # mean luminance (0-255) of the central face
    "noisy": (1.5, 8.0),  # mean |luminance - its 3x3 median|
    "blurred": (3.0, 0.5),  # variance of the Laplacian (of the median-filtered face)
    "too_small": (48.0, 16.0),  # shorter side of the face box, in photo pixels
    "uncertain_detection": (0.999, 0.98),  # detector probability
}
REASON_BELOW = 0.5
# Enrolment refuses a reference that is blown out or black (hopeless on these). Blur and noise
# are left to the caller; a blurred reference still beats none.
REFUSE_FOR = ("over_exposed", "too_dark")
# /identify and /verify stop naming a face by its looks only further on, where the face itself is
# gone: FACECOM's sunny copies, blown out whole, named strangers in a large gallery, while real
# photos under glare keep a recognisable face at shares the reference rule refuses
# (docs/results.md).
GONE_AT = {"over_exposed": 0.9, "too_dark": LEVELS["too_dark"][1]}


@dataclass(frozen=True)
class Quality:
    score: float  # 0 (hopeless) .. 1 (nothing wrong)
    reasons: tuple[str, ...]  # names from LEVELS, worst first
    measures: dict[str, float]
    factors: dict[str, float]

    @property
    def gone(self) -> tuple[str, ...]:
        """The measurements by which the face itself is gone (past GONE_AT): it is never named by
        its looks. Empty if it is not."""
        return tuple(name for name, level in GONE_AT.items() if _past(self.measures[name], level, *LEVELS[name]))

    @property
    def unusable(self) -> tuple[str, ...]:
        """The measurements by which the face is no reference (REFUSE_FOR at factor 0); empty if it is one."""
        return tuple(name for name in REFUSE_FOR if self.factors[name] == 0.0)

    def refusal(self) -> str | None:
        """Why this face cannot serve as an enrolment reference, or None."""
        return f"the face is unusable as a reference ({', '.join(self.unusable)})" if self.unusable else None


def measure(crop_hwc: np.ndarray, face_side: float, detection_score: float | None) -> dict[str, float]:
    """The raw measurements of one uint8 H×W×3 face crop."""
    lum = luminance(crop_hwc)
    centre = central_half(lum)
    median = median3x3(lum)
    return {
        "over_exposed": float((centre >= BLOWN_OUT).mean()),  # core.pixels.blown_out_share, on the luminance at hand
        "too_dark": float(centre.mean()),
        "noisy": float(np.abs(lum - median).mean()),  # core.pixels.impulse_noise, sharing the median with "blurred"
        "blurred": float(ndimage.laplace(median).var()),  # on the median: impulse noise is not detail
        "too_small": float(face_side),
        "uncertain_detection": float(detection_score if detection_score is not None else 0.0),
    }


def _past(value: float, level: float, fine: float, hopeless: float) -> bool:
    """Whether `value` is at `level` or beyond it, on the side away from `fine`."""
    return (value - level) * (hopeless - fine) >= 0


def _factor(value: float, fine: float, hopeless: float) -> float:
    return float(np.clip((value - hopeless) / (fine - hopeless), 0.0, 1.0))


def assess(crop_hwc: np.ndarray, box: Sequence[float], detection_score: float | None) -> Quality:
    measures = measure(crop_hwc, min(box[2] - box[0], box[3] - box[1]), detection_score)
    factors = {name: _factor(measures[name], *LEVELS[name]) for name in LEVELS}
    reasons = tuple(sorted((n for n, f in factors.items() if f < REASON_BELOW), key=lambda n: factors[n]))
    return Quality(score=round(min(factors.values()), 4), reasons=reasons,
                   measures={k: round(v, 4) for k, v in measures.items()}, factors=factors)
