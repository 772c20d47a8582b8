import pytest
from PIL import Image

from core.errors import ImageTooLarge, InvalidImage
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
