"""Uploaded images: a size cap, the format read from the bytes, the decompression-bomb guard.

An upload stays in memory (or Starlette's spool file in the system temp folder) and is handed to
the library API as bytes: it is never written into the library or its media folders.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from fastapi import Request, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from starlette.types import ASGIApp, Receive, Scope, Send

from facefind.api import FaceFind
from facefind.errors import FaceFindError, UnreadableMediaError
from facefind.service.problems import PROBLEM_TYPE, problem_body
from facefind.service.settings import ServiceSettings


def read_image_upload(upload: UploadFile, settings: ServiceSettings) -> bytes:
    """The upload's bytes once they pass the size cap and turn out to be an image of allowed size."""
    data = upload.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise FaceFindError(
            f"{upload.filename or 'the upload'} is over the {settings.max_upload_bytes:,}-byte upload limit",
            reason="too_large",
        )
    sniff_image(data, settings.max_pixels)
    return data


def sniff_image(data: bytes, max_pixels: int) -> str:
    """The image format read from the bytes' header (never the file name or Content-Type).

    Only the header is parsed, so a decompression bomb is refused before any pixel is decoded.
    """
    if not data:
        raise UnreadableMediaError("the upload is empty", reason="empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height, image_format = image.width, image.height, image.format
    except UnidentifiedImageError:
        raise UnreadableMediaError("the upload is not a recognised image format", reason="not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnreadableMediaError(str(error), reason="too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError) as error:
        raise UnreadableMediaError(f"corrupt image header: {error}", reason="corrupt") from None
    if width * height > max_pixels:
        raise UnreadableMediaError(
            f"image is {width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,}",
            reason="too_large",
        )
    return image_format or "unknown"


def probe_from(
    upload: UploadFile | None, path: str | None, facefind: FaceFind, settings: ServiceSettings, label: str = "probe"
) -> Path | bytes:
    """An uploaded image, or a server path inside the allowed roots: exactly one of them."""
    if (upload is None) == (not path):
        raise FaceFindError(f"give the {label} as an uploaded file or as a server path, not both or neither",
                            reason="bad_argument")
    if upload is not None:
        return read_image_upload(upload, settings)
    return facefind.allowed_path(path, settings.allow_roots)


class BodySizeLimit:
    """Refuses a request whose declared body is over the limit before reading any of it (413)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send, int(declared))
                return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, declared: int) -> None:
        body = problem_body(413, "too_large", f"the request body of {declared:,} bytes is over the limit of"
                            f" {self.max_bytes:,} bytes", Request(scope).url.path)
        await JSONResponse(body, status_code=413, media_type=PROBLEM_TYPE)(scope, receive, send)
