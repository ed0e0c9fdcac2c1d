"""Decode an image file into an 8-bit RGB array, refusing what cannot be trusted.

Handles the formats people actually hold (JPEG, PNG incl. 16-bit and alpha,
WebP, BMP, TIFF, GIF first frame), honours EXIF orientation, and turns every
failure into an :class:`UnreadableMediaError` with a reason code instead of a
traceback or, worse, a decompression bomb eating the machine's memory.

The pixel limit is ours (``max_pixels``), checked from the header before any pixel
is decoded; Pillow's fixed bomb limit (89.5 MP) is switched off so it cannot
override it. Float TIFFs Pillow cannot read (RGB float) are read with tifffile.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from facefind.errors import UnreadableMediaError

# decode_image enforces max_pixels from the header itself; every untrusted image goes through it.
Image.MAX_IMAGE_PIXELS = None
# tifffile logs what it finds wrong in a file; the reason we record says it once, in our words.
logging.getLogger("tifffile").addHandler(logging.NullHandler())
logging.getLogger("tifffile").propagate = False

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
DEFAULT_MAX_PIXELS = 100_000_000
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132
_EXIF_IFD = 0x8769
_EXIF_ORIENTATION = 0x0112
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose,
# which also rewrites the EXIF block and so crashes on malformed tags we do not need).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class DecodedImage:
    """Pixels (H x W x 3, uint8, RGB, upright) plus what we learnt about the file."""

    pixels: np.ndarray
    format: str
    exif_time: str | None

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def is_image_path(path: Path) -> bool:
    """Whether ``path`` has an image extension we try to decode."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def decode_image(source: Path | bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``source`` (a path or the file's bytes) to upright 8-bit RGB.

    Only the header is read before the size check, so a huge or hostile file costs
    little. Raises UnreadableMediaError with reason ``empty``, ``not_a_file``, ``not_an_image``,
    ``unsupported_format``, ``corrupt``, ``too_large`` or ``permission_denied``;
    no other exception escapes, whatever the bytes.
    """
    try:
        if isinstance(source, Path):
            info = source.stat()
            if not stat.S_ISREG(info.st_mode):  # opening a FIFO would block forever
                raise UnreadableMediaError("not a regular file (a folder, FIFO or device)", reason="not_a_file")
            if info.st_size == 0:
                raise UnreadableMediaError("file is empty", reason="empty")
        try:
            with Image.open(source if isinstance(source, Path) else _bytes_io(source)) as image:
                _check_pixels(image.width, image.height, max_pixels)
                exif_time = _exif_time(image)
                image_format = image.format or "unknown"
                image.seek(0)
                pixels = _to_rgb8(_upright(image))
        except UnidentifiedImageError:
            if not _is_tiff(source):
                raise
            pixels, image_format, exif_time = _decode_tiff(source, max_pixels), "TIFF", None
    except UnreadableMediaError:
        raise
    except PermissionError as error:
        raise UnreadableMediaError(f"permission denied: {error}", reason="permission_denied") from error
    except UnidentifiedImageError as error:
        raise UnreadableMediaError("not a recognised image format", reason="not_an_image") from error
    except NotImplementedError as error:  # e.g. a DDS or TIFF variant Pillow knows but cannot decode
        raise UnreadableMediaError(f"unsupported image variant: {error}", reason="unsupported_format") from error
    except MemoryError as error:
        raise UnreadableMediaError("not enough memory to decode this image", reason="too_large") from error
    except Exception as error:  # any other decoder failure is damage in this one file, never a crash
        raise UnreadableMediaError(
            f"corrupt or truncated image: {type(error).__name__}: {error}", reason="corrupt"
        ) from error
    return DecodedImage(pixels=pixels, format=image_format, exif_time=exif_time)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise UnreadableMediaError(
            f"image is {width}x{height} = {width * height:,} pixels,"
            f" above the limit of {max_pixels:,} (raise --max-pixels to allow it)",
            reason="too_large",
        )


def _upright(image: Image.Image) -> Image.Image:
    """The image turned as its EXIF orientation says; a malformed orientation is ignored."""
    try:
        orientation = image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # malformed EXIF must not lose the picture
        orientation = None
    method = _UPRIGHT.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def _is_tiff(source: Path | bytes) -> bool:
    if isinstance(source, Path):
        with open(source, "rb") as handle:
            head = handle.read(4)
    else:
        head = source[:4]
    return head in _TIFF_MAGIC


def _decode_tiff(source: Path | bytes, max_pixels: int) -> np.ndarray:
    """A float TIFF Pillow cannot read (RGB 32-bit float), read with tifffile after a header size check.

    Other TIFFs Pillow refuses stay refused: tifffile would decode some damaged ones to noise.
    """
    import io

    import tifffile  # here: only a float TIFF needs it, and it costs every start ~0.04 s

    with tifffile.TiffFile(source if isinstance(source, Path) else io.BytesIO(source)) as tiff:
        page = tiff.pages[0]
        if not isinstance(page, tifffile.TiffPage) or page.dtype is None or page.dtype.kind != "f":
            raise UnidentifiedImageError("a TIFF variant that cannot be decoded")
        _check_pixels(page.imagewidth, page.imagelength, max_pixels)
        values = page.asarray()
        axes = page.axes
    if "S" in axes and axes.index("S") < axes.index("Y"):  # planar: samples first
        values = np.moveaxis(values, axes.index("S"), -1)
    values = values.reshape(page.imagelength, page.imagewidth, -1)
    channels = values[:, :, :3] if values.shape[2] >= 3 else np.repeat(values[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(_scale_to_uint8(channels))


def encode_jpeg(pixels: np.ndarray | Image.Image, quality: int = 90) -> bytes:
    """JPEG bytes of RGB pixels (thumbnails, stored frames)."""
    import io

    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _bytes_io(data: bytes):
    import io

    if not data:
        raise UnreadableMediaError("no bytes given", reason="empty")
    return io.BytesIO(data)


def _to_rgb8(image: Image.Image) -> np.ndarray:
    """Any Pillow mode to contiguous uint8 RGB; alpha is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        grey = _scale_to_uint8(np.asarray(image))
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    rgb.load()
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """High-depth samples to 8 bits by the range they actually use.

    Float images are usually 0-1 (sometimes 0-255 or HDR); integer ones 0-255 or 0-65535.
    Values beyond every usual range are stretched from their minimum to their maximum, so
    no picture comes out black (32-bit float TIFFs did, scaled as if 0-65535).
    """
    is_float = np.issubdtype(values.dtype, np.floating)
    samples = np.nan_to_num(values.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(samples.min(initial=0)), float(samples.max(initial=0))
    if low >= 0 and high <= 1.0 and is_float:
        low, high = 0.0, 1.0
    elif low >= 0 and high <= 65535:
        low, high = 0.0, (255.0 if high <= 255 else 65535.0)
    span = high - low if high > low else 1.0
    return np.clip((samples - low) / span * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _exif_time(image: Image.Image) -> str | None:
    """Capture time from EXIF (DateTimeOriginal, else DateTime) as ISO 8601, if present and sane."""
    try:
        exif = image.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL) or exif.get(_EXIF_DATETIME)
        if not raw:
            return None
        return datetime.strptime(str(raw).strip("\x00 "), "%Y:%m:%d %H:%M:%S").isoformat()
    except Exception:  # EXIF in the wild is often malformed; a missing time is not an error
        return None
