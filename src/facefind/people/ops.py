"""People operations: build, incremental assignment, manual decisions, co-appearance, graph export.

They sit on storage: faces and embeddings come from the Library (catalog + vector index), people
from the PeopleStore. Links are made only at a calibrated FMR: each face needs the similarity its
quality's calibration table gives for ``max_fmr``. Every manual decision "confirms" the people it
touches (their faces become ``manual``), so re-runs and incremental updates keep them as they are
and only group the automatic faces around them.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations

import networkx as nx
import numpy as np
import sqlalchemy as sa

from facefind.access import under_any
from facefind.calibration import CalibrationSet
from facefind.catalog import FaceRecord
from facefind.errors import FaceFindError, NotFoundError
from facefind.library import Library
from facefind.people.cluster import NEIGHBOURS, ClusterInput, cluster_faces, weakest_link
from facefind.people.models import (
    DEFAULT_PEOPLE_FMR,
    BuildReport,
    CoAppearance,
    Link,
    NearestPerson,
    PersonDetail,
    PersonFace,
    PersonSummary,
)
from facefind.people.store import FacePlace, PeopleStore, cannot_links, person_faces, persons
from facefind.schema import PersonRef, Source
from facefind.search import calibrated, record_to_face, video_hit

MIN_PERSON_FACES = 2  # a face no other face links to stays unassigned, not a "person" of one
SPLIT_FMR_FACTOR = 0.1  # re-clustering one person links at a 10x stricter FMR than the default
SUMMARY_SAMPLE = 256  # faces per person looked up for the nearest other person


class PeopleConflict(FaceFindError):
    """A manual decision would break a rule: two faces of one photo in one person, or a cannot-link."""

    reason = "people_conflict"


@dataclass(frozen=True)
class _Faces:
    """The faces one clustering run considers, as plain arrays for cluster_faces."""

    records: dict[int, FaceRecord]
    ids: np.ndarray
    vectors: np.ndarray


def _usable(record: FaceRecord) -> bool:
    return bool(record.quality.get("usable", True))


def _place(record: FaceRecord) -> FacePlace:
    return FacePlace(record.id, record.media_id, record.track is not None)


def _thresholds(calibration: CalibrationSet, records: list[FaceRecord], max_fmr: float) -> np.ndarray:
    """Per face, the similarity a link needs at ``max_fmr`` for its quality."""
    cache: dict[str, float] = {}
    for record in records:
        verdict = record.quality["verdict"]
        if verdict not in cache:
            cache[verdict] = calibration.table_for(verdict).threshold_for_fmr(max_fmr)
    return np.array([cache[r.quality["verdict"]] for r in records], dtype=np.float32)


def _same_frame_links(records: list[FaceRecord]) -> list[tuple[int, int]]:
    """Faces of two tracks of one video that are on screen at the same time are two people."""
    by_video: dict[int, dict[int, list[FaceRecord]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        if record.track is not None:
            by_video[record.media_id][record.track.id].append(record)
    links = []
    for tracks in by_video.values():
        for (_, a), (_, b) in combinations(tracks.items(), 2):
            if _overlap(a[0].track.time_ranges, b[0].track.time_ranges):
                links += [(x.id, y.id) for x in a for y in b]
    return links


def _overlap(first: list[list[float]], second: list[list[float]]) -> list[list[float]]:
    together = []
    for start_a, end_a in first:
        for start_b, end_b in second:
            start, end = max(start_a, start_b), min(end_a, end_b)
            if start <= end:
                together.append([start, end])
    return together


def _cluster_input(calibration: CalibrationSet, faces: _Faces, max_fmr: float, seeds: dict[int, int],
                   cannot: tuple[list, list]) -> ClusterInput:
    ordered = [faces.records[int(i)] for i in faces.ids]
    return ClusterInput(
        face_ids=faces.ids, vectors=faces.vectors, thresholds=_thresholds(calibration, ordered, max_fmr),
        media_ids=[None if r.track is not None else r.media_id for r in ordered],
        track_ids=[r.track.id if r.track is not None else None for r in ordered],
        seeds=seeds, cannot_links=cannot[0] + _same_frame_links(ordered), cannot_join=cannot[1])


def _load(library: Library, face_ids: list[int]) -> _Faces:
    records = {i: r for i, r in library.catalog.faces(face_ids).items() if _usable(r)}
    ids, vectors = library.embeddings(sorted(records))
    return _Faces(records, ids.astype(np.int64), vectors)


def build(library: Library, store: PeopleStore, calibration: CalibrationSet,
          max_fmr: float = DEFAULT_PEOPLE_FMR) -> BuildReport:
    """Group every face again; manual faces stay where they are and auto faces are grouped around them.

    An automatic person keeps its id when most of its faces end up together again, so links to it
    (a watchlist entry, a bookmark) survive a re-run.
    """
    started = time.perf_counter()
    all_ids = [int(i) for ids, _ in library.catalog.iter_embeddings(library.model_id, dim=library.dim) for i in ids]
    faces = _load(library, all_ids)
    previous = store.assignments()
    seeds = {f: p for f, (p, source) in previous.items() if source == "manual" and f in faces.records}
    groups = cluster_faces(_cluster_input(calibration, faces, max_fmr, seeds, store.cannot_links()))
    manual_people = set(seeds.values())
    with store.engine.begin() as db:
        db.execute(sa.delete(person_faces).where(person_faces.c.source == "auto"))
        taken: set[int] = set()
        for members in groups:
            label = next((seeds[f] for f in members if f in seeds), None)
            auto = [f for f in members if f not in seeds]
            if label is None and len(members) < MIN_PERSON_FACES:
                continue
            if label is None:
                label = _reusable_id(members, previous, manual_people, taken) or store.new_person(db)
            taken.add(label)
            store.assign(db, label, [_place(faces.records[f]) for f in auto], "auto")
        store.drop_empty_persons(db)
    refresh_summaries(library, store)
    people, seconds = len(taken), time.perf_counter() - started
    with store.engine.begin() as db:
        store.record_run(db, "build", {"max_fmr": max_fmr, "neighbours": NEIGHBOURS}, len(faces.ids), people, seconds)
    assigned = sum(len(m) for m in groups if len(m) >= MIN_PERSON_FACES or any(f in seeds for f in m))
    return BuildReport(kind="build", faces=len(faces.ids), people=people, assigned=assigned, max_fmr=max_fmr,
                       seconds=round(seconds, 3))


def _reusable_id(members: list[int], previous: dict[int, tuple[int, str]], manual_people: set[int],
                 taken: set[int]) -> int | None:
    """The earlier automatic person most of these faces belonged to, if it is still free."""
    votes: dict[int, int] = defaultdict(int)
    for face_id in members:
        if face_id in previous:
            votes[previous[face_id][0]] += 1
    for person_id, count in sorted(votes.items(), key=lambda item: -item[1]):
        if person_id not in manual_people and person_id not in taken and 2 * count >= len(members):
            return person_id
    return None


def assign_new(library: Library, store: PeopleStore, calibration: CalibrationSet, added_ids: list[int],
               removed_ids: list[int], max_fmr: float = DEFAULT_PEOPLE_FMR) -> BuildReport | None:
    """After an ingest commit: forget replaced faces, and put new faces into people (existing or new).

    Only the new faces' neighbourhood is clustered: the new faces, the faces the index finds near them,
    and every face of the people those belong to. Existing people never merge with each other here
    (that is a build's or a person's decision), so an ingest cannot undo a split.
    """
    if removed_ids:
        store.forget_faces(removed_ids)
    if not added_ids or not store.persons(include_hidden=True) and not _has_runs(store):
        return None  # people were never built for this library: nothing to keep up to date
    started = time.perf_counter()
    new = _load(library, added_ids)
    if not len(new.ids):
        return None
    _, neighbour_ids = library.index.search(new.vectors, NEIGHBOURS)
    nearby = {int(i) for i in neighbour_ids.ravel() if i >= 0}
    assignments = store.assignments(nearby)
    people = {person for person, _ in assignments.values()}
    member_ids = {f for person in people for f in (face for face, *_ in store.faces_of(person))}
    faces = _load(library, sorted(nearby | member_ids | {int(i) for i in new.ids}))
    current = store.assignments(faces.records)
    seeds = {f: person for f, (person, _) in current.items()}
    groups = cluster_faces(_cluster_input(calibration, faces, max_fmr, seeds, store.cannot_links()))
    touched = set()
    with store.engine.begin() as db:
        for members in groups:
            label = next((seeds[f] for f in members if f in seeds), None)
            loose = [f for f in members if f not in seeds]
            if not loose or (label is None and len(members) < MIN_PERSON_FACES):
                continue
            label = label if label is not None else store.new_person(db)
            store.assign(db, label, [_place(faces.records[f]) for f in loose], "auto")
            touched.add(label)
    refresh_summaries(library, store, touched)
    seconds = time.perf_counter() - started
    with store.engine.begin() as db:
        store.record_run(db, "incremental", {"max_fmr": max_fmr, "new_faces": len(new.ids)}, len(faces.ids),
                         len(touched), seconds)
    return BuildReport(kind="incremental", faces=len(faces.ids), people=len(touched),
                       assigned=len(store.assignments(new.ids.tolist())), max_fmr=max_fmr, seconds=round(seconds, 3))


def _has_runs(store: PeopleStore) -> bool:
    return next(store.runs(), None) is not None


def refresh_summaries(library: Library, store: PeopleStore,
                      person_ids: set[int] | None = None) -> None:
    """Recompute cohesion and the nearest other person of these people (default: all), and of whoever
    named them as nearest before."""
    assignments = store.assignments()
    members: dict[int, list[int]] = defaultdict(list)
    for face_id, (person, _) in assignments.items():
        members[person].append(face_id)
    wanted = set(members) if person_ids is None else {p for p in person_ids if p in members}
    if person_ids is not None:
        wanted |= {row.id for row in store.persons(include_hidden=True) if row.nearest_person_id in person_ids}
    for person in sorted(wanted):
        ids, vectors = library.embeddings(sorted(members[person]))
        cohesion = weakest_link(vectors)
        nearest, nearest_score = None, None
        if len(vectors):
            sample = vectors[np.linspace(0, len(vectors) - 1, min(len(vectors), SUMMARY_SAMPLE)).astype(int)]
            scores, found = library.index.search(sample, NEIGHBOURS)
            for score, face_id in zip(scores.ravel(), found.ravel()):
                other = assignments.get(int(face_id), (None,))[0]
                if other is not None and other != person and (nearest_score is None or score > nearest_score):
                    nearest, nearest_score = other, float(score)
        with store.engine.begin() as db:
            store.set_summary(db, person, cohesion, nearest, nearest_score)


def _link(calibration: CalibrationSet, score: float | None) -> Link | None:
    if score is None:
        return None
    fields = calibrated(calibration.table_for("good"), float(score))
    return Link(similarity=fields["similarity"], fmr=fields["fmr"], fmr_text=fields["fmr_text"])


def readable_faces(library: Library, store: PeopleStore, roots: list[str] | None) -> dict[int, FaceRecord] | None:
    """The assigned faces inside ``roots`` (an actor's collections), id -> record; None: every face counts."""
    if roots is None:
        return None
    records = library.catalog.faces(list(store.assignments()))
    return {f: record for f, record in records.items() if under_any(record.path, roots)}


def visible_people(library: Library, store: PeopleStore, roots: list[str] | None) -> set[int] | None:
    """The people with a face inside ``roots`` (an actor's collections); None: every person."""
    readable = readable_faces(library, store, roots)
    return None if readable is None else {person for person, _ in store.assignments(readable).values()}


def readable_counts(store: PeopleStore, readable: dict[int, FaceRecord]) -> dict[int, tuple[int, int, int]]:
    """person id -> (faces, photos, videos) counting only ``readable`` faces: what someone limited to
    collections may know of a person who also appears elsewhere."""
    faces: dict[int, int] = defaultdict(int)
    files: dict[int, tuple[set[int], set[int]]] = defaultdict(lambda: (set(), set()))
    for face_id, (person, _) in store.assignments(readable).items():
        record = readable[face_id]
        faces[person] += 1
        files[person][record.track is not None].add(record.media_id)
    return {p: (faces[p], len(files[p][0]), len(files[p][1])) for p in faces}


def summaries(library: Library, store: PeopleStore, calibration: CalibrationSet,
              include_hidden: bool = False, roots: list[str] | None = None) -> list[PersonSummary]:
    """Every (shown) person, most faces first; only those with a face inside ``roots`` when given."""
    readable = readable_faces(library, store, roots)
    limited = None if readable is None else readable_counts(store, readable)
    rows = [r for r in store.persons(include_hidden) if limited is None or r.id in limited]
    if limited is None:
        counts, media = store.face_counts(), store.media_counts([r.id for r in rows])
    else:  # faces, photos and videos outside the collections are not counted
        counts, media = {p: c[0] for p, c in limited.items()}, {p: c[1:] for p, c in limited.items()}
    names = {r.id: r.name for r in store.persons(include_hidden=True)}
    sources = _sources(store)
    first_faces = _first_faces(store, [r.id for r in rows], readable)
    records = library.catalog.faces(list(first_faces.values()))
    found = []
    for row in rows:
        record = records.get(first_faces.get(row.id, -1))
        nearest = None
        if row.nearest_person_id is not None and row.nearest_score is not None and (
                limited is None or row.nearest_person_id in limited):  # nobody from outside the collections
            link = _link(calibration, row.nearest_score)
            nearest = NearestPerson(person_id=row.nearest_person_id, name=names.get(row.nearest_person_id),
                                    **link.model_dump())
        found.append(PersonSummary(
            person_id=row.id, name=row.name, hidden=row.hidden, faces=counts.get(row.id, 0),
            photos=media[row.id][0], videos=media[row.id][1], confirmed=sources.get(row.id, False),
            cohesion=_link(calibration, row.cohesion_score), nearest=nearest,
            thumbnail=str(library.thumbs_dir / record.thumbnail) if record and record.thumbnail else None))
    return sorted(found, key=lambda p: (-p.faces, p.person_id))


def _sources(store: PeopleStore) -> dict[int, bool]:
    confirmed: dict[int, bool] = {}
    for person, source in store.assignments().values():
        confirmed[person] = confirmed.get(person, False) or source == "manual"
    return confirmed


def _first_faces(store: PeopleStore, person_ids: list[int],
                 readable: dict[int, FaceRecord] | None = None) -> dict[int, int]:
    first: dict[int, int] = {}
    for face_id, (person, _) in sorted(store.assignments(readable).items()):
        first.setdefault(person, face_id)
    return {p: first[p] for p in person_ids if p in first}


def detail(library: Library, store: PeopleStore, calibration: CalibrationSet, person_id: int,
           roots: list[str] | None = None) -> PersonDetail:
    """One person with every face (inside ``roots``, when given), where it is, and how it got there."""
    summary = next((s for s in summaries(library, store, calibration, include_hidden=True, roots=roots)
                    if s.person_id == person_id), None)
    if summary is None:
        store.person(person_id)  # NotFoundError for an unknown id
        raise NotFoundError(f"no person {person_id}")
    rows = store.faces_of(person_id)
    records = {f: r for f, r in library.catalog.faces([f for f, *_ in rows]).items()
               if roots is None or under_any(r.path, roots)}
    faces = [PersonFace(face=record_to_face(records[f], library.thumbs_dir),
                        source=Source(path=records[f].path, sha256=records[f].sha256,
                                      width=records[f].media_width, height=records[f].media_height),
                        video=video_hit(records[f], library.thumbs_dir), assigned_by=source)
             for f, source, *_ in rows if f in records]
    return PersonDetail(**summary.model_dump(), face_list=faces)


def person_refs(store: PeopleStore, face_ids: list[int],
                readable: dict[int, FaceRecord] | None = None) -> dict[int, PersonRef]:
    """face id -> its person (for search results); hidden people are left out. With ``readable`` (the faces
    of the searcher's collections) a person's photos and videos count only those."""
    assignments = store.assignments(face_ids)
    people = {p for p, _ in assignments.values()}
    rows = {r.id: r for r in store.persons(include_hidden=False) if r.id in people}
    if readable is None:
        media = store.media_counts(sorted(rows))
    else:
        limited = readable_counts(store, readable)
        media = {p: limited.get(p, (0, 0, 0))[1:] for p in rows}
    return {f: PersonRef(person_id=p, name=rows[p].name, photos=media[p][0], videos=media[p][1])
            for f, (p, _) in assignments.items() if p in rows}


# -- manual decisions ------------------------------------------------------------------------------


def _conflicts(library: Library, store: PeopleStore, moving: list[int], target: int) -> None:
    """Refuse a move that would put two faces of one photo into ``target``, or break a cannot-link."""
    staying = [f for f, *_ in store.faces_of(target) if f not in set(moving)]
    records = library.catalog.faces(moving + staying)
    photos = {records[f].media_id: f for f in staying if f in records and records[f].track is None}
    for f in moving:
        record = records.get(f)
        if record is not None and record.track is None and record.media_id in photos:
            raise PeopleConflict(f"face {f} and face {photos[record.media_id]} are in one photo"
                                 f" ({record.path}): they cannot be one person")
    pairs, joins = store.cannot_links()
    group = set(moving) | set(staying)
    for a, b in pairs:
        if a in group and b in group and (a in moving or b in moving):
            raise PeopleConflict(f"faces {a} and {b} were marked as different people")
    for face_id, person in joins:
        if face_id in moving and person == target:
            raise PeopleConflict(f"face {face_id} was marked as not person {target}")


def _faces_present(library: Library, face_ids: list[int]) -> dict[int, FaceRecord]:
    records = library.catalog.faces(face_ids)
    missing = sorted(set(face_ids) - set(records))
    if missing:
        raise NotFoundError(f"no face with id {', '.join(map(str, missing))} in the library")
    return records


def rename(store: PeopleStore, person_id: int, name: str | None) -> None:
    if name is not None:
        name = name.strip()
        if not 1 <= len(name) <= 200:
            raise FaceFindError("a name must be 1..200 characters", reason="bad_argument")
    store.person(person_id)
    with store.engine.begin() as db:
        db.execute(persons.update().where(persons.c.id == person_id).values(name=name))
        store.confirm(db, [person_id])


def hide(store: PeopleStore, person_id: int, hidden: bool) -> None:
    store.person(person_id)
    with store.engine.begin() as db:
        db.execute(persons.update().where(persons.c.id == person_id).values(hidden=hidden))
        store.confirm(db, [person_id])


def merge(library: Library, store: PeopleStore, calibration: CalibrationSet, target: int,
          others: list[int]) -> None:
    """Move every face of ``others`` into ``target``; the others are gone, the target is confirmed."""
    others = [o for o in dict.fromkeys(others) if o != target]
    if not others:
        raise FaceFindError("name at least one other person to merge into this one", reason="bad_argument")
    for person in [target, *others]:
        store.person(person)
    moving = [f for o in others for f, *_ in store.faces_of(o)]
    _conflicts(library, store, moving, target)
    records = library.catalog.faces(moving)
    with store.engine.begin() as db:
        store.assign(db, target, [_place(records[f]) for f in moving if f in records], "manual")
        store.confirm(db, [target])
        store.drop_empty_persons(db)
    refresh_summaries(library, store, {target, *others})


def split(library: Library, store: PeopleStore, calibration: CalibrationSet, person_id: int,
          face_ids: list[int] | None, max_fmr: float = DEFAULT_PEOPLE_FMR) -> list[int]:
    """Take ``face_ids`` out into a new person; with none given, re-cluster the person at a stricter FMR.

    Returns the people the faces are in afterwards (the original first). Both sides are confirmed.
    """
    store.person(person_id)
    own = [f for f, *_ in store.faces_of(person_id)]
    if face_ids:
        strangers = sorted(set(face_ids) - set(own))
        if strangers:
            raise FaceFindError(f"face {', '.join(map(str, strangers))} is not in person {person_id}",
                                reason="bad_argument")
        if set(face_ids) == set(own):
            raise FaceFindError("leave at least one face in the person (or hide it)", reason="bad_argument")
        parts = [sorted(set(own) - set(face_ids)), sorted(set(face_ids))]
    else:
        faces = _load(library, own)
        parts = cluster_faces(_cluster_input(calibration, faces, max_fmr * SPLIT_FMR_FACTOR, {}, ([], [])))
        parts = sorted(parts, key=len, reverse=True)
    records = library.catalog.faces(own)
    result = [person_id]
    with store.engine.begin() as db:
        for part in parts[1:]:
            new_person = store.new_person(db)
            store.assign(db, new_person, [_place(records[f]) for f in part if f in records], "manual")
            result.append(new_person)
        store.confirm(db, result)
    refresh_summaries(library, store, set(result))
    return result


def move(library: Library, store: PeopleStore, calibration: CalibrationSet, face_id: int, person_id: int) -> None:
    """Put one face into ``person_id`` (from wherever it was); a cannot-link against that person is lifted."""
    records = _faces_present(library, [face_id])
    store.person(person_id)
    before = store.assignments([face_id]).get(face_id, (None,))[0]
    with store.engine.begin() as db:
        db.execute(cannot_links.delete().where((cannot_links.c.face_id == face_id)
                                               & (cannot_links.c.person_id == person_id)))
    _conflicts(library, store, [face_id], person_id)
    with store.engine.begin() as db:
        store.assign(db, person_id, [_place(records[face_id])], "manual")
        store.confirm(db, [p for p in (person_id, before) if p is not None])
        store.drop_empty_persons(db)
    refresh_summaries(library, store, {p for p in (person_id, before) if p is not None})


def not_person(library: Library, store: PeopleStore, calibration: CalibrationSet, face_id: int,
               person_id: int) -> None:
    """"Not this person": take the face out and never let it join them again (a cannot-link that persists)."""
    _faces_present(library, [face_id])
    store.person(person_id)
    with store.engine.begin() as db:
        db.execute(sa.delete(person_faces).where((person_faces.c.face_id == face_id)
                                                 & (person_faces.c.person_id == person_id)))
        store.add_cannot_link(db, face_id, person_id=person_id)
        store.confirm(db, [person_id])
        store.drop_empty_persons(db)
    refresh_summaries(library, store, {person_id})


# -- who appears with whom ----------------------------------------------------------------------


def coappearance(library: Library, store: PeopleStore, person_id: int,
                 roots: list[str] | None = None) -> list[CoAppearance]:
    """People in the same photos, or on screen at the same time in the same videos, most often first
    (only files inside ``roots``, when given)."""
    store.person(person_id)
    own = store.faces_of(person_id)
    together = [row for row in store.people_in_media(sorted({m for _, _, m, _ in own})) if row[1] != person_id]
    records = library.catalog.faces([f for f, *_ in own] + [f for _, _, f in together])
    mine_by_media: dict[int, list[FaceRecord]] = defaultdict(list)
    for face_id, *_ in own:
        if face_id in records and (roots is None or under_any(records[face_id].path, roots)):
            mine_by_media[records[face_id].media_id].append(records[face_id])
    if roots is not None and not mine_by_media:
        raise NotFoundError(f"no person {person_id}")  # none of their faces is in the actor's collections
    photos: dict[int, set[str]] = defaultdict(set)
    videos: dict[int, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for media_id, other, face_id in together:
        record = records.get(face_id)
        if record is None or (roots is not None and not under_any(record.path, roots)):
            continue
        if record.track is None:
            photos[other].add(record.path)
            continue
        for mine in mine_by_media[media_id]:
            if mine.track is not None:
                videos[other][record.path] += _overlap(mine.track.time_ranges, record.track.time_ranges)
    names = {r.id: r.name for r in store.persons(include_hidden=True)}
    found = []
    for other in set(photos) | set(videos):
        shown = [{"path": p, "time_ranges": sorted(map(list, {tuple(r) for r in ranges}))}
                 for p, ranges in sorted(videos[other].items()) if ranges]
        if not photos[other] and not shown:
            continue
        found.append(CoAppearance(person_id=other, name=names.get(other), photos=sorted(photos[other]),
                                  videos=shown, count=len(photos[other]) + sum(len(v["time_ranges"]) for v in shown)))
    return sorted(found, key=lambda c: (-c.count, c.person_id))


def graph(library: Library, store: PeopleStore, roots: list[str] | None = None) -> nx.Graph:
    """People as nodes (name, faces), co-appearances as weighted edges (photos, video ranges)."""
    readable = readable_faces(library, store, roots)
    limited = None if readable is None else readable_counts(store, readable)
    rows = [r for r in store.persons() if limited is None or r.id in limited]
    counts = store.face_counts() if limited is None else {p: c[0] for p, c in limited.items()}
    shown = {r.id for r in rows}
    result = nx.Graph()
    for row in rows:
        result.add_node(row.id, name=row.name or "", faces=counts.get(row.id, 0))
    for row in rows:
        for other in coappearance(library, store, row.id, roots):
            if other.person_id in shown and row.id < other.person_id:
                result.add_edge(row.id, other.person_id, weight=other.count, photos=len(other.photos),
                                videos=len(other.videos))
    return result


def export_graph(library: Library, store: PeopleStore, fmt: str, roots: list[str] | None = None) -> str:
    """The co-appearance graph as JSON (node-link) or GraphML text."""
    built = graph(library, store, roots)
    if fmt == "json":
        return json.dumps(nx.node_link_data(built, edges="links"), indent=1)
    if fmt == "graphml":
        return "\n".join(nx.generate_graphml(built))
    raise FaceFindError(f"unknown format {fmt!r}: json or graphml", reason="bad_argument")
