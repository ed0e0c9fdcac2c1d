"""Fit calibration tables on LFW through facefind's own pipeline, and check them on unseen people.

Reproducible: ``facefind calibrate --lfw ../shared/data/lfw`` (or ``python -m
facefind.calibration.fit``). Identities are split in two halves with a fixed
seed; tables are fitted on one half and checked on the other, and both
results are stored in the table's ``checks``. Where the check shows a table
claiming a lower FMR than measured by more than ``MAX_CLAIM_ERROR``, the
table's ``fmr_multiplier`` widens its claims by the measured factor.

``--wild`` refits them pooled with in-the-wild photos (calibration/pooled.py); there the
``fmr_multiplier`` is the population margin from ``split_study``: many random identity halves
of celeba_dev, claims on one half against the FMR measured on the other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from facefind.calibration import pooled
from facefind.calibration import tail as tail_model
from facefind.calibration.pooled import (
    MIN_RESOLVED_COUNT,
    QUALITY_CLASSES,
    PooledFit,
    TailCounts,
    fit_pooled,
    measured_with_interval,
    quality_class,
    tail_counts,
)
from facefind.calibration.table import SCORE_GRID, CalibrationSet, CalibrationTable
from facefind.evaluation.covered import CoveredLfw, covered_pair_scores, embed_covered_lfw
from facefind.evaluation.degrade import DEGRADATIONS, degrade
from facefind.evaluation.lfw import (
    LfwEmbeddings,
    embed_lfw,
    identity_split,
    pair_scores,
)
from facefind.pipeline import PipelineConfig
from facefind.pipeline.models import DEFAULT_STACK, STACKS, stack_named
from facefind.pipeline.occlusion import HELD_OUT_SHAPES, TRAINING_SHAPES, occlusion_classifier_for

CHECK_LEVELS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# How a probe whose lower face is covered is matched; chosen by bench/masked.py (see README).
COVERED_MATCH_MODE = "mean_of_both"
MAX_CLAIM_ERROR = 2.0
# The table each pair quality is scored with (a pair is as good as its poorer face): in-the-wild fair
# pairs run hotter than good ones at the same score, in both celeba_dev halves, so they get their own.
TABLE_FOR_PAIR_QUALITY = {"good": "standard", "fair": "fair", "poor": "low_quality"}
SEED = 0
# The population margin comes from many random identity halves of celeba_dev (split_study).
SPLITS = 40
SPLIT_SEED = 1
SPLIT_LEVELS = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5)
SPLIT_MIN_MEAN_COUNT = 2.5
# Held-out open-set check in the 2-fold cross-validation.
OPEN_SET_GALLERY = 150
OPEN_SET_MAX_FMR = (1e-4, 1e-5)
OPEN_SET_DRAWS = 5


def members_of(lfw: LfwEmbeddings, identities: set[int]) -> np.ndarray:
    return np.nonzero(np.isin(lfw.identities, list(identities)))[0]


def cross_scores(
    probes: LfwEmbeddings, gallery: LfwEmbeddings, members: np.ndarray, probe_mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine/impostor scores of (degraded) probes against clean gallery images of the same people set.

    A probe is never compared with the clean version of its own image.
    """
    probe_idx = members[probe_mask[members] & probes.found[members]]
    gallery_idx = members[gallery.found[members]]
    genuine, impostor = [], []
    for start in range(0, len(probe_idx), 1024):
        rows = probe_idx[start : start + 1024]
        scores = probes.embeddings[rows] @ gallery.embeddings[gallery_idx].T
        same = probes.identities[rows][:, None] == gallery.identities[gallery_idx][None, :]
        itself = rows[:, None] == gallery_idx[None, :]
        genuine.append(scores[same & ~itself])
        impostor.append(scores[~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def check_table(table: CalibrationTable, genuine: np.ndarray, impostor: np.ndarray) -> list[dict]:
    """Claimed vs measured FMR on held-out pairs, at the thresholds for a ladder of FMR levels."""
    rows = []
    for level in CHECK_LEVELS:
        threshold = table.threshold_for_fmr(level)
        claimed, bound = table.fmr_at(threshold)
        false_matches = int((impostor >= threshold).sum())
        measured = false_matches / max(len(impostor), 1)
        rows.append({
            "target_fmr": level,
            "threshold": threshold,
            "claimed_fmr": claimed,
            "claimed_is_bound": bound,
            "measured_fmr": measured,
            "false_matches": false_matches,
            "impostor_pairs": int(len(impostor)),
            "ratio_measured_to_claimed": measured / claimed if claimed > 0 else None,
            "measured_is_supported": false_matches >= 10,
            "tar": float((genuine >= threshold).mean()) if len(genuine) else None,
        })
    return rows


def _widen(table: CalibrationTable, rows: list[dict]) -> float:
    """Multiplier that makes every supported claim at least as high as the measured FMR (never narrows)."""
    ratios = [
        r["ratio_measured_to_claimed"] for r in rows
        if r["measured_is_supported"] and not r["claimed_is_bound"] and r["ratio_measured_to_claimed"]
    ]
    worst = max(ratios, default=1.0)
    return worst if worst > MAX_CLAIM_ERROR else 1.0


def calibrate(
    lfw_dir: Path, cache_dir: Path | None = None, workers: int = 0,
    progress: Callable[[str, int, int], None] | None = None, model: str = DEFAULT_STACK,
) -> CalibrationSet:
    """Fit the standard and low-quality tables on half the LFW identities; check on the other half.

    The covered table is fitted only for a model with an occlusion classifier: without one no probe
    is ever judged covered, so the table would never be used.
    """
    def report(stage: str):
        return (lambda done, total: progress(stage, done, total)) if progress else None

    stack = stack_named(model)
    with_covered = occlusion_classifier_for(stack.model_id) is not None
    config = PipelineConfig(model=model, masked_templates=False)  # calibration never reads masked templates
    covered_lfw = embed_covered_lfw(lfw_dir, cache=cache_dir and cache_dir / "lfw-covered.npz", workers=workers,
                                    progress=report("covered LFW"), model=model) if with_covered else None
    clean = embed_lfw(lfw_dir, cache=cache_dir and cache_dir / "lfw-clean.npz", workers=workers, config=config,
                      progress=report("clean LFW"))
    degraded = embed_lfw(lfw_dir, cache=cache_dir and cache_dir / "lfw-degraded.npz", transform=degrade,
                         transform_id="degrade-v1", workers=workers, config=config, progress=report("degraded LFW"))
    fit_ids, check_ids = identity_split(clean.names, SEED)
    fit_members, check_members = members_of(clean, fit_ids), members_of(clean, check_ids)
    poor = np.array([q == "poor" for q in degraded.quality])
    not_poor = np.array([q in ("good", "fair") for q in degraded.quality])

    standard = CalibrationTable.fit("standard", *pair_scores(clean, fit_members),
                                    description="clean LFW probes vs clean LFW gallery")
    low = CalibrationTable.fit("low_quality", *cross_scores(degraded, clean, fit_members, poor),
                               description="degraded LFW probes judged 'poor' vs clean LFW gallery")
    tables = {"standard": standard, "low_quality": low}
    if covered_lfw is not None:
        tables["covered"] = CalibrationTable.fit(
            "covered", *covered_pair_scores(covered_lfw, fit_members, "train_mask", COVERED_MATCH_MODE),
            description=f"probes wearing synthetic masks ({', '.join(TRAINING_SHAPES)}) vs LFW gallery,"
                        f" matched {COVERED_MATCH_MODE}",
            match_mode=COVERED_MATCH_MODE,
        )

    # Held-out people. Degraded probes that the quality check did NOT flag are scored with the
    # standard table, so that table is checked on them too.
    held_out = {
        "standard": ("standard", pair_scores(clean, check_members)),
        "low_quality": ("low_quality", cross_scores(degraded, clean, check_members, poor)),
        "standard_on_degraded_not_flagged": ("standard", cross_scores(degraded, clean, check_members, not_poor)),
    }
    if covered_lfw is not None:  # covered probes are checked with mask shapes never used to fit
        held_out["covered"] = ("covered", covered_pair_scores(covered_lfw, check_members, "held_out_mask",
                                                              COVERED_MATCH_MODE))
    before = {name: check_table(tables[table], *scores) for name, (table, scores) in held_out.items()}
    for table_name, table in tables.items():
        table.fmr_multiplier = max(_widen(table, rows) for name, rows in before.items() if held_out[name][0] == table_name)
    checks = {
        name: {"table": table, "before_widening": before[name], "after_widening": check_table(tables[table], *scores)}
        for name, (table, scores) in held_out.items()
    }
    checks["standard"]["fit_half"] = check_table(standard, *pair_scores(clean, fit_members))

    provenance = {
        "data": f"LFW deep-funneled 150x150 ({len(clean.paths)} images, {len(clean.names)} people) through facefind's"
                " own detection and alignment",
        "degradations": list(DEGRADATIONS),
        "masks": {"fit": list(TRAINING_SHAPES), "check": list(HELD_OUT_SHAPES), "match_mode": COVERED_MATCH_MODE}
        if covered_lfw is not None else "no covered table: no occlusion classifier fits this model",
        "model": stack.model_id,
        "detector": stack.detector.model_id,
        "date": datetime.now(timezone.utc).date().isoformat(),
        "split": f"identities split in halves with seed {SEED}: {len(fit_ids)} fit, {len(check_ids)} check",
        "images_without_face": int((~clean.found).sum()),
        "degraded_images": {"poor": int(poor.sum()), "not_poor": int(not_poor.sum()),
                            "no_face": int((~degraded.found).sum())},
        "counts": {name: {"impostor_pairs": t.impostor_pairs, "genuine_pairs": t.genuine_pairs} for name, t in tables.items()},
        "support": "FMR values are estimated where at least 10 impostor pairs score that high; beyond, the table"
                   " reports the bound min_supported_fmr and marks it as a bound",
    }
    return CalibrationSet(model_id=stack.model_id, tables=tables, provenance=provenance, checks=checks)


def symmetric_counts(embeddings: LfwEmbeddings, members: np.ndarray) -> TailCounts:
    """Impostor tail counts among the images ``members`` (with a face), per identity and pair quality."""
    members = members[embeddings.found[members]]
    vectors, quality = embeddings.embeddings[members], quality_class(np.array(embeddings.quality)[members])
    return tail_counts(SCORE_GRID, vectors, embeddings.identities[members], quality,
                       vectors, embeddings.identities[members], quality)[0]


def probe_counts(probes: LfwEmbeddings, gallery: LfwEmbeddings, members: np.ndarray, probe_mask: np.ndarray) -> TailCounts:
    """Impostor tail counts of (degraded) probes against clean gallery images of the same people set."""
    rows = members[probe_mask[members] & probes.found[members]]
    columns = members[gallery.found[members]]
    return tail_counts(SCORE_GRID, probes.embeddings[rows], probes.identities[rows],
                       quality_class(np.array(probes.quality)[rows]), gallery.embeddings[columns],
                       gallery.identities[columns], quality_class(np.array(gallery.quality)[columns]))[0]


def pooled_table(name: str, base: CalibrationTable, fitted: PooledFit, description: str) -> CalibrationTable:
    """``base`` (for FNMR and match mode) with the pooled claimed curve, its interval and resolved range."""
    return replace(base, name=name, fmr=fitted.high, fmr_low=fitted.low, fmr_point=fitted.point,
                   resolved_until=fitted.resolved_until, impostor_pairs=fitted.impostor_pairs,
                   domain_shift=fitted.shift,
                   fmr_multiplier=1.0, description=description)


def shifted_table(base: CalibrationTable, shift: tuple[float, float], description: str) -> CalibrationTable:
    """A table with no in-the-wild data of its own, moved by the standard table's domain shift interval."""
    def moved(by: float) -> np.ndarray:
        return 10 ** np.interp(base.scores - by, base.scores, np.log10(np.clip(base.fmr, 1e-12, 1.0)))

    return replace(base, fmr=moved(shift[1]), fmr_low=moved(shift[0]), fmr_point=moved(shift[1]), domain_shift=shift[1],
                   resolved_until=base.max_supported_score + shift[1], fmr_multiplier=1.0,
                   description=description)


@dataclass(frozen=True)
class WildData:
    """One model's embeddings for the pooled fit: clean and degraded LFW, in-the-wild celeba_dev."""

    lfw: LfwEmbeddings
    degraded: LfwEmbeddings | None
    wild: LfwEmbeddings
    wild_removed: np.ndarray  # celeba_dev photos left out as label errors


def lab_counts(data: WildData, lfw_ids: set[int]) -> tuple[TailCounts, TailCounts | None]:
    """LFW tail counts for the people ``lfw_ids``: clean pairs, and degraded 'poor' probes vs clean
    (None without degraded embeddings: LFW's own few poor faces leave the tail unresolved below 1e-3)."""
    lfw_members = members_of(data.lfw, lfw_ids)
    clean = symmetric_counts(data.lfw, lfw_members)
    if data.degraded is None:
        return clean, None
    poor = np.array([q == "poor" for q in data.degraded.quality])
    return clean, probe_counts(data.degraded, data.lfw, lfw_members, poor)


def pooled_tables(shipped: CalibrationSet, data: WildData, lab: tuple[TailCounts, TailCounts | None],
                  wild_ids: set[int]) -> dict[str, CalibrationTable]:
    """Standard, low-quality (and covered) tables fitted on LFW counts ``lab`` + celeba_dev people ``wild_ids``."""
    wild = symmetric_counts(data.wild, np.setdiff1d(members_of(data.wild, wild_ids), data.wild_removed))
    lab, lab_poor = lab
    standard = fit_pooled(lab, wild, ("good",))
    tables = {name: pooled_table(
        name, shipped.tables["standard"], fit_pooled(lab, wild, (quality,)) if quality != "good" else standard,
        "max(in-the-wild FMR where resolved, LFW FMR moved by the in-the-wild score shift), upper end of the"
        f" identity-bootstrap 95% interval; pairs whose poorer face is {quality}")
        for name, quality in (("standard", "good"), ("fair", "fair"))}
    if lab_poor is not None and "low_quality" in shipped.tables:
        tables["low_quality"] = pooled_table(
            "low_quality", shipped.tables["low_quality"], fit_pooled(lab_poor, wild, ("poor",)),
            "max(in-the-wild FMR of pairs with a poor face where resolved, FMR of degraded-LFW 'poor' probes vs"
            " clean LFW moved by the score shift), upper end of the identity-bootstrap 95% interval")
    elif "low_quality" in shipped.tables:
        poor_shift = fit_pooled(lab, wild, ("poor",)).shift_interval  # the gap measured on real poor faces
        tables["low_quality"] = shifted_table(
            shipped.tables["low_quality"], poor_shift,
            "degraded-LFW table moved by the in-the-wild shift of pairs with a poor face (95% interval of the"
            " shift; degraded LFW embeddings were not at hand to bootstrap)")
    if "covered" in shipped.tables:
        tables["covered"] = shifted_table(
            shipped.tables["covered"], standard.shift_interval,
            "synthetic-mask LFW table moved by the standard table's in-the-wild shift (95% interval of the shift;"
            " no in-the-wild covered faces to bootstrap)")
    return tables


def held_out_claims(table: CalibrationTable, counts: TailCounts, classes: tuple[str, ...]) -> list[dict]:
    """Claimed (with interval) vs measured FMR (with identity-bootstrap interval) on held-out people."""
    rows = []
    for level in CHECK_LEVELS:
        threshold = table.threshold_for_fmr(level)
        index = int(np.argmin(np.abs(SCORE_GRID - threshold)))
        evidence = table.evidence(threshold)
        measured = measured_with_interval(counts, classes, index)
        rows.append({
            "target_fmr": level, "threshold": threshold, "claimed_fmr": evidence.fmr,
            "claimed_interval": list(evidence.fmr_interval), "claimed_is_bound": evidence.fmr_is_bound, **measured,
            "ratio_claimed_to_measured": evidence.fmr / measured["measured_fmr"] if measured["measured_fmr"] else None,
            "measured_is_supported": measured["false_matches"] >= MIN_RESOLVED_COUNT,
        })
    return rows


def open_set_check(tables: dict[str, CalibrationTable], wild: LfwEmbeddings, members: np.ndarray,
                   draws: int = OPEN_SET_DRAWS, seed: int = SEED) -> list[dict]:
    """Strangers shown a match, measured vs predicted, among held-out in-the-wild people ``members``.

    Per draw half the people are enrolled (gallery: ``OPEN_SET_GALLERY`` of their faces, and all of them);
    every face of the others searches it. A pair is shown when its score reaches the threshold of its
    pair quality's table for max_fmr (and for one expected false match in the gallery); predicted:
    1 - prod(1 - claimed FMR) over the gallery, averaged over strangers.
    """
    members = members[wild.found[members]]
    people, quality = wild.identities[members], quality_class(np.array(wild.quality)[members])
    by_quality = [tables[TABLE_FOR_PAIR_QUALITY[q]] for q in QUALITY_CLASSES]
    rng = np.random.default_rng(seed)
    totals: dict[tuple[int, float], list[float]] = {}
    for _ in range(draws):
        enrolled = rng.permutation(np.unique(people))[: len(np.unique(people)) // 2]
        candidates, strangers = np.nonzero(np.isin(people, enrolled))[0], np.nonzero(~np.isin(people, enrolled))[0]
        for small, size in ((True, min(OPEN_SET_GALLERY, len(candidates))), (False, len(candidates))):
            gallery = rng.choice(candidates, size=size, replace=False)
            scores = wild.embeddings[members[strangers]] @ wild.embeddings[members[gallery]].T
            pair_class = np.maximum(quality[strangers][:, None], quality[gallery][None, :])
            for max_fmr in OPEN_SET_MAX_FMR:
                thresholds = np.array([max(t.threshold_for_fmr(max_fmr), t.threshold_for_fmr(1.0 / size))
                                       for t in by_quality])
                claimed = np.array([t.fmr_at(th)[0] for t, th in zip(by_quality, thresholds)])
                shown = (scores >= thresholds[pair_class]).any(axis=1)
                predicted = 1 - np.exp(np.log1p(-claimed[pair_class]).sum(axis=1))
                total = totals.setdefault((small, max_fmr), [0.0, 0.0, 0.0, 0.0])
                total[0] += shown.sum()
                total[1] += predicted.sum()
                total[2] += len(strangers)
                total[3] += size
    return [{"gallery": f"{OPEN_SET_GALLERY} faces" if small else "every enrolled face", "mean_gallery_size": total[3] / draws,
             "max_fmr": max_fmr, "strangers_searched": int(total[2]),
             "measured_stranger_rate": total[0] / total[2], "predicted_stranger_rate": total[1] / total[2]}
            for (small, max_fmr), total in totals.items()]


def cross_validate(shipped: CalibrationSet, data: WildData, lfw_fit: set[int], lfw_check: set[int],
                   margins: dict[str, float] | None = None) -> dict:
    """Identity-level 2-fold check on celeba_dev: fit on LFW ``lfw_fit`` + half its people, check the rest
    (claims with the population ``margins`` applied, as shipped tables apply them)."""
    wild_a, wild_b = identity_split(data.wild.names, SEED)
    lfw_held = symmetric_counts(data.lfw, members_of(data.lfw, lfw_check))
    lab = lab_counts(data, lfw_fit)
    folds = []
    for fit_ids, check_ids in ((wild_a, wild_b), (wild_b, wild_a)):
        tables = pooled_tables(shipped, data, lab, fit_ids)
        for name, table in tables.items():
            table.fmr_multiplier = (margins or {}).get(name, (margins or {}).get("standard", 1.0))
        held_members = np.setdiff1d(members_of(data.wild, check_ids), data.wild_removed)
        wild_held = symmetric_counts(data.wild, held_members)
        fold = {"fit_people": sorted(data.wild.names[i] for i in fit_ids)[:3] + ["..."],
                "domain_shift": {name: t.domain_shift for name, t in tables.items()},
                "open_set": open_set_check(tables, data.wild, held_members)}
        for data_name, held in (("celeba_dev", wild_held), ("lfw", lfw_held)):
            fold[data_name] = {
                pair_quality: held_out_claims(tables[TABLE_FOR_PAIR_QUALITY[pair_quality]], held, (pair_quality,))
                for pair_quality in QUALITY_CLASSES if TABLE_FOR_PAIR_QUALITY[pair_quality] in tables
            }
        folds.append(fold)
    return {"method": "celeba_dev people split in halves (seed 0); tables fitted on LFW fit-half + one half,"
                      " with the population margins, checked on the other celeba_dev half and the LFW check-half;"
                      " then the halves swapped",
            "folds": folds}


def split_study(shipped: CalibrationSet, data: WildData, lab: tuple[TailCounts, TailCounts | None],
                splits: int = SPLITS, seed: int = SPLIT_SEED) -> dict:
    """Claimed vs measured FMR over many random identity halves of celeba_dev, by pair quality and level.

    Each split fits the tables on LFW's fit half + half the celeba_dev people and measures FMR at their
    thresholds on the other half. Summaries per level: the ratio of means (sum of claims / sum of
    measured FMRs: what a large unseen population would show, since each half's measured FMR is unbiased
    for it), the median and 5th/95th percentiles of claimed/measured per split, and the share of splits
    where the claim was not below the measurement.
    """
    rng = np.random.default_rng(seed)
    people = len(data.wild.names)
    rows: dict[str, dict[float, list[tuple[float, float, float, float]]]] = {
        quality: {level: [] for level in SPLIT_LEVELS} for quality in QUALITY_CLASSES}
    for _ in range(splits):
        order = rng.permutation(people)
        tables = pooled_tables(shipped, data, lab, set(order[: people // 2].tolist()))
        held = symmetric_counts(data.wild, np.setdiff1d(members_of(data.wild, set(order[people // 2:].tolist())),
                                                        data.wild_removed))
        for quality, by_level in rows.items():
            table = tables[TABLE_FOR_PAIR_QUALITY[quality]]
            fmr, hits = held.rate((quality,))
            for level in SPLIT_LEVELS:
                threshold = table.threshold_for_fmr(level)
                index = int(np.argmin(np.abs(SCORE_GRID - threshold)))
                by_level[level].append((table.evidence(threshold).fmr, point_at(table, threshold), float(fmr[index]),
                                        float(hits[index])))
    summary = {}
    for quality, by_level in rows.items():
        summary[quality] = []
        for level, values in by_level.items():
            claimed, point, measured, hits = (np.array(column) for column in zip(*values))
            ratios = np.where(measured > 0, claimed / np.where(measured > 0, measured, 1), np.inf)
            summary[quality].append({
                "target_fmr": level, "mean_false_matches": float(hits.mean()),
                "resolved": bool(hits.mean() >= SPLIT_MIN_MEAN_COUNT),
                "ratio_of_means": float(claimed.sum() / measured.sum()) if measured.sum() > 0 else None,
                "ratio_of_means_point_estimate": float(point.sum() / measured.sum()) if measured.sum() > 0 else None,
                "median_ratio": _finite(np.median(ratios)),  # None: most halves had no false match there
                "ratio_5th_percentile": _finite(np.percentile(ratios, 5, method="nearest")),
                "ratio_95th_percentile": _finite(np.percentile(ratios, 95, method="nearest")),
                "share_safe": float((claimed >= measured).mean()),
            })
    return {"method": f"{splits} random halves of celeba_dev's people (seed {seed}); tables fitted on LFW's fit half"
                      " + one half (no population margin), FMR measured at their thresholds on the other half;"
                      " ratio = claimed / measured",
            "splits": splits, "by_pair_quality": summary}


def point_at(table: CalibrationTable, score: float) -> float:
    """A pooled table's point estimate of the FMR at ``score`` (no margin, no bound)."""
    return 10 ** float(np.interp(score, table.scores, np.log10(np.clip(table.fmr_point, 1e-12, 1.0))))


def _finite(value: float) -> float | None:
    """JSON has no infinity: a ratio over a measured FMR of 0 is stored as None."""
    return float(value) if np.isfinite(value) else None


def population_margins(study: dict, tables: dict[str, CalibrationTable]) -> dict[str, float]:
    """Per table (fitted on all people, no margin yet): the factor that keeps its claims, on a large unseen
    population, not below the FMR measured there.

    At each resolved level of the split study that population's FMR is estimated as the table's point
    estimate divided by the ratio of means of point estimates to measured FMRs over the held-out halves
    (how the method's point estimate errs on people it has not seen); the margin is the smallest factor
    that lifts the table's claim (the upper end of its interval) to it at every such level, and never below 1.

    Why the mean over many halves and not the worst half: a half of 37 people is a noisy sample of the
    population (look-alike pairs make its FMR heavy-tailed), so the worst of two halves measured the luck
    of the split, and widened the poor-pair table 6.9x. Resolved: the halves average SPLIT_MIN_MEAN_COUNT
    false matches, about MIN_RESOLVED_COUNT over all of celeba_dev (a pair falls within one half a
    quarter of the time).
    """
    margins = {}
    for quality, name in TABLE_FOR_PAIR_QUALITY.items():
        needed = [1.0]
        for row in study["by_pair_quality"][quality]:
            if row["resolved"] and row["ratio_of_means_point_estimate"]:
                threshold = tables[name].threshold_for_fmr(row["target_fmr"])
                spread = tables[name].evidence(threshold).fmr / point_at(tables[name], threshold)
                needed.append(1 / (row["ratio_of_means_point_estimate"] * spread))
        margins[name] = max(needed)
    return margins


def refit_in_the_wild(shipped: CalibrationSet, data: WildData) -> CalibrationSet:
    """The LFW-fitted set refitted with all celeba_dev people pooled in, and its held-out checks."""
    if any(table.fmr_low is not None for table in shipped.tables.values()):
        raise ValueError("refit from an LFW-only calibration (facefind calibrate), not an already pooled one")
    lfw_fit, lfw_check = identity_split(data.lfw.names, SEED)
    tables = pooled_tables(shipped, data, lab_counts(data, lfw_fit), set(range(len(data.wild.names))))
    study = split_study(shipped, data, lab_counts(data, lfw_fit))
    margins = population_margins(study, tables)
    for name, table in tables.items():
        table.fmr_multiplier = margins.get(name, margins["standard"])
    cross_validation = cross_validate(shipped, data, lfw_fit, lfw_check, margins)
    checks = {"in_the_wild_cross_validation": cross_validation, "population_margins": margins,
              "in_the_wild_split_study": study, "lfw_only_tables_before_pooling": shipped.checks}
    provenance = {
        **shipped.provenance,
        "in_the_wild": {
            "data": f"celeba_dev ({len(data.wild.paths)} photos, {len(data.wild.names)} people; "
                    f"{len(data.wild_removed)} label error(s) left out)",
            "method": " ".join(pooled.__doc__.split()),
            "domain_shift": {name: table.domain_shift for name, table in tables.items()},
            "low_quality_lfw_source": "degraded LFW, bootstrapped" if data.degraded is not None
            else "the LFW-only degraded table, moved by the shift",
            "date": datetime.now(timezone.utc).date().isoformat(),
        },
    }
    return with_tail_models(CalibrationSet(model_id=shipped.model_id, tables=tables, provenance=provenance,
                                           checks=checks), data.lfw)


def with_covered_table(shipped: CalibrationSet, covered_lfw: CoveredLfw, data: WildData) -> CalibrationSet:
    """``shipped`` (pooled, with tail models) given the 'covered' table it lacks, made as ``calibrate`` and
    ``refit_in_the_wild`` make it: fitted on synthetic-mask probes of LFW's fit half, checked with held-out mask
    shapes on the check half (widened where that check needs it), moved by the standard table's in-the-wild
    shift interval, given the standard table's population margin (or the LFW widening, the larger) and a
    tail model with the shipped slope margins. Only that table and provenance change.

    Why apart: a recogniser gets a covered table when the occlusion classifier comes to cover its stack,
    after its other tables were fitted and checked; refitting those would move tables nothing changed.
    """
    if "covered" in shipped.tables or "tail_model" not in shipped.provenance:
        raise ValueError("add a covered table to a pooled calibration with tail models and no covered table")
    lfw_fit, lfw_check = identity_split(data.lfw.names, SEED)
    mode = COVERED_MATCH_MODE
    lab = CalibrationTable.fit(
        "covered", *covered_pair_scores(covered_lfw, members_of(data.lfw, lfw_fit), "train_mask", mode),
        description=f"probes wearing synthetic masks ({', '.join(TRAINING_SHAPES)}) vs LFW gallery, matched {mode}",
        match_mode=mode)
    held_out = covered_pair_scores(covered_lfw, members_of(data.lfw, lfw_check), "held_out_mask", mode)
    before = check_table(lab, *held_out)
    lab.fmr_multiplier = _widen(lab, before)
    wild = symmetric_counts(data.wild, np.setdiff1d(members_of(data.wild, set(range(len(data.wild.names)))),
                                                    data.wild_removed))
    standard = fit_pooled(lab_counts(data, lfw_fit)[0], wild, ("good",))
    if not np.isclose(standard.shift, shipped.tables["standard"].domain_shift, atol=1e-9):
        raise ValueError("the standard table's in-the-wild shift does not reproduce: other data than it was fitted on")
    covered = shifted_table(lab, standard.shift_interval,
                            "synthetic-mask LFW table moved by the standard table's in-the-wild shift (95% interval of"
                            " the shift; no in-the-wild covered faces to bootstrap)")
    margins = shipped.checks["population_margins"]
    covered.fmr_multiplier = max(margins.get("covered", margins["standard"]), lab.fmr_multiplier)
    covered.tail = tail_model.fit_tail(covered, tail_model.SlopeMargins(**shipped.provenance["tail_model"]["slope_margins"]))
    provenance = dict(shipped.provenance)
    provenance["masks"] = {"fit": list(TRAINING_SHAPES), "check": list(HELD_OUT_SHAPES), "match_mode": mode}
    provenance["counts"] = {**provenance["counts"],
                            "covered": {"impostor_pairs": lab.impostor_pairs, "genuine_pairs": lab.genuine_pairs}}
    provenance["in_the_wild"] = {**provenance["in_the_wild"], "domain_shift": {
        **provenance["in_the_wild"]["domain_shift"], "covered": covered.domain_shift}}
    provenance["tail_model"] = {**provenance["tail_model"], "tables": {
        **provenance["tail_model"]["tables"], "covered": covered.tail.to_dict()}}
    provenance["covered_table"] = {
        "method": " ".join(with_covered_table.__doc__.split()),
        "lfw_held_out_mask_check": {"before_widening": before, "after_widening": check_table(lab, *held_out)},
        "fmr_multiplier": covered.fmr_multiplier,
        "date": datetime.now(timezone.utc).date().isoformat(),
    }
    return replace(shipped, tables={**shipped.tables, "covered": covered}, provenance=provenance)


def with_tail_models(calibration: CalibrationSet, lfw: LfwEmbeddings, validation: dict | None = None) -> CalibrationSet:
    """Every table given a tail model (calibration/tail.py) whose slope margin is the identity bootstrap over
    all of LFW's people; the parameters, and bench/tail.py's out-of-sample check if given, go in provenance.

    bench/tail.py measures the same margin on LFW with its label errors removed; the wider of the two is used."""
    margins = tail_model.bootstrap_slope_margins(
        symmetric_counts(lfw, np.arange(len(lfw.paths))), QUALITY_CLASSES,
        source=f"identity bootstrap ({tail_model.BOOTSTRAP_REPLICATES} replicates) of the tail slope of all LFW pairs")
    cleaned = (validation or {}).get("slope_margins_label_errors_removed")
    if cleaned and cleaned["shallow"] < margins.shallow:
        margins = tail_model.SlopeMargins(**cleaned)
    tables = {name: replace(table, tail=None) for name, table in calibration.tables.items()}
    for table in tables.values():
        table.tail = tail_model.fit_tail(table, margins)
    provenance = {**calibration.provenance, "tail_model": {
        "method": " ".join(tail_model.__doc__.split()),
        "floor_fmr": tail_model.FLOOR_FMR, "fit_decades": tail_model.FIT_DECADES,
        "slope_margins": margins.to_dict(),
        "tables": {name: table.tail.to_dict() for name, table in tables.items()},
        **({"out_of_sample_check": validation} if validation else {}),
        "date": datetime.now(timezone.utc).date().isoformat(),
    }}
    return replace(calibration, tables=tables, provenance=provenance)


def tail_validation_summary(bench_result: Path, model_id: str) -> dict | None:
    """bench/tail.py's figures for ``model_id`` (None when that bench has not been run for it)."""
    import json

    if not bench_result.is_file():
        return None
    for model, result in json.loads(bench_result.read_text())["models"].items():
        if stack_named(model).model_id == model_id:
            return {"method": "bench/tail.py: tails fitted on 10% of LFW people, thresholds for 1e-5/3e-6/1e-6"
                              " checked on all LFW pairs (known aliases merged)",
                    "impostor_pairs": result["impostor_pairs"],
                    "min_ratio_claimed_to_measured": result["min_ratio_claimed_to_measured"],
                    "median_ratio_claimed_to_measured": result["median_ratio_claimed_to_measured"],
                    "min_ratio_without_bootstrap_and_margin": result["min_naive_ratio"],
                    "slope_margins_label_errors_removed": result["slope_margins_for_shipped_tables"],
                    "as_labelled": result["as_labelled"]}
    return None


def wild_data(args: argparse.Namespace, progress: Callable[[str, int, int], None]) -> WildData:
    """Embeddings for --wild refits; degraded LFW is used where its cache exists (it takes an hour to embed)."""
    config = PipelineConfig(model=args.model, masked_templates=False)

    def cached(name: str) -> Path | None:
        return args.cache / f"{args.model}-{name}.npz" if args.cache else None

    lfw = embed_lfw(args.lfw, cache=cached("lfw-clean"), workers=args.workers, config=config,
                    progress=lambda d, t: progress("LFW", d, t))
    wild = embed_lfw(args.wild, cache=cached("celeba-dev"), workers=args.workers, config=config,
                     progress=lambda d, t: progress("wild", d, t))
    degraded_cache = cached("lfw-degraded")
    degraded = embed_lfw(args.lfw, cache=degraded_cache, transform=degrade, transform_id="degrade-v1",
                         workers=args.workers, config=config) if degraded_cache and degraded_cache.exists() else None
    removed = np.array([i for i, path in enumerate(wild.paths) if path in set(args.leave_out)], dtype=np.int64)
    return WildData(lfw, degraded, wild, removed)


def main() -> None:
    parser = argparse.ArgumentParser(description="Fit facefind's calibration tables on LFW.")
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--model", choices=sorted(STACKS), default=DEFAULT_STACK)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--wild", type=Path, default=None,
                        help="in-the-wild labelled photos (celeba_dev): refit the LFW tables in --base pooled with them")
    parser.add_argument("--base", type=Path, default=None, help="the LFW-only calibration file to refit (with --wild)")
    parser.add_argument("--leave-out", nargs="*", default=[], help="--wild photos left out as label errors")
    parser.add_argument("--tail", action="store_true",
                        help="give the tables in --base tail models (FMR beyond the data, calibration/tail.py)")
    parser.add_argument("--tail-check", type=Path, default=Path("bench/results/tail.json"),
                        help="bench/tail.py's out-of-sample check, recorded in provenance with --tail")
    parser.add_argument("--add-covered", action="store_true",
                        help="give the pooled calibration in --base (with --wild, --leave-out as it was refitted) the"
                             " covered table it lacks, leaving its other tables as they are")
    args = parser.parse_args()

    def progress(stage: str, done: int, total: int) -> None:
        print(f"\r{stage}: {done}/{total}", end="", flush=True)

    if args.add_covered:
        covered = embed_covered_lfw(args.lfw, cache=args.cache and args.cache / f"{args.model}-lfw-covered.npz",
                                    workers=args.workers, progress=lambda d, t: progress("covered LFW", d, t),
                                    model=args.model)
        result = with_covered_table(CalibrationSet.load(args.base), covered, wild_data(args, progress))
    elif args.tail:
        base = CalibrationSet.load(args.base)
        lfw = embed_lfw(args.lfw, cache=args.cache and args.cache / f"{args.model}-lfw-clean.npz", workers=args.workers,
                        config=PipelineConfig(model=args.model, masked_templates=False),
                        progress=lambda d, t: progress("LFW", d, t))
        result = with_tail_models(base, lfw, tail_validation_summary(args.tail_check, base.model_id))
    elif args.wild is None:
        result = calibrate(args.lfw, args.cache, args.workers, model=args.model, progress=progress)
    else:
        result = refit_in_the_wild(CalibrationSet.load(args.base), wild_data(args, progress))
    result.save(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
