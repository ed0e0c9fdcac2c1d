"""Out-of-sample check of the calibration tail model (calibration/tail.py), per recogniser.

A tail is fitted the way shipped tables get theirs (identity-bootstrap 95% upper curve, exponential tail
from its last resolved score, slope widened by the bootstrap slope margin), but on a random 10% of LFW's
people only (~300k impostor pairs: resolved to ~3e-5). Its thresholds for FMR 1e-5, 3e-6 and 1e-6 are
then checked against the empirical FMR of ALL LFW pairs (29.6M impostor pairs, resolved to ~3e-7).
The claim must not be lower than the measurement: ratio claimed / measured >= 1. The plain point
estimate extrapolated without the bootstrap and its margin is reported beside it, to show what the
margins buy. Writes bench/results/tail.json and tail.png.

    python bench/tail.py [--cache DIR] [--models arcface,sface] [--subsamples 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, data_dir_or_exit, write_json  # noqa: E402
from accuracy import LFW_ALIASES  # noqa: E402

from facefind.calibration.fit import symmetric_counts  # noqa: E402
from facefind.calibration.pooled import MIN_RESOLVED_COUNT, QUALITY_CLASSES, fit_pooled  # noqa: E402
from facefind.calibration.table import SCORE_GRID, CalibrationTable, default_calibration  # noqa: E402
from facefind.calibration.tail import SlopeMargins, bootstrap_slope_margins, fit_tail, tail_slope  # noqa: E402
from facefind.evaluation.lfw import LfwEmbeddings, embed_lfw  # noqa: E402
from facefind.pipeline import PipelineConfig  # noqa: E402
from facefind.pipeline.models import stack_named  # noqa: E402

LEVELS = (1e-5, 3e-6, 1e-6)
# One person under two names, found among the top "impostor" pairs of all LFW (beyond accuracy.LFW_ALIASES).
# Left in, they are no false matches but label errors: a plateau of ~13 pairs at any score up to 0.8
# that no model of different people's scores can (or should) predict. Both results are reported.
MORE_LFW_ALIASES = (
    ("Dai_Chul_Chyung", "Chyung_Dai-chul"),
    ("Prince_Felipe", "Felipe_De_Borbon"),
    ("Uday_Hussein", "Odai_Hussein"),
    ("Cristina_Fernandez", "Cristina_Kirchner"),
    ("John_Burnett", "John_Barnett"),
)
# Photos filed under someone they do not show (checked by eye): a duplicate of Gabrielle_Rose_0001, Diana
# Taurasi, Roseanne Barr. Left out of the measurement. Identical twins (Carolina and Isabela Moraes) stay in:
# they are different people, and the ~1 pair they add beyond 3e-8 is reported as what it is.
MISLABELLED_LFW = ("Martha_Bowen/Martha_Bowen_0002.jpg", "Shavon_Earp/Shavon_Earp_0001.jpg",
                   "Lane_Bryant/Lane_Bryant_0001.jpg")
SUBSAMPLE_SHARE = 0.1
ALL = QUALITY_CLASSES  # every pair, whatever its quality


def merge_aliases(lfw: LfwEmbeddings) -> LfwEmbeddings:
    """LFW with every known double-named person given one identity and mislabelled photos left out."""
    identities, number = lfw.identities.copy(), {name: i for i, name in enumerate(lfw.names)}
    for keep, alias in LFW_ALIASES + MORE_LFW_ALIASES:
        identities[identities == number[alias]] = number[keep]
    embeddings = lfw.embeddings.copy()
    embeddings[[lfw.index_of(path.split("/")[0], int(path[-8:-4])) for path in MISLABELLED_LFW]] = np.nan
    return LfwEmbeddings(lfw.paths, identities, lfw.names, embeddings, lfw.quality)


def impostor_tail(lfw: LfwEmbeddings, above: float = 0.15) -> tuple[np.ndarray, int]:
    """Every impostor score above ``above`` (sorted) among all LFW images with a face, and the pair count."""
    rows = np.nonzero(lfw.found)[0]
    vectors, people = lfw.embeddings[rows], lfw.identities[rows]
    kept, pairs = [], 0
    for start in range(0, len(rows), 512):
        scores = vectors[start:start + 512] @ vectors.T
        index = np.arange(start, min(start + 512, len(rows)))
        upper = index[:, None] < np.arange(len(rows))[None, :]  # each unordered pair once
        impostor = upper & (people[index, None] != people[None, :])
        pairs += int(impostor.sum())
        kept.append(scores[impostor & (scores > above)])
    return np.sort(np.concatenate(kept)), pairs


def table_from_counts(counts) -> CalibrationTable:
    """A pooled table (LFW only) over every pair: the 95% upper curve, as shipped tables are built."""
    fitted = fit_pooled(counts, None, ALL)
    return CalibrationTable(name="subsample", scores=SCORE_GRID.copy(), fmr=fitted.high, fnmr=np.zeros_like(SCORE_GRID),
                            impostor_pairs=fitted.impostor_pairs, genuine_pairs=0, fmr_low=fitted.low,
                            fmr_point=fitted.point, resolved_until=fitted.resolved_until)


def measured_fmr(tail: np.ndarray, pairs: int, threshold: float) -> tuple[float, int]:
    hits = int(len(tail) - np.searchsorted(tail, threshold, side="left"))
    return hits / pairs, hits


def validate(lfw: LfwEmbeddings, tail: np.ndarray, pairs: int, seed: int) -> dict:
    people = np.unique(lfw.identities)
    chosen = np.random.default_rng(seed).choice(people, int(len(people) * SUBSAMPLE_SHARE), replace=False)
    members = np.nonzero(np.isin(lfw.identities, chosen))[0]
    counts = symmetric_counts(lfw, members)
    table = table_from_counts(counts)
    margins = bootstrap_slope_margins(counts, ALL, seed=seed, source=f"subsample seed {seed}")
    model = fit_tail(table, margins)
    point_fmr, point_hits = counts.rate(ALL)
    anchor = float(SCORE_GRID[np.nonzero(point_hits >= MIN_RESOLVED_COUNT)[0][-1]])
    naive_rate = tail_slope(SCORE_GRID, point_fmr, anchor)
    naive_anchor = float(point_fmr[np.argmin(np.abs(SCORE_GRID - anchor))])
    rows = []
    for level in LEVELS:
        threshold = model.score_for(level)
        measured, hits = measured_fmr(tail, pairs, threshold)
        naive_threshold = anchor + np.log10(naive_anchor / level) / naive_rate
        naive_measured, _ = measured_fmr(tail, pairs, naive_threshold)
        rows.append({"claimed_fmr": level, "threshold": round(threshold, 4), "measured_fmr": measured,
                     "false_matches": hits, "ratio_claimed_to_measured": level / max(measured, 1 / pairs),
                     "naive_threshold": round(float(naive_threshold), 4), "naive_measured_fmr": naive_measured,
                     "naive_ratio": level / max(naive_measured, 1 / pairs)})
    return {"seed": seed, "people": int(len(chosen)), "images": int(len(members)),
            "impostor_pairs": counts.total_pairs(ALL), "anchor_score": model.anchor_score,
            "anchor_fmr": model.anchor_fmr, "decades_per_score": model.decades_per_score,
            "slope_margins": margins.to_dict(), "rows": rows}


def shipped_check(model_id: str, tail: np.ndarray, pairs: int) -> dict:
    """The shipped standard table's claims above its last resolved score vs all LFW pairs (every quality).

    The shipped tail sits on in-the-wild margins, so it should stay well above LFW; where LFW has fewer than
    10 pairs left the measurement is not resolved either, and the pairs beyond the floor are listed."""
    table = default_calibration(model_id).tables["standard"]
    rows = []
    for score in np.arange(table.max_supported_score, 1.0, 0.01):
        measured, hits = measured_fmr(tail, pairs, float(score))
        evidence = table.evidence(float(score))
        rows.append({"score": round(float(score), 3), "claimed_fmr": evidence.fmr, "fmr_source": evidence.fmr_source,
                     "measured_fmr": measured, "false_matches": hits})
    resolved = [row["claimed_fmr"] / row["measured_fmr"] for row in rows if row["false_matches"] >= MIN_RESOLVED_COUNT]
    return {"rows": rows, "min_ratio_where_resolved": min(resolved, default=None),
            "pairs_above_tail_floor_score": measured_fmr(tail, pairs, table.tail.score_for(table.tail.floor_fmr))[1]}


def full_margins(lfw: LfwEmbeddings) -> SlopeMargins:
    """The slope margin the shipped tables use: identity bootstrap over all LFW people."""
    return bootstrap_slope_margins(symmetric_counts(lfw, np.arange(len(lfw.paths))), ALL,
                                   source="identity bootstrap (200 replicates) of the tail slope of all LFW pairs,"
                                          " known aliases merged, mislabelled photos left out (bench/tail.py)")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (model, result) in zip(axes[0], results.items()):
        scores, fmr = np.array(result["full_curve"]["scores"]), np.array(result["full_curve"]["fmr"])
        ax.semilogy(scores, fmr, "k-", label="all LFW pairs (measured)")
        for run in result["subsamples"]:
            line = np.linspace(run["anchor_score"], run["anchor_score"] + 0.25, 20)
            ax.semilogy(line, run["anchor_fmr"] * 10 ** (-run["decades_per_score"] * (line - run["anchor_score"])),
                        "C1-", alpha=0.6, label="tail fitted on 10% of people" if run["seed"] == 0 else None)
            for row in run["rows"]:
                ax.plot(row["threshold"], row["claimed_fmr"], "C1o", ms=4)
                ax.plot(row["threshold"], max(row["measured_fmr"], 1e-9), "C0x", ms=5,
                        label="measured at its thresholds" if run["seed"] == 0 and row is run["rows"][0] else None)
        shipped = result["shipped_standard_vs_all_lfw"]["rows"]
        ax.semilogy([row["score"] for row in shipped], [row["claimed_fmr"] for row in shipped], "C2--",
                    label="shipped standard table: tail model")
        ax.set_ylim(1e-9, 1e-2)
        ax.set_xlim(0.2, 0.8)
        ax.set_xlabel("cosine score")
        ax.set_ylabel("FMR")
        ax.set_title(f"{model}: tail model vs measured")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache")
    parser.add_argument("--models", default="arcface,sface")
    parser.add_argument("--subsamples", type=int, default=5)
    args = parser.parse_args()
    data = data_dir_or_exit()
    results = {}
    for model in args.models.split(","):
        lfw = embed_lfw(data / "lfw", cache=args.cache / f"{model}-lfw-clean.npz",
                        config=PipelineConfig(model=model, masked_templates=False))
        as_labelled = impostor_tail(lfw)
        lfw = merge_aliases(lfw)
        tail, pairs = impostor_tail(lfw)
        runs = [validate(lfw, tail, pairs, seed) for seed in range(args.subsamples)]
        ratios = [row["ratio_claimed_to_measured"] for run in runs for row in run["rows"]]
        naive = [row["naive_ratio"] for run in runs for row in run["rows"]]
        labelled = [level / measured_fmr(*as_labelled, row["threshold"])[0]
                    for run in runs for level, row in zip(LEVELS, run["rows"])]
        curve_scores = SCORE_GRID[SCORE_GRID >= 0.2]
        results[model] = {
            "impostor_pairs": pairs,
            "slope_margins_for_shipped_tables": full_margins(lfw).to_dict(),
            "subsamples": runs,
            "shipped_standard_vs_all_lfw": shipped_check(stack_named(model).model_id, tail, pairs),
            "min_ratio_claimed_to_measured": min(ratios),
            "median_ratio_claimed_to_measured": float(np.median(ratios)),
            "min_naive_ratio": min(naive),
            "as_labelled": {
                "note": "the same thresholds measured on LFW as labelled (known aliases not merged, mislabelled"
                        " photos kept): label errors add a plateau of pairs that are the same person",
                "min_ratio_claimed_to_measured": min(labelled),
                "median_ratio_claimed_to_measured": float(np.median(labelled))},
            "full_curve": {"scores": [float(s) for s in curve_scores],
                           "fmr": [measured_fmr(tail, pairs, float(s))[0] for s in curve_scores]},
        }
        print(model, {key: value for key, value in results[model].items() if "ratio" in key},
              results[model]["as_labelled"])
    write_json("tail", {"method": __doc__.split("\n\n")[1].replace("\n", " "), "levels": LEVELS, "models": results})
    plot(results, RESULTS / "tail.png")


if __name__ == "__main__":
    main()
