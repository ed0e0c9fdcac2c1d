"""Pooled in-the-wild calibration: tail counts, the domain shift, identity-bootstrap intervals."""

import numpy as np
import pytest

from facefind.calibration.pooled import QUALITY_CLASSES, fit_pooled, measured_with_interval, tail_counts
from facefind.calibration.table import SCORE_GRID, CalibrationTable


def faces(people: int, per_person: int, seed: int, common: float = 0.0, dim: int = 24):
    """Unit vectors, one cluster per person; ``common`` adds a shared direction that raises every
    impostor score (what in-the-wild photos do relative to LFW)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim))
    ids = np.repeat(np.arange(people), per_person)
    vectors = centres[ids] + 0.7 * rng.normal(size=(len(ids), dim))
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True) + common * np.eye(dim)[0]
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    quality = rng.choice(3, size=len(ids), p=[0.7, 0.2, 0.1])
    return vectors.astype(np.float32), ids, quality


def counts_of(vectors, ids, quality):
    return tail_counts(SCORE_GRID, vectors, ids, quality, vectors, ids, quality)[0]


def test_tail_counts_match_a_brute_force_count():
    vectors, ids, quality = faces(12, 3, seed=1)
    counts = counts_of(vectors, ids, quality)
    scores = vectors @ vectors.T
    upper = np.triu(np.ones_like(scores, dtype=bool), 1) & (ids[:, None] != ids[None, :])
    pair_class = np.maximum(quality[:, None], quality[None, :])
    for classes in (("good",), ("fair", "poor"), QUALITY_CLASSES):
        chosen = upper & np.isin(pair_class, [QUALITY_CLASSES.index(c) for c in classes])
        fmr, hits = counts.rate(classes)
        index = int(np.searchsorted(SCORE_GRID, 0.3))
        expected = int((scores[chosen] >= SCORE_GRID[index]).sum())
        assert hits[index] == expected
        assert counts.total_pairs(classes) == int(chosen.sum())
        assert fmr[index] == pytest.approx(expected / chosen.sum())


@pytest.fixture(scope="module")
def lab_and_wild():
    lab = counts_of(*faces(400, 4, seed=2))
    wild = counts_of(*faces(60, 6, seed=3, common=0.35))
    wild_unseen = counts_of(*faces(60, 6, seed=4, common=0.35))
    return lab, wild, wild_unseen


def test_the_pooled_claim_is_not_below_unseen_wild_people(lab_and_wild):
    lab, wild, wild_unseen = lab_and_wild
    lab_only = fit_pooled(lab, None, QUALITY_CLASSES, replicates=50)
    pooled = fit_pooled(lab, wild, QUALITY_CLASSES, replicates=50)
    assert pooled.shift > 0.02  # the wild impostors score higher: measured, not assumed
    assert np.all(pooled.low <= pooled.point) and np.all(pooled.point <= pooled.high)
    truth, _ = wild_unseen.rate(QUALITY_CLASSES)
    lab_curve = CalibrationTable("lab", SCORE_GRID, lab_only.point, np.zeros_like(SCORE_GRID), lab_only.impostor_pairs, 1)
    pooled_table = CalibrationTable("pooled", SCORE_GRID, pooled.high, np.zeros_like(SCORE_GRID), pooled.impostor_pairs,
                                    1, fmr_low=pooled.low, fmr_point=pooled.point, resolved_until=pooled.resolved_until)
    for level in (1e-2, 1e-3):
        lab_threshold, pooled_threshold = lab_curve.threshold_for_fmr(level), pooled_table.threshold_for_fmr(level)
        index = int(np.argmin(np.abs(SCORE_GRID - lab_threshold)))
        assert truth[index] > 1.3 * lab_curve.fmr_at(lab_threshold)[0]  # the LFW-only claim is too low here
        index = int(np.argmin(np.abs(SCORE_GRID - pooled_threshold)))
        assert truth[index] <= pooled_table.fmr_at(pooled_threshold)[0] * 1.2  # the pooled claim holds


def test_batched_bootstrap_rates_equal_one_weighting_at_a_time(lab_and_wild):
    lab, _, _ = lab_and_wild
    weights = np.random.default_rng(0).multinomial(len(lab.pairs), np.full(len(lab.pairs), 1 / len(lab.pairs)), size=3)
    fmr, hits = lab.rates(("good", "fair"), weights.astype(np.float64))
    for row, weighting in enumerate(weights):
        single_fmr, single_hits = lab.rate(("good", "fair"), weighting.astype(np.float64))
        assert fmr[row] == pytest.approx(single_fmr) and hits[row] == pytest.approx(single_hits)
        picked = [0, 1]
        expected = weighting @ lab.at_or_above[:, picked, :].sum(axis=1) / (weighting @ lab.pairs[:, picked].sum(axis=1))
        assert fmr[row] == pytest.approx(expected)


def test_measured_interval_brackets_the_measurement(lab_and_wild):
    _, wild, _ = lab_and_wild
    index = int(np.searchsorted(SCORE_GRID, 0.3))
    measured = measured_with_interval(wild, QUALITY_CLASSES, index, replicates=100)
    low, high = measured["measured_interval"]
    assert low <= measured["measured_fmr"] <= high and high > low
