"""Train the occlusion classifier on synthetically covered LFW faces; reproducible and small.

    python -m facefind.evaluation.occlusion_training --lfw ../shared/data/lfw \\
        --out src/facefind/pipeline/data/occlusion_w600k_mbf.json

Two logistic regressions on the face embedding (L2-regularised, full-batch
gradient descent with a fixed seed), fitted on half of LFW's people: plain
faces vs faces wearing a training-shape mask ("lower face covered"), and plain
vs sunglasses ("eyes covered"). Cut-offs are set for at most 1% false flags on
the fitting half. The other half, and masks of shapes never used in training,
measure how well it does; both results are stored with the weights.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from facefind.evaluation.covered import CoveredLfw, embed_covered_lfw
from facefind.evaluation.lfw import identity_split
from facefind.pipeline.models import ARCFACE_MBF
from facefind.pipeline.occlusion import (
    HELD_OUT_SHAPES,
    TRAINING_SHAPES,
    OcclusionClassifier,
)

MAX_FALSE_FLAGS = 0.01
SEED = 0


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 1500, rate: float = 0.5) -> tuple[np.ndarray, float]:
    """Weights and bias of an L2-regularised logistic regression (full-batch gradient descent)."""
    weights, bias = np.zeros(x.shape[1]), 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ weights + bias)))
        error = p - y
        weights -= rate * (x.T @ error / len(y) + l2 * weights)
        bias -= rate * error.mean()
    return weights, bias


def _probability(x: np.ndarray, weights: np.ndarray, bias: float) -> np.ndarray:
    return 1 / (1 + np.exp(-(x @ weights + bias)))


def train(covered: CoveredLfw) -> OcclusionClassifier:
    fit_ids, _ = identity_split(covered.names, SEED)
    in_fit = np.isin(covered.identities, list(fit_ids)) & covered.found
    in_check = ~np.isin(covered.identities, list(fit_ids)) & covered.found
    e = covered.embeddings
    weights, biases, thresholds, report = [], [], [], {}
    for name, positive in (("lower_face_covered", "train_mask"), ("eyes_covered", "sunglasses")):
        x = np.vstack([e["plain"][in_fit], e[positive][in_fit]])
        y = np.concatenate([np.zeros(in_fit.sum()), np.ones(in_fit.sum())])
        w, b = fit_logistic(x, y)
        threshold = float(np.quantile(_probability(e["plain"][in_fit], w, b), 1 - MAX_FALSE_FLAGS))
        threshold = max(threshold, 0.5)
        flagged = {v: float((_probability(e[v][in_check], w, b) >= threshold).mean()) for v in e}
        report[name] = {"threshold": threshold, "flag_rate_on_held_out_people": flagged}
        weights.append(w)
        biases.append(b)
        thresholds.append(threshold)
    provenance = {
        "model_id": ARCFACE_MBF.model_id,
        "data": f"LFW ({int(covered.found.sum())} faces) through facefind's pipeline; fit on half of the people"
                f" (seed {SEED}), checked on the other half",
        "training_masks": list(TRAINING_SHAPES),
        "held_out_masks": list(HELD_OUT_SHAPES),
        "method": "logistic regression on the 512-d embedding; cut-off for <= 1% false flags on the fit half",
        "date": datetime.now(timezone.utc).date().isoformat(),
        "check": report,
    }
    return OcclusionClassifier(np.array(weights, np.float32), np.array(biases, np.float32), np.array(thresholds, np.float32), provenance)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train facefind's occlusion classifier on covered LFW.")
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    covered = embed_covered_lfw(args.lfw, cache=args.cache and args.cache / "lfw-covered.npz",
                                progress=lambda d, t: print(f"\rcovered LFW {d}/{t}", end=""))
    classifier = train(covered)
    classifier.save(args.out)
    print(f"\n{classifier.provenance['check']}\nwrote {args.out}")


if __name__ == "__main__":
    main()
