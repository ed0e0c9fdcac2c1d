"""Masked faces on LFW: does masked matching find more of the right people, and are its FMRs honest?

Probes are LFW faces of the held-out half of the people wearing synthetic masks of
shapes never used in training (scarf, bandana). The gallery is the same people's
other images. Three ways of matching a covered probe are compared side by side:
(a) plain: against the gallery faces as they are; (b) masked: against each gallery
face's stored masked template; (c) best of both. Reports TAR at FMR 1e-3 and 1e-4
for each (thresholds from each mode's own impostor scores), the clean-probe figures
for reference, the claimed vs measured FMR of the shipped 'covered' table, and how
often the occlusion classifier flags covered and uncovered faces, including the real
masked photos in group_photos/masked. Writes bench/results/masked.json.

The pixel occlusion classifier is measured out of sample, as it is trained
(facefind.evaluation.occlusion_training): 6-fold cross-validation, celeba_dev and
LFW by identity, masked_real by whole crawl batch. Targets: >= 90% of real masked
faces flagged, <= 0.5% of clean celeba_dev faces flagged lower face covered,
<= 0.3% flagged eyes covered. Plot: bench/results/masked_occlusion.png (share of
real masks flagged against share of clean celeba_dev faces flagged).

    python bench/masked.py [--cache DIR] [--occlusion-only]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, data_dir_or_exit, tar_at_fmr, write_json  # noqa: E402

from facefind.calibration import default_calibration  # noqa: E402
from facefind.calibration.fit import check_table  # noqa: E402
from facefind.evaluation.covered import (  # noqa: E402
    MATCH_MODES,
    covered_pair_scores,
    embed_covered_lfw,
)
from facefind.evaluation.lfw import identity_split  # noqa: E402
from facefind.evaluation.occlusion_training import (  # noqa: E402
    MAX_FALSE_FLAGS,
    collect_crops,
    cross_validate,
    report,
    training_set,
)
from facefind.pipeline import FacePipeline  # noqa: E402
from facefind.pipeline.decode import decode_image  # noqa: E402

LEVELS = (1e-3, 1e-4)


def real_masked_photos(data: Path) -> dict:
    """How many faces the classifier flags in the real masked photos, and in the crowd photos (mostly unmasked)."""
    pipeline = FacePipeline()
    result = {}
    for name, folder in (("group_photos/masked", data / "group_photos" / "masked"), ("group_photos/crowds", data / "group_photos" / "crowds")):
        per_file = {}
        for path in sorted(folder.iterdir()):
            faces = pipeline.analyze(decode_image(path).pixels)
            per_file[path.name] = {
                "faces": len(faces),
                "lower_face_covered": sum(bool(f.quality.lower_face_covered) for f in faces),
                "eyes_covered": sum(bool(f.quality.eyes_covered) for f in faces),
            }
        total = sum(v["faces"] for v in per_file.values())
        flagged = sum(v["lower_face_covered"] for v in per_file.values())
        result[name] = {"faces": total, "flagged_lower_face_covered": flagged, "files": per_file}
    return result


TARGETS = {"masked_real_flagged": 0.90, "celeba_lower_face_false": 0.005, "celeba_eyes_false": 0.003}


def occlusion_cross_validation(data: Path, cache: Path) -> dict:
    """Out-of-fold flag rates of the pixel classifier, and the plot of real masks found vs clean faces flagged."""
    crops = collect_crops(data, cache / "occlusion-crops.npz",
                          progress=lambda d, t: print(f"\rcrops {d}/{t}", end="", flush=True))
    training = training_set(crops)
    scores = cross_validate(training, progress=print)
    figures = report(training, scores)
    _plot_occlusion(training, scores)
    return {"targets": TARGETS, "max_false_flags_used_for_cut_offs": MAX_FALSE_FLAGS, "out_of_fold": figures}


def _plot_occlusion(training, scores: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean, real = training.crops["clean"], training.crops["real"]
    celeba = (clean.source == "celeba") & clean.usable
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, head, positives in ((axes[0], "lower_face_covered", ("real", "held_out_mask")),
                                  (axes[1], "eyes_covered", ("sunglasses",))):
        negative = np.sort(scores[head]["clean"][celeba])
        cut_offs = np.quantile(negative, 1 - np.logspace(-3.5, -1, 60))
        for variant in positives:
            rows = real.usable if variant == "real" else clean.usable
            found = [(scores[head][variant][rows] >= t).mean() for t in cut_offs]
            false = [(negative >= t).mean() for t in cut_offs]
            axis.semilogx(false, found, label={"real": "masked_real (by batch)", "held_out_mask": "synthetic unseen shapes",
                                                "sunglasses": "synthetic sunglasses"}[variant])
        target = TARGETS["celeba_lower_face_false" if head == "lower_face_covered" else "celeba_eyes_false"]
        axis.axvline(target, color="grey", linestyle=":", label=f"false-flag target {target:.1%}")
        if head == "lower_face_covered":
            axis.axhline(TARGETS["masked_real_flagged"], color="grey", linestyle="--", label="90% of real masks")
        axis.set(title=head, xlabel="clean celeba_dev faces flagged (out of fold)", ylabel="covered faces flagged",
                 ylim=(0, 1.01))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "masked_occlusion.png", dpi=110)


def _print_occlusion(figures: dict) -> None:
    for head, rows in figures["out_of_fold"].items():
        print(f"{head} (cut-off {rows['threshold']:.4f}):")
        for name, row in rows.items():
            if name != "threshold":
                print(f"  {name:32s} {row['flagged'] * 100:6.2f}% of {row['faces']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache")
    parser.add_argument("--occlusion-only", action="store_true",
                        help="measure only the occlusion classifier; keep the masked-matching figures of the last run")
    args = parser.parse_args()
    data = data_dir_or_exit()
    occlusion = occlusion_cross_validation(data, args.cache)
    _print_occlusion(occlusion)
    if args.occlusion_only:
        previous = RESULTS / "masked.json"
        kept = json.loads(previous.read_text()) if previous.exists() else {}
        kept.pop("machine", None)
        path = write_json("masked", {**kept, "occlusion_classifier": occlusion,
                                     "classifier_on_real_photos": real_masked_photos(data)})
        print(f"wrote {path}")
        return
    covered = embed_covered_lfw(data / "lfw", cache=args.cache / "lfw-covered.npz",
                                progress=lambda d, t: print(f"\rcovered LFW {d}/{t}", end="", flush=True))
    print()
    _, check_ids = identity_split(covered.names, 0)
    check = np.nonzero(np.isin(covered.identities, list(check_ids)))[0]
    modes = {mode: tar_at_fmr(*covered_pair_scores(covered, check, "held_out_mask", mode), LEVELS) for mode in MATCH_MODES}
    clean = tar_at_fmr(*covered_pair_scores(covered, check, "plain", "plain"), LEVELS)
    shipped = default_calibration().tables["covered"]
    claims = check_table(shipped, *covered_pair_scores(covered, check, "held_out_mask", shipped.match_mode))
    result = {
        "probes": "held-out people, masks of shapes never used in training (scarf, bandana)",
        "tar_at_fmr_by_mode": modes,
        "tar_at_fmr_clean_probes": clean,
        "covered_table": {"match_mode": shipped.match_mode, "claimed_vs_measured": claims},
        "classifier_on_real_photos": real_masked_photos(data),
        "occlusion_classifier": occlusion,
    }
    path = write_json("masked", result)
    for mode, row in modes.items():
        print(f"{mode:13s} TAR@1e-3 {row['0.001']['tar'] * 100:5.1f}%  TAR@1e-4 {row['0.0001']['tar'] * 100:5.1f}%")
    print(f"{'clean probes':13s} TAR@1e-3 {clean['0.001']['tar'] * 100:5.1f}%  TAR@1e-4 {clean['0.0001']['tar'] * 100:5.1f}%")
    for row in claims:
        ratio = row["ratio_measured_to_claimed"]
        print(f"covered table ({shipped.match_mode}) target {row['target_fmr']:<6g} claimed {row['claimed_fmr']:.2e}"
              f" measured {row['measured_fmr']:.2e} ({row['false_matches']}) ratio {'-' if ratio is None else f'{ratio:.2f}'}")
    for name, info in result["classifier_on_real_photos"].items():
        print(f"{name}: {info['flagged_lower_face_covered']} of {info['faces']} faces flagged as lower face covered")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
