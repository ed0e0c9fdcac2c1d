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

    python bench/masked.py [--cache DIR]
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache")
    args = parser.parse_args()
    data = data_dir_or_exit()
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
