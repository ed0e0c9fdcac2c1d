"""Erasure erases: after `remove`, no byte of the file's faces, path or hash is left in the library folder."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np

from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def _library_bytes(library: Path) -> bytes:
    """Every file in the library folder: catalog, WAL, index files, thumbnails, state, audit log and anchors."""
    return b"".join(path.read_bytes() for path in sorted(library.rglob("*")) if path.is_file())


def audit_crops(facefind, search_ids: set[int]) -> dict[str, bytes]:
    """The audit log's probe crops of these searches, as stored (base64 in JSON), past the common JPEG header."""
    crops = {}
    for entry in facefind.audit_log.select():
        if entry["action"] == "search" and entry["details"]["search_id"] in search_ids:
            crop = entry["details"]["probe"]["crop_jpeg_base64"].encode()
            crops[f"audit crop of search {entry['details']['search_id']}"] = crop[len(crop) // 2: len(crop) // 2 + 64]
    return crops


def _traces(library: Path, path: Path) -> dict[str, bytes]:
    """Byte patterns only this file's presence explains: its faces' stored vectors, the search log's probe
    vectors when it was the probe, its path and its SHA-256."""
    with sqlite3.connect(library / "catalog.sqlite3") as db:
        vectors = db.execute(
            "SELECT faces.embedding, faces.masked_embedding FROM faces JOIN media ON media.id = faces.media_id"
            " WHERE media.path = ?", (str(path),)).fetchall()
        probes = db.execute(
            "SELECT embedding FROM searches WHERE json_extract(probe, '$.path') = ?", (str(path.resolve()),)).fetchall()
    traces = {f"face {i} {kind}": blob[:64] for i, row in enumerate(vectors)
              for kind, blob in zip(("embedding", "masked"), row) if blob}
    traces.update({f"probe {i}": row[0][:64] for i, row in enumerate(probes)})
    traces["path"] = str(path).encode()
    traces["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest().encode()
    return traces


def test_a_removed_photo_leaves_no_trace_in_the_library(facefind, photo_folder):
    removed, kept = photo_folder / "players.jpg", photo_folder / "gdp.jpg"
    facefind.index([photo_folder], workers=1)
    probes = [facefind.search(removed, show_all=True, purpose=PURPOSE).search_id
              for _ in range(3)]  # the photo was a probe: search log and audit log hold its path, hash, vector, crop
    facefind.search(probe_sample(), show_all=True, purpose=PURPOSE)
    library = facefind.library_path
    traces = {**_traces(library, removed), **audit_crops(facefind, set(probes))}
    searching = sqlite3.connect(library / "catalog.sqlite3")  # another process (a search) has the catalog open
    searching.execute("SELECT COUNT(*) FROM faces").fetchone()
    assert sum(key.startswith("probe") for key in traces) == 3 and sum(key.startswith("face") for key in traces) > 2
    before = _library_bytes(library)
    assert all(pattern in before for pattern in traces.values())  # the scan can see them

    facefind.remove(removed)

    after = _library_bytes(library)
    left = [name for name, pattern in traces.items() if pattern in after]
    assert left == [], f"still in the library after remove: {left}"
    verdict = facefind.audit_verify()  # 3 probe searches, and the search whose results showed its faces
    assert verdict.intact and verdict.redacted == 4, verdict.problem
    with sqlite3.connect(library / "catalog.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM search_results WHERE face_id NOT IN (SELECT id FROM faces)").fetchone()[0] == 0
    assert not (Path(str(library / "catalog.sqlite3") + "-wal").exists()
                and Path(str(library / "catalog.sqlite3") + "-wal").stat().st_size)
    searching.close()
    assert facefind.search(kept, show_all=True, purpose=PURPOSE).matches  # the rest still works
    assert facefind.check().healthy


def test_removing_a_video_face_takes_its_track_and_boxed_frame(facefind, clip_with_a_cut):
    facefind.index([clip_with_a_cut], workers=1)
    faces = facefind.faces(clip_with_a_cut).faces
    with facefind.open_library() as library:
        record = library.catalog.faces([faces[0].face_id])[faces[0].face_id]
    frame = facefind.library_path / "thumbs" / record.track.frame_thumbnail
    assert frame.is_file()
    track_faces = [f.face_id for f in faces if _track_of(facefind, f.face_id) == record.track.id]
    assert facefind.remove(face_ids=[faces[0].face_id]) == len(track_faces)
    assert not frame.exists()
    assert all(_track_of(facefind, f.face_id) != record.track.id for f in facefind.faces(clip_with_a_cut).faces)
    assert facefind.check().healthy


def _track_of(facefind, face_id: int) -> int | None:
    with facefind.open_library() as library:
        record = library.catalog.faces([face_id]).get(face_id)
    return record.track.id if record and record.track else None


def test_reindexing_a_changed_photo_deletes_its_old_crops(facefind, photo_folder):
    photo = photo_folder / "players.jpg"
    facefind.index([photo_folder], workers=1)
    old = {p.name for p in (facefind.library_path / "thumbs").rglob("*.jpg")}
    rotated = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(photo))[:, ::-1]
    __import__("PIL.Image", fromlist=["Image"]).fromarray(rotated).save(photo, quality=95)
    facefind.index([photo_folder], workers=1)
    now = {p.name for p in (facefind.library_path / "thumbs").rglob("*.jpg")}
    with facefind.open_library() as library:
        used = {Path(name).name for name in library.catalog.referenced_thumbnails()}
    assert now == used and old - now  # the old crops of players.jpg went with its old faces
    assert facefind.check().healthy
