"""Where a library keeps its people (and watchlists); plain strings, so a search can ask without SQLAlchemy."""

from __future__ import annotations

from pathlib import Path

from facefind.catalog import is_server_catalog

PEOPLE_DB = "people.sqlite3"


def default_url(library: Path) -> str:
    return f"sqlite:///{library / PEOPLE_DB}"


def library_url(library: Path, catalog: str | Path) -> str:
    """Where a library keeps its people (and watchlists): with a PostgreSQL catalog, the catalog's own URL (its
    server and schema), so replicas on several machines share them; else people.sqlite3 in the library folder."""
    return catalog if is_server_catalog(catalog) else default_url(library)
