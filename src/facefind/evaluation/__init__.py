"""Evaluation protocols over labelled data (used by bench/ and the data-backed tests).

Nothing here is needed to index or search; it measures how well that works.
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir() -> Path | None:
    """``$FACEFIND_DATA``, else ``../shared/data`` beside the repository, if it exists."""
    candidates = [Path(os.environ["FACEFIND_DATA"])] if "FACEFIND_DATA" in os.environ else []
    candidates.append(Path(__file__).resolve().parents[3].parent / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return None
