"""Test-time restoration of face crops before they are embedded: impulse noise (salt and
pepper, rain streaks) is median-filtered when a cheap estimate says it is there.

The estimate is `core.pixels.impulse_noise` (mean distance of each pixel's luminance from its
3×3 median), the quality check's `noisy` measure. On the validation people's crops its median
is 0.8 for clean photos, 4.2 for rainy and 9.6 for noisy ones; crops at NOISE_TO_RESTORE or
more are filtered (3×3 median per channel), which docs/results.md shows as the
"median-filtered" rows. Crops below the level are left as they are.

Glare is not restored: a de-glaring step that was tried moved validation sunny top-1 by 2 of
177 photos, inside the noise (docs/results.md).

Everything that embeds a crop goes through here (`Embedder.embed`, training's inputs), so
the network sees the same pixels in training, evaluation and the service.
"""

from __future__ import annotations

import torch

from core.pixels import impulse_noise, median3x3

NOISE_TO_RESTORE = 4.0


def restore(crops: torch.Tensor) -> torch.Tensor:
    """uint8 N×3×H×W crops → the same, with the impulse-noisy ones median-filtered. Returns the
    input itself when nothing needs filtering."""
    out = None
    for i, crop in enumerate(crops):
        pixels = crop.cpu().numpy()
        if impulse_noise(pixels.transpose(1, 2, 0)) >= NOISE_TO_RESTORE:
            out = crops.clone() if out is None else out
            out[i] = torch.from_numpy(median3x3(pixels)).to(crops.device)
    return crops if out is None else out
