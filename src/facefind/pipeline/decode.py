"""Decode an image file into an 8-bit RGB array, refusing what cannot be trusted.

Handles the formats people actually hold (JPEG, PNG incl. 16-bit and alpha,
WebP, BMP, TIFF, GIF first frame), honours EXIF orientation, and turns every
failure into an :class:`UnreadableMediaError` with a reason code instead of a
traceback or, worse, a decompression bomb eating the machine's memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facefind.errors import UnreadableMediaError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
)
DEFAULT_MAX_PIXELS = 100_000_000
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_DATETIME = 0x0132
_EXIF_IFD = 0x8769


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

    Raises UnreadableMediaError with reason ``empty``, ``not_an_image``,
    ``corrupt``, ``too_large`` or ``permission_denied``.
    """
    try:
        if isinstance(source, Path) and source.stat().st_size == 0:
            raise UnreadableMediaError(f"{source}: file is empty", reason="empty")
        opened = source if isinstance(source, Path) else _bytes_io(source)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(opened) as image:
                if image.width * image.height > max_pixels:
                    raise UnreadableMediaError(
                        f"image is {image.width}x{image.height} = {image.width * image.height:,} pixels,"
                        f" above the limit of {max_pixels:,} (raise --max-pixels to allow it)",
                        reason="too_large",
                    )
                exif_time = _exif_time(image)
                image_format = image.format or "unknown"
                image.seek(0)
                upright = ImageOps.exif_transpose(image)
                pixels = _to_rgb8(upright)
    except UnreadableMediaError:
        raise
    except PermissionError as error:
        raise UnreadableMediaError(f"permission denied: {error}", reason="permission_denied") from error
    except UnidentifiedImageError as error:
        raise UnreadableMediaError("not a recognised image format", reason="not_an_image") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableMediaError(str(error), reason="too_large") from error
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise UnreadableMediaError(f"corrupt or truncated image: {error}", reason="corrupt") from error
    return DecodedImage(pixels=pixels, format=image_format, exif_time=exif_time)


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
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        grey = np.clip(values / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    rgb = image.convert("RGB")
    rgb.load()
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


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
