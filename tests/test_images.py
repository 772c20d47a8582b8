import io

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageTooLarge, InvalidImage, NoFaceFound
from core.images import decode_image, decode_reduced, load_image
from tests.conftest import PORTRAIT, jpeg, png_header_only


def test_decodes_to_rgb():
    img = decode_image(jpeg(Image.new("L", (40, 30), 128)))
    assert img.mode == "RGB" and img.size == (40, 30)


@pytest.mark.parametrize("data", [b"", b"hello, not an image", b"GIF89a" + b"\x00" * 3])
def test_non_images_are_refused(data):
    with pytest.raises(InvalidImage):
        decode_image(data, source="upload.bin")


def test_truncated_jpeg_is_refused():
    data = jpeg(Image.new("RGB", (200, 200), (200, 10, 10)))
    with pytest.raises(InvalidImage, match="upload.jpg"):
        decode_image(data[: len(data) // 2], source="upload.jpg")


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(ImageTooLarge, match="exceeds"):
        decode_image(png_header_only(50_000, 50_000), max_pixels=10_000_000)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (60, 20), "white")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    rotated = decode_image(jpeg(img, exif=exif.tobytes()))
    assert rotated.size == (20, 60)


def test_load_image_names_missing_file(tmp_path):
    with pytest.raises(InvalidImage, match="nope.jpg"):
        load_image(tmp_path / "nope.jpg")


def test_real_fixture_loads():
    assert load_image(PORTRAIT).size == (112, 112)


@pytest.mark.parametrize("size", [(683, 1024), (1024, 683), (769, 500), (4000, 3000), (9000, 600)])
def test_a_large_jpeg_is_decoded_between_half_and_all_of_max_side(size):
    """DCT scaling (draft mode) does the reduction: never a full-size decode, never below what
    detection needs (half of max_side), boxes mapped back through `scale`."""
    decoded = decode_reduced(jpeg(Image.new("RGB", size, (90, 120, 150))), max_side=768)
    assert 384 <= max(decoded.image.size) <= 768
    assert decoded.scale == pytest.approx(max(size) / max(decoded.image.size))


def test_a_jpeg_within_max_side_is_decoded_as_it_is():
    decoded = decode_reduced(jpeg(Image.new("RGB", (768, 500), "white")), max_side=768)
    assert decoded.image.size == (768, 500) and decoded.scale == 1.0


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_the_decoded_bytes_are_counted_against_the_cap_before_decoding():
    """Bytes, not pixels: the same 1,000² pixels pass as 8-bit grey (1 MB) and are refused as RGB
    (Pillow keeps 4 bytes a pixel) under a 2 MiB cap, from the header alone."""
    grey, colour = png_bytes(Image.new("L", (1000, 1000))), png_bytes(Image.new("RGB", (1000, 1000)))
    assert decode_reduced(grey, max_bytes=2 << 20).image.size == (1000, 1000)
    with pytest.raises(ImageTooLarge, match="1000x1000 pixels in mode RGB take 3 MiB to decode, over the limit of 2 MiB"):
        decode_reduced(colour, "c.png", max_bytes=2 << 20)


def test_a_photo_too_thin_to_hold_a_face_once_reduced_is_not_decoded():
    with pytest.raises(NoFaceFound, match="thin.png: no face found: a 40000x10 photo is too small or too thin"):
        decode_reduced(png_bytes(Image.new("L", (40_000, 10))), "thin.png", max_side=768)
    assert decode_reduced(png_bytes(Image.new("L", (40_000, 10)))).image.size == (40_000, 10)  # whole-size decodes are the caller's


@pytest.mark.parametrize("side", [50, 1500])
def test_sixteen_bit_grey_is_scaled_to_eight_bits_exactly_and_reduced_first(side):
    ramp = (np.arange(side * side, dtype=np.uint32) * 65535 // (side * side - 1)).astype(np.uint16).reshape(side, side)
    data = png_bytes(Image.fromarray(ramp))
    full = np.asarray(decode_reduced(data).image)
    expected = (ramp.astype(np.int64) * 255 + 32767) // 65535  # v·255/65535, rounded half up
    assert full.shape == (side, side, 3) and np.array_equal(full[..., 0], expected.astype(np.uint8))
    small = decode_reduced(data, max_side=768)
    assert max(small.image.size) == min(side, 768) and small.image.mode == "RGB"


def test_large_decodes_take_the_callers_slot():

    class Counting:
        def __init__(self):
            self.entered = 0

        def __enter__(self):
            self.entered += 1

        def __exit__(self, *exc):
            return False

    slot = Counting()
    decode_reduced(png_bytes(Image.new("L", (100, 100))), large_decodes=slot)  # 10 KB: not large
    assert slot.entered == 0
    decode_reduced(png_bytes(Image.new("RGB", (3000, 3000))), large_decodes=slot, max_side=768)  # 34 MiB
    assert slot.entered == 1
