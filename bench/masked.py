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

The occlusion classifier is measured out of sample, as it is trained
(facefind.evaluation.occlusion_training): 6-fold cross-validation, celeba_dev and
LFW by identity, masked_real by whole crawl batch, on the crops of each model stack
(SCRFD landmarks for ArcFace, YuNet landmarks for SFace; each stack its own classifier). Targets: >= 90% of real masked
faces flagged, <= 0.5% of clean celeba_dev faces flagged lower face covered,
<= 0.3% flagged eyes covered. Plot: bench/results/masked_occlusion.png (share of
real masks flagged against share of clean celeba_dev faces flagged, per stack).

--usability measures the usability check for each model stack on masked_real, group_photos/masked,
celeba_dev, LFW, synthetic non-faces and LFW faces shrunk to 2-10 px between the eyes: the share
refused before and after the masked-face fix, side by side from the same detections, and which
signal refused each face. Plot: bench/results/masked_usability.png (whole-face vs upper-face norm).

    python bench/masked.py [--cache DIR] [--occlusion-only | --covered-only {arcface,sface} | --usability]
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
    EVERYONE_MASKED,
    MAX_FALSE_FLAGS,
    TRAINED_STACKS,
    collect_crops,
    cross_validate,
    masked_and_bare,
    report,
    training_set,
)
from facefind.pipeline import FacePipeline, PipelineConfig  # noqa: E402
from facefind.errors import FaceFindError  # noqa: E402
from facefind.pipeline.decode import decode_image  # noqa: E402
from facefind.pipeline.models import ARCFACE_MBF, SFACE_2021DEC  # noqa: E402

LEVELS = (1e-3, 1e-4)


def real_masked_photos(data: Path, model: str = "arcface") -> dict:
    """How many faces the classifier flags in the real masked photos, and in the crowd photos (mostly unmasked)."""
    pipeline = FacePipeline(PipelineConfig(model=model))
    result = {}
    for name, folder in (("group_photos/masked", data / "group_photos" / "masked"), ("group_photos/crowds", data / "group_photos" / "crowds")):
        per_file, masked_faces, bare_faces, large = {}, [], [], []
        for path in sorted(folder.iterdir()):
            faces = pipeline.analyze(decode_image(path).pixels)
            per_file[path.name] = {
                "faces": len(faces),
                "lower_face_covered": sum(bool(f.quality.lower_face_covered) for f in faces),
                "eyes_covered": sum(bool(f.quality.eyes_covered) for f in faces),
            }
            large += [f for f in faces if f.quality.usable and f.quality.eye_distance_px >= 15]
            if path.name in EVERYONE_MASKED:
                masked, bare = masked_and_bare(path.name, faces)
                masked_faces, bare_faces = masked_faces + masked, bare_faces + bare
        total = sum(v["faces"] for v in per_file.values())
        flagged = sum(v["lower_face_covered"] for v in per_file.values())
        result[name] = {"faces": total, "flagged_lower_face_covered": flagged, "files": per_file,
                        "usable_faces_eyes_15px_or_more": {
                            "faces": len(large),
                            "flagged": sum(bool(f.quality.lower_face_covered) for f in large),
                            "flagged_poor": sum(bool(f.quality.lower_face_covered) and f.quality.verdict == "poor"
                                                for f in large)}}
        if masked_faces:
            found = sum(bool(f.quality.lower_face_covered) for f in masked_faces)
            result[name]["everyone_masked_photos"] = {
                "photos": list(EVERYONE_MASKED), "usable_faces_eyes_15px_or_more": len(masked_faces),
                "flagged": found, "flagged_share": round(found / len(masked_faces), 4),
                "bare_mouths": len(bare_faces), "bare_mouths_flagged": sum(bool(f.quality.lower_face_covered)
                                                                           for f in bare_faces)}
    return result


TARGETS = {"masked_real_flagged": 0.90, "celeba_lower_face_false": 0.005, "celeba_eyes_false": 0.003}


def occlusion_cross_validation(data: Path, cache: Path) -> dict:
    """Out-of-fold flag rates of the occlusion classifier, and the plot of real masks found vs clean faces flagged."""
    figures, runs = {}, []
    for stack in TRAINED_STACKS:  # one classifier per stack, as shipped (occlusion.weights_file)
        crops = collect_crops(data, cache / "occlusion-crops.npz", stacks=(stack,),
                              progress=lambda d, t: print(f"\rcrops {d}/{t}", end="", flush=True))
        training = training_set(crops)
        scores = cross_validate(training, progress=print)
        figures[stack] = report(training, scores)
        runs.append((training, scores))
    _plot_occlusion(runs)
    return {"targets": TARGETS, "max_false_flags_used_for_cut_offs": MAX_FALSE_FLAGS, "out_of_fold": figures}


def _plot_occlusion(runs: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, head, positives in ((axes[0], "lower_face_covered", ("real", "held_out_mask")),
                                  (axes[1], "eyes_covered", ("sunglasses",))):
        for (training, scores), line in zip(runs, ("-", "--")):
            clean, real = training.crops["clean"], training.crops["real"]
            stack = str(clean.stack[0])
            celeba = (clean.source == "celeba") & clean.usable  # each run is one stack's crops
            negative = np.sort(scores[head]["clean"][celeba])
            cut_offs = np.quantile(negative, 1 - np.logspace(-3.5, -1, 60))
            for colour, variant in enumerate(positives):
                rows = real.usable if variant == "real" else clean.usable
                found = [(scores[head][variant][rows] >= t).mean() for t in cut_offs]
                false = [(negative >= t).mean() for t in cut_offs]
                name = {"real": "masked_real (by batch)", "held_out_mask": "synthetic unseen shapes",
                        "sunglasses": "synthetic sunglasses"}[variant]
                axis.semilogx(false, found, line, color=f"C{colour}", label=f"{name}, {stack} crops")
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
    for stack, heads in figures["out_of_fold"].items():
        for head, by_stack in heads.items():
            print(f"{stack} {head} (cut-off {by_stack['threshold']:.6f}):")
            for name, row in by_stack[stack].items():
                print(f"  {name:36s} {row['flagged'] * 100:6.2f}% of {row['faces']}")


# -- usability of detections (issue #11): which faces the check refuses, and which signal refuses them --
USABILITY_VERSION = "usability-signals-v1"
CELEBA_EVERY, LFW_EVERY = 3, 25  # enough faces for rates to a few per cent, in minutes on two cores
TINY_EYE_PX = (2, 4, 6, 8, 10)  # LFW faces shrunk to these eye distances (what the detector still finds)
NON_FACE_KINDS = ("flat", "noise", "blurred_noise", "checkerboard", "stripes", "wood", "smiley", "two_dots_and_a_bar")


def synthetic_non_face(kind: str, seed: int) -> np.ndarray:
    """A 224x224 image with no face in it: textures, noise and face-like patterns a detector may fire on."""
    import cv2

    rng = np.random.default_rng(seed)
    grid = np.mgrid[0:224, 0:224].astype(np.float64)
    if kind == "flat":
        return np.full((224, 224, 3), int(rng.integers(40, 220)), np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    if kind == "blurred_noise":
        return cv2.GaussianBlur(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), (0, 0), 4 + seed)
    if kind == "checkerboard":
        cell = int(rng.integers(6, 30))
        board = ((grid[0] // cell + grid[1] // cell) % 2 * 200 + 25).astype(np.uint8)
        return np.repeat(board[..., None], 3, axis=2)
    if kind == "stripes":
        wave = 127 + 100 * np.sin(grid[1] / rng.uniform(3, 12) + grid[0] / rng.uniform(8, 40))
        return np.repeat(wave.astype(np.uint8)[..., None], 3, axis=2)
    if kind == "wood":
        rings = np.sin(np.hypot(grid[0] - 300, grid[1] + 50) / 4 + rng.normal(0, 0.6, (224, 224)))
        return np.stack([150 + 50 * rings, 100 + 35 * rings, 60 + 20 * rings], axis=2).astype(np.uint8)
    skin = tuple(int(v) for v in rng.integers(150, 240, 3))
    image = np.full((224, 224, 3), 235, np.uint8)
    cv2.ellipse(image, (112, 118), (80 + seed, 96), 0, 0, 360, skin, -1)
    if kind == "smiley":
        cv2.circle(image, (112, 120), 90, (255, 220, 80), -1)
        for x in (76, 148):
            cv2.circle(image, (x, 100), 12, (0, 0, 0), -1)
        cv2.ellipse(image, (112, 160), (40, 20), 0, 0, 180, (0, 0, 0), 6)
        return image
    for x in (76, 148):  # two dark eyes and a mouth bar on a skin-coloured oval
        cv2.ellipse(image, (x, 103), (14, 8), 0, 0, 360, (30, 25, 20), -1)
    cv2.rectangle(image, (84, 180), (140, 190), (60, 30, 30), -1)
    return image


def _face_rows(pipeline, pixels: np.ndarray, name: str, file: str, faces=None) -> list[dict]:
    faces = pipeline.analyze(pixels, masked_templates=False) if faces is None else faces
    if not faces:
        return []
    upper_faces = pipeline._masked(np.stack([f.aligned for f in faces]))  # as the pipeline reads the upper face
    masked = np.linalg.norm(pipeline.recognizer.raw_features(upper_faces), axis=1)
    return [{"set": name, "photo": file, "landmarks": f.landmarks, "box": f.box, "detection_score": f.detection_score,
             "eye_distance": f.quality.eye_distance_px, "feature_norm": f.quality.feature_norm or 0.0,
             "masked_norm": float(m), "lower_face_covered": bool(f.quality.lower_face_covered),
             "aligned": f.aligned} for f, m in zip(faces, masked)]


def _at_template(pipeline, pixels: np.ndarray, name: str, file: str) -> list[dict]:
    """``pixels`` read as a face whose 5 points sit exactly on the (2x) template: what a detector hit would see."""
    from facefind.pipeline.align import ARCFACE_TEMPLATE, align_face
    from facefind.pipeline.core import DetectedFace
    from facefind.pipeline.quality import assess_quality

    landmarks = ARCFACE_TEMPLATE.astype(np.float64) * 2
    crop = align_face(pixels, landmarks)
    norm = float(np.linalg.norm(pipeline.recognizer.raw_features(crop[None])[0]))
    box = np.array([0, 0, 224, 224], np.float32)
    quality = assess_quality(box, landmarks, 0.9, crop, None, norm, pipeline.model_id)
    face = DetectedFace(box, landmarks.astype(np.float32), 0.9, quality, np.zeros(1, np.float32), crop)
    return _face_rows(pipeline, pixels, name, file, [face])


def _usability_items(data: Path) -> list[tuple[str, str]]:
    from facefind.evaluation.lfw import list_images

    items = [("masked_real", str(p)) for p in sorted((data / "masked_real").rglob("*")) if p.is_file()]
    items += [("group_photos/masked", str(p)) for p in sorted((data / "group_photos" / "masked").iterdir())]
    items += [("celeba_dev", str(p)) for p in sorted((data / "celeba_dev").rglob("*.jpg"))[::CELEBA_EVERY]]
    items += [("lfw", str(data / "lfw" / r)) for r in list_images(data / "lfw")[::LFW_EVERY]]
    items += [("drawn and CGI faces", str(p)) for p in sorted((data / "group_photos" / "not_real_faces").iterdir())]
    items += [("detector false positives", str(data / "detection_boxes" / n)) for n in ("training.xml", "testing.xml")]
    return items


def _rows_for(pipeline, data: Path, name: str, path: str) -> list[dict]:
    from facefind.evaluation.detection import iou, read_imglab_xml
    from facefind.evaluation.lfw import central_face

    if name == "detector false positives":  # hits overlapping no hand-drawn face box
        rows = []
        for image in read_imglab_xml(Path(path)):
            pixels = decode_image(image.path).pixels
            faces = pipeline.analyze(pixels, masked_templates=False)
            stray = [f for f in faces
                     if len(image.boxes) == 0 or iou(f.box[None].astype(np.float64), image.boxes).max() < 0.2]
            rows += _face_rows(pipeline, pixels, name, image.path.name, stray) if stray else []
        return rows
    try:
        pixels = decode_image(Path(path)).pixels
    except FaceFindError:  # an undecodable file is skipped here, as ingest would skip it
        return []
    if name != "lfw":
        return _face_rows(pipeline, pixels, name, path)
    faces = pipeline.analyze(pixels, masked_templates=False)
    face = central_face(faces, pixels.shape[1], pixels.shape[0])
    if face is None:
        return []
    rows = _face_rows(pipeline, pixels, name, path, [face])
    import cv2  # the same face shrunk until the eyes are a few px apart, alone on a grey canvas

    for target in TINY_EYE_PX:
        scale = target / max(face.quality.eye_distance_px, 1.0)
        small = cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.full((240, 240, 3), 120, np.uint8)
        canvas[: small.shape[0], : small.shape[1]] = small[:240, :240]
        rows += [dict(r, set=f"LFW shrunk to {target} px") for r in _face_rows(pipeline, canvas, "tiny", path)]
    return rows


def usability_signals(data: Path, stack: str, cache: Path, progress=print) -> dict[str, np.ndarray]:
    """Every detection's raw usability signals (landmarks, eye distance, feature norms, score), cached per stack,
    so any rule can be scored on the same faces."""
    from facefind.pipeline import PipelineConfig

    path = cache / f"usability-{stack}.npz"
    items = _usability_items(data)
    key = f"{USABILITY_VERSION}|{stack}|{len(items)}"
    if path.exists() and str(np.load(path)["key"]) == key:
        return dict(np.load(path))
    pipeline = FacePipeline(PipelineConfig(model=stack, threads=1))
    rows = []
    for done, (name, item) in enumerate(items, 1):
        rows += _rows_for(pipeline, data, name, item)
        if done % 50 == 0:
            progress(f"{stack}: {done}/{len(items)} photos, {len(rows)} faces")
    for kind in NON_FACE_KINDS:
        for seed in range(4):
            pixels = synthetic_non_face(kind, seed)
            rows += _at_template(pipeline, pixels, "synthetic non-faces (at the template)", f"{kind}-{seed}")
            mosaic = np.concatenate([pixels, synthetic_non_face(kind, seed + 10)], axis=1)
            rows += _face_rows(pipeline, mosaic, "synthetic non-faces (detector hits)", f"{kind}-{seed}")
    arrays = {field: np.array([r[field] for r in rows]) for field in rows[0]}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, key=key, **arrays)
    return arrays


REAL_FACE_SETS = ("masked_real", "group_photos/masked", "celeba_dev", "lfw")


def _session3_problems(landmarks, eye_distance, feature_norm, model_id) -> list[str]:
    """The rule before issue #11's masked-face fix, kept here only to report before/after in one run."""
    from facefind.pipeline.quality import landmark_fit_error

    limit = {ARCFACE_MBF.model_id: 13.0, SFACE_2021DEC.model_id: 7.0}[model_id]
    return [name for name, fires in (("eye distance", eye_distance < 11.0),
                                     ("landmark geometry", landmark_fit_error(landmarks) > 12.0),
                                     ("feature norm", feature_norm < limit)) if fires]


def _current_problems(landmarks, eye_distance, feature_norm, upper_face_norm, model_id) -> list[str]:
    from facefind.pipeline.quality import usability_problems

    found = usability_problems(landmarks, eye_distance, feature_norm, model_id, upper_face_norm)
    return [signal for signal, words in (("eye distance", "px apart"), ("landmark geometry", "landmarks"),
                                         ("feature norm", "cannot read")) if any(words in p for p in found)]


def usability_rates(signals: dict[str, np.ndarray], model_id: str) -> dict:
    """Per set of faces: how many the check refuses before and after the fix, and which signal refuses them."""
    rules = {
        "before": lambda i: _session3_problems(signals["landmarks"][i], signals["eye_distance"][i],
                                               signals["feature_norm"][i], model_id),
        "after": lambda i: _current_problems(signals["landmarks"][i], signals["eye_distance"][i],
                                             signals["feature_norm"][i], signals["masked_norm"][i], model_id),
    }
    found = {rule: [problem(i) for i in range(len(signals["set"]))] for rule, problem in rules.items()}
    eyes = signals["eye_distance"]
    report = {}
    for name in sorted(set(signals["set"].tolist()), key=lambda n: (n not in REAL_FACE_SETS, n)):
        in_set = signals["set"] == name
        subsets = {"all detected faces": in_set}
        if name in REAL_FACE_SETS:
            subsets |= {"eyes >= 11 px": in_set & (eyes >= 11), "eyes >= 15 px": in_set & (eyes >= 15)}
        report[name] = {}
        for subset, rows in subsets.items():
            row = {"faces": int(rows.sum())}
            for rule, problems in found.items():
                refused = [problems[i] for i in np.nonzero(rows)[0] if problems[i]]
                signals_fired = {}
                for fired in refused:
                    for signal in fired:
                        signals_fired[signal] = signals_fired.get(signal, 0) + 1
                row[rule] = {"unusable": round(len(refused) / max(1, row["faces"]), 4), "refused": len(refused),
                             "by_signal": signals_fired}
            report[name][subset] = row
    return report


def usability_check(data: Path, cache: Path) -> dict:
    """Both model stacks: refusal rates before/after by set and signal, and the plot of the two norms."""
    from facefind.pipeline.models import STACKS

    results, signals = {}, {}
    for stack in sorted(STACKS):
        signals[stack] = usability_signals(data, stack, cache)
        results[stack] = usability_rates(signals[stack], STACKS[stack].model_id)
        _print_usability(stack, results[stack])
    _plot_usability(signals, {stack: STACKS[stack].model_id for stack in signals})
    return {"rule_before": "eyes < 11 px, landmark fit error > 12, or feature norm < 13 (ArcFace) / 7 (SFace)",
            "rule_after": "eyes < 12.5 px (ArcFace) / 14 px (SFace), landmark fit error > 12, or both feature norm"
                          " and upper-face norm low (quality.MIN_FEATURE_NORM, MIN_UPPER_FACE_NORM)",
            "sampling": f"celeba_dev every {CELEBA_EVERY}th photo, LFW every {LFW_EVERY}th image (central face)",
            "by_model": results}


def _plot_usability(signals: dict, model_ids: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from facefind.pipeline.quality import MIN_FEATURE_NORM, MIN_UPPER_FACE_NORM

    fig, axes = plt.subplots(1, len(signals), figsize=(6 * len(signals), 5))
    for axis, (stack, rows) in zip(np.atleast_1d(axes), signals.items()):
        real = rows["eye_distance"] >= 15
        for name, colour in (("lfw", "tab:green"), ("celeba_dev", "tab:blue"), ("masked_real", "tab:orange"),
                             ("group_photos/masked", "tab:brown")):
            chosen = (rows["set"] == name) & real
            axis.scatter(rows["feature_norm"][chosen], rows["masked_norm"][chosen], s=5, alpha=0.5, color=colour,
                         label=f"{name} (eyes >= 15 px)")
        fake = np.char.startswith(rows["set"].astype(str), "synthetic")
        axis.scatter(rows["feature_norm"][fake], rows["masked_norm"][fake], s=18, marker="x", color="red",
                     label="synthetic non-faces")
        model_id = model_ids[stack]
        axis.axvline(MIN_FEATURE_NORM[model_id], color="grey", linestyle=":")
        axis.axhline(MIN_UPPER_FACE_NORM[model_id], color="grey", linestyle="--")
        axis.set(title=f"{stack}: unusable = left of dotted AND below dashed", xlabel="feature norm (whole face)",
                 ylabel="feature norm (upper face: gallery mask drawn on)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(RESULTS / "masked_usability.png", dpi=110)


def _print_usability(stack: str, report: dict) -> None:
    print(f"usability check, {stack}: share of faces refused, before -> after (signals that fired after)")
    for name, subsets in report.items():
        for subset, row in subsets.items():
            print(f"  {name:40s} {subset:19s} {row['faces']:5d} faces  {row['before']['unusable'] * 100:5.1f}%"
                  f" -> {row['after']['unusable'] * 100:5.1f}%  {row['after']['by_signal']}")


def _last_run() -> dict:
    """bench/results/masked.json as the last run left it, less its machine facts: a partial run keeps the rest."""
    previous = RESULTS / "masked.json"
    kept = json.loads(previous.read_text()) if previous.exists() else {}
    kept.pop("machine", None)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=RESULTS / "cache")
    parser.add_argument("--occlusion-only", action="store_true",
                        help="measure only the occlusion classifier; keep the masked-matching figures of the last run")
    parser.add_argument("--covered-only", choices=("arcface", "sface"), default=None,
                        help="measure only one stack's masked matching and covered table; keep the other figures")
    parser.add_argument("--usability", action="store_true",
                        help="measure only which detections the usability check refuses, and why, for each model;"
                             " keep the other figures of the last run")
    args = parser.parse_args()
    data = data_dir_or_exit()
    if args.usability:
        kept = _last_run()
        path = write_json("masked", {**kept, "usability": usability_check(data, args.cache)})
        print(f"wrote {path}")
        return
    if args.covered_only:
        kept = _last_run()
        measured = covered_matching(data, args.cache, args.covered_only)
        update = measured if args.covered_only == "arcface" else {"covered_matching_sface": measured}
        print(f"wrote {write_json('masked', {**kept, **update})}")
        return
    occlusion = occlusion_cross_validation(data, args.cache)
    _print_occlusion(occlusion)
    if args.occlusion_only:
        kept = _last_run()
        update = {"occlusion_classifier": occlusion, "classifier_on_real_photos": real_masked_photos(data),
                  "classifier_on_real_photos_sface": real_masked_photos(data, "sface")}
        path = write_json("masked", {**kept, **update})
        _print_real_photos(update)
        print(f"wrote {path}")
        return
    result = {
        "probes": "held-out people, masks of shapes never used in training (scarf, bandana)",
        **covered_matching(data, args.cache, "arcface"),
        "covered_matching_sface": covered_matching(data, args.cache, "sface"),
        "classifier_on_real_photos": real_masked_photos(data),
        "classifier_on_real_photos_sface": real_masked_photos(data, "sface"),
        "occlusion_classifier": occlusion,
    }
    path = write_json("masked", result)
    _print_real_photos(result)
    print(f"wrote {path}")


def _print_real_photos(result: dict) -> None:
    for key in ("classifier_on_real_photos", "classifier_on_real_photos_sface"):
        for name, info in result[key].items():
            large = info["usable_faces_eyes_15px_or_more"]
            print(f"{key} {name}: {info['flagged_lower_face_covered']} of {info['faces']} faces flagged lower face"
                  f" covered; usable with eyes >= 15 px: {large['flagged']} of {large['faces']}"
                  f" ({large['flagged_poor']} of them poor)")
            if "everyone_masked_photos" in info:
                masked = info["everyone_masked_photos"]
                print(f"  photos where everyone is masked: {masked['flagged']} of"
                      f" {masked['usable_faces_eyes_15px_or_more']} usable masked faces (eyes >= 15 px) flagged;"
                      f" {masked['bare_mouths_flagged']} of {masked['bare_mouths']} bare mouths flagged")


def covered_matching(data: Path, cache: Path, stack: str) -> dict:
    """TAR of covered probes per matching mode, and the stack's shipped covered table checked on held-out people."""
    model = {"arcface": ARCFACE_MBF, "sface": SFACE_2021DEC}[stack]
    covered = embed_covered_lfw(data / "lfw", cache=cache / f"{stack}-lfw-covered.npz", model=stack,
                                progress=lambda d, t: print(f"\rcovered LFW ({stack}) {d}/{t}", end="", flush=True))
    print()
    _, check_ids = identity_split(covered.names, 0)
    check = np.nonzero(np.isin(covered.identities, list(check_ids)))[0]
    modes = {mode: tar_at_fmr(*covered_pair_scores(covered, check, "held_out_mask", mode), LEVELS) for mode in MATCH_MODES}
    clean = tar_at_fmr(*covered_pair_scores(covered, check, "plain", "plain"), LEVELS)
    shipped = default_calibration(model.model_id).tables["covered"]
    claims = check_table(shipped, *covered_pair_scores(covered, check, "held_out_mask", shipped.match_mode))
    for mode, row in modes.items():
        print(f"{stack} {mode:13s} TAR@1e-3 {row['0.001']['tar'] * 100:5.1f}%  TAR@1e-4 {row['0.0001']['tar'] * 100:5.1f}%")
    print(f"{stack} {'clean probes':13s} TAR@1e-3 {clean['0.001']['tar'] * 100:5.1f}%"
          f"  TAR@1e-4 {clean['0.0001']['tar'] * 100:5.1f}%")
    for row in claims:
        ratio = row["ratio_measured_to_claimed"]
        print(f"{stack} covered table ({shipped.match_mode}) target {row['target_fmr']:<6g} claimed {row['claimed_fmr']:.2e}"
              f" measured {row['measured_fmr']:.2e} ({row['false_matches']}) ratio {'-' if ratio is None else f'{ratio:.2f}'}")
    return {"tar_at_fmr_by_mode": modes, "tar_at_fmr_clean_probes": clean,
            "covered_table": {"match_mode": shipped.match_mode, "claimed_vs_measured": claims}}


if __name__ == "__main__":
    main()
