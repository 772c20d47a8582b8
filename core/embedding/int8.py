"""An int8 copy of the exported backbone for the CPU: ONNX Runtime's static QDQ quantization
(weights per channel, activations by ranges calibrated on real faces), made once per weights,
cached beside the fp32 export, and checked against fp32 on the CPU it runs on every time it loads.

Calibration needs faces but the service may have none yet, so it uses the seven faces of the
two packaged photos (`calibration/`), each as it is and in seven distorted copies (flip, blur,
dark, over-exposed, down-sized, impulse noise, low contrast), cut by the service's own pipeline.

The type pair is u8 activations × s8 weights with the weights in 7 bits (`reduce_range`). On an
x86 CPU without VNNI, ONNX Runtime multiplies u8 by s8 with VPMADDUBSW, which adds each pair of
products in int16 and saturates: with 8-bit weights a pair reaches 2·255·128 = 65,280, with
7-bit weights at most 2·255·64 = 32,640 < 32,767, so no input can saturate. VNNI CPUs sum into
int32 and never saturate. Full-range s8 weights (u8×s8 and s8×s8 alike) gave embeddings whose
cosine to fp32 fell to 0.18 on an AVX2-only CPU (docs/benchmarks.md, int8).

Whatever the file and wherever it was made, `check` embeds the calibration faces with it and with
fp32 on this CPU; a model whose worst cosine is under MIN_COSINE is refused (the embedder falls
back to fp32 ONNX Runtime and says why in one log line). A pass is recorded beside the file for
this CPU (its model name and flags) and this ONNX Runtime: a later start on the same machine
trusts the record instead of checking again, any other machine checks.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter

from core.device import cpu_flags, cpu_kind, cpu_model
from core.embedding.onnx_runtime import RuntimeUnavailable
from core.embedding.standardize import network_input
from core.faces.pipeline import SERVICE_PIPELINE, FacePipeline, load_pipeline
from core.files import atomic_write, sha256_of, write_text_atomic
from core.images import load_image

log = logging.getLogger(__name__)
CALIBRATION_DIR = Path(__file__).resolve().parent / "calibration"
CALIBRATION = "faces7x8-minmax-w7"  # names the recipe in the cached file: change it with the recipe
# A correct int8 model's worst calibration face is at 0.997 (VNNI and AVX2 alike); a
# saturating one fell to 0.22. Below this the model is refused.
MIN_COSINE = 0.98


def _noisy(img: Image.Image, rng: np.random.Generator, share: float = 0.08) -> Image.Image:
    pixels = np.asarray(img).copy()
    hit = rng.random(pixels.shape[:2]) < share
    pixels[hit] = rng.choice(np.array([0, 255], dtype=np.uint8), size=(int(hit.sum()), 1))
    return Image.fromarray(pixels)


def calibration_crops(pipeline: FacePipeline | None = None) -> torch.Tensor:
    """uint8 N×3×160×160: the packaged photos' faces, clean and distorted, deterministic."""
    pipeline, rng = pipeline or load_pipeline(SERVICE_PIPELINE), np.random.default_rng(0)
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


def calibration_batch() -> np.ndarray:
    """The calibration crops as the network is fed them: what quantization calibrates on and
    the int8 check compares fp32 and int8 on."""
    return network_input(calibration_crops()).numpy()


def quantize(fp32: Path, int8: Path, batch: np.ndarray | None = None) -> None:
    """Write the int8 model of `fp32` to `int8`, atomically, calibrated on `batch` (network input;
    default: the calibration faces); a clear error if it cannot."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise RuntimeUnavailable("onnxruntime", f"int8 needs onnxruntime's quantization tools ({exc}); set FACEID_RUNTIME=onnx") from exc
    inputs = calibration_batch() if batch is None else batch

    class Faces(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{"crops": inputs[i : i + 16]} for i in range(0, len(inputs), 16)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    try:
        with tempfile.TemporaryDirectory(dir=int8.parent) as work, atomic_write(int8) as tmp:
            prepared = Path(work) / "prepared.onnx"  # shapes inferred and graph folded for the quantizer
            quant_pre_process(str(fp32), str(prepared))
            quantize_static(str(prepared), str(tmp), Faces(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    except Exception as exc:  # the quantizer raises many types; the caller needs one
        raise RuntimeUnavailable(str(int8), f"could not quantize the backbone to int8 ({type(exc).__name__}: {exc})") from exc


def agreement(fp32: Any, int8: Any, batch: np.ndarray) -> np.ndarray:
    """Per input, the cosine between the two sessions' embeddings."""
    a, b = (s.run(None, {"crops": batch})[0] for s in (fp32, int8))
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def check(fp32: Any, int8: Any, batch: np.ndarray) -> tuple[float, str | None]:
    """(the worst cosine to fp32 on `batch`, None when that passes on this CPU or why not, in one line)."""
    worst = float(agreement(fp32, int8, batch).min())
    if worst >= MIN_COSINE:
        log.info("int8 model checked on this CPU (%s): worst calibration cosine to fp32 %.4f", cpu_kind(), worst)
        return worst, None
    flags = " ".join(cpu_flags()) or "unknown"
    return worst, (f"int8 embeddings refused on this CPU ({cpu_kind()}; flags: {flags}): their cosine to fp32 falls to {worst:.3f} "
                   f"(< {MIN_COSINE}) on the calibration faces")


def _machine() -> dict[str, Any]:
    import onnxruntime

    return {"cpu": cpu_model(), "flags": list(cpu_flags()), "onnxruntime": onnxruntime.__version__}


def _record_path(path: Path) -> Path:
    return path.with_suffix(".checked.json")


def trusted_here(path: Path) -> bool:
    """Whether this int8 file passed its check on this machine (CPU and ONNX Runtime) before."""
    try:
        record = json.loads(_record_path(path).read_text())
        return bool(record == {**_machine(), "sha256": sha256_of(path), "worst_cosine": record["worst_cosine"]})
    except (OSError, ValueError, KeyError, TypeError):
        return False


def record_pass(path: Path, worst: float) -> None:
    """Note beside the file that it passed here (best effort: a read-only folder checks each start)."""
    try:
        write_text_atomic(_record_path(path), json.dumps({**_machine(), "sha256": sha256_of(path), "worst_cosine": round(worst, 5)}))
    except OSError as exc:
        log.info("int8 check not recorded (%s); it runs again at the next start", exc)
