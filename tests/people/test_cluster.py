"""cluster_faces on plain arrays: the constraints hold on every merge, and average linkage does not chain."""

from __future__ import annotations

import numpy as np
import pytest

from facefind.people.cluster import ClusterInput, cluster_faces, weakest_link

THRESHOLD = 0.4


def unit(*rows: list[float]) -> np.ndarray:
    vectors = np.array(rows, dtype=np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def grouped(data: ClusterInput, **options) -> set[frozenset[int]]:
    return {frozenset(group) for group in cluster_faces(data, **options)}


def base(vectors: np.ndarray, **fields) -> ClusterInput:
    ids = np.arange(10, 10 + len(vectors))
    return ClusterInput(ids, vectors, np.full(len(vectors), THRESHOLD, dtype=np.float32), **fields)


def test_similar_faces_join_and_strangers_do_not() -> None:
    data = base(unit([1, 0, 0], [0.95, 0.05, 0], [0, 1, 0], [0.02, 0.98, 0], [0, 0, 1]))
    assert grouped(data) == {frozenset({10, 11}), frozenset({12, 13}), frozenset({14})}


def test_two_faces_of_one_photo_never_join() -> None:
    """Identical-looking faces in one photo (a mirror, twins) stay apart; a third photo joins only one of them."""
    data = base(unit([1, 0, 0], [1, 0.001, 0], [1, 0.0005, 0.0001]), media_ids=[1, 1, 2])
    assert grouped(data, constrained=False) == {frozenset({10, 11, 12})}  # what the rule prevents
    found = grouped(data)
    assert len(found) == 2 and all(not {10, 11} <= group for group in found)


def test_faces_of_one_track_are_always_one_person() -> None:
    """A track's templates differ (profile, blur) yet start as one group."""
    data = base(unit([1, 0, 0], [0, 1, 0], [0, 0, 1]), track_ids=[7, 7, None])
    assert grouped(data) == {frozenset({10, 11}), frozenset({12})}


def test_cannot_link_between_faces_holds() -> None:
    data = base(unit([1, 0, 0], [0.99, 0.01, 0]), cannot_links=[(10, 11)])
    assert grouped(data) == {frozenset({10}), frozenset({11})}


def test_seeded_people_never_merge_and_cannot_join_holds() -> None:
    """Two people fixed by a decision stay two; a face marked 'not person 2' joins the other one or none."""
    data = base(unit([1, 0, 0], [0.99, 0.02, 0], [0.995, 0.01, 0]), seeds={10: 1, 11: 2}, cannot_join=[(12, 2)])
    found = grouped(data)
    assert frozenset({10, 12}) in found and frozenset({11}) in found


def test_average_linkage_does_not_chain_look_alikes() -> None:
    """A chain a-b-c-d of strong neighbour links whose ends are strangers: single linkage joins all of it."""
    angles = np.radians([0, 60, 120, 180])
    vectors = unit(*[[np.cos(a), np.sin(a), 0] for a in angles])  # neighbours 0.5 apart, ends -1
    assert len(grouped(base(vectors), linkage="single")) == 1
    assert len(grouped(base(vectors))) >= 2


def test_weakest_link_is_the_spanning_tree_bottleneck() -> None:
    vectors = unit([1, 0, 0], [0.8, 0.6, 0], [0, 1, 0])
    assert weakest_link(vectors) == pytest.approx(0.6)
    assert weakest_link(vectors[:1]) is None
