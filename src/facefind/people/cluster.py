"""Grouping faces into people: constrained average-linkage agglomeration over a kNN graph.

Why this algorithm (bench/people.py measures it against single linkage): single linkage (connected
components of links above the threshold) chains look-alikes, because one strong link between two
people joins them and every link after that joins more. Average linkage merges two groups only when
their faces are, on average, a calibrated match; for unit vectors the mean pairwise cosine of groups
A and B is ``sum(A) . sum(B) / (|A| |B|)``, so it is exact and costs one dot product per candidate.
Candidate pairs come from each face's nearest neighbours, so the work grows with faces x k.

Constraints are checked on every merge, never repaired afterwards: faces of one photo (and of one
video frame) never join; faces of one video track start as one group; explicit cannot-links (a face
vs a face, a face vs a person) hold; and groups seeded from different existing people (manual
decisions, or people an incremental update must not disturb) never merge with each other.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import faiss
import numpy as np

NEIGHBOURS = 24  # candidate links per face; a person's other faces are almost always among them


@dataclass(frozen=True)
class ClusterInput:
    """Plain arrays, so a benchmark can cluster cached embeddings without a library.

    ``media_ids``: faces sharing an image media id are never one person (pass None for video faces,
    whose same-frame rule is ``cannot_links``); ``track_ids``: faces of one track are one person.
    ``thresholds``: per face, the similarity a link needs at the wanted FMR (its quality's table);
    a merge needs the stricter of the two groups' (each group's most lenient face) thresholds.
    ``seeds``: face id -> label of an existing person the face is fixed to.
    """

    face_ids: np.ndarray
    vectors: np.ndarray
    thresholds: np.ndarray
    media_ids: list[int | None] | None = None
    track_ids: list[int | None] | None = None
    seeds: dict[int, int] = field(default_factory=dict)
    cannot_links: list[tuple[int, int]] = field(default_factory=list)
    cannot_join: list[tuple[int, int]] = field(default_factory=list)  # (face id, seed label)


@dataclass
class _Group:
    members: list[int]  # row numbers
    total: np.ndarray  # sum of member vectors
    threshold: float
    media: set[int]
    labels: set[int]  # seed labels inside (at most one)
    refused_labels: set[int]
    refused_rows: set[int]
    alive: bool = True


def cluster_faces(data: ClusterInput, neighbours: int = NEIGHBOURS, constrained: bool = True,
                  linkage: str = "average") -> list[list[int]]:
    """Groups of face ids (every face in exactly one group, singletons included), largest first.

    ``constrained=False`` and ``linkage="single"`` exist for the benchmark's comparison only.
    """
    n = len(data.face_ids)
    if n == 0:
        return []
    vectors = np.ascontiguousarray(data.vectors, dtype=np.float32)
    row_of = {int(face_id): row for row, face_id in enumerate(data.face_ids)}
    groups = _initial_groups(data, vectors, row_of, constrained)
    group_of = np.empty(n, dtype=np.int64)
    for number, group in enumerate(groups):
        group_of[group.members] = number
    if linkage == "single":
        _single_linkage(groups, group_of, vectors, neighbours, constrained)
    else:
        _average_linkage(groups, group_of, vectors, neighbours, constrained)
    found = [[int(data.face_ids[row]) for row in sorted(g.members)] for g in groups if g.alive]
    return sorted(found, key=lambda members: (-len(members), members[0]))


def _initial_groups(data: ClusterInput, vectors: np.ndarray, row_of: dict[int, int],
                    constrained: bool) -> list[_Group]:
    """One group per face, except that a track's faces and a seed label's faces start together."""
    key_of: dict[tuple, list[int]] = {}
    for row, face_id in enumerate(data.face_ids):
        label = data.seeds.get(int(face_id))
        track = data.track_ids[row] if data.track_ids is not None else None
        key = ("seed", label) if label is not None else ("track", track) if track is not None else ("face", row)
        key_of.setdefault(key, []).append(row)
    groups = []
    for key, rows in key_of.items():
        media = {data.media_ids[row] for row in rows if data.media_ids and data.media_ids[row] is not None}
        groups.append(_Group(rows, vectors[rows].sum(axis=0), float(data.thresholds[rows].min()),
                             media if constrained else set(), {key[1]} if key[0] == "seed" else set(), set(), set()))
    if constrained:
        group_rows = {row: group for group in groups for row in group.members}
        for a, b in data.cannot_links:
            if a in row_of and b in row_of:
                group_rows[row_of[a]].refused_rows.add(row_of[b])
                group_rows[row_of[b]].refused_rows.add(row_of[a])
        for face_id, label in data.cannot_join:
            if face_id in row_of:
                group_rows[row_of[face_id]].refused_labels.add(label)
    return groups


def _may_merge(a: _Group, b: _Group, group_of: np.ndarray, b_number: int, a_number: int) -> bool:
    if a.media & b.media:
        return False
    if a.labels and b.labels and a.labels != b.labels:
        return False
    if a.refused_labels & b.labels or b.refused_labels & a.labels:
        return False
    return not (any(group_of[row] == b_number for row in a.refused_rows)
                or any(group_of[row] == a_number for row in b.refused_rows))


def _merge(groups: list[_Group], group_of: np.ndarray, keep: int, gone: int) -> None:
    a, b = groups[keep], groups[gone]
    group_of[b.members] = keep
    a.members.extend(b.members)
    a.total = a.total + b.total
    a.threshold = min(a.threshold, b.threshold)
    a.media |= b.media
    a.labels |= b.labels
    a.refused_labels |= b.refused_labels
    a.refused_rows |= b.refused_rows
    b.alive = False


def _knn(vectors: np.ndarray, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index.search(vectors, min(neighbours + 1, len(vectors)))


def _average_linkage(groups: list[_Group], group_of: np.ndarray, vectors: np.ndarray, neighbours: int,
                     constrained: bool) -> None:
    """Merge the pair of groups with the highest mean similarity while it clears both groups' threshold."""
    scores, rows = _knn(vectors, neighbours)
    adjacent: list[set[int]] = [set() for _ in groups]
    for row in range(len(vectors)):
        for score, other in zip(scores[row], rows[row]):
            a, b = int(group_of[row]), int(group_of[other])
            if other >= 0 and a != b and score >= min(groups[a].threshold, groups[b].threshold):
                adjacent[a].add(b)
                adjacent[b].add(a)
    heap: list[tuple[float, int, int]] = []
    for a, others in enumerate(adjacent):
        for b in others:
            if a < b:
                heapq.heappush(heap, (-_mean_similarity(groups[a], groups[b]), a, b))
    while heap:
        negative, a, b = heapq.heappop(heap)
        if not (groups[a].alive and groups[b].alive):
            continue
        if -negative < max(groups[a].threshold, groups[b].threshold):
            continue
        if constrained and not _may_merge(groups[a], groups[b], group_of, b, a):
            continue
        keep, gone = (a, b) if len(groups[a].members) >= len(groups[b].members) else (b, a)
        _merge(groups, group_of, keep, gone)
        adjacent[keep] = {g for g in adjacent[keep] | adjacent[gone] if groups[g].alive and g != keep}
        for other in adjacent[keep]:
            adjacent[other].discard(gone)
            adjacent[other].add(keep)
            heapq.heappush(heap, (-_mean_similarity(groups[keep], groups[other]), min(keep, other), max(keep, other)))


def _single_linkage(groups: list[_Group], group_of: np.ndarray, vectors: np.ndarray, neighbours: int,
                    constrained: bool) -> None:
    """Join along links strongest first (connected components, constraint-checked): the benchmark's baseline."""
    scores, rows = _knn(vectors, neighbours)
    links = sorted(((float(s), r, int(o)) for r in range(len(vectors)) for s, o in zip(scores[r], rows[r])
                    if o >= 0 and o != r), reverse=True)
    for score, row, other in links:
        a, b = int(group_of[row]), int(group_of[other])
        if a == b or score < max(groups[a].threshold, groups[b].threshold):
            continue
        if constrained and not _may_merge(groups[a], groups[b], group_of, b, a):
            continue
        keep, gone = (a, b) if len(groups[a].members) >= len(groups[b].members) else (b, a)
        _merge(groups, group_of, keep, gone)


def _mean_similarity(a: _Group, b: _Group) -> float:
    return float(a.total @ b.total) / (len(a.members) * len(b.members))


def weakest_link(vectors: np.ndarray) -> float | None:
    """The lowest similarity in the maximum spanning tree of a group: how weakly its faces hang together.

    None for a single face. Prim's algorithm on the dense similarity matrix (O(n^2) for n faces).
    """
    n = len(vectors)
    if n < 2:
        return None
    similarity = vectors @ vectors.T
    in_tree = np.zeros(n, dtype=bool)
    in_tree[0] = True
    best = similarity[0].copy()
    weakest = 1.0
    for _ in range(n - 1):
        candidates = np.where(in_tree, -np.inf, best)
        chosen = int(np.argmax(candidates))
        weakest = min(weakest, float(candidates[chosen]))
        in_tree[chosen] = True
        best = np.maximum(best, similarity[chosen])
    return weakest
