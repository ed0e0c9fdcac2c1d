"""A conservative tail model: FMR below the impostor data's support floor, by extrapolation.

Why: the pooled tables resolve FMR only down to ~5e-6 (the score with 10 impostor pairs above it), so
in a gallery of a million faces every match would carry more than one expected false match and none
could be shown. Beyond the last resolved score the impostor tail is extrapolated as an exponential
tail (log10 FMR falling linearly with the score), fitted by least squares over the last
``FIT_DECADES`` decades of the table's claimed curve and anchored at its last resolved point.

Why that form is on the safe side: cosine impostor scores have a tail lighter than exponential
(Gaussian-like: log FMR is concave in the score), so a straight line in log space drawn from the
resolved part lies above the true curve. The slope is made shallower still by the identity-bootstrap
(people drawn with replacement from LFW) 2.5th percentile of the slope, relative to the full-data
slope, so the claim is an upper bound on the evidence. bench/tail.py checks it out of sample: tails
fitted on 10% of LFW's people predict the FMR the full 29.6M pairs measure at 1e-5..1e-6.
Below ``FLOOR_FMR`` even the tail model is not trusted: the FMR is shown as that bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FIT_DECADES = 2.0  # the straight line is fitted over the last two decades of resolved FMR
FLOOR_FMR = 1e-8  # below this the extrapolation is not trusted: reported as a bound
BOOTSTRAP_REPLICATES = 200
SCORE_NUDGE = 1e-9
SEED = 0


@dataclass(frozen=True)
class TailModel:
    """log10 FMR(s) = log10 anchor_fmr - decades_per_score * (s - anchor_score), above the anchor."""

    anchor_score: float  # the table's last resolved score
    anchor_fmr: float  # the table's claimed FMR there (upper end of its interval, with its margins)
    anchor_fmr_low: float  # the low end of the table's interval there
    decades_per_score: float  # conservative (shallow) slope: the claim
    decades_per_score_steep: float  # steep slope: the low end of the interval
    floor_fmr: float = FLOOR_FMR

    def fmr(self, score: float) -> float:
        """The claimed FMR at ``score`` (>= anchor), never below the floor."""
        value = self.anchor_fmr * 10 ** (-self.decades_per_score * max(score - self.anchor_score, 0.0))
        return max(value, self.floor_fmr)

    def is_beyond_floor(self, score: float) -> bool:
        return self.anchor_fmr * 10 ** (-self.decades_per_score * (score - self.anchor_score)) <= self.floor_fmr

    def fmr_low(self, score: float) -> float:
        """The low end of the model's 95% interval at ``score``."""
        value = self.anchor_fmr_low * 10 ** (-self.decades_per_score_steep * max(score - self.anchor_score, 0.0))
        return min(value, self.fmr(score))

    def score_for(self, fmr: float) -> float:
        """The lowest score whose claimed FMR is at most ``fmr`` (at the floor for anything below it)."""
        fmr = max(fmr, self.floor_fmr)
        # SCORE_NUDGE: rounding must not leave the claimed FMR at the returned score a hair above ``fmr``
        return self.anchor_score + max(np.log10(self.anchor_fmr / fmr), 0.0) / self.decades_per_score + SCORE_NUDGE

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TailModel":
        return cls(**{key: float(value) for key, value in data.items()})


def tail_slope(grid: np.ndarray, fmr: np.ndarray, anchor_score: float, decades: float = FIT_DECADES) -> float:
    """Least-squares decades of FMR lost per unit score over the last ``decades`` decades before the anchor."""
    anchor_index = int(np.argmin(np.abs(grid - anchor_score)))
    logs = np.log10(np.clip(fmr[: anchor_index + 1], 1e-300, 1.0))
    picked = np.nonzero((logs <= logs[anchor_index] + decades) & (fmr[: anchor_index + 1] > 0))[0]
    if len(picked) < 3:
        raise ValueError(f"too few resolved grid points to fit a tail before score {anchor_score}")
    slope = np.polyfit(grid[picked], logs[picked], 1)[0]
    if slope >= 0:
        raise ValueError("the FMR curve does not fall towards the anchor: no tail can be fitted")
    return float(-slope)


@dataclass(frozen=True)
class SlopeMargins:
    """Identity-bootstrap 2.5/97.5 percentile slopes relative to the full-data slope (shallow < 1 < steep)."""

    shallow: float
    steep: float
    replicates: int
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_slope_margins(counts, classes: tuple[str, ...], replicates: int = BOOTSTRAP_REPLICATES,
                            seed: int = SEED, source: str = "") -> SlopeMargins:
    """How much the tail slope moves when people are drawn with replacement (``counts``: pooled.TailCounts)."""
    from facefind.calibration.pooled import MIN_RESOLVED_COUNT

    fmr, hits = counts.rate(classes)
    anchor = float(counts.grid[np.nonzero(hits >= MIN_RESOLVED_COUNT)[0][-1]])
    full = tail_slope(counts.grid, fmr, anchor)
    rng = np.random.default_rng(seed)
    people = len(counts.pairs)
    slopes = []
    for _ in range(replicates):
        weights = rng.multinomial(people, np.full(people, 1 / people)).astype(np.float64)
        replicate_fmr, replicate_hits = counts.rate(classes, weights)
        resolved = np.nonzero(replicate_hits >= MIN_RESOLVED_COUNT)[0]
        slopes.append(tail_slope(counts.grid, replicate_fmr, float(counts.grid[resolved[-1]])))
    low, high = np.percentile(slopes, [2.5, 97.5])
    return SlopeMargins(shallow=min(1.0, float(low / full)), steep=max(1.0, float(high / full)),
                        replicates=replicates, source=source)


def fit_tail(table, margins: SlopeMargins) -> TailModel:
    """The tail model of a calibration table (``table.CalibrationTable``), anchored at its last resolved score."""
    anchor = table.max_supported_score
    claimed = table.fmr * table.fmr_multiplier
    curves = [claimed] + [curve for curve in (table.fmr_point, table.fmr_low) if curve is not None]
    slopes = [tail_slope(table.scores, curve, anchor) for curve in curves]
    return TailModel(
        anchor_score=anchor,
        anchor_fmr=table.min_supported_fmr,
        anchor_fmr_low=table.fmr_interval_at(anchor - 1e-9)[0],
        decades_per_score=min(slopes) * margins.shallow,
        decades_per_score_steep=max(slopes) * margins.steep,
    )
