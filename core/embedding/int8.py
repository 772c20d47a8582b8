"""An int8 copy of the exported backbone for the CPU: ONNX Runtime's static QDQ quantization
(weights per channel, activations by ranges calibrated on real faces), made once per weights
and cached beside the fp32 export.

Calibration needs faces but the service may have none yet, so it uses the seven faces of the
two packaged photos (`calibration/`), each as it is and in seven distorted copies (flip,
blur, dark, over-exposed, down-sized, impulse noise, low contrast), cut by the service's own
pipeline. Measured with the model shipped before the four-epoch one (facecom-ft@44f639ca44b6,
2 cores): batch 1 embeds in 5.7 ms against 14.8; on the test people top-1 85.71 against
85.71, source-left-out 82.1 against 82.0, clean TAR@1e-3 0.981 against 0.978, named
correctly by the service 81.95% both, strangers named 0.18% both; embeddings' cosine to
fp32 ≥ 0.986 (median 0.999). On the validation people strangers named at the model's
threshold were 1.05% against 0.89%, so int8 is offered (FACEID_RUNTIME=onnx-int8), not the
default.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from core.embedding.onnx_runtime import RuntimeUnavailable
from core.embedding.restoration import restore
from core.embedding.standardize import standardize
from core.faces.pipeline import SERVICE_PIPELINE, load_pipeline
from core.files import atomic_write
from core.images import load_image

log = logging.getLogger(__name__)
CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
CALIBRATION = "faces7x8-minmax-1"  # names the recipe in the cached file: change it with the recipe


def _noisy(img: Image.Image, rng: np.random.Generator, share: float = 0.08) -> Image.Image:
    pixels = np.asarray(img).copy()
    hit = rng.random(pixels.shape[:2]) < share
    pixels[hit] = rng.choice(np.array([0, 255], dtype=np.uint8), size=(int(hit.sum()), 1))
    return Image.fromarray(pixels)


def calibration_crops() -> torch.Tensor:
    """uint8 N×3×160×160: the packaged photos' faces, clean and distorted, deterministic."""
    pipeline, rng = load_pipeline(SERVICE_PIPELINE), np.random.default_rng(0)
    faces = []
    for path in sorted(CALIBRATION_DIR.glob("*.jpg")) + sorted(CALIBRATION_DIR.glob("*.png")):
        img = load_image(path)
        faces += [Image.fromarray(pipeline.crop(img, f.box).permute(1, 2, 0).numpy()) for f in pipeline.detect_all(img)]
    variants = (
        lambda im: im,
        lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        lambda im: im.filter(ImageFilter.GaussianBlur(2.5)),
        lambda im: ImageEnhance.Brightness(im).enhance(0.3),
        lambda im: ImageEnhance.Brightness(im).enhance(2.2),
        lambda im: im.resize((40, 40)).resize(im.size),
        lambda im: _noisy(im, rng),
        lambda im: ImageEnhance.Contrast(im).enhance(0.4),
    )
    return torch.stack([torch.from_numpy(np.asarray(v(face)).copy()).permute(2, 0, 1) for face in faces for v in variants])


def quantize(fp32: Path, int8: Path) -> None:
    """Write the int8 model of `fp32` to `int8`, atomically; a clear error if it cannot."""
    try:
        from onnxruntime.quantization import (
            CalibrationDataReader,
            QuantFormat,
            QuantType,
            quantize_static,
        )
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise RuntimeUnavailable("onnxruntime", f"int8 needs onnxruntime's quantization tools ({exc}); set FACEID_RUNTIME=onnx") from exc
    batch = standardize(restore(calibration_crops())).numpy()

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"crops": batch[i : i + 16]} for i in range(0, len(batch), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    try:
        with tempfile.TemporaryDirectory(dir=int8.parent) as work, atomic_write(int8) as tmp:
            prepared = Path(work) / "prepared.onnx"  # shapes inferred and graph folded for the quantizer
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(str(prepared), str(tmp), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # the quantizer raises many types; the caller needs one
        raise RuntimeUnavailable(str(int8), f"could not quantize the backbone to int8 ({type(exc).__name__}: {exc})") from exc
