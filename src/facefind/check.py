"""`facefind check [--repair]`: prove the library is whole, and rebuild what can be rebuilt.

Checked: the catalog file (SQLite ``integrity_check``), every stored embedding (a unit vector of
the model's size), the index files against the catalog (checksums, ids, every vector), every
thumbnail (exists and decodes), and files nothing refers to (thumbnails of no face, index
temporaries). Repair uses the cheapest source that suffices: the index is rebuilt from the
catalog alone; a thumbnail is cut again from its source file with the stored landmarks (no
re-detection); a damaged embedding cannot be recomputed without the pipeline, so its file's
faces are dropped and the file marked ``failed`` for the next ``facefind index`` to re-analyse.
"""

from __future__ import annotations

from itertools import groupby
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel

from facefind.catalog import FaceRecord
from facefind.errors import FaceFindError
from facefind.files import file_sha256, path_from_text
from facefind.library import Library, damaged_rows
from facefind.pipeline.align import align_face
from facefind.pipeline.decode import decode_image, encode_jpeg
from facefind.pipeline.track import FRAME_THUMBNAIL_SIDE
from facefind.pipeline.video import read_frame_at

MAX_LISTED = 20  # problems of one kind listed one by one; the rest are counted

Part = Literal["catalog", "embeddings", "index", "thumbnails", "orphans"]


class CheckProblem(BaseModel):
    """One thing found wrong, and whether ``--repair`` fixed it."""

    part: Part
    detail: str
    repaired: bool = False


class CheckReport(BaseModel):
    """What `facefind check` found; ``healthy`` is false while any problem is left unrepaired (exit code 1)."""

    library: str
    repair: bool
    healthy: bool
    checked: dict[str, int]
    problems: list[CheckProblem]


def check_library(library: Library, repair: bool, max_pixels: int) -> CheckReport:
    """Run every check on an open library (writable when ``repair``)."""
    problems: list[CheckProblem] = []
    checked: dict[str, int] = {}
    problems += _check_catalog(library, repair)
    problems += _check_embeddings(library, repair, checked)
    problems += _check_index(library, repair)
    problems += _check_thumbnails(library, repair, max_pixels, checked)
    problems += _check_orphans(library, repair, checked)
    return CheckReport(
        library=str(library.root), repair=repair, healthy=all(p.repaired for p in problems),
        checked=checked, problems=problems,
    )


def unopenable_report(root: Path, repair: bool, error: FaceFindError) -> CheckReport:
    """The report for a catalog too damaged to open: nothing else can be checked or rebuilt from it."""
    return CheckReport(
        library=str(root), repair=repair, healthy=False, checked={},
        problems=[CheckProblem(part="catalog", detail=f"{error} (cannot be repaired here: restore a backup)")],
    )


def _listed(part: Part, found: list[tuple[str, bool]]) -> list[CheckProblem]:
    """(detail, repaired) pairs as problems: the first few one by one, the rest counted by outcome."""
    shown = [CheckProblem(part=part, detail=detail, repaired=repaired) for detail, repaired in found[:MAX_LISTED]]
    for repaired in (True, False):
        more = sum(1 for _, fixed in found[MAX_LISTED:] if fixed == repaired)
        if more:
            shown.append(CheckProblem(part=part, detail=f"... and {more} more like these", repaired=repaired))
    return shown


def _check_catalog(library: Library, repair: bool) -> list[CheckProblem]:
    found = library.catalog.integrity_problems()
    repaired = False
    if found and repair:  # damaged SQL index b-trees are rebuilt from their tables
        library.catalog.rebuild_sql_indexes()
        repaired = not library.catalog.integrity_problems()
    return _listed("catalog", [(f"integrity_check: {line}", repaired) for line in found])


def _check_embeddings(library: Library, repair: bool, checked: dict[str, int]) -> list[CheckProblem]:
    damaged: set[int] = set()
    checked["embeddings"] = 0
    for masked in (False, True):
        for ids, vectors in library.catalog.iter_embeddings(library.model_id, masked=masked, dim=library.dim):
            checked["embeddings"] += len(ids)
            damaged.update(int(i) for i in ids[damaged_rows(vectors, library.dim)])
    if not damaged:
        return []
    records = library.catalog.faces(sorted(damaged))
    if repair:
        library.drop_damaged_faces(sorted(damaged))
    action = ("dropped; the file is marked failed (damaged_in_catalog) and the next `facefind index` re-analyses it"
              if repair else "run `facefind check --repair`")
    return _listed("embeddings", [
        (f"face {face_id} of {records[face_id].path}: stored embedding is damaged; {action}", repair)
        for face_id in sorted(damaged) if face_id in records
    ])


def _check_index(library: Library, repair: bool) -> list[CheckProblem]:
    on_disk = library.index_problems()
    found = list(dict.fromkeys(([library.index_problem] if library.index_problem else []) + on_disk))
    if repair and on_disk:
        library.rebuild_index()
    remaining = library.index_problems() if repair else found
    action = "rebuilt from the catalog" if repair else "`facefind check --repair` rebuilds it from the catalog"
    return [CheckProblem(part="index", detail=f"{problem}; {action}", repaired=repair and not remaining)
            for problem in found]


def _thumbnail_readable(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _check_thumbnails(library: Library, repair: bool, max_pixels: int, checked: dict[str, int]) -> list[CheckProblem]:
    """Every thumbnail a face or track names must exist and decode; repair cuts it again from its source."""
    seen: set[str] = set()  # byte-identical files share thumbnails: check each once
    found: list[tuple[str, bool]] = []
    for path, group in groupby(library.catalog.iter_faces(), key=lambda face: face.path):
        faces = list(group)
        names = {face.thumbnail for face in faces if face.thumbnail}
        names |= {face.track.frame_thumbnail for face in faces if face.track and face.track.frame_thumbnail}
        bad = {name for name in names - seen if not _thumbnail_readable(library.thumbs_dir / name)}
        seen |= names
        if not bad:
            continue
        problem = f"{path}: {len(bad)} thumbnail(s) missing or damaged"
        if not repair:
            found.append((f"{problem}; `facefind check --repair` cuts them again from the source file", False))
            continue
        try:
            library.write_thumbnails(_cut_again(faces, bad, max_pixels), referenced=True)
            found.append((f"{problem}; cut again from the source file", True))
        except (FaceFindError, OSError) as error:
            found.append((f"{problem}; cannot rebuild them: {error}", False))
    checked["thumbnails"] = len(seen)
    return _listed("thumbnails", found)


def _cut_again(faces: list[FaceRecord], wanted: set[str], max_pixels: int) -> dict[str, bytes]:
    """The wanted thumbnails of one file, from the file itself and the stored landmarks and boxes."""
    source = Path(path_from_text(faces[0].path))  # the catalog keeps odd (non-UTF-8) names in text form
    if not source.is_file():
        raise FaceFindError(f"the source file {source} is gone", reason="source_gone")
    if faces[0].sha256 and file_sha256(source) != faces[0].sha256:
        raise FaceFindError(f"{source} changed since it was indexed; run `facefind index` on it", reason="source_changed")
    thumbnails: dict[str, bytes] = {}
    if faces[0].frame_time_s is None:  # a photo: one decode for every face
        pixels = decode_image(source, max_pixels=max_pixels).pixels
        for face in faces:
            if face.thumbnail in wanted:
                thumbnails[face.thumbnail] = encode_jpeg(align_face(pixels, np.asarray(face.landmarks, np.float32)))
        return thumbnails
    frames: dict[float, np.ndarray] = {}

    def frame_at(time_s: float) -> np.ndarray:
        if time_s not in frames:
            frames[time_s] = read_frame_at(source, time_s)
        return frames[time_s]

    for face in faces:
        if face.thumbnail in wanted and face.frame_time_s is not None:
            thumbnails[face.thumbnail] = encode_jpeg(align_face(frame_at(face.frame_time_s),
                                                                np.asarray(face.landmarks, np.float32)))
    for track_faces in _by_track(faces):
        track = track_faces[0].track
        if track is not None and track.frame_thumbnail in wanted:
            best = min(track_faces, key=lambda face: abs((face.frame_time_s or 0.0) - track.best_time_s))
            thumbnails[track.frame_thumbnail] = boxed_frame(frame_at(track.best_time_s), best.box)
    return thumbnails


def _by_track(faces: Iterable[FaceRecord]) -> list[list[FaceRecord]]:
    tracks: dict[int, list[FaceRecord]] = {}
    for face in faces:
        if face.track is not None:
            tracks.setdefault(face.track.id, []).append(face)
    return list(tracks.values())


def boxed_frame(pixels: np.ndarray, box: list[float]) -> bytes:
    """A video track's best frame, scaled like ingest's stored frames, with the face boxed."""
    scale = min(1.0, FRAME_THUMBNAIL_SIDE / max(pixels.shape[:2]))
    image = Image.fromarray(pixels)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BOX)
    ImageDraw.Draw(image).rectangle([v * scale for v in box], outline=(255, 200, 0), width=3)
    return encode_jpeg(image, quality=85)


def _check_orphans(library: Library, repair: bool, checked: dict[str, int]) -> list[CheckProblem]:
    orphans = library.orphan_files()
    checked["orphan_files"] = len(orphans)
    if repair:
        library.delete_orphans(orphans)
    action = "deleted" if repair else "`facefind check --repair` deletes it"
    return _listed("orphans", [(f"{path.relative_to(library.root)}: nothing refers to it; {action}", repair)
                               for path in orphans])
