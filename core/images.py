"""Decoding: bytes or a file → an upright RGB PIL image, with clear errors for bad input.

What a decode may cost is bounded before any pixel is decoded: the pixel count and the bytes
Pillow will hold for them are checked from the header, a photo too thin to keep a face once
reduced is refused there, a large JPEG is decoded reduced (DCT scaling), and any other image is
reduced right after loading, before it is converted or turned upright, so every copy after the
first is small. High-bit-depth images are brought to 8 bits without float64 copies, a band of
rows at a time. Callers that decode many photos at once pass a semaphore that large decodes
(over LARGE_DECODE_BYTES) take one by one.
"""

from __future__ import annotations

import io
import threading
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from core.errors import ImageTooLarge, InvalidImage, NoFaceFound, UnsupportedFormat

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})
DEFAULT_MAX_PIXELS = 40_000_000
# ISO-BMFF brands (bytes 8–12 after "ftyp") of image formats Pillow cannot read here.
_UNSUPPORTED_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                       b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
# Pillow's modes for more than 8 bits per sample; .convert("RGB") clips them to white.
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
# Bytes a pixel takes in Pillow's memory, by mode: one for 1/L/P, two for 16-bit greyscale, four
# for everything else (RGB too is stored in four).
_ONE_BYTE, _TWO_BYTES = {"1", "L", "P"}, {"I;16", "I;16B", "I;16L", "I;16N"}
DEFAULT_MAX_BYTES = 4 * DEFAULT_MAX_PIXELS  # an RGB image of the default pixel cap
LARGE_DECODE_BYTES = 32 << 20  # decodes above this wait for the caller's large-decode slot
MIN_REDUCED_SIDE = 16  # a photo whose shorter side would be under this once reduced holds no face
_ROWS_AT_ONCE = 512  # rows of a high-bit-depth image brought to 8 bits together


def _unsupported_container(data: bytes) -> str | None:
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _UNSUPPORTED_BRANDS.get(data[8:12], "ISO-BMFF (" + data[8:12].decode("latin-1") + ")")
    return None


def pixel_bytes(mode: str) -> int:
    """Bytes one pixel of this mode takes in Pillow's memory."""
    return 1 if mode in _ONE_BYTE else 2 if mode in _TWO_BYTES else 4


def _eight_bit(img: Image.Image) -> Image.Image:
    """A 16- or 32-bit greyscale image scaled (not clipped) to 8 bits, a band of rows at a time:
    the only full-size copy made is the 8-bit result."""
    high = img.getextrema()[1]  # one band: (lowest, highest)
    assert isinstance(high, (int, float))
    peak = 65535 if img.mode != "I" or high > 255 else 255
    out = np.empty((img.height, img.width), dtype=np.uint8)
    for top in range(0, img.height, _ROWS_AT_ONCE):
        band = np.asarray(img.crop((0, top, img.width, min(top + _ROWS_AT_ONCE, img.height))), dtype=np.int64)
        out[top : top + len(band)] = (np.clip(band, 0, peak) * 255 + peak // 2) // peak
    return Image.fromarray(out, mode="L")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _WIDE_MODES:  # 16-bit greyscale: scale, do not clip
        img = _eight_bit(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def _reduced(img: Image.Image, max_side: int) -> Image.Image:
    """The loaded image at most `max_side` on its longer side, in its own mode (8-bit modes as
    Pillow's thumbnail does it; wide ones without its reduce step, which they lack)."""
    if max(img.size) <= max_side:
        return img
    if img.mode in _WIDE_MODES:
        scale = max_side / max(img.size)
        return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    if img.mode not in ("RGB", "L"):  # palette and others: colours first (resampling a palette picks, not blends)
        img = img.convert("RGB")
    img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return img


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # upright RGB, at most `max_side` pixels on its longer side
    scale: float  # original pixels per pixel of `image` (1.0 when not reduced)
    original_size: tuple[int, int]  # the upright photo's width and height, before any reduction

    @classmethod
    def whole(cls, image: Image.Image) -> Decoded:
        """An image decoded at its full size."""
        return cls(image, 1.0, image.size)


def decode_image(data: bytes, source: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `data` to RGB at full size, honouring EXIF orientation."""
    return decode_reduced(data, source, max_pixels).image


def decode_reduced(data: bytes, source: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None,
                   max_bytes: int = DEFAULT_MAX_BYTES, large_decodes: threading.Semaphore | None = None) -> Decoded:
    """Decode `data` to upright RGB, no larger than `max_side` on its longer side.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing. A larger JPEG is decoded by its DCT scaling (Pillow's
    draft mode) at the smallest of 1/1, 1/2, 1/4, 1/8 that keeps its longer side at least
    `max_side` / 2, so it arrives between half of `max_side` and `max_side` (only a photo
    over 8x `max_side` is resized after decoding) and never costs a full-size decode.
    """
    if not data:
        raise InvalidImage(source, "empty upload")
    if container := _unsupported_container(data):
        raise UnsupportedFormat(source, f"unsupported image format {container!r}; send JPEG, PNG, WebP, BMP, TIFF or GIF")
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between 1x and 2x its own limit; ours is explicit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise UnsupportedFormat(source, f"unsupported image format {img.format!r}; send JPEG, PNG, WebP, BMP, TIFF or GIF")
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(source, f"{width}x{height} pixels exceeds the limit of {max_pixels}")
            if max_side is not None and min(width, height) * min(1.0, max_side / max(width, height)) < MIN_REDUCED_SIDE:
                raise NoFaceFound(source, f"no face found: a {width}x{height} photo is too small or too thin to hold one")
            if max_side is not None and img.format == "JPEG" and max(width, height) > max_side:
                img.draft("RGB", _draft_size(width, height, max_side))
            need = img.width * img.height * pixel_bytes(img.mode)
            if need > max_bytes:
                raise ImageTooLarge(source, f"{width}x{height} pixels in mode {img.mode} take {need >> 20} MiB to decode, "
                                            f"over the limit of {max_bytes >> 20} MiB")
            with large_decodes if large_decodes is not None and need > LARGE_DECODE_BYTES else nullcontext():
                img.load()
                turned = img.getexif().get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS
                if max_side is not None:
                    img = _reduced(img, max_side)
                img = _to_rgb(ImageOps.exif_transpose(img))
            original = (height, width) if turned else (width, height)
            return Decoded(img, max(width, height) / max(img.size), original)  # EXIF rotation keeps the longer side
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(source, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(source, "not an image, or an unsupported format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt files surface from Pillow as OSError/SyntaxError.
        raise InvalidImage(source, f"corrupt image ({exc})") from exc


def _draft_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size to ask Pillow's JPEG draft mode for: the image at 1/s, for the largest s of 1,
    2, 4, 8 that keeps the longer side at least max_side / 2 (Pillow picks the largest s with
    both sides still at least the size asked)."""
    longer, scale = max(width, height), 1
    while scale < 8 and longer // (2 * scale) >= max_side / 2:
        scale *= 2
    return max(1, width // scale), max(1, height // scale)


def read_file(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidImage(str(path), f"cannot read file ({exc.strerror})") from exc


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file from disk; errors name the file."""
    return decode_image(read_file(path), source=str(path), max_pixels=max_pixels)
