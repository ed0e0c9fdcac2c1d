"""Errors facefind raises on purpose, each with a short machine-readable reason.

The reason codes double as the "why was this file not indexed" categories that
`facefind stats` counts (in the spirit of Rekognition's UnindexedFaces reasons).
"""

from __future__ import annotations


class FaceFindError(Exception):
    """Base for every error facefind reports to a user instead of a traceback."""

    reason = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class UnreadableMediaError(FaceFindError):
    """The file could not be turned into pixels (corrupt, empty, not an image, too large...)."""

    reason = "unreadable"


class NoFaceError(FaceFindError):
    """An image that had to contain a face (a probe) has none."""

    reason = "no_face"


class ModelIntegrityError(FaceFindError):
    """A model file is missing or its SHA-256 does not match the pinned value."""

    reason = "model_integrity"


class LibraryBusyError(FaceFindError):
    """Another process holds the write lock on the library."""

    reason = "busy"


class NotFoundError(FaceFindError):
    """A face, file or match id the user named is not in the catalog."""

    reason = "not_found"


class DamagedLibraryError(FaceFindError):
    """Stored data failed a check: a damaged catalog file, a corrupted stored embedding, an unreadable index."""

    reason = "damaged_library"


class DiskFullError(FaceFindError):
    """A write to the library failed for lack of space; what was committed before it is intact."""

    reason = "disk_full"
