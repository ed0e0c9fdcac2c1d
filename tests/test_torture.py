"""Crash safety: kill -9 the ingest at random moments; the resumed library equals a clean run's.

The checks live in bench/torture.py (the full run: 10 kills on 150 files); here a smaller run, and
a check that the checker itself sees what it must see.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from facefind.index import FaissFlatIndex

BENCH = Path(__file__).resolve().parents[1] / "bench" / "torture.py"
_spec = importlib.util.spec_from_file_location("torture", BENCH)
torture = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torture)


@pytest.mark.slow
def test_an_ingest_killed_again_and_again_ends_as_a_clean_run_ends(tmp_path):
    seed = int(os.environ.get("FACEFIND_TORTURE_SEED", time.time()))  # new kill moments each run; set it to replay
    torture.make_images(tmp_path / "photos", 40, seed)
    report = torture.torture(tmp_path / "photos", tmp_path, kills=3, seed=seed)
    assert report["kills_landed"] >= 2, report["trials"]
    assert not any(report["problems"].values()), f"seed {seed}: {report['problems']}"
    assert report["faces"] > 40


def test_the_checks_see_damage(facefind, photo_folder, tmp_path):
    """The torture's comparison and orphan checks fail when they should (so its pass means something)."""
    facefind.index([photo_folder], workers=1)
    library = facefind.library_path
    assert torture.check_library(library) == []
    copy = tmp_path / "copy"
    shutil.copytree(library, copy)
    assert torture.compare(torture.snapshot(library), torture.snapshot(copy)) == []

    (copy / "thumbs" / "stray.jpg").write_bytes(b"no row refers to me")
    (copy / "index" / "faiss.index.tmp123").write_bytes(b"left by a crash")
    thumbnail = next(p for p in (copy / "thumbs").rglob("*.jpg") if p.name != "stray.jpg")
    thumbnail.write_bytes(b"damaged")
    problems = torture.check_library(copy)
    assert any("orphan thumbnail" in p for p in problems) and any("temporary files" in p for p in problems)
    assert any("thumbnail differs" in d for d in torture.compare(torture.snapshot(library), torture.snapshot(copy)))

    original = FaissFlatIndex.load(copy / "index" / "faiss.index")
    ids = original.ids()
    swapped = FaissFlatIndex(original.dim)  # the same ids, each with another face's vector
    swapped.add(ids, np.roll(original.vectors(ids), 1, axis=0))
    swapped.save(copy / "index" / "faiss.index")
    assert any("vectors differ" in p for p in torture.check_library(copy))
