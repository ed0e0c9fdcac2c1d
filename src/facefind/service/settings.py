"""Everything the service is configured with, in one place (the `facefind serve` options)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from facefind.pipeline.decode import DEFAULT_MAX_PIXELS

DEFAULT_MAX_UPLOAD_BYTES = 25 * 1024 * 1024


class ServiceSettings(BaseModel):
    """How `facefind serve` runs: where it listens, which library it serves, what it may read."""

    model_config = ConfigDict(frozen=True)

    library: Path | None = Field(None, description="Library folder (default: $FACEFIND_LIBRARY or the user's data folder)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    allow_roots: tuple[Path, ...] = Field(
        (), description="Server folders that may be indexed or read as probes; nothing else is (403)"
    )
    max_upload_bytes: int = Field(DEFAULT_MAX_UPLOAD_BYTES, ge=1, description="Largest uploaded image (413 above)")
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, description="Decompression-bomb guard, as for ingest")
    index_workers: int = Field(0, ge=0, description="Worker processes for index jobs (0 = one per core)")
    searches_per_hour: int = Field(600, ge=1, description="Searches and verifies per user or API key per hour (429 above)")
    login_max_failures: int = Field(5, ge=1, description="Failed logins (per user, per address) before a lockout")
    lockout_s: float = Field(30.0, gt=0, description="First lockout; each further failure doubles it (up to an hour)")
    session_hours: float = Field(12.0, gt=0, description="How long a login lasts")

    @property
    def max_request_bytes(self) -> int:
        """A request may carry two images (verify) and a few form fields."""
        return 2 * self.max_upload_bytes + 64 * 1024

    def is_loopback(self) -> bool:
        """Whether only this machine can connect (cookies then travel over plain http only on this machine)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
