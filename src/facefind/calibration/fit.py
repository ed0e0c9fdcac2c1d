"""Fit calibration tables on LFW through facefind's own pipeline, and check them on unseen people.

Reproducible: ``facefind calibrate --lfw ../shared/data/lfw`` (or ``python -m
facefind.calibration.fit``). Identities are split in two halves with a fixed
seed; tables are fitted on one half and checked on the other, and both
results are stored in the table's ``checks``. Where the check shows a table
claiming a lower FMR than measured by more than ``MAX_CLAIM_ERROR``, the
table's ``fmr_multiplier`` widens its claims by the measured factor.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from facefind.calibration.table import CalibrationSet, CalibrationTable
from facefind.evaluation.covered import covered_pair_scores, embed_covered_lfw
from facefind.evaluation.degrade import DEGRADATIONS, degrade
from facefind.evaluation.lfw import (
    LfwEmbeddings,
    embed_lfw,
    identity_split,
    pair_scores,
)
from facefind.pipeline import PipelineConfig
from facefind.pipeline.models import DEFAULT_STACK, STACKS, stack_named
from facefind.pipeline.occlusion import HELD_OUT_SHAPES, TRAINING_SHAPES, default_occlusion_classifier

CHECK_LEVELS = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
# How a probe whose lower face is covered is matched; chosen by bench/masked.py (see README).
COVERED_MATCH_MODE = "mean_of_both"
MAX_CLAIM_ERROR = 2.0
SEED = 0


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
    with_covered = default_occlusion_classifier().provenance.get("model_id") == stack.model_id
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


def main() -> None:
    parser = argparse.ArgumentParser(description="Fit facefind's calibration tables on LFW.")
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--model", choices=sorted(STACKS), default=DEFAULT_STACK)
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    result = calibrate(args.lfw, args.cache, args.workers, model=args.model,
                       progress=lambda stage, done, total: print(f"\r{stage}: {done}/{total}", end="", flush=True))
    result.save(args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
