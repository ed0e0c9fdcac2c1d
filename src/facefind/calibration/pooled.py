"""FMR curves that stay honest away from LFW: pooled domains, a domain shift, identity-bootstrap bounds.

Why this method (measured, see README "Calibration"): on in-the-wild photos (celeba_dev) the impostor
score distribution sits a near-constant 0.01-0.02 higher than on LFW, so an LFW-only table claims 1.4x
too low an FMR at 1e-2 and 2x at 1e-4, and the gap grows deeper in the tail. celeba_dev alone has too
few pairs to resolve the tail (1e-5 is ~9 pairs). So a curve here is

    FMR(s) = max( FMR_wild(s) where it is resolved,  FMR_lfw(s - shift) )

with ``shift`` the largest score gap between the two domains over the range both resolve (the LFW tail,
moved by the in-the-wild gap). Both terms are recomputed on identity-bootstrap replicates (people drawn
with replacement from each domain: scores of one person's photos are not independent, so resampling
pairs would understate the spread); the 2.5/97.5 percentiles are the 95% interval, and the claimed FMR is
its upper end: on the evidence, not lower than the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUALITY_CLASSES = ("good", "fair", "poor")  # a pair is as good as its poorer face
MIN_RESOLVED_COUNT = 10  # impostor pairs at or above a score for its FMR to count as resolved
# The shift is read where the in-the-wild curve has at least this many pairs: at 10 a single pair of
# look-alike people decides it, and the two celeba_dev halves gave shifts of 0.002 and 0.035.
SHIFT_MIN_COUNT = 30
SHIFT_FIT_MAX_FMR = 3e-2  # the shift is measured in the tail, not the bulk
BOOTSTRAP_REPLICATES = 300
SEED = 0


@dataclass(frozen=True)
class TailCounts:
    """Per identity (probe side): impostor pairs at or above each grid score, by pair quality class.

    Every ordered impostor pair (probe image, gallery image) is counted once at the probe's identity,
    so drawing identities with replacement and summing their rows gives a bootstrap replicate.
    """

    grid: np.ndarray  # (G,) scores
    at_or_above: np.ndarray  # (identities, classes, G)
    pairs: np.ndarray  # (identities, classes)
    symmetric: bool = False  # probes and gallery are one set: each unordered pair is counted twice

    def rate(self, classes: tuple[str, ...], weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(FMR per grid score, impostor pairs at or above it) over ``classes``, identities weighted."""
        if weights is not None:
            fmr, hits = self.rates(classes, weights[None, :])
            return fmr[0], hits[0]
        picked = [QUALITY_CLASSES.index(c) for c in classes]
        hits = self.at_or_above[:, picked, :].sum(axis=(0, 1))
        pairs = self.pairs[:, picked].sum()
        return hits / max(float(pairs), 1.0), hits / 2 if self.symmetric else hits

    def rates(self, classes: tuple[str, ...], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rate`` for many identity weightings at once (rows of ``weights``): one matrix product, not a loop."""
        picked = [QUALITY_CLASSES.index(c) for c in classes]
        hits = weights @ self.at_or_above[:, picked, :].sum(axis=1).astype(np.float64)
        pairs = weights @ self.pairs[:, picked].sum(axis=1).astype(np.float64)
        return hits / np.maximum(pairs, 1.0)[:, None], hits / 2 if self.symmetric else hits

    def total_pairs(self, classes: tuple[str, ...]) -> int:
        total = int(self.pairs[:, [QUALITY_CLASSES.index(c) for c in classes]].sum())
        return total // 2 if self.symmetric else total


def quality_class(verdicts: list[str] | np.ndarray) -> np.ndarray:
    """Index into QUALITY_CLASSES per face ('' for no face counts as poor; such rows are never used)."""
    return np.array([QUALITY_CLASSES.index(v) if v in QUALITY_CLASSES else 2 for v in verdicts], dtype=np.int64)


def tail_counts(
    grid: np.ndarray,
    probe_vectors: np.ndarray, probe_ids: np.ndarray, probe_quality: np.ndarray,
    gallery_vectors: np.ndarray, gallery_ids: np.ndarray, gallery_quality: np.ndarray,
) -> tuple[TailCounts, np.ndarray]:
    """Impostor tail counts of every probe against every gallery face (different identities only).

    Identities are renumbered 0..k-1 in the order of ``np.unique(probe_ids)``; also returns those ids.
    """
    people, probe_rows = np.unique(probe_ids, return_inverse=True)
    classes, bins = len(QUALITY_CLASSES), len(grid) + 1
    histogram = np.zeros(len(people) * classes * bins, dtype=np.int64)
    for start in range(0, len(probe_ids), 512):
        block = slice(start, start + 512)
        scores = probe_vectors[block] @ gallery_vectors.T
        impostor = probe_ids[block, None] != gallery_ids[None, :]
        pair_class = np.maximum(probe_quality[block, None], gallery_quality[None, :])
        bin_of = np.searchsorted(grid, scores, side="right")  # grid points at or below the score
        key = (probe_rows[block, None] * classes + pair_class) * bins + bin_of
        histogram += np.bincount(key[impostor], minlength=len(histogram))
    histogram = histogram.reshape(len(people), classes, bins)
    # at or above grid[g] <=> bin_of > g
    at_or_above = np.flip(np.cumsum(np.flip(histogram, axis=2), axis=2), axis=2)[:, :, 1:]
    symmetric = probe_vectors is gallery_vectors
    return TailCounts(grid=grid, at_or_above=at_or_above, pairs=histogram.sum(axis=2), symmetric=symmetric), people


def _log_interp(x: np.ndarray, grid: np.ndarray, fmr: np.ndarray) -> np.ndarray:
    return 10 ** np.interp(x, grid, np.log10(np.clip(fmr, 1e-12, 1.0)))


def domain_shift(grid: np.ndarray, lab: np.ndarray, wild: np.ndarray, wild_hits: np.ndarray) -> float:
    """The largest score gap between the in-the-wild and LFW curves where the wild one is resolved."""
    resolved = np.nonzero((wild_hits >= SHIFT_MIN_COUNT) & (wild <= SHIFT_FIT_MAX_FMR) & (wild > 0))[0]
    if len(resolved) == 0:
        return 0.0
    falling = lab > 0
    # the LFW score with the same FMR: interpolate score as a function of log FMR (decreasing curve)
    log_lab = np.log10(lab[falling])[::-1]
    lab_scores = grid[falling][::-1]
    same_rate = np.interp(np.log10(wild[resolved]), log_lab, lab_scores)
    return max(0.0, float(np.max(grid[resolved] - same_rate)))


def combined_curve(lab: tuple[np.ndarray, np.ndarray], wild: tuple[np.ndarray, np.ndarray] | None,
                   grid: np.ndarray) -> tuple[np.ndarray, float]:
    """max(wild FMR where resolved, LFW FMR moved by the domain shift); and the shift."""
    lab_fmr, _ = lab
    if wild is None:
        return lab_fmr, 0.0
    wild_fmr, wild_hits = wild
    shift = domain_shift(grid, lab_fmr, wild_fmr, wild_hits)
    moved = _log_interp(grid - shift, grid, lab_fmr)
    return np.maximum(np.where(wild_hits >= MIN_RESOLVED_COUNT, wild_fmr, 0.0), moved), shift


def _bootstrap_weights(rng: np.random.Generator, people: int, replicates: int) -> np.ndarray:
    """(replicates, people): how often each person is drawn, with replacement, in each replicate."""
    return rng.multinomial(people, np.full(people, 1 / people), size=replicates).astype(np.float64)


@dataclass(frozen=True)
class PooledFit:
    """A claimed FMR curve (the upper 95% bound), its interval, the point estimate, and what bounds it."""

    point: np.ndarray
    low: np.ndarray
    high: np.ndarray
    shift: float
    shift_interval: tuple[float, float]
    resolved_until: float  # the highest grid score whose FMR the data resolves
    impostor_pairs: int


def fit_pooled(lab: TailCounts, wild: TailCounts | None, classes: tuple[str, ...],
               replicates: int = BOOTSTRAP_REPLICATES, seed: int = SEED) -> PooledFit:
    """The combined curve for the pairs of ``classes``, with identity-bootstrap 95% intervals."""
    grid = lab.grid
    lab_rate = lab.rate(classes)
    wild_rate = wild.rate(classes) if wild is not None else None
    point, shift = combined_curve(lab_rate, wild_rate, grid)
    rng = np.random.default_rng(seed)
    lab_rates = lab.rates(classes, _bootstrap_weights(rng, len(lab.pairs), replicates))
    wild_rates = wild.rates(classes, _bootstrap_weights(rng, len(wild.pairs), replicates)) if wild is not None else None
    curves, shifts = [], []
    for r in range(replicates):
        wild_r = (wild_rates[0][r], wild_rates[1][r]) if wild_rates is not None else None
        curve, replicate_shift = combined_curve((lab_rates[0][r], lab_rates[1][r]), wild_r, grid)
        curves.append(curve)
        shifts.append(replicate_shift)
    curves = np.array(curves)
    low, high = np.percentile(curves, 2.5, axis=0), np.percentile(curves, 97.5, axis=0)
    # resolved: the moved LFW tail (or the wild curve) still has MIN_RESOLVED_COUNT pairs behind it
    lab_hits_moved = np.interp(grid - shift, grid, lab_rate[1])
    resolved = lab_hits_moved >= MIN_RESOLVED_COUNT
    if wild_rate is not None:
        resolved |= wild_rate[1] >= MIN_RESOLVED_COUNT
    last = np.nonzero(resolved)[0]
    pairs = lab.total_pairs(classes) + (wild.total_pairs(classes) if wild is not None else 0)
    return PooledFit(
        point=point, low=np.minimum(low, point), high=np.maximum(high, point), shift=shift,
        shift_interval=(float(np.percentile(shifts, 2.5)), float(np.percentile(shifts, 97.5))),
        resolved_until=float(grid[last[-1]]) if len(last) else float(grid[0]),
        impostor_pairs=pairs,
    )


def measured_with_interval(counts: TailCounts, classes: tuple[str, ...], grid_index: int,
                           replicates: int = BOOTSTRAP_REPLICATES, seed: int = SEED) -> dict:
    """Measured FMR at one grid score on held-out people, with its identity-bootstrap 95% interval."""
    fmr, hits = counts.rate(classes)
    picked = [QUALITY_CLASSES.index(c) for c in classes]
    person_hits = counts.at_or_above[:, picked, grid_index].sum(axis=1)
    person_pairs = counts.pairs[:, picked].sum(axis=1)
    n = len(person_pairs)
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1 / n), size=replicates).astype(np.float64)
    samples = (weights @ person_hits) / np.maximum(weights @ person_pairs, 1.0)
    return {"measured_fmr": float(fmr[grid_index]), "false_matches": int(hits[grid_index]),
            "impostor_pairs": counts.total_pairs(classes),
            "measured_interval": [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]}
