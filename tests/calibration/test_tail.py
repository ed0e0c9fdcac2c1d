from dataclasses import replace

import numpy as np
import pytest
from scipy.stats import norm

from facefind.calibration import CalibrationTable, default_calibration
from facefind.calibration.pooled import QUALITY_CLASSES, TailCounts
from facefind.calibration.tail import FLOOR_FMR, SlopeMargins, TailModel, bootstrap_slope_margins, fit_tail
from facefind.evidence import fmr_with_interval
from facefind.pipeline.models import STACKS
from facefind.schema import Calibrated
from facefind.search import DEFAULT_MAX_FMR, calibrated, within_limits

SHIPPED = [(stack.model_id, name) for stack in STACKS.values()
           for name in default_calibration(stack.model_id).tables]
NO_MARGIN = SlopeMargins(shallow=1.0, steep=1.0, replicates=0, source="test")


def shipped(model_id: str, name: str) -> CalibrationTable:
    return default_calibration(model_id).tables[name]


@pytest.fixture(scope="module")
def gaussian_table() -> CalibrationTable:
    """Impostor scores N(0, 0.1): the true FMR is known everywhere, far beyond the 1M pairs' support."""
    rng = np.random.default_rng(0)
    table = CalibrationTable.fit("standard", rng.normal(0.6, 0.1, 10_000), rng.normal(0.0, 0.1, 1_000_000))
    return replace(table, tail=fit_tail(table, NO_MARGIN))


@pytest.mark.parametrize("model_id, name", SHIPPED)
def test_every_shipped_table_has_a_tail_that_falls_monotonically(model_id, name):
    table = shipped(model_id, name)
    assert table.tail is not None
    values = [table.fmr_at(s)[0] for s in np.arange(0.0, 1.0, 0.001)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    # continuous where the data ends and the model begins
    anchor = table.max_supported_score
    assert table.fmr_at(anchor - 1e-6)[0] == pytest.approx(table.fmr_at(anchor)[0], rel=1e-3)


@pytest.mark.parametrize("model_id, name", SHIPPED)
def test_tail_never_claims_less_than_the_impostor_data_shows(model_id, name):
    """Beyond the resolved range a few impostor pairs still exist: the claim stays above their estimate."""
    table = shipped(model_id, name)
    estimate = table.fmr_point if table.fmr_point is not None else table.fmr
    with_data = estimate > 0
    for score, point in zip(table.scores[with_data], estimate[with_data]):
        assert table.fmr_at(float(score))[0] >= point * (1 - 1e-6)


def test_tail_stays_above_a_gaussian_impostor_tail_down_to_its_floor(gaussian_table):
    """A straight line in log FMR over a concave (Gaussian) tail is on the safe side, however far out."""
    tail = gaussian_table.tail
    assert tail.anchor_score < 0.45  # 1M pairs resolve to ~1e-5
    for score in np.arange(tail.anchor_score, tail.score_for(FLOOR_FMR), 0.01):
        claimed, bound = gaussian_table.fmr_at(float(score))
        assert not bound and claimed >= norm.sf(score, 0.0, 0.1)
    # a steeper slope than fitted would undercut the truth: the test can fail
    steep = replace(tail, decades_per_score=tail.decades_per_score * 3)
    assert steep.fmr(tail.anchor_score + 0.08) < norm.sf(tail.anchor_score + 0.08, 0.0, 0.1)


def test_beyond_the_floor_the_fmr_is_a_bound(gaussian_table):
    far = gaussian_table.tail.score_for(FLOOR_FMR) + 0.01
    evidence = gaussian_table.evidence(far)
    assert evidence.fmr_is_bound and evidence.fmr == FLOOR_FMR and evidence.fmr_source == "bound"
    assert evidence.fmr_interval == (0.0, FLOOR_FMR)


def test_threshold_for_an_fmr_below_the_data_comes_from_the_tail(gaussian_table):
    threshold = gaussian_table.threshold_for_fmr(1e-7)
    assert threshold > gaussian_table.max_supported_score
    fmr, bound = gaussian_table.fmr_at(threshold)
    assert not bound and fmr == pytest.approx(1e-7, rel=1e-6)
    assert gaussian_table.threshold_for_fmr(1e-12) == pytest.approx(gaussian_table.tail.score_for(FLOOR_FMR))


def test_a_typical_true_mate_is_shown_in_a_million_face_gallery():
    """The default model's median same-person score (FNMR 0.5) passes the default limits at 1M faces;
    without the tail model the FMR stops at the data's floor (~5.7e-6) and the match would be hidden."""
    table = shipped(STACKS["arcface"].model_id, "standard")
    median_mate = float(np.interp(0.5, table.fnmr, table.scores))
    fields = calibrated(table, median_mate)
    assert fields["fmr_source"] == "tail_model"
    assert within_limits(fields["fmr"], 1_000_000, DEFAULT_MAX_FMR)[1]
    assert not within_limits(replace(table, tail=None).evidence(median_mate).fmr, 1_000_000, DEFAULT_MAX_FMR)[1]


@pytest.mark.parametrize("model, share", [("arcface", 0.6), ("sface", 0.4)])
def test_most_true_mates_clear_a_million_face_gallery(model, share):
    """Share of LFW same-person pairs scoring above the threshold for one expected false match in 1M faces."""
    table = shipped(STACKS[model].model_id, "standard")
    threshold = table.threshold_for_fmr(1e-6)
    assert table.fmr_at(threshold)[0] <= 1e-6
    assert 1 - table.fnmr_at(threshold) >= share
    without = replace(table, tail=None)
    assert without.fmr_at(without.threshold_for_fmr(1e-6))[0] > 1e-6  # before: no score got there


@pytest.mark.parametrize("score, source", [(0.2, "measured"), (0.6, "tail_model"), (0.99, "bound")])
def test_the_fmr_source_is_in_the_json_and_the_evidence_text(score, source):
    table = shipped(STACKS["arcface"].model_id, "standard")
    fields = calibrated(table, score)
    assert Calibrated(**fields).model_dump()["fmr_source"] == source
    assert ("extrapolated by the tail model" in fmr_with_interval(fields)) == (source == "tail_model")


def test_tail_survives_the_json_round_trip(gaussian_table):
    again = CalibrationTable.from_dict(gaussian_table.to_dict())
    assert again.tail == gaussian_table.tail
    assert again.evidence(0.55) == gaussian_table.evidence(0.55)
    assert TailModel.from_dict(gaussian_table.tail.to_dict()) == gaussian_table.tail


@pytest.mark.parametrize("model_id", [stack.model_id for stack in STACKS.values()])
def test_shipped_tails_record_parameters_and_a_passed_out_of_sample_check(model_id):
    record = default_calibration(model_id).provenance["tail_model"]
    assert record["floor_fmr"] == FLOOR_FMR and record["slope_margins"]["shallow"] <= 1.0
    assert set(record["tables"]) == set(default_calibration(model_id).tables)
    assert record["out_of_sample_check"]["min_ratio_claimed_to_measured"] >= 1.0


def test_bootstrap_margins_bracket_the_full_slope():
    """Identities whose tails differ give the slope a spread; the shallow end is what the claim uses."""
    rng = np.random.default_rng(1)
    grid = np.round(np.arange(0.0, 1.0, 0.005), 3)
    people, pairs = 200, 50_000
    at_or_above = np.zeros((people, len(QUALITY_CLASSES), len(grid)))
    for person, spread in enumerate(rng.uniform(0.08, 0.12, people)):
        at_or_above[person, 0] = pairs * norm.sf(grid, 0.0, spread)
    counts = TailCounts(grid=grid, at_or_above=np.round(at_or_above),
                        pairs=np.tile([pairs, 0, 0], (people, 1)))
    margins = bootstrap_slope_margins(counts, ("good",), replicates=50)
    assert margins.shallow < 1.0 < margins.steep
