"""Decoding: bytes or a file → an upright RGB PIL image, with clear errors for bad input."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from core.errors import ImageTooLarge, InvalidImage, UnsupportedFormat

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})
DEFAULT_MAX_PIXELS = 40_000_000
# ISO-BMFF brands (bytes 8–12 after "ftyp") of image formats Pillow cannot read here.
_UNSUPPORTED_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"heim": "HEIC", b"heis": "HEIC",
                       b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}
# Pillow's modes for more than 8 bits per sample; .convert("RGB") clips them to white.
_WIDE_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_QUARTER_TURNS = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def _unsupported_container(data: bytes) -> str | None:
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return _UNSUPPORTED_BRANDS.get(data[8:12], "ISO-BMFF (" + data[8:12].decode("latin-1") + ")")
    return None


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in _WIDE_MODES:  # 16-bit greyscale: scale, do not clip
        wide = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode != "I" or wide.max() > 255 else 255.0
        img = Image.fromarray(np.clip(wide * (255.0 / peak), 0, 255).round().astype(np.uint8), mode="L")
    return img.convert("RGB")


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


def decode_reduced(data: bytes, source: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS, max_side: int | None = None) -> Decoded:
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
            if max_side is not None and img.format == "JPEG" and max(width, height) > max_side:
                img.draft("RGB", _draft_size(width, height, max_side))
            img.load()
            turned = img.getexif().get(ExifTags.Base.Orientation, 1) in _QUARTER_TURNS
            img = _to_rgb(ImageOps.exif_transpose(img))
            if max_side is not None and max(img.size) > max_side:
                img.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
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
