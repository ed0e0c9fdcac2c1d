"""The in-the-wild refit: the split study behind the population margin, and the held-out open-set check."""

import numpy as np
import pytest

from facefind.calibration.fit import (
    WildData,
    lab_counts,
    open_set_check,
    pooled_tables,
    population_margins,
    split_study,
)
from facefind.calibration.pooled import QUALITY_CLASSES
from facefind.calibration.table import SCORE_GRID, CalibrationSet, CalibrationTable
from facefind.evaluation.lfw import LfwEmbeddings, pair_scores

from .test_pooled import faces


def embeddings(people: int, per_person: int, seed: int, common: float = 0.0) -> LfwEmbeddings:
    vectors, ids, quality = faces(people, per_person, seed, common)
    names = [f"p{seed}_{i}" for i in range(people)]
    return LfwEmbeddings([f"{names[i]}/{n}.jpg" for n, i in enumerate(ids)], ids, names, vectors,
                         [QUALITY_CLASSES[q] for q in quality])


@pytest.fixture(scope="module")
def wild_data():
    """LFW-like faces, and in-the-wild people (one population) whose impostors score higher."""
    lab = embeddings(300, 4, seed=2)
    wild = embeddings(60, 12, seed=3, common=0.35)
    every = np.arange(len(lab.paths))
    standard = CalibrationTable.fit("standard", *pair_scores(lab, every))
    base = CalibrationSet("m", {"standard": standard, "low_quality": CalibrationTable.fit("low_quality",
                                                                                          *pair_scores(lab, every))})
    return base, WildData(lab, None, wild, np.array([], dtype=np.int64))


@pytest.mark.parametrize("rows, expected", [
    ([(0.25, True)], 2.0),  # point estimates at a quarter of the measured FMR; claims at twice the point: doubled
    ([(0.4, True), (0.5, True)], 1.25),  # the worst resolved level decides
    ([(0.4, True), (0.1, False)], 1.25),  # an unresolved level (too few false matches) does not
    ([(0.8, True)], 1.0),  # claims already above the measured FMR: never narrowed
])
def test_population_margin_lifts_claims_to_the_expected_unseen_fmr(rows, expected):
    point = np.where(SCORE_GRID < 0.5, 10 ** (-10 * np.clip(SCORE_GRID, 0, None)), 1e-5)
    table = CalibrationTable("standard", SCORE_GRID.copy(), 2 * point, np.zeros_like(point), 10**7, 1,
                             fmr_low=point / 2, fmr_point=point, resolved_until=0.45)
    levels = (1e-2, 1e-3)
    study = {"by_pair_quality": {quality: [
        {"target_fmr": level, "ratio_of_means_point_estimate": ratio, "resolved": resolved}
        for level, (ratio, resolved) in zip(levels, rows)] for quality in QUALITY_CLASSES}}
    tables = {"standard": table, "fair": table, "low_quality": table}
    assert population_margins(study, tables) == {name: pytest.approx(expected, rel=1e-3) for name in tables}


def test_split_study_finds_point_estimates_unbiased_and_claims_cautious_on_exchangeable_people(wild_data):
    base, data = wild_data
    study = split_study(base, data, lab_counts(data, set(range(len(data.lfw.names)))), splits=6)
    assert study["splits"] == 6
    good = {row["target_fmr"]: row for row in study["by_pair_quality"]["good"]}
    resolved = good[1e-2]
    assert resolved["resolved"] and resolved["mean_false_matches"] >= 10
    # held-out halves of the same population: the point estimate is right on average, the claim above it
    assert 0.6 < resolved["ratio_of_means_point_estimate"] < 1.6
    assert resolved["ratio_of_means"] >= resolved["ratio_of_means_point_estimate"]
    assert 0.0 <= resolved["share_safe"] <= 1.0
    assert resolved["ratio_5th_percentile"] <= resolved["median_ratio"] <= resolved["ratio_95th_percentile"]


def test_open_set_check_measures_strangers_against_the_prediction(wild_data):
    base, data = wild_data
    people = len(data.wild.names)
    tables = pooled_tables(base, data, lab_counts(data, set(range(len(data.lfw.names)))),
                           set(range(people // 2)))
    held_out = np.nonzero(data.wild.identities >= people // 2)[0]
    rows = open_set_check(tables, data.wild, held_out, draws=2)
    assert {(row["gallery"], row["max_fmr"]) for row in rows} == {
        (gallery, fmr) for gallery in ("150 faces", "every enrolled face") for fmr in (1e-4, 1e-5)}
    for row in rows:
        assert 0.0 <= row["measured_stranger_rate"] <= 1.0 and 0.0 < row["predicted_stranger_rate"] < 1.0
        assert row["strangers_searched"] > 0
    small, every = (next(r for r in rows if r["gallery"] == g and r["max_fmr"] == 1e-4)
                    for g in ("150 faces", "every enrolled face"))
    assert every["mean_gallery_size"] > small["mean_gallery_size"] == 150
    assert every["predicted_stranger_rate"] > small["predicted_stranger_rate"]  # more faces, more chances
