"""Accuracy of each shipped model stack, side by side, through facefind's own detection and alignment.

Prints and writes bench/results/accuracy.json, accuracy_det.png (both stacks) and accuracy_hist.png /
accuracy_hist_sface.png (score distributions with the verdict thresholds) and accuracy_calibration.png
(claimed vs measured FMR on held-out people). For each stack:
- LFW View-2 10-fold verification accuracy (threshold chosen on 9 folds, tested on the 10th);
- TAR at FMR 1e-3, 1e-4, 1e-5 over all LFW pairs, and over all celeba_dev pairs (in-the-wild photos);
- open-set 1:N on LFW (rank-1, FNIR at FPIR 0.01 / 0.001, and at facefind's default operating point);
- the shipped calibration tables' claimed vs measured FMR on people not used for fitting (LFW and celeba_dev,
  by pair quality, identity-bootstrap 95% intervals; celeba_dev by 2-fold identity cross-validation), and the
  distribution of claimed / measured over the refit's many random celeba_dev halves (its split study);
- open-set stranger rate vs predicted among held-out celeba_dev people (tables fitted without them);
- open-set stranger rate (shown any match) vs predicted, in galleries of 150, 1,500 and 2,500 faces;
- pipeline speed (decode -> detect -> align -> quality -> embed, one thread) on the same photos.

    python bench/accuracy.py [--cache DIR] [--models arcface,sface]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, data_dir_or_exit, tar_at_fmr, write_json  # noqa: E402

from facefind.calibration import default_calibration  # noqa: E402
from facefind.calibration.table import POSSIBLE_MAX_FMR, STRONG_MAX_FMR, WEAK_MAX_FMR  # noqa: E402
from facefind.calibration.pooled import QUALITY_CLASSES, quality_class  # noqa: E402
from facefind.calibration.table import CalibrationTable  # noqa: E402
from facefind.evaluation.lfw import (  # noqa: E402
    LfwEmbeddings,
    embed_lfw,
    identity_split,
    list_images,
    pair_scores,
    read_view2_pairs,
)
from facefind.pipeline import FacePipeline, PipelineConfig  # noqa: E402
from facefind.pipeline.decode import decode_image  # noqa: E402
from facefind.pipeline.models import STACKS  # noqa: E402
from facefind.search import DEFAULT_MAX_FMR  # noqa: E402

TAR_LEVELS = (1e-3, 1e-4, 1e-5)
# The same person filed under two names in LFW, found as the top "stranger" scores of the open-set test.
LFW_ALIASES = (
    ("Sepp_Blatter", "Joseph_Blatter"),
    ("Nan_Wang", "Wang_Nan"),
    ("Hassan_Wirajuda", "Hasan_Wirayuda"),
    ("Mireya_Moscoso", "Mireya_Elisa_Moscoso_Rodriguez"),
    ("Jon_Gruden", "John_Gruden"),
)
PUBLISHED_LFW_ACCURACY = {"arcface": 0.9970, "sface": 0.9940}  # InsightFace model zoo; OpenCV Zoo (fp32)
LABEL_ERROR_MARGIN = 0.2  # on celeba_dev: 1 photo beyond it (0.64); the next largest margins are 0.16, 0.15
OPEN_SET_GALLERIES = (150, 1500, 2500)
OPEN_SET_MAX_FMR = (1e-4, 1e-5)
OPEN_SET_DRAWS = 3
OPEN_SET_STRANGERS = 2000
SEED = 0
SPEED_IMAGES = 60  # photos timed per stack: every 23rd celeba_dev photo (in-the-wild, 99 px to 4000+ px wide)


def view2_accuracy(lfw: LfwEmbeddings, pairs_file: Path, published: float | None = None) -> dict:
    """10-fold accuracy; a pair with an undetected face counts with score -1 (a likely error)."""
    folds = read_view2_pairs(pairs_file)
    scores, labels = [], []
    missing = 0
    for fold in folds:
        fold_scores = []
        for name1, n1, name2, n2, _same in fold:
            a, b = lfw.index_of(name1, n1), lfw.index_of(name2, n2)
            if lfw.found[a] and lfw.found[b]:
                fold_scores.append(float(lfw.embeddings[a] @ lfw.embeddings[b]))
            else:
                missing += 1
                fold_scores.append(-1.0)
        scores.append(np.array(fold_scores))
        labels.append(np.array([p[4] for p in fold]))
    candidates = np.arange(-0.2, 1.0, 0.0025)
    accuracies, thresholds = [], []
    for test in range(len(folds)):
        train_s = np.concatenate([s for i, s in enumerate(scores) if i != test])
        train_l = np.concatenate([labels_ for i, labels_ in enumerate(labels) if i != test])
        best = max(candidates, key=lambda t: ((train_s >= t) == train_l).mean())
        thresholds.append(float(best))
        accuracies.append(float(((scores[test] >= best) == labels[test]).mean()))
    return {
        "mean_accuracy": float(np.mean(accuracies)),
        "std_accuracy": float(np.std(accuracies)),
        "fold_accuracies": accuracies,
        "fold_thresholds": thresholds,
        "pairs_with_undetected_face": missing,
        "published_accuracy": published,
    }


def merge_aliases(lfw: LfwEmbeddings) -> LfwEmbeddings:
    """The same embeddings with LFW's known double-named people given one identity."""
    identities = lfw.identities.copy()
    number = {name: i for i, name in enumerate(lfw.names)}
    for keep, alias in LFW_ALIASES:
        if keep in number and alias in number:
            identities[identities == number[alias]] = number[keep]
    return LfwEmbeddings(lfw.paths, identities, lfw.names, lfw.embeddings, lfw.quality)


def open_set(lfw: LfwEmbeddings, table: CalibrationTable) -> dict:
    """Gallery: first image of each person with 2+ images, plus every single-image person (distractors).

    Mated probes: the other images of 2+ people. Non-mated searches: the same probes with their own
    person taken out of the gallery (leave-one-out), so every probe also acts as a stranger.
    """
    found = lfw.found
    first_of: dict[int, int] = {}
    counts = np.bincount(lfw.identities)
    for i in np.nonzero(found)[0]:
        first_of.setdefault(int(lfw.identities[i]), int(i))
    gallery = np.array(sorted(first_of.values()))
    probes = np.array([i for i in np.nonzero(found)[0] if counts[lfw.identities[i]] >= 2 and first_of[int(lfw.identities[i])] != i])
    scores = lfw.embeddings[probes] @ lfw.embeddings[gallery].T
    mate = lfw.identities[probes][:, None] == lfw.identities[gallery][None, :]
    mate_score = np.where(mate, scores, -np.inf).max(axis=1)
    best_other = np.where(mate, -np.inf, scores).max(axis=1)
    rank1 = float((mate_score > best_other).mean())
    result = {"gallery_size": int(len(gallery)), "mated_probes": int(len(probes)), "rank1_identification_rate": rank1}
    for fpir in (0.01, 0.001):
        threshold = float(np.quantile(best_other, 1 - fpir))
        fnir = float(((mate_score < threshold) | (mate_score <= best_other)).mean())
        result[f"fnir_at_fpir_{fpir:g}"] = {"threshold": threshold, "fnir": fnir}
    # facefind's default: FMR <= 1e-5 and at most one expected false match in a gallery this size
    default_threshold = max(table.threshold_for_fmr(DEFAULT_MAX_FMR), table.threshold_for_fmr(1.0 / len(gallery)))
    result["default_operating_point"] = {
        "threshold": default_threshold,
        "fpir": float((best_other >= default_threshold).mean()),
        "fnir": float(((mate_score < default_threshold) | (mate_score <= best_other)).mean()),
        "meaning": "fpir: share of strangers (probe's own person not enrolled) for whom facefind shows any match"
                   " by default; fnir: share of enrolled people it fails to return at rank 1 by default",
    }
    return result


def calibration_checks(model_id: str) -> dict:
    shipped = default_calibration(model_id)
    return {"provenance": shipped.provenance, "checks": shipped.checks}


def stranger_rates(model_id: str, lfw: LfwEmbeddings, celeba: LfwEmbeddings, removed: np.ndarray) -> dict:
    """Open-set: share of strangers shown any match vs what the tables predict, in mixed galleries.

    Faces: LFW people never used for fitting (the check half) plus celeba_dev (used for fitting: its
    rows say so). Half the people are enrolled; a gallery is N random faces of enrolled people; every
    face of a non-enrolled person is searched as a stranger. A pair is shown when its score reaches
    the threshold of the table the pair uses (its poorer face) for max_fmr. Predicted: 1 - prod(1 - claimed
    FMR at that threshold) over the gallery, averaged over strangers. Interval: bootstrap over stranger people.
    """
    calibration = default_calibration(model_id)
    _fit, check = identity_split(lfw.names, SEED)
    lfw_rows = np.nonzero(lfw.found & np.isin(lfw.identities, list(check)))[0]
    celeba_rows = np.setdiff1d(np.nonzero(celeba.found)[0], removed)
    vectors = np.concatenate([lfw.embeddings[lfw_rows], celeba.embeddings[celeba_rows]])
    people = np.concatenate([lfw.identities[lfw_rows], celeba.identities[celeba_rows] + len(lfw.names)])
    quality = np.concatenate([quality_class(np.array(lfw.quality)[lfw_rows]),
                              quality_class(np.array(celeba.quality)[celeba_rows])])
    tables = [calibration.table_for(name) for name in QUALITY_CLASSES]
    rng = np.random.default_rng(SEED)
    results = []
    for gallery_size in OPEN_SET_GALLERIES:
        for max_fmr in OPEN_SET_MAX_FMR:
            shown, predicted, stranger_people = [], [], []
            for _draw in range(OPEN_SET_DRAWS):
                enrolled = rng.permutation(np.unique(people))[: len(np.unique(people)) // 2]
                candidates = np.nonzero(np.isin(people, enrolled))[0]
                gallery = rng.choice(candidates, size=min(gallery_size, len(candidates)), replace=False)
                strangers = np.nonzero(~np.isin(people, enrolled))[0]
                strangers = rng.choice(strangers, size=min(OPEN_SET_STRANGERS, len(strangers)), replace=False)
                pair_class = np.maximum(quality[strangers][:, None], quality[gallery][None, :])
                thresholds = np.array([max(t.threshold_for_fmr(max_fmr), t.threshold_for_fmr(1.0 / len(gallery)))
                                       for t in tables])
                claimed = np.array([t.fmr_at(th)[0] for t, th in zip(tables, thresholds)])
                scores = vectors[strangers] @ vectors[gallery].T
                shown.append((scores >= thresholds[pair_class]).any(axis=1))
                predicted.append(1 - np.exp(np.log1p(-claimed[pair_class]).sum(axis=1)))
                stranger_people.append(people[strangers])
            shown_all, predicted_all = np.concatenate(shown), np.concatenate(predicted)
            who = np.concatenate(stranger_people)
            unique, inverse = np.unique(who, return_inverse=True)
            per_person_shown = np.bincount(inverse, weights=shown_all, minlength=len(unique))
            per_person_faces = np.bincount(inverse, minlength=len(unique))
            weights = rng.multinomial(len(unique), np.full(len(unique), 1 / len(unique)), size=300)
            samples = (weights @ per_person_shown) / np.maximum(weights @ per_person_faces, 1)
            wild_strangers = who >= len(lfw.names)  # celeba_dev people are numbered after LFW's
            results.append({
                "gallery_size": int(len(gallery)), "max_fmr": max_fmr, "strangers_searched": int(len(shown_all)),
                "measured_stranger_rate": float(shown_all.mean()),
                "measured_interval": [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))],
                "predicted_stranger_rate": float(predicted_all.mean()),
                "celeba_dev_strangers": {"searched": int(wild_strangers.sum()),
                                         "measured_stranger_rate": float(shown_all[wild_strangers].mean()),
                                         "predicted_stranger_rate": float(predicted_all[wild_strangers].mean())},
            })
    return {"faces": int(len(vectors)), "lfw_check_half_faces": int(len(lfw_rows)), "celeba_dev_faces": int(len(celeba_rows)),
            "draws": OPEN_SET_DRAWS, "rows": results,
            "note": "celeba_dev people were used to fit the shipped tables; LFW check-half people were not"}


def pipeline_speed(model: str, photos: list[Path]) -> dict:
    """Seconds per photo through the whole pipeline (masked templates included, as at ingest), one thread."""
    pipeline = FacePipeline(PipelineConfig(model=model, threads=1))
    pipeline.analyze(decode_image(photos[0]).pixels)  # warm-up
    faces, started = 0, time.perf_counter()
    for photo in photos:
        faces += len(pipeline.analyze(decode_image(photo).pixels))
    seconds = time.perf_counter() - started
    return {"photos": len(photos), "faces": faces, "seconds_per_photo": seconds / len(photos),
            "photos_per_second": len(photos) / seconds}


def suspected_label_errors(celeba: dict[str, LfwEmbeddings]) -> np.ndarray:
    """celeba_dev images that every model confidently places with another person: their mean score with
    another identity's photos beats that with their own label's by LABEL_ERROR_MARGIN (CelebA's official
    labels hold a few errors). A small margin would also drop hard photos of the right person."""
    suspected = None
    for embeddings in celeba.values():
        vectors, ids = np.nan_to_num(embeddings.embeddings), embeddings.identities
        people = np.unique(ids)
        scores = vectors @ vectors.T
        np.fill_diagonal(scores, np.nan)
        means = np.stack([np.nanmean(scores[:, ids == person], axis=1) for person in people], axis=1)
        own = means[np.arange(len(ids)), np.searchsorted(people, ids)]
        means[np.arange(len(ids)), np.searchsorted(people, ids)] = -np.inf
        flagged = embeddings.found & (means.max(axis=1) > own + LABEL_ERROR_MARGIN)
        suspected = flagged if suspected is None else suspected & flagged
    return np.nonzero(suspected)[0]


def celeba_tar(celeba: LfwEmbeddings, removed: np.ndarray) -> dict:
    """TAR over all celeba_dev pairs, as labelled and without the suspected label errors."""
    genuine, impostor = pair_scores(celeba, np.arange(len(celeba.paths)))
    kept = np.setdiff1d(np.arange(len(celeba.paths)), removed)
    clean_genuine, clean_impostor = pair_scores(celeba, kept)
    return {
        "images": len(celeba.paths), "images_without_face": int((~celeba.found).sum()),
        "as_labelled": {"genuine_pairs": int(len(genuine)), "impostor_pairs": int(len(impostor)),
                        "tar_at_fmr": tar_at_fmr(genuine, impostor, TAR_LEVELS)},
        "label_errors_removed": {"images_removed": [celeba.paths[i] for i in removed],
                                 "genuine_pairs": int(len(clean_genuine)), "impostor_pairs": int(len(clean_impostor)),
                                 "tar_at_fmr": tar_at_fmr(clean_genuine, clean_impostor, TAR_LEVELS)},
        "note": "all pairs of celeba_dev photos (face nearest the centre of each); 1e-5 is about 9 impostor pairs,"
                " so one mislabelled photo decides it as labelled",
    }


def evaluate(model: str, data: Path, cache: Path) -> tuple[dict, dict, LfwEmbeddings, LfwEmbeddings]:
    """The report for one stack, its score arrays for the plots, and its celeba_dev and LFW embeddings."""
    config = PipelineConfig(model=model, masked_templates=False)
    stack = STACKS[model]

    def progress(what: str):
        return lambda done, total: print(f"\r{model}: embedding {what} {done}/{total}", end="", flush=True)

    lfw = embed_lfw(data / "lfw", cache=cache / f"{model}-lfw-clean.npz", config=config, progress=progress("LFW"))
    celeba = embed_lfw(data / "celeba_dev", cache=cache / f"{model}-celeba-dev.npz", config=config,
                       progress=progress("celeba_dev"))
    print()
    genuine, impostor = pair_scores(lfw, np.arange(len(lfw.paths)))
    table = default_calibration(stack.model_id).tables["standard"]
    openset = open_set(lfw, table)
    openset["with_known_aliases_merged"] = open_set(merge_aliases(lfw), table)
    openset["with_known_aliases_merged"]["aliases"] = [list(pair) for pair in LFW_ALIASES]
    photos = [data / "celeba_dev" / path for path in list_images(data / "celeba_dev")[::23][:SPEED_IMAGES]]
    result = {
        "model_id": stack.model_id,
        "detector": stack.detector.model_id,
        "licence": stack.licence,
        "images": len(lfw.paths),
        "images_without_face": int((~lfw.found).sum()),
        "view2": view2_accuracy(lfw, data / "lfw_pairs.txt", PUBLISHED_LFW_ACCURACY.get(model)),
        "all_pairs": {"genuine_pairs": int(len(genuine)), "impostor_pairs": int(len(impostor)),
                      "tar_at_fmr": tar_at_fmr(genuine, impostor, TAR_LEVELS)},
        "open_set": openset,
        "speed": pipeline_speed(model, photos),
        "calibration": calibration_checks(stack.model_id),
    }
    scores = {"lfw": (genuine, impostor), "celeba_dev": pair_scores(celeba, np.arange(len(celeba.paths)))}
    return result, scores, celeba, lfw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache", help="embedding cache folder")
    parser.add_argument("--models", default=",".join(STACKS), help="comma-separated model stacks")
    args = parser.parse_args()
    data = data_dir_or_exit()
    results, scores, celeba, lfw = {}, {}, {}, {}
    for model in args.models.split(","):
        results[model], scores[model], celeba[model], lfw[model] = evaluate(model, data, args.cache)
    removed = suspected_label_errors(celeba)
    for model in results:
        results[model]["celeba_dev"] = celeba_tar(celeba[model], removed)
        results[model]["open_set_strangers"] = stranger_rates(results[model]["model_id"], lfw[model], celeba[model], removed)
    path = write_json("accuracy", {"models": results})
    _plots(scores)
    _calibration_plot(results)
    for model, result in results.items():
        _print(model, result)
    print(f"wrote {path}")


def _print(model: str, result: dict) -> None:
    view2 = result["view2"]
    published = view2["published_accuracy"]
    print(f"== {model} ({result['model_id']}; {result['licence']})")
    print(f"LFW View-2 10-fold accuracy: {view2['mean_accuracy'] * 100:.2f}% +- {view2['std_accuracy'] * 100:.2f}"
          f" (published {published * 100:.2f}%; {view2['pairs_with_undetected_face']} pairs lost to detection)")
    for level, row in result["all_pairs"]["tar_at_fmr"].items():
        print(f"TAR at FMR {level}: {row['tar'] * 100:.2f}% (threshold {row['threshold']:.3f})")
    celeba = result["celeba_dev"]
    for level, row in celeba["label_errors_removed"]["tar_at_fmr"].items():
        labelled = celeba["as_labelled"]["tar_at_fmr"][level]["tar"]
        print(f"celeba_dev TAR at FMR {level}: {row['tar'] * 100:.2f}% (threshold {row['threshold']:.3f});"
              f" as labelled {labelled * 100:.2f}%")
    print(f"  celeba_dev images removed as label errors: {', '.join(celeba['label_errors_removed']['images_removed'])}")
    speed = result["speed"]
    print(f"pipeline speed, one thread: {speed['seconds_per_photo'] * 1000:.0f} ms a photo ({speed['photos']} celeba_dev"
          f" photos, {speed['faces']} faces)")
    openset = result["open_set"]
    print(f"Open-set 1:N, gallery {openset['gallery_size']}, {openset['mated_probes']} probes:"
          f" rank-1 {openset['rank1_identification_rate'] * 100:.2f}%,"
          f" FNIR@FPIR=0.01 {openset['fnir_at_fpir_0.01']['fnir'] * 100:.2f}%,"
          f" FNIR@FPIR=0.001 {openset['fnir_at_fpir_0.001']['fnir'] * 100:.2f}%")
    point = openset["default_operating_point"]
    print(f"  default settings: strangers shown a match (FPIR) {point['fpir'] * 100:.2f}%, enrolled missed (FNIR) {point['fnir'] * 100:.2f}%")
    merged = openset["with_known_aliases_merged"]
    print(f"  with LFW's double-named people merged: FNIR@FPIR=0.01 {merged['fnir_at_fpir_0.01']['fnir'] * 100:.2f}%,"
          f" FNIR@FPIR=0.001 {merged['fnir_at_fpir_0.001']['fnir'] * 100:.2f}%,"
          f" default FPIR {merged['default_operating_point']['fpir'] * 100:.2f}%")
    print("Calibration on people not used for fitting (claimed vs measured FMR, identity-bootstrap 95% intervals):")
    for number, fold in enumerate(result["calibration"]["checks"]["in_the_wild_cross_validation"]["folds"], 1):
        print(f"  fold {number}: domain shift {', '.join(f'{k} {v:.3f}' for k, v in fold['domain_shift'].items())}")
        for data_set in ("celeba_dev", "lfw"):
            for pair_quality, rows in fold[data_set].items():
                for row in rows[:4]:
                    ratio = row["ratio_claimed_to_measured"]
                    low, high = row["measured_interval"]
                    print(f"    {data_set:10s} {pair_quality:5s} target {row['target_fmr']:<6g} claimed {row['claimed_fmr']:.1e}"
                          f" [{row['claimed_interval'][0]:.1e}, {row['claimed_interval'][1]:.1e}]"
                          f" measured {row['measured_fmr']:.1e} [{low:.1e}, {high:.1e}] ({row['false_matches']:.0f} pairs)"
                          f" claimed/measured {'-' if ratio is None else f'{ratio:.2f}'}")
    study = result["calibration"]["checks"]["in_the_wild_split_study"]
    print(f"Claimed / measured FMR over {study['splits']} random celeba_dev halves (tables from the other half;"
          " * = too few false matches to resolve):")
    for pair_quality, rows in study["by_pair_quality"].items():
        print(f"  {pair_quality:5s} " + " | ".join(
            f"{row['target_fmr']:g}{'' if row['resolved'] else '*'}: mean {row['ratio_of_means'] or 0:.2f}"
            f" median {_ratio(row['median_ratio'])} [{_ratio(row['ratio_5th_percentile'])},"
            f" {_ratio(row['ratio_95th_percentile'])}]"
            f" safe {row['share_safe'] * 100:.0f}%" for row in rows[:5]))
    print("Open set among held-out celeba_dev people (tables fitted on the other half), strangers shown a match:")
    for number, fold in enumerate(result["calibration"]["checks"]["in_the_wild_cross_validation"]["folds"], 1):
        for row in fold["open_set"]:
            print(f"  fold {number} gallery {row['gallery']} (~{row['mean_gallery_size']:.0f}) max_fmr {row['max_fmr']:g}:"
                  f" measured {row['measured_stranger_rate'] * 100:.2f}% predicted {row['predicted_stranger_rate'] * 100:.2f}%")
    print("Open set, strangers shown a match (measured [95%] vs predicted):")
    for row in result["open_set_strangers"]["rows"]:
        low, high = row["measured_interval"]
        print(f"  gallery {row['gallery_size']:5d} max_fmr {row['max_fmr']:g}: measured {row['measured_stranger_rate'] * 100:.2f}%"
              f" [{low * 100:.2f}, {high * 100:.2f}] predicted {row['predicted_stranger_rate'] * 100:.2f}%;"
              f" celeba_dev strangers {row['celeba_dev_strangers']['measured_stranger_rate'] * 100:.2f}%"
              f" vs {row['celeba_dev_strangers']['predicted_stranger_rate'] * 100:.2f}%")


def _ratio(value: float | None) -> str:
    return "inf" if value is None else f"{value:.2f}"


def _plots(scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    thresholds = np.linspace(-0.2, 1.0, 1201)
    fig, axis = plt.subplots(figsize=(6, 4.5))
    for model, by_set in scores.items():
        for data_set, (genuine, impostor) in by_set.items():
            fmr = 1 - np.searchsorted(np.sort(impostor), thresholds) / len(impostor)
            fnmr = np.searchsorted(np.sort(genuine), thresholds) / len(genuine)
            keep = fmr > 0
            axis.loglog(fmr[keep], np.maximum(fnmr[keep], 1e-5), label=f"{model} on {data_set} (all pairs)",
                        linestyle="-" if data_set == "lfw" else "--")
    for level in TAR_LEVELS:
        axis.axvline(level, color="grey", linestyle=":", linewidth=0.8)
    axis.set_xlabel("false match rate (FMR)")
    axis.set_ylabel("false non-match rate (FNMR)")
    axis.set_title("DET curves through facefind's pipeline")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy_det.png", dpi=110)
    for model, by_set in scores.items():
        _histogram(model, *by_set["lfw"])


def _calibration_plot(results: dict) -> None:
    """Claimed vs measured FMR on held-out people, both folds, by data set and pair quality."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 5), squeeze=False)
    for axis, (model, result) in zip(axes[0], results.items()):
        for fold in result["calibration"]["checks"]["in_the_wild_cross_validation"]["folds"]:
            for data_set, marker in (("celeba_dev", "o"), ("lfw", "s")):
                for pair_quality, colour in zip(("good", "fair", "poor"), ("tab:green", "tab:orange", "tab:red")):
                    rows = [r for r in fold[data_set].get(pair_quality, []) if r["false_matches"] >= 5]
                    if not rows:
                        continue
                    measured = np.array([r["measured_fmr"] for r in rows])
                    errors = np.abs(np.array([r["measured_interval"] for r in rows]).T - measured)
                    axis.errorbar([r["claimed_fmr"] for r in rows], measured, yerr=errors, fmt=marker, color=colour,
                                  alpha=0.7, markersize=4, label=f"{data_set} {pair_quality}")
        line = np.array([1e-6, 2e-2])
        axis.loglog(line, line, "k-", linewidth=0.8, label="claimed = measured")
        axis.loglog(line, line / 1.5, "k:", linewidth=0.8, label="claimed = 1.5 x measured")
        axis.loglog(line, line * 1.5, "k:", linewidth=0.8)
        axis.set_xlabel("claimed FMR (upper 95%)")
        axis.set_ylabel("measured FMR on held-out people")
        axis.set_title(f"{model}: held-out celeba_dev halves and LFW")
        handles, labels = axis.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        axis.legend(unique.values(), unique.keys(), fontsize=7)
        axis.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "accuracy_calibration.png", dpi=110)


def _histogram(model: str, genuine: np.ndarray, impostor: np.ndarray) -> None:
    import matplotlib.pyplot as plt

    table = default_calibration(STACKS[model].model_id).tables["standard"]
    fig, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(-0.3, 1.0, 131)
    axis.hist(impostor, bins=bins, density=True, alpha=0.6, label=f"different people ({len(impostor):,} pairs)", log=True)
    axis.hist(genuine, bins=bins, density=True, alpha=0.6, label=f"same person ({len(genuine):,} pairs)", log=True)
    for level, label, colour in ((WEAK_MAX_FMR, "weak", "red"), (POSSIBLE_MAX_FMR, "possible", "orange"), (STRONG_MAX_FMR, "strong", "green")):
        threshold = table.threshold_for_fmr(level)
        axis.axvline(threshold, color=colour, linestyle="--", linewidth=1,
                     label=f"'{label}' from {threshold:.3f} (FMR <= {level:g})")
    axis.set_xlabel("cosine similarity")
    axis.set_ylabel("density (log)")
    axis.set_title(f"{model}: LFW score distributions and verdict thresholds")
    axis.legend(loc="lower left", fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / ("accuracy_hist.png" if model == "arcface" else f"accuracy_hist_{model}.png"), dpi=110)


if __name__ == "__main__":
    main()
