import numpy as np
import pytest

from facefind.calibration import (
    CalibrationSet,
    CalibrationTable,
    default_calibration,
    verdict_for_fmr,
)
from facefind.calibration.table import MIN_IMPOSTOR_COUNT, format_fmr


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
    # Every supported claim on unseen people is within a factor of 2 of what was measured (or conservative).
    for name, check in shipped.checks.items():
        for row in check["after_widening"]:
            if row["measured_is_supported"] and not row["claimed_is_bound"]:
                assert row["measured_fmr"] <= 2 * row["claimed_fmr"], (name, row)
