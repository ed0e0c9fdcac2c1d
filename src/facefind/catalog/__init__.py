"""The catalog: what was seen where. The source of truth the vector index is rebuilt from."""

from pathlib import Path

from facefind.catalog.base import (
    Catalog,
    FaceRecord,
    MediaOutcome,
    MediaRecord,
    NewFace,
    NewTrack,
    TrackRecord,
)
from facefind.catalog.sqlite import SqliteCatalog

__all__ = [
    "Catalog", "FaceRecord", "MediaOutcome", "MediaRecord", "NewFace", "NewTrack", "SqliteCatalog", "TrackRecord",
    "is_server_catalog", "open_catalog",
]
SERVER_SCHEMES = ("postgresql://", "postgres://")


def is_server_catalog(spec: str | Path) -> bool:
    """True for a PostgreSQL URL, False for a path to an SQLite file."""
    return isinstance(spec, str) and spec.startswith(SERVER_SCHEMES)


def open_catalog(spec: str | Path, writable: bool = True) -> Catalog:
    """The catalog at ``spec``: a ``postgresql://`` URL (``?schema=NAME`` picks the library's schema) or an SQLite
    file path. The server backend is imported only when asked for, so SQLite users need no PostgreSQL driver."""
    if is_server_catalog(spec):
        from facefind.catalog.postgres import PostgresCatalog

        return PostgresCatalog(str(spec), writable=writable)
    return SqliteCatalog(Path(spec), writable=writable)
