"""Decoding: bytes or a file → an upright RGB PIL image, with clear errors for bad input."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import ImageTooLarge, InvalidImage, UnsupportedFormat

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "MPO"})
DEFAULT_MAX_PIXELS = 40_000_000


def decode_image(data: bytes, source: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode `data` to RGB, honouring EXIF orientation.

    The pixel count is checked from the header before any pixel is decoded, so a
    decompression bomb costs nothing.
    """
    if not data:
        raise InvalidImage(source, "empty upload")
    try:
        with warnings.catch_warnings():
            # Pillow warns (not raises) between 1x and 2x its own limit; ours is explicit below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise UnsupportedFormat(source, f"unsupported image format {img.format!r}; send JPEG, PNG, WebP, BMP, TIFF or GIF")
            width, height = img.size
            if width * height > max_pixels:
                raise ImageTooLarge(source, f"{width}x{height} pixels exceeds the limit of {max_pixels}")
            img.load()
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(source, str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(source, "not an image, or an unsupported format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        # Truncated or corrupt files surface from Pillow as OSError/SyntaxError.
        raise InvalidImage(source, f"corrupt image ({exc})") from exc


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file from disk; errors name the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidImage(str(path), f"cannot read file ({exc.strerror})") from exc
    return decode_image(data, source=str(path), max_pixels=max_pixels)
