import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facefind.errors import UnreadableMediaError
from facefind.pipeline.decode import decode_image


def _write(path: Path, image: Image.Image, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.fixture
def gradient() -> Image.Image:
    x = np.linspace(0, 255, 64, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (48, 1))] * 3, axis=2))


@pytest.mark.parametrize("suffix,kwargs", [(".jpg", {}), (".png", {}), (".webp", {"lossless": True}), (".bmp", {}), (".tif", {}), (".gif", {})])
def test_common_formats_decode_to_rgb8(tmp_path, gradient, suffix, kwargs):
    decoded = decode_image(_write(tmp_path / f"a{suffix}", gradient, **kwargs))
    assert decoded.pixels.shape == (48, 64, 3)
    assert decoded.pixels.dtype == np.uint8


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.full((10, 10), 40000, dtype=np.uint16)
    path = _write(tmp_path / "deep.png", Image.fromarray(values))
    pixels = decode_image(path).pixels
    assert abs(int(pixels[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black
    path = _write(tmp_path / "alpha.png", Image.fromarray(rgba, "RGBA"))
    assert decode_image(path).pixels.min() == 255


def test_exif_orientation_is_honoured(tmp_path, gradient):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    path = _write(tmp_path / "rotated.jpg", gradient, exif=exif)
    assert decode_image(path).pixels.shape == (64, 48, 3)


def test_exif_capture_time_is_read(tmp_path, gradient):
    exif = Image.Exif()
    exif[0x0132] = "2021:05:06 07:08:09"
    assert decode_image(_write(tmp_path / "t.jpg", gradient, exif=exif)).exif_time == "2021-05-06T07:08:09"


def test_gif_first_frame(tmp_path, gradient):
    second = Image.new("RGB", gradient.size, (255, 0, 0))
    path = tmp_path / "anim.gif"
    gradient.save(path, save_all=True, append_images=[second])
    assert decode_image(path).pixels[0, 0, 0] < 50  # the gradient's dark corner, not the red frame


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "empty"), (b"this is not an image at all", "not_an_image")],
)
def test_bad_bytes_get_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(UnreadableMediaError) as caught:
        decode_image(path)
    assert caught.value.reason == reason


def test_truncated_jpeg_is_corrupt(tmp_path, sample_rgb):
    buffer = io.BytesIO()
    Image.fromarray(sample_rgb).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UnreadableMediaError) as caught:
        decode_image(path)
    assert caught.value.reason == "corrupt"


def test_pixel_limit_refuses_bombs_before_decoding(tmp_path, gradient):
    path = _write(tmp_path / "big.png", gradient)
    with pytest.raises(UnreadableMediaError) as caught:
        decode_image(path, max_pixels=1000)
    assert caught.value.reason == "too_large"
    assert "--max-pixels" in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_permission_denied(tmp_path, gradient):
    path = _write(tmp_path / "locked.png", gradient)
    path.chmod(0)
    with pytest.raises(UnreadableMediaError) as caught:
        decode_image(path)
    assert caught.value.reason == "permission_denied"


def _float_gradient() -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (48, 1))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda g: Image.fromarray(g, mode="F"), id="grey 0-1"),
        pytest.param(lambda g: Image.fromarray(g * 255.0, mode="F"), id="grey 0-255"),
        pytest.param(lambda g: Image.fromarray(g * 5100.0 - 100.0, mode="F"), id="grey HDR -100..5000"),
        pytest.param(lambda g: np.stack([g] * 3, axis=2), id="RGB 0-1"),
    ],
)
def test_float_tiffs_are_scaled_by_their_range_not_black(tmp_path, make):
    import tifffile

    path = tmp_path / "float.tif"
    made = make(_float_gradient())
    if isinstance(made, Image.Image):
        made.save(path)
    else:
        tifffile.imwrite(path, made, photometric="rgb")  # Pillow cannot read RGB float at all
    pixels = decode_image(path).pixels
    assert pixels.shape == (48, 64, 3)
    assert pixels[:, 0].max() <= 1 and pixels[:, -1].min() >= 254  # the full range, dark to light


def test_our_pixel_limit_is_the_only_limit(tmp_path):
    """Pillow's own 89.5 MP bomb limit used to refuse pictures below --max-pixels."""
    path = tmp_path / "large.png"
    Image.new("1", (9500, 9500)).save(path)  # 90.25 MP, a few KB on disk
    assert decode_image(path, max_pixels=100_000_000).pixels.shape == (9500, 9500, 3)
    with pytest.raises(UnreadableMediaError) as caught:
        decode_image(path, max_pixels=90_000_000)
    assert caught.value.reason == "too_large"


def test_malformed_exif_keeps_the_picture_and_its_orientation(tmp_path, gradient):
    """A broken tag beside the orientation made Pillow's EXIF rewrite raise; the turn must still happen."""
    import struct

    entries = [(0x0112, 3, 1, b"\x06\x00\x00\x00"), (0x010F, 5, 1, b"\x00\x00\x00\x00")]  # Make as RATIONAL
    block = b"II*\x00\x08\x00\x00\x00" + struct.pack("<H", len(entries))
    block += b"".join(struct.pack("<HHI", *entry[:3]) + entry[3] for entry in entries) + b"\x00" * 68
    buffer = io.BytesIO()
    gradient.save(buffer, format="JPEG")
    data = buffer.getvalue()
    segment = b"Exif\x00\x00" + block
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(segment) + 2) + segment + data[2:]
    assert decode_image(data).pixels.shape == (64, 48, 3)
