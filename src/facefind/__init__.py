"""facefind: self-hosted face search over the photos you hold, with honest scores.

The public entry point is :class:`facefind.api.FaceFind`; the CLI, the HTTP
service and the web UI are thin faces over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from facefind.errors import FaceFindError

if TYPE_CHECKING:
    from facefind.api import FaceFind

__all__ = ["FaceFind", "FaceFindError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """Import the API lazily so worker processes that only run the pipeline stay light."""
    if name == "FaceFind":
        from facefind.api import FaceFind

        return FaceFind
    raise AttributeError(name)
