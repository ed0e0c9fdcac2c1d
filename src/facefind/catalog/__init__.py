"""The catalog: what was seen where. The source of truth the vector index is rebuilt from."""

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

__all__ = ["Catalog", "FaceRecord", "MediaOutcome", "MediaRecord", "NewFace", "NewTrack", "SqliteCatalog", "TrackRecord"]
