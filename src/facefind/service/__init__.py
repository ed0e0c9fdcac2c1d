"""`facefind serve`: the HTTP API (/api/v1) and the web UI, one more face over :class:`facefind.api.FaceFind`."""

from facefind.service.app import create_app
from facefind.service.settings import ServiceSettings

__all__ = ["ServiceSettings", "create_app"]
