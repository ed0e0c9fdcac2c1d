"""The catalog logic SQLite and PostgreSQL share: queries, row -> record mapping, erasure bookkeeping.

Why one core: both backends keep the same tables and promise the same behaviour (the contract suite in
tests/catalog/ runs against each), so the queries live once and a fix reaches both. Shared SQL is written
with ``?`` placeholders; each backend supplies the few dialect hooks below (how it runs a query, how it
matches a list of values, JSON field access, how a probe is erased, a path-prefix test) and keeps its
genuinely different parts (connection, migrations, locks, WAL or VACUUM, integrity checks) in its own file.
"""

from __future__ import annotations

import functools
import inspect
import json
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import numpy as np

from facefind.catalog.base import CommitResult, FaceRecord, MediaOutcome, MediaRecord, TrackRecord
from facefind.errors import FaceFindError

DAMAGED_IN_CATALOG = "damaged_in_catalog"

FACE_COLUMNS = """
    faces.id, faces.media_id, media.path, media.sha256, media.width, media.height, faces.face_index,
    faces.box, faces.landmarks, faces.detection_score, faces.quality, faces.model_id, faces.thumbnail,
    faces.frame_time_s, tracks.id, tracks.track_index, tracks.time_ranges, tracks.best_time_s,
    tracks.observations, tracks.frame_thumbnail
"""
FACE_FROM = "faces JOIN media ON media.id = faces.media_id LEFT JOIN tracks ON tracks.id = faces.track_id"
MEDIA_COLUMNS = """id, path, status, sha256, size, mtime_ns, width, height, format, exif_time, reason, message,
    face_count, ingested_at, kind, duration_s"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def vectors(blobs: list, dim: int | None) -> np.ndarray:
    """float32 rows from float32 blobs (probes, blocked templates); a blob of the wrong size becomes a NaN row,
    which callers treat as damage."""
    if dim is None:
        dim = next((len(b) // 4 for b in blobs if isinstance(b, bytes)), 0)
    rows = np.full((len(blobs), dim), np.nan, dtype=np.float32)
    for i, blob in enumerate(blobs):
        if isinstance(blob, bytes) and len(blob) == dim * 4:
            rows[i] = np.frombuffer(blob, dtype=np.float32)
    return rows


def stored_face_embeddings(embeddings: list[np.ndarray]) -> np.ndarray:
    """The embeddings as the catalog keeps them: float16 rows (one model's, so one size).

    Why half precision: the catalog is the source every index is rebuilt from, not the scorer's working copy, and
    float16 moves a cosine by at most ~5e-5 (bench/catalog_write.py: no decision flipped at any calibrated
    threshold on real pairs) while halving what each face writes. Indexes are given the rounded vectors, so index
    and catalog stay identical and verify-on-open still compares them exactly.
    """
    if not embeddings:
        return np.empty((0, 0), dtype=np.float16)
    return np.asarray(embeddings, dtype=np.float32).astype(np.float16).reshape(len(embeddings), -1)


def face_vectors(blobs: list, dim: int) -> np.ndarray:
    """float32 rows from stored face embeddings: float16 blobs, or float32 ones written before facefind stored
    half precision (told apart by length). A blob of any other size becomes a NaN row: damage, never scored."""
    sizes = [len(blob) if isinstance(blob, bytes) else -1 for blob in blobs]
    if sizes.count(dim * 2) == len(blobs):  # every row written since float16 storage: one conversion
        return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), dim).astype(np.float32)
    rows = np.full((len(blobs), dim), np.nan, dtype=np.float32)
    for size, dtype in ((dim * 2, np.float16), (dim * 4, np.float32)):
        at = [i for i, blob_size in enumerate(sizes) if blob_size == size]
        if at:
            rows[at] = np.frombuffer(b"".join(blobs[i] for i in at), dtype=dtype).reshape(len(at), dim)
    return rows


def face_record(row: tuple) -> FaceRecord:
    """A FaceRecord from a row of ``SELECT {FACE_COLUMNS} FROM {FACE_FROM}``."""
    track = None
    if row[14] is not None:
        track = TrackRecord(
            id=row[14], track_index=row[15], time_ranges=json.loads(row[16]), best_time_s=row[17],
            observations=row[18], frame_thumbnail=row[19],
        )
    return FaceRecord(
        id=row[0], media_id=row[1], path=row[2], sha256=row[3], media_width=row[4], media_height=row[5],
        face_index=row[6], box=json.loads(row[7]), landmarks=json.loads(row[8]), detection_score=row[9],
        quality=json.loads(row[10]), model_id=row[11], thumbnail=row[12], frame_time_s=row[13], track=track,
    )


def guard_errors(cls: type, errors: tuple[type[BaseException], ...],
                 convert: Callable[[Any, BaseException], FaceFindError]) -> type:
    """Wrap every public method of ``cls`` (inherited ones too) so a driver error in ``errors`` leaves the
    catalog as ``convert(self, error)``, a FaceFindError (generators too)."""

    def guard(method):
        if inspect.isgeneratorfunction(method):
            @functools.wraps(method)
            def generator(self, *args, **kwargs):
                try:
                    yield from method(self, *args, **kwargs)
                except errors as error:
                    raise convert(self, error) from None
            return generator

        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except errors as error:
                raise convert(self, error) from None
        return call

    members = {}
    for klass in reversed(cls.__mro__[:-1]):  # a subclass's own method wins over the one it overrides
        members.update(vars(klass))
    for name, member in members.items():
        if inspect.isfunction(member) and (not name.startswith("_") or name == "__init__"):
            setattr(cls, name, guard(member))
    return cls


@dataclass(frozen=True)
class Deleted:
    """What deleting media rows took with it: face ids, their thumbnails, and the files' paths and hashes."""

    face_ids: list[int]
    thumbnails: list[str]
    paths: list[str]
    sha256s: list[str]


@dataclass
class _Added:
    """Faces a commit added: ids and stored vectors, plain and masked."""

    ids: list[int] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    masked_ids: list[int] = field(default_factory=list)
    masked_vectors: list[np.ndarray] = field(default_factory=list)


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def runs_of_distinct_paths(outcomes: list[MediaOutcome]) -> Iterator[list[MediaOutcome]]:
    """Consecutive runs of outcomes with no path twice, in order: a run is deleted-then-inserted as a whole, and a
    path repeated in one batch must replace its earlier outcome, as it would in two batches."""
    run: list[MediaOutcome] = []
    paths: set[str] = set()
    for outcome in outcomes:
        if outcome.path in paths:
            yield run
            run, paths = [], set()
        run.append(outcome)
        paths.add(outcome.path)
    if run:
        yield run


class SqlCatalog:
    """The shared half of a SQL :class:`~facefind.catalog.base.Catalog`; a backend supplies the hooks."""

    # SET clause that forgets a search's probe photo (vector, path, hash) and marks it erased.
    ERASE_PROBE_SET: str
    # Condition selecting faces that have a masked template (written to use the backend's index).
    HAS_MASKED_TEMPLATE: str
    # The faces table read in id order, pages of a stream: SQLite's planner otherwise takes faces_templates for
    # ``model_id = ?`` and sorts every remaining row per page (quadratic: a 1M-face rebuild read 50M rows).
    FACES_IN_ID_ORDER: str = "faces"
    # Values per ``IN`` list: SQLite binds one parameter per value, a server takes one array.
    CHUNK_SIZE: int = 500

    # -- hooks ---------------------------------------------------------------------------------

    def _transaction(self) -> AbstractContextManager:
        """One write transaction, serialised with every other writer; yields the connection."""
        raise NotImplementedError

    def _reading(self) -> AbstractContextManager:
        """A connection to read from (outside any write transaction)."""
        raise NotImplementedError

    def _execute(self, db: Any, query: str, args: tuple | list = ()) -> Any:
        """Run one ``?``-placeholder statement on ``db``; returns its cursor (so shared SQL holds no literal ``?``
        or ``%``: a server backend rewrites the placeholders to its own style)."""
        raise NotImplementedError

    def _execute_many(self, db: Any, query: str, rows: list[tuple]) -> None:
        """Run one ``?``-placeholder statement once per row of arguments."""
        raise NotImplementedError

    def _next_ids(self, db: Any, table: str, count: int) -> list[int]:
        """``count`` fresh ids for ``table``, as its own id assignment would give them (a removed face's id is never
        given again), taken inside the write transaction so a batch inserts with one statement, not one per row."""
        raise NotImplementedError

    def _in(self, column: str, values: list) -> tuple[str, list]:
        """SQL condition (and its arguments) for ``column`` being one of ``values``."""
        raise NotImplementedError

    def _json_field(self, column: str, field: str) -> str:
        """SQL expression for the text of top-level ``field`` of the JSON stored in ``column``."""
        raise NotImplementedError

    @staticmethod
    def _file_or_folder(path: str) -> tuple[str, tuple]:
        """SQL condition (and its arguments) for the file ``path`` or any file under the folder ``path``."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------

    def _query(self, query: str, args: tuple | list = ()) -> list[tuple]:
        with self._reading() as db:
            return self._execute(db, query, args).fetchall()

    def _insert(self, db: Any, query: str, args: tuple) -> int:
        """Run an INSERT and return the new row's id (all rows read: SQLite ends a RETURNING statement only then)."""
        return int(self._execute(db, query + " RETURNING id", args).fetchall()[0][0])

    def _chunks(self, values: list) -> Iterator[list]:
        for start in range(0, len(values), self.CHUNK_SIZE):
            yield values[start : start + self.CHUNK_SIZE]

    def _bump_revision(self, db: Any) -> int:
        rows = self._execute(
            db, "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'revision' RETURNING value"
        ).fetchall()
        return int(rows[0][0])

    def _revision_in(self, db: Any) -> int:
        return int(self._execute(db, "SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])

    # -- meta ----------------------------------------------------------------------------------

    def revision(self) -> int:
        return int(self.get_meta("revision") or 0)

    def get_meta(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            self._execute(db, "INSERT INTO meta(key, value) VALUES (?, ?)"
                              " ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))

    # -- media ---------------------------------------------------------------------------------

    def media_by_path(self, path: str) -> MediaRecord | None:
        rows = self._query(f"SELECT {MEDIA_COLUMNS} FROM media WHERE path = ?", (path,))
        return MediaRecord(*rows[0]) if rows else None

    def commit_outcomes(self, outcomes: list[MediaOutcome]) -> CommitResult:
        """Store a batch in one transaction with one statement per table (ids taken up front), not one per row:
        per-row round trips were most of the time writing a million faces. Replaced paths are deleted first."""
        added = _Added()
        removed_ids: list[int] = []
        replaced_thumbnails: list[str] = []
        with self._transaction() as db:
            self._record_embedding_dims(db, outcomes)
            for run in runs_of_distinct_paths(outcomes):
                for chunk in self._chunks([outcome.path for outcome in run]):
                    removed = self._delete_media_rows(db, *self._in("media.path", chunk))
                    removed_ids += removed.face_ids
                    replaced_thumbnails += removed.thumbnails
                self._insert_run(db, run, added)
            released = self._release_thumbnails(db, replaced_thumbnails)  # after the inserts: a new face may share a name
            revision = self._bump_revision(db) if (added.ids or removed_ids) else self._revision_in(db)

        def stacked(parts: list[np.ndarray]) -> np.ndarray:
            parts = [part for part in parts if len(part)]
            return np.vstack(parts) if parts else np.empty((0, 0), dtype=np.float32)

        return CommitResult(added.ids, stacked(added.vectors), removed_ids, revision, added.masked_ids,
                            stacked(added.masked_vectors), released)

    def _insert_run(self, db: Any, run: list[MediaOutcome], added: "_Added") -> None:
        """Insert media, tracks and faces of outcomes with distinct paths, none of them in the catalog."""
        media_ids = self._next_ids(db, "media", len(run))
        written = now()
        self._execute_many(
            db, "INSERT INTO media(id, path, status, sha256, size, mtime_ns, width, height, format, exif_time, reason,"
                " message, face_count, ingested_at, kind, duration_s) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(media_id, o.path, o.status, o.sha256, o.size, o.mtime_ns, o.width, o.height, o.format, o.exif_time,
              o.reason, o.message, len(o.faces), written, o.kind, o.duration_s) for media_id, o in zip(media_ids, run)],
        )
        tracks = [(media_id, track) for media_id, o in zip(media_ids, run) for track in o.tracks]
        track_ids = self._next_ids(db, "tracks", len(tracks))
        if tracks:
            self._execute_many(
                db, "INSERT INTO tracks(id, media_id, track_index, time_ranges, best_time_s, observations,"
                    " frame_thumbnail) VALUES (?,?,?,?,?,?,?)",
                [(track_id, media_id, t.track_index, json.dumps(t.time_ranges), t.best_time_s, t.observations,
                  t.frame_thumbnail) for track_id, (media_id, t) in zip(track_ids, tracks)],
            )
        track_id_of = {(media_id, t.track_index): track_id for track_id, (media_id, t) in zip(track_ids, tracks)}
        faces = [(media_id, face) for media_id, o in zip(media_ids, run) for face in o.faces]
        face_ids = self._next_ids(db, "faces", len(faces))
        plain = stored_face_embeddings([face.embedding for _, face in faces])
        with_masked = [i for i, (_, face) in enumerate(faces) if face.masked_embedding is not None]
        masked = stored_face_embeddings([faces[i][1].masked_embedding for i in with_masked])
        masked_row = {face: row for row, face in enumerate(with_masked)}
        rows = [
            (face_id, media_id, face.face_index, _compact_json(face.box), _compact_json(face.landmarks),
             float(face.detection_score), _compact_json(face.quality), face.model_id, plain[i].tobytes(),
             face.thumbnail, track_id_of.get((media_id, face.track_index)), face.frame_time_s,
             masked[masked_row[i]].tobytes() if i in masked_row else None)
            for i, (face_id, (media_id, face)) in enumerate(zip(face_ids, faces))
        ]
        added.ids += face_ids
        added.vectors.append(plain.astype(np.float32))
        added.masked_ids += [face_ids[i] for i in with_masked]
        added.masked_vectors.append(masked.astype(np.float32))
        if rows:
            self._execute_many(
                db, "INSERT INTO faces(id, media_id, face_index, box, landmarks, detection_score, quality, model_id,"
                    " embedding, thumbnail, track_id, frame_time_s, masked_embedding) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                rows,
            )

    def _record_embedding_dims(self, db: Any, outcomes: list[MediaOutcome]) -> None:
        """Remember each model's embedding size (meta ``embedding_dims``), so a reader that does not pass ``dim``
        can tell a float16 blob from a float32 one of half the size."""
        dims = {face.model_id: int(np.size(face.embedding)) for o in outcomes for face in o.faces}
        if not dims:
            return
        rows = self._execute(db, "SELECT value FROM meta WHERE key = 'embedding_dims'").fetchall()
        recorded = json.loads(rows[0][0]) if rows else {}
        if any(recorded.get(model) != dim for model, dim in dims.items()):
            self._execute(db, "INSERT INTO meta(key, value) VALUES ('embedding_dims', ?)"
                              " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                          (json.dumps({**recorded, **dims}),))

    def _embedding_dim(self, model_id: str, blob: bytes | None) -> int:
        """The recorded embedding size of ``model_id``; a catalog from before float16 storage holds float32 only."""
        recorded = json.loads(self.get_meta("embedding_dims") or "{}")
        return int(recorded.get(model_id) or (len(blob or b"") // 4))

    def touch_media(self, path: str, size: int, mtime_ns: int) -> None:
        with self._transaction() as db:
            self._execute(db, "UPDATE media SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def _delete_media_rows(self, db: Any, where: str, args: tuple) -> Deleted:
        """Delete media matching ``where`` (tracks and faces cascade) and the search results of their faces."""
        rows = self._execute(
            db, f"SELECT faces.id, faces.thumbnail FROM faces JOIN media ON media.id = faces.media_id WHERE {where}", args
        ).fetchall()
        frames = self._execute(
            db, f"SELECT tracks.frame_thumbnail FROM tracks JOIN media ON media.id = tracks.media_id WHERE {where}", args
        ).fetchall()
        media = self._execute(db, f"DELETE FROM media WHERE {where} RETURNING path, sha256", args).fetchall()
        face_ids = [int(r[0]) for r in rows]
        self._delete_search_results_of(db, face_ids)
        return Deleted(
            face_ids, [r[1] for r in rows if r[1]] + [r[0] for r in frames if r[0]], [m[0] for m in media],
            [m[1] for m in media if m[1]],
        )

    def _delete_search_results_of(self, db: Any, face_ids: list[int]) -> None:
        """Search results pointing at erased faces go too: the log must not keep what was removed."""
        for chunk in self._chunks(face_ids):
            condition, args = self._in("face_id", chunk)
            self._execute(db, f"DELETE FROM search_results WHERE {condition}", args)

    def _release_thumbnails(self, db: Any, names: list[str]) -> list[str]:
        """Of ``names``, those no face or track refers to any more: queued for deletion in this transaction.

        Byte-identical files share thumbnail names, so a file is only deleted when its last user goes;
        the queue lets the next writable open finish deletions a crash interrupted.
        """
        released = []
        for chunk in self._chunks(sorted(set(names))):
            in_faces, face_args = self._in("thumbnail", chunk)
            in_tracks, track_args = self._in("frame_thumbnail", chunk)
            used = {r[0] for r in self._execute(
                db, f"SELECT thumbnail FROM faces WHERE {in_faces}"
                    f" UNION SELECT frame_thumbnail FROM tracks WHERE {in_tracks}", [*face_args, *track_args])}
            released += [name for name in chunk if name not in used]
        if released:
            self._execute_many(db, "INSERT INTO pending_deletions(name) VALUES (?) ON CONFLICT DO NOTHING",
                               [(n,) for n in released])
        return released

    def _scrub_search_log(self, db: Any, paths: list[str], sha256s: list[str]) -> None:
        """Forget the probe photo (path, SHA-256, embedding) of every search whose probe was an erased file."""
        for field, values in (("path", paths), ("sha256", sha256s)):
            for chunk in self._chunks(values):
                condition, args = self._in(self._json_field("probe", field), chunk)
                self._execute(db, f"UPDATE searches SET {self.ERASE_PROBE_SET} WHERE {condition}", args)

    def remove_media(self, path: str) -> tuple[list[int], list[str], int]:
        with self._transaction() as db:
            deleted = self._delete_media_rows(db, *self._file_or_folder(path))
            self._scrub_search_log(db, deleted.paths, deleted.sha256s)
            self._scrub_ingest_log(db, deleted.paths)
            released = self._release_thumbnails(db, deleted.thumbnails)
            if deleted.face_ids:
                self._bump_revision(db)
        return deleted.face_ids, released, len(deleted.paths)

    def _scrub_ingest_log(self, db: Any, paths: list[str]) -> None:
        """An erased file named explicitly to `index` leaves its name in the ingest log's roots: drop it."""
        erased = set(paths)
        for row_id, roots in self._execute(db, "SELECT id, roots FROM ingest_log").fetchall():
            kept = [root for root in json.loads(roots) if root not in erased]
            if len(kept) != len(json.loads(roots)):
                self._execute(db, "UPDATE ingest_log SET roots = ? WHERE id = ?", (json.dumps(kept), row_id))

    def remove_faces(self, face_ids: list[int]) -> tuple[list[int], list[str]]:
        """Forget single faces; a video face takes its whole track (the same person) and the track's frame."""
        if not face_ids:
            return [], []
        with self._transaction() as db:
            rows = []
            for chunk in self._chunks([int(i) for i in face_ids]):
                in_ids, args = self._in("id", chunk)
                rows += self._execute(
                    db, f"SELECT id, media_id, thumbnail, track_id FROM faces WHERE {in_ids}"
                        f" OR track_id IN (SELECT track_id FROM faces WHERE {in_ids} AND track_id IS NOT NULL)",
                    [*args, *args],
                ).fetchall()
            removed = sorted({int(r[0]) for r in rows})
            track_ids = sorted({int(r[3]) for r in rows if r[3] is not None})
            thumbnails = [r[2] for r in rows if r[2]]
            for chunk in self._chunks(track_ids):
                in_ids, args = self._in("id", chunk)
                thumbnails += [r[0] for r in self._execute(  # its faces cascade
                    db, f"DELETE FROM tracks WHERE {in_ids} RETURNING frame_thumbnail", args).fetchall() if r[0]]
            for chunk in self._chunks(removed):
                in_ids, args = self._in("id", chunk)
                self._execute(db, f"DELETE FROM faces WHERE {in_ids}", args)
            for media_id in sorted({int(r[1]) for r in rows}):
                self._execute(
                    db, "UPDATE media SET face_count = (SELECT COUNT(*) FROM faces WHERE media_id = ?) WHERE id = ?",
                    (media_id, media_id),
                )
            released = self._forget_faces(db, removed, thumbnails)
        return removed, released

    def _forget_faces(self, db: Any, removed: list[int], thumbnails: list[str]) -> list[str]:
        """Finish removing faces: their search results go, their thumbnails are released, the revision moves."""
        self._delete_search_results_of(db, removed)
        released = self._release_thumbnails(db, thumbnails)
        if removed:
            self._bump_revision(db)
        return released

    def mark_damaged(self, face_ids: list[int]) -> tuple[list[int], list[str]]:
        """Drop every face of the files holding ``face_ids`` and mark those files failed, so the next ingest
        re-analyses them; returns the face ids removed and the thumbnails released."""
        with self._transaction() as db:
            media_ids: set[int] = set()
            for chunk in self._chunks([int(i) for i in face_ids]):
                in_ids, args = self._in("id", chunk)
                media_ids.update(int(r[0]) for r in self._execute(
                    db, f"SELECT media_id FROM faces WHERE {in_ids}", args).fetchall())
            removed, thumbnails = [], []
            for media_id in sorted(media_ids):
                rows = self._execute(
                    db, "DELETE FROM faces WHERE media_id = ? RETURNING id, thumbnail", (media_id,)).fetchall()
                removed += [int(r[0]) for r in rows]
                thumbnails += [r[1] for r in rows if r[1]]
                thumbnails += [r[0] for r in self._execute(
                    db, "DELETE FROM tracks WHERE media_id = ? RETURNING frame_thumbnail", (media_id,)).fetchall() if r[0]]
                self._execute(
                    db, "UPDATE media SET status = 'failed', reason = ?, face_count = 0,"
                        " message = 'a stored face embedding was damaged; the next `facefind index` re-analyses the file'"
                        " WHERE id = ?", (DAMAGED_IN_CATALOG, media_id),
                )
            removed.sort()
            released = self._forget_faces(db, removed, thumbnails)
        return removed, released

    # -- files to delete, and which thumbnails are in use ---------------------------------------

    def pending_deletions(self) -> list[str]:
        """Released thumbnails not yet deleted (a crash came between the commit and the unlink).

        A name a later commit uses again is no longer pending and is dropped from the queue here.
        """
        with self._transaction() as db:
            names = [r[0] for r in self._execute(db, "DELETE FROM pending_deletions RETURNING name").fetchall()]
            return self._release_thumbnails(db, names)

    def deletions_done(self, names: list[str]) -> None:
        if names:
            with self._transaction() as db:
                self._execute_many(db, "DELETE FROM pending_deletions WHERE name = ?", [(n,) for n in names])

    def referenced_thumbnails(self) -> set[str]:
        """Every thumbnail name a face or a track refers to."""
        return {r[0] for r in self._query(
            "SELECT thumbnail FROM faces WHERE thumbnail IS NOT NULL"
            " UNION SELECT frame_thumbnail FROM tracks WHERE frame_thumbnail IS NOT NULL")}

    def fingerprint(self, model_id: str, masked: bool = False, excluding: list[int] = ()) -> tuple[int, int]:
        """(count, sum of ids) of the stored faces (or masked templates) of ``model_id``, less ``excluding``:
        read from an index, so comparing it with the vector index on every open costs milliseconds."""
        excluded = [int(i) for i in excluding]
        query, args = "SELECT COUNT(*), COALESCE(SUM(id), 0) FROM faces WHERE model_id = ?", [model_id]
        if masked:
            query += f" AND {self.HAS_MASKED_TEMPLATE}"
        if excluded:
            in_ids, in_args = self._in("id", excluded)
            query, args = query + f" AND NOT ({in_ids})", args + in_args
        count, total = self._query(query, args)[0]
        return int(count), int(total)

    # -- faces ---------------------------------------------------------------------------------

    def faces(self, face_ids: list[int]) -> dict[int, FaceRecord]:
        found: dict[int, FaceRecord] = {}
        for chunk in self._chunks([int(i) for i in face_ids]):
            in_ids, args = self._in("faces.id", chunk)
            found.update({row[0]: face_record(row) for row in self._query(
                f"SELECT {FACE_COLUMNS} FROM {FACE_FROM} WHERE {in_ids}", args)})
        return found

    def faces_of_media(self, path: str) -> list[FaceRecord]:
        rows = self._query(f"SELECT {FACE_COLUMNS} FROM {FACE_FROM} WHERE media.path = ? ORDER BY faces.face_index",
                           (path,))
        return [face_record(row) for row in rows]

    def face_ids_under(self, path: str) -> list[int]:
        where, args = self._file_or_folder(path)
        return [r[0] for r in self._query(f"SELECT faces.id FROM faces JOIN media ON media.id = faces.media_id WHERE {where}", args)]

    def iter_embeddings(
        self, model_id: str, batch: int = 10_000, masked: bool = False, dim: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        column = "masked_embedding" if masked else "embedding"
        last_id = 0
        while True:
            rows = self._query(
                f"SELECT id, {column} FROM {self.FACES_IN_ID_ORDER}"
                f" WHERE model_id = ? AND id > ? AND {column} IS NOT NULL ORDER BY id LIMIT ?",
                (model_id, last_id, batch),
            )
            if not rows:
                return
            dim = dim or self._embedding_dim(model_id, rows[0][1])
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            yield ids, face_vectors([r[1] for r in rows], dim)
            last_id = int(ids[-1])

    def embeddings(self, face_ids: list[int], masked: bool = False) -> np.ndarray:
        found, stored = self.stored_embeddings(face_ids, masked)
        missing = set(int(i) for i in face_ids) - set(found.tolist())
        if missing:
            raise KeyError(sorted(missing)[0])
        return stored

    def stored_embeddings(
        self, face_ids: list[int], masked: bool = False, dim: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        column = "masked_embedding" if masked else "embedding"
        found: dict[int, tuple[str, bytes]] = {}
        ids = [int(i) for i in face_ids]
        for chunk in self._chunks(ids):
            in_ids, args = self._in("id", chunk)
            found.update({r[0]: (r[1], r[2]) for r in self._query(
                f"SELECT id, model_id, {column} FROM faces WHERE {in_ids} AND {column} IS NOT NULL", args)})
        present = [i for i in ids if i in found]
        if not present:
            return np.empty(0, np.int64), np.empty((0, dim or 0), np.float32)
        dim = dim or self._embedding_dim(*found[present[0]])
        return np.asarray(present, np.int64), face_vectors([found[i][1] for i in present], dim)

    def stats(self) -> dict:
        with self._reading() as db:
            def rows(query: str) -> list[tuple]:
                return self._execute(db, query).fetchall()

            by_status = dict(rows("SELECT status, COUNT(*) FROM media GROUP BY status"))
            by_reason = dict(rows(
                "SELECT reason, COUNT(*) FROM media WHERE reason IS NOT NULL GROUP BY reason ORDER BY 2 DESC"))
            by_quality = dict(rows(f"SELECT {self._json_field('quality', 'verdict')}, COUNT(*) FROM faces GROUP BY 1"))
            faces, models = rows("SELECT COUNT(*), COUNT(DISTINCT model_id) FROM faces")[0]
            last = rows("SELECT started_at, finished_at, status, counts FROM ingest_log ORDER BY id DESC LIMIT 1")
            searches = rows("SELECT COUNT(*) FROM searches")[0][0]
        return {
            "files": sum(by_status.values()),
            "files_by_status": by_status,
            "unindexed_by_reason": by_reason,
            "faces": faces,
            "faces_by_quality": by_quality,
            "models": models,
            "searches": searches,
            "last_ingest": None
            if not last
            else {"started_at": last[0][0], "finished_at": last[0][1], "status": last[0][2],
                  "counts": json.loads(last[0][3] or "{}")},
        }

    # -- logs ----------------------------------------------------------------------------------

    def start_ingest(self, roots: list[str]) -> int:
        with self._transaction() as db:
            return self._insert(db, "INSERT INTO ingest_log(started_at, roots, status) VALUES (?, ?, 'running')",
                                (now(), json.dumps(roots)))

    def finish_ingest(self, ingest_id: int, counts: dict, status: str) -> None:
        with self._transaction() as db:
            self._execute(db, "UPDATE ingest_log SET finished_at = ?, counts = ?, status = ? WHERE id = ?",
                          (now(), json.dumps(counts), status, ingest_id))

    def record_search(self, probe: dict, embedding: np.ndarray, params: dict, results: list[tuple[int, float]]) -> int:
        with self._transaction() as db:
            search_id = self._insert(
                db, "INSERT INTO searches(created_at, probe, embedding, params) VALUES (?, ?, ?, ?)",
                (now(), json.dumps(probe), np.asarray(embedding, np.float32).tobytes(), json.dumps(params)),
            )
            if results:
                self._execute_many(
                    db, "INSERT INTO search_results(search_id, rank, face_id, score) VALUES (?, ?, ?, ?)",
                    [(search_id, rank, int(face_id), float(score))
                     for rank, (face_id, score) in enumerate(results, start=1)],
                )
        return search_id

    def probe_embeddings(self) -> tuple[list[int], np.ndarray]:
        """Search ids and probe vectors of the search log (erased probes left out), to find a person's probes."""
        rows = self._query("SELECT id, embedding FROM searches WHERE length(embedding) > 0 ORDER BY id")
        return [r[0] for r in rows], vectors([r[1] for r in rows], None)

    def forget_search_probes(self, search_ids: list[int]) -> None:
        """Erase the probe (vector, path, hash) and results of these searches: the searched-for person was erased."""
        with self._transaction() as db:
            for chunk in self._chunks([int(i) for i in search_ids]):
                in_ids, args = self._in("id", chunk)
                self._execute(db, f"UPDATE searches SET {self.ERASE_PROBE_SET} WHERE {in_ids}", args)
                in_ids, args = self._in("search_id", chunk)
                self._execute(db, f"DELETE FROM search_results WHERE {in_ids}", args)

    def block_template(self, model_id: str, embedding: np.ndarray, threshold: float) -> int:
        """Keep one template of a person who opted out (no image): later ingests skip faces scoring >= threshold."""
        with self._transaction() as db:
            return self._insert(
                db, "INSERT INTO blocked_templates(created_at, model_id, embedding, threshold) VALUES (?, ?, ?, ?)",
                (now(), model_id, np.asarray(embedding, np.float32).tobytes(), float(threshold)))

    def blocked_templates(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(templates, thresholds) of the opted-out people for this model."""
        rows = self._query("SELECT embedding, threshold FROM blocked_templates WHERE model_id = ? ORDER BY id",
                           (model_id,))
        return vectors([r[0] for r in rows], None), np.asarray([r[1] for r in rows], dtype=np.float32)

    def search_result(self, search_id: int, rank: int) -> tuple[dict, np.ndarray, int, float] | None:
        rows = self._query(
            "SELECT searches.probe, searches.embedding, search_results.face_id, search_results.score"
            " FROM search_results JOIN searches ON searches.id = search_results.search_id"
            " WHERE search_results.search_id = ? AND search_results.rank = ?",
            (search_id, rank),
        )
        if not rows:
            return None
        probe, embedding, face_id, score = rows[0]
        return json.loads(probe), np.frombuffer(embedding, dtype=np.float32).copy(), face_id, score

    def list_media(self, status: str | None, offset: int, limit: int) -> tuple[list[MediaRecord], int]:
        where, args = ("WHERE status = ?", (status,)) if status else ("", ())
        total = self._query(f"SELECT COUNT(*) FROM media {where}", args)[0][0]
        rows = self._query(f"SELECT {MEDIA_COLUMNS} FROM media {where} ORDER BY path LIMIT ? OFFSET ?",
                           (*args, limit, offset))
        return [MediaRecord(*row) for row in rows], total

    def list_searches(self, offset: int, limit: int) -> tuple[list[tuple[int, str, dict, dict, int]], int]:
        total = self._query("SELECT COUNT(*) FROM searches")[0][0]
        rows = self._query(
            "SELECT id, created_at, probe, params, (SELECT COUNT(*) FROM search_results WHERE search_id = searches.id)"
            " FROM searches ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset))
        return [(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4]) for r in rows], total

    def search_log_entry(self, search_id: int) -> tuple[str, dict, dict, list[tuple[int, int, float]]] | None:
        rows = self._query("SELECT created_at, probe, params FROM searches WHERE id = ?", (search_id,))
        if not rows:
            return None
        results = self._query("SELECT rank, face_id, score FROM search_results WHERE search_id = ? ORDER BY rank",
                              (search_id,))
        return rows[0][0], json.loads(rows[0][1]), json.loads(rows[0][2]), [tuple(r) for r in results]
