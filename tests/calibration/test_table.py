from dataclasses import replace

import numpy as np
import pytest

from facefind.calibration import (
    CalibrationSet,
    CalibrationTable,
    default_calibration,
    verdict_for_fmr,
)
from facefind.calibration.fit import point_at
from facefind.calibration.table import MIN_IMPOSTOR_COUNT, format_fmr
from facefind.pipeline.models import STACKS


@pytest.fixture
def table() -> CalibrationTable:
    rng = np.random.default_rng(0)
    impostor = rng.normal(0.0, 0.1, 1_000_000)
    genuine = rng.normal(0.6, 0.1, 10_000)
    return CalibrationTable.fit("standard", genuine, impostor)


def test_fmr_matches_the_empirical_tail(table):
    # P(N(0, 0.1) >= 0.3) = 1.35e-3
    fmr, bound = table.fmr_at(0.3)
    assert not bound and fmr == pytest.approx(1.35e-3, rel=0.1)
    assert table.fnmr_at(0.6) == pytest.approx(0.5, abs=0.02)


def test_fmr_falls_as_score_rises(table):
    values = [table.fmr_at(s)[0] for s in np.linspace(-0.2, 0.9, 50)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_beyond_the_data_fmr_is_a_bound(table):
    fmr, bound = table.fmr_at(0.9)
    assert bound and fmr == pytest.approx(MIN_IMPOSTOR_COUNT / 1_000_000)
    assert table.max_supported_score < 0.6


def test_threshold_for_fmr_is_the_lowest_score_meeting_it(table):
    threshold = table.threshold_for_fmr(1e-3)
    assert table.fmr_at(threshold)[0] <= 1.05e-3
    assert table.fmr_at(threshold - 0.01)[0] > 1e-3
    assert table.threshold_for_fmr(1e-9) == table.max_supported_score  # cannot promise beyond the data


def test_widening_multiplies_claims(table):
    before = table.fmr_at(0.3)[0]
    table.fmr_multiplier = 3.0
    assert table.fmr_at(0.3)[0] == pytest.approx(3 * before, rel=1e-6)


def test_verdict_bands_and_text():
    assert [verdict_for_fmr(f) for f in (1e-7, 1e-5, 1e-4, 5e-3, 0.1)] == ["strong", "strong", "possible", "weak", "not a match"]
    from facefind.calibration import MatchEvidence

    assert format_fmr(MatchEvidence(2e-6, True, 0.1, "strong", "standard")) == "< 1 in 500.0k"


def test_roundtrip(tmp_path, table):
    calibration = CalibrationSet("m", {"standard": table}, {"data": "synthetic"})
    calibration.save(tmp_path / "c.json")
    loaded = CalibrationSet.load(tmp_path / "c.json")
    assert loaded.tables["standard"].fmr_at(0.25) == pytest.approx(table.fmr_at(0.25))
    assert loaded.table_for("poor").name == "standard"  # no low-quality table: fall back


def test_shipped_tables_carry_provenance_and_held_out_checks():
    shipped = default_calibration()
    assert shipped.model_id == "w600k_mbf:9cc6e4a75f0e"
    assert {"standard", "low_quality"} <= set(shipped.tables)
    for key in ("data", "model", "date", "split", "counts", "support"):
        assert key in shipped.provenance
    assert shipped.tables["standard"].impostor_pairs > 1_000_000
    assert shipped.table_for("poor").name == "low_quality"
    assert shipped.table_for("fair").name == "fair"


@pytest.mark.parametrize("model", ["arcface", "sface"])
def test_shipped_claims_are_upper_bounds_widened_by_the_split_study(model):
    """Every claim is the high end of its 95% interval, times the margin that keeps claims, averaged over
    many held-out halves of celeba_dev, not below the measured FMR; and not far above it where resolved."""
    shipped = default_calibration(STACKS[model].model_id)
    assert "celeba_dev" in shipped.provenance["in_the_wild"]["data"]
    margins = shipped.checks["population_margins"]
    study = shipped.checks["in_the_wild_split_study"]
    assert study["splits"] >= 30
    folds = shipped.checks["in_the_wild_cross_validation"]["folds"]
    assert len(folds) == 2 and all({"celeba_dev", "lfw", "open_set"} <= set(fold) for fold in folds)
    for name in ("standard", "fair", "low_quality"):
        table = shipped.tables[name]
        assert table.fmr_multiplier == pytest.approx(margins[name]) and table.fmr_multiplier >= 1.0
        quality = {"standard": "good", "fair": "fair", "low_quality": "poor"}[name]
        resolved = [row for row in study["by_pair_quality"][quality] if row["resolved"]]
        assert len(resolved) >= 3
        for row in resolved:  # on unseen people (point estimate corrected by its measured error), the
            # claim is not below the FMR and not loose (the old worst-half margin made poor pairs ~9x)
            threshold = table.threshold_for_fmr(row["target_fmr"])
            expected = table.evidence(threshold).fmr / point_at(table, threshold) * row["ratio_of_means_point_estimate"]
            assert 1 - 1e-6 <= expected <= 2.5
        for score in (0.2, 0.3, table.max_supported_score - 0.01):
            evidence = table.evidence(score)
            low, high = evidence.fmr_interval
            assert low <= high == evidence.fmr and not evidence.fmr_is_bound
            assert evidence.fmr >= 10 ** np.interp(score, table.scores, np.log10(np.clip(table.fmr_point, 1e-12, 1)))


def test_a_pooled_table_round_trips_its_interval(tmp_path, table):
    pooled = replace(table, fmr_low=table.fmr / 3, fmr_point=table.fmr / 2, resolved_until=0.5, domain_shift=0.01)
    CalibrationSet("m", {"standard": pooled}).save(tmp_path / "c.json")
    loaded = CalibrationSet.load(tmp_path / "c.json").tables["standard"]
    assert loaded.fmr_interval_at(0.3) == pytest.approx(pooled.fmr_interval_at(0.3))
    low, high = loaded.fmr_interval_at(0.3)
    assert low == pytest.approx(high / 3, rel=0.01)
    assert loaded.max_supported_score == 0.5 and loaded.fmr_at(0.6) == (loaded.min_supported_fmr, True)
    assert loaded.fmr_interval_at(0.6) == (0.0, loaded.min_supported_fmr)  # beyond the data: only a bound
