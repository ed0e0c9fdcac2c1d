"""Train the occlusion classifier reproducibly; small weights with their provenance.

    python -m facefind.evaluation.occlusion_training [--stack sface]   # -> src/facefind/pipeline/data/

Data: aligned 112x112 crops from facefind's own detection and alignment of LFW (a
subsample), celeba_dev (in-the-wild) and the real masked photos of masked_real,
once per model stack (SCRFD's landmarks for ArcFace, YuNet's for SFace: the same
template, but each detector places the crop a little differently, enough to move
the false-flag rate), cached in ``bench/results/cache/occlusion-crops.npz`` with a
stack column. Each stack gets its own classifier, trained and checked on its own
crops and read from its own recogniser's maps (``occlusion.weights_file``).
Positives for "lower face covered" are the real masked faces plus synthetic masks
drawn on LFW and celeba_dev crops; positives for "eyes covered" are synthetic
sunglasses. Negatives are the clean crops, and each head also sees the other head's
covering as a negative (a mask does not hide the eyes).

Evaluation is out of sample: celeba_dev and LFW by identity folds, masked_real by
crawl batch (a batch may hold bursts of one person, so it must not be split); a
photo's crops from both stacks share its fold. The cut-offs are set from the
out-of-fold scores of clean celeba_dev faces (at most MAX_FALSE_FLAGS), then the
shipped model is refitted on everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import resources
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import numpy as np

from facefind.errors import FaceFindError
from facefind.evaluation import shared_data_dir
from facefind.evaluation.lfw import central_face, list_images
from facefind.ingest import init_worker, worker_pipeline
from facefind.pipeline import PipelineConfig
from facefind.pipeline.core import shipped_recognizer
from facefind.pipeline.decode import decode_image
from facefind.pipeline.embed import OnnxRecognizer
from facefind.pipeline.models import stack_named
from facefind.pipeline.occlusion import (
    HELD_OUT_SHAPES,
    HEADS,
    TRAINING_SHAPES,
    OcclusionClassifier,
    LinearHead,
    draw_mask,
    draw_sunglasses,
    eye_features,
    lower_face_map_features,
    weights_file,
)

CROPS_VERSION = "occlusion-crops-v2"
TRAINED_STACKS = ("arcface", "sface")  # every shipped stack, each with its own classifier
LFW_EVERY = 3  # every third LFW image: ~2,600 faces, plenty for clean/synthetic examples
MIN_EYE_DISTANCE_PX = 8.0  # below this the detector's landmarks are guesses; such faces are unusable anyway


@dataclass(frozen=True)
class FaceCrops:
    """Aligned crops with where they came from: source ("lfw", "celeba", "masked_real"), group, and the model
    stack whose detector placed the crop."""

    crops: np.ndarray  # (n, 112, 112, 3) uint8 RGB
    source: np.ndarray  # (n,) str
    group: np.ndarray  # (n,) str: LFW person, CelebA identity, masked_real batch
    file: np.ndarray  # (n,) str
    eye_distance: np.ndarray  # (n,) px in the photo
    usable: np.ndarray  # (n,) bool: the pipeline's usability check
    stack: np.ndarray  # (n,) str: "arcface" (SCRFD landmarks) or "sface" (YuNet landmarks)

    def where(self, mask: np.ndarray) -> "FaceCrops":
        return FaceCrops(*(getattr(self, f)[mask] for f in _COLUMNS))

    @staticmethod
    def joined(parts: list["FaceCrops"]) -> "FaceCrops":
        return FaceCrops(*(np.concatenate([getattr(p, f) for p in parts]) for f in _COLUMNS))


_COLUMNS = ("crops", "source", "group", "file", "eye_distance", "usable", "stack")


def _celeba_identities(folder: Path) -> dict[str, str]:
    labels = folder / "identity_CelebA_dev.txt"
    if not labels.exists():
        return {}
    return dict(line.split()[:2] for line in labels.read_text().splitlines() if line.strip())


def list_sources(data: Path) -> list[tuple[str, str, str]]:
    """(source, group, path) of every photo used: LFW subsampled, all of celeba_dev and masked_real."""
    items = [("lfw", relative.split("/")[0], str(data / "lfw" / relative))
             for relative in list_images(data / "lfw")[::LFW_EVERY]]
    identities = _celeba_identities(data / "celeba_dev")
    for path in sorted((data / "celeba_dev").rglob("*.jpg")):
        items.append(("celeba", identities.get(path.name, path.parent.name), str(path)))
    for path in sorted((data / "masked_real").rglob("*")):
        if path.is_file() and path.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
            items.append(("masked_real", path.parent.name, str(path)))
    return items


def _crop_chunk(items: list[tuple[str, str, str]]) -> list[tuple[str, str, str, np.ndarray, float, bool]]:
    pipeline = worker_pipeline()
    out = []
    for source, group, path in items:
        try:
            pixels = decode_image(Path(path)).pixels
        except FaceFindError:
            continue
        faces = pipeline.analyze(pixels, masked_templates=False)
        if source == "lfw":  # LFW is about its central face; others may be background people
            faces = [f] if (f := central_face(faces, pixels.shape[1], pixels.shape[0])) else []
        for face in faces:
            if face.quality.eye_distance_px >= MIN_EYE_DISTANCE_PX:
                out.append((source, group, path, face.aligned, face.quality.eye_distance_px, face.quality.usable))
    return out


def crops_key(items: list[tuple[str, str, str]], stack: str) -> str:
    """What a stack's cached crops were made from: the crop code's version, the photos, the detector."""
    detector = stack_named(stack).detector.model_id
    return hashlib.sha256(f"{CROPS_VERSION}|{len(items)}|{detector}".encode()).hexdigest()[:16]


def _cached_crops(cache: Path | None) -> tuple[dict[str, str], FaceCrops | None]:
    """The cache's key per stack and its rows (none when absent or of an older layout)."""
    if cache is None or not cache.exists():
        return {}, None
    with np.load(cache, allow_pickle=False) as stored:
        if "keys" not in stored.files:
            return {}, None
        return json.loads(str(stored["keys"])), FaceCrops(
            stored["crops"], stored["source"], stored["group"], stored["photo"], stored["eye_distance"],
            stored["usable"], stored["stack"])


def save_crops(cache: Path, crops: FaceCrops, keys: dict[str, str]) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, keys=np.array(json.dumps(keys)), crops=crops.crops, source=crops.source,
                        group=crops.group, photo=crops.file, eye_distance=crops.eye_distance, usable=crops.usable,
                        stack=crops.stack)


def detect_and_align(items: list[tuple[str, str, str]], stack: str, workers: int = 0,
                     progress: Callable[[int, int], None] | None = None) -> FaceCrops:
    """Every face of ``items`` as ``stack``'s detector finds and aligns it (worker processes)."""
    rows: list[tuple] = []
    chunks = [items[s: s + 32] for s in range(0, len(items), 32)]
    done = 0
    config = PipelineConfig(threads=1, masked_templates=False, model=stack)
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=get_context("spawn"),
                             initializer=init_worker, initargs=(config,)) as pool:
        for job in as_completed([pool.submit(_crop_chunk, chunk) for chunk in chunks]):
            rows.extend(job.result())
            done += 1
            if progress is not None:
                progress(done, len(chunks))
    rows.sort(key=lambda r: (r[0], r[2], -r[4]))  # the order does not depend on which worker finished first
    return FaceCrops(
        np.stack([r[3] for r in rows]).astype(np.uint8), np.array([r[0] for r in rows]), np.array([r[1] for r in rows]),
        np.array([r[2] for r in rows]), np.array([r[4] for r in rows], np.float32), np.array([r[5] for r in rows], bool),
        np.full(len(rows), stack),
    )


def collect_crops(data: Path, cache: Path | None = None, workers: int = 0,
                  progress: Callable[[int, int], None] | None = None,
                  stacks: tuple[str, ...] = TRAINED_STACKS) -> FaceCrops:
    """Detect and align every face of the training photos once per stack, cached in one .npz (stack column; each
    stack's rows kept while its key still matches), in ``stacks`` order."""
    items = list_sources(data)
    keys, stored = _cached_crops(cache)
    parts, fresh = [], False
    for stack in stacks:
        key = crops_key(items, stack)
        if stored is not None and keys.get(stack) == key:
            parts.append(stored.where(stored.stack == stack))
        else:
            parts.append(detect_and_align(items, stack, workers, progress))
            keys[stack], fresh = key, True
    crops = FaceCrops.joined(parts)
    if cache is not None and fresh:  # other stacks' cached rows are kept
        others = [stored.where(stored.stack == s) for s in keys if s not in stacks] if stored is not None else []
        save_crops(cache, FaceCrops.joined(parts + others), keys)
    return crops


K_FOLDS = 6
SEED = 0
# Cut-offs: at most this share of clean in-the-wild faces flagged, inside the targets (0.5% / 0.3%).
MAX_FALSE_FLAGS = {"lower_face_covered": 0.004, "eyes_covered": 0.0025}
# masked_real faces that show their mouth (bystanders, masks pulled below the chin, face shields), found
# by looking at the faces the first classifier scored lowest: "batch/photo#n" (n: the photo's n-th largest
# face). They serve as real uncovered faces, not as masked ones.
UNMASKED_IN_MASKED_REAL = frozenset({
    "0006/0135.jpg#0",
    "0006/0135.jpg#2",
    "0006/0135.jpg#1",
    "0006/0039.jpg#0",
    "0016/0014.jpg#0",
    "0022/62EB5F3BDA472EE5ED293160CF3_D4979104_2F2D0.jpg#2",
    "0008/0063.jpg#0",
    "0008/0208.jpg#0",
    "0008/0056.jpg#0",
    "0008/0056.jpg#1",
    "0016/0012.jpg#0",
    "0008/0124.jpg#0",
    "0008/0117.jpg#0",
    "0008/0091.jpg#0",
    "0006/0048.jpg#1",
    "0006/0105.jpg#1",
    "0016/0012.jpg#1",
    "0008/0170.jpg#0",
    "0006/0036.jpg#0",
    "0006/0000.jpg#0",
    "0008/0154.jpg#0",
    "0016/0017.jpg#0",
    "0008/0062.jpg#1",
    "0006/0062.jpg#4",
    "0002/0024.jpg#4",
    "0006/0135.jpg#3",
    "0022/62EB5F3BDA472EE5ED293160CF3_D4979104_2F2D0.jpg#4",
    "0006/0125.jpg#0",
    "0002/0032.jpg#2",
})
# The group_photos/masked photos in which (nearly) everyone is masked: their usable faces with eyes >= 15 px
# apart are the crowd-photo masks the >= 90% target counts (the other photos mix masked and bare faces); they
# are in no training set. Every such face was looked at (the ArcFace stack's 117, at 2x): five in the img8 crowd
# show a bare mouth, no mask, and count as uncovered, like UNMASKED_IN_MASKED_REAL. Listed by eye centre (x, y)
# in photo pixels, so any detector's faces can be matched to them.
EVERYONE_MASKED = ("img2.jpeg", "img5.jpeg", "img6.webp", "img7.webp", "img8.jpeg")
BARE_MOUTHS = {"img8.jpeg": ((801, 57), (1026, 186), (444, 128), (1304, 78), (874, 6))}
REAL_MASK_WEIGHT = 6.0  # a real masked face counts as much as this many synthetic ones
# Inverse L2 strength per head, chosen by the cross-validation below (lower face: 0.01-0.1 found the same
# real masks to within 0.3 points on both stacks).
REGULARISATION = {"lower_face_covered": 0.03, "eyes_covered": 0.3}
# The recogniser maps the lower-face head reads, deepest first: the 14 x 14 and 28 x 28 stages (MobileFaceNet
# node names in w600k_mbf, SFace's in its graph). Mid-level maps still see where a face is and what covers it;
# the final embedding is trained to ignore exactly that. They come from the embedding pass every face gets.
MAP_OUTPUTS = {"arcface": ("473", "397"), "sface": ("conv_11_relu", "conv_6_relu")}
VARIANTS = ("clean", "mask", "held_out_mask", "sunglasses", "dim_clean", "dim_mask", "real", "real_flipped",
            "real_unmasked")
POSITIVES = {"lower_face_covered": ("mask", "dim_mask", "real", "real_flipped"), "eyes_covered": ("sunglasses",)}
NEGATIVES = {"lower_face_covered": ("clean", "dim_clean", "sunglasses", "real_unmasked"),
             "eyes_covered": ("clean", "dim_clean", "mask", "dim_mask", "real", "real_flipped", "real_unmasked")}


@dataclass(frozen=True)
class TrainingSet:
    """Features of every variant (clean crops and their synthetic coverings; real masked crops and their mirror
    images), with each row's cross-validation fold and what it is."""

    features: dict[str, dict[str, np.ndarray]]  # variant -> head -> (n, d)
    folds: dict[str, np.ndarray]  # variant -> (n,)
    crops: dict[str, FaceCrops]  # "clean" / "real" / "real_unmasked" -> the crops the variants were made from


def assign_folds(crops: FaceCrops) -> np.ndarray:
    """Identity folds for LFW and celeba_dev; whole crawl batches for masked_real, balanced greedily by size.

    Folds follow the person or batch, so a photo's crops from every stack share one; batch sizes are the
    first stack's face counts, so adding a stack does not move the folds ArcFace was checked with.
    """
    folds = np.array([zlib.crc32(f"{s}/{g}/{SEED}".encode()) % K_FOLDS for s, g in zip(crops.source, crops.group)])
    real = crops.source == "masked_real"
    batches, sizes = np.unique(crops.group[real & (crops.stack == crops.stack[0])], return_counts=True)
    load = np.zeros(K_FOLDS)
    for batch, size in sorted(zip(batches, sizes), key=lambda b: (-b[1], b[0])):
        fold = int(np.argmin(load))
        folds[real & (crops.group == batch)] = fold
        load[fold] += size
    return folds


def _features(images: dict[str, np.ndarray], recognizer: OnnxRecognizer) -> dict[str, dict[str, np.ndarray]]:
    """variant -> head -> (n, d): the lower-face head's pooled recogniser maps, the eyes head's pixel features.
    A variant with no crops (a stack may have none showing the mouth) gets (0, d) arrays."""
    features = {}
    for variant, crops in images.items():
        if len(crops):
            features[variant] = {"lower_face_covered": recognizer.features_and_maps(crops, lower_face_map_features)[1],
                                 "eyes_covered": np.stack([eye_features(crop) for crop in crops]).astype(np.float32)}
    width = {head: features["clean"][head].shape[1] for head in HEADS}
    return {variant: features.get(variant) or {head: np.empty((0, width[head]), np.float32) for head in HEADS}
            for variant in images}


def face_keys(crops: FaceCrops) -> np.ndarray:
    """"batch/photo#n" of each crop, n counting the photo's faces from the largest (the crops' own order), per stack."""
    keys, seen = [], {}
    for path, stack in zip(crops.file, crops.stack):
        photo = "/".join(str(path).split("/")[-2:])
        keys.append(f"{photo}#{seen.get((stack, photo), 0)}")
        seen[(stack, photo)] = seen.get((stack, photo), 0) + 1
    return np.array(keys)


def dim(crop: np.ndarray, seed: int) -> np.ndarray:
    """The crop as an under-exposed photo would show it: darker, lower contrast, a little noisier."""
    rng = np.random.default_rng(seed)
    gain, gamma = rng.uniform(0.15, 0.6), rng.uniform(1.0, 1.8)
    dark = 255.0 * gain * (crop / 255.0) ** gamma + rng.normal(0, 2.0, crop.shape)
    return np.clip(dark, 0, 255).astype(np.uint8)


def _faces_in(path: str, pipeline) -> list:
    """A photo's faces as the crop cache holds them: eyes >= MIN_EYE_DISTANCE_PX apart, largest eye distance first."""
    faces = pipeline.analyze(decode_image(Path(path)).pixels, masked_templates=False)
    return sorted((f for f in faces if f.quality.eye_distance_px >= MIN_EYE_DISTANCE_PX),
                  key=lambda f: -f.quality.eye_distance_px)


def showing_the_mouth(crops: FaceCrops) -> np.ndarray:
    """The masked_real faces of UNMASKED_IN_MASKED_REAL, in every stack.

    The list is keyed on the ArcFace stack's faces; another detector finds and orders a photo's faces
    differently, so in the few photos concerned its faces are matched to the listed ones by where their
    eyes are (centres within a third of the eye distance), detected again here.
    """
    from facefind.pipeline.core import FacePipeline

    keys = face_keys(crops)
    shows = (crops.stack == "arcface") & np.isin(keys, list(UNMASKED_IN_MASKED_REAL))
    photos = {k.split("#")[0] for k in UNMASKED_IN_MASKED_REAL}
    paths = {"/".join(str(f).split("/")[-2:]): str(f) for f in crops.file[crops.source == "masked_real"]}
    others = [s for s in dict.fromkeys(crops.stack) if s != "arcface"]
    if not others:
        return shows
    reference = FacePipeline(PipelineConfig(threads=1, masked_templates=False))
    for stack in others:
        pipeline = FacePipeline(PipelineConfig(threads=1, masked_templates=False, model=stack))
        for photo in sorted(photos & paths.keys()):
            listed = [f for n, f in enumerate(_faces_in(paths[photo], reference)) if f"{photo}#{n}" in UNMASKED_IN_MASKED_REAL]
            for n, face in enumerate(_faces_in(paths[photo], pipeline)):
                centre = face.landmarks[:2].mean(axis=0)
                if any(np.linalg.norm(centre - f.landmarks[:2].mean(axis=0)) < f.quality.eye_distance_px / 3 for f in listed):
                    shows |= (crops.stack == stack) & (keys == f"{photo}#{n}")
    return shows


def masked_and_bare(photo: str, faces: list) -> tuple[list, list]:
    """An EVERYONE_MASKED photo's usable faces with eyes >= 15 px apart: (masked, showing a bare mouth)."""
    masked, bare = [], []
    for face in faces:
        if face.quality.usable and face.quality.eye_distance_px >= 15:
            centre = face.landmarks[:2].mean(axis=0)
            listed = BARE_MOUTHS.get(photo, ())
            shows = any(np.hypot(*(centre - point)) < face.quality.eye_distance_px / 2 for point in listed)
            (bare if shows else masked).append(face)
    return masked, bare


def training_set(crops: FaceCrops) -> TrainingSet:
    """Synthetic coverings drawn on every clean crop (shape and colour from the crop's index, so reproducible),
    read by the crops' stack's recogniser (the lower-face head's maps) and from pixels (the eyes head)."""
    stacks = set(crops.stack)
    if len(stacks) != 1:
        raise ValueError(f"train one stack at a time (its recogniser's maps are the features), not {sorted(stacks)}")
    stack = stacks.pop()
    recognizer = shipped_recognizer(stack_named(stack), map_outputs=MAP_OUTPUTS[stack], batch_size=64)
    folds = assign_folds(crops)
    clean = crops.source != "masked_real"
    shows_mouth = showing_the_mouth(crops)
    real, real_unmasked = (crops.source == "masked_real") & ~shows_mouth, (crops.source == "masked_real") & shows_mouth
    c = crops.crops[clean]
    images = {
        "clean": c,
        "mask": np.stack([draw_mask(x, TRAINING_SHAPES[i % len(TRAINING_SHAPES)], seed=i) for i, x in enumerate(c)]),
        "held_out_mask": np.stack([draw_mask(x, HELD_OUT_SHAPES[i % len(HELD_OUT_SHAPES)], seed=i + 1)
                                   for i, x in enumerate(c)]),
        "sunglasses": np.stack([draw_sunglasses(x, seed=i) for i, x in enumerate(c)]),
        "real": crops.crops[real],
        "real_flipped": np.ascontiguousarray(crops.crops[real][:, :, ::-1]),
        "real_unmasked": crops.crops[real_unmasked],
    }
    images["dim_clean"] = np.stack([dim(x, i) for i, x in enumerate(c)])
    images["dim_mask"] = np.stack([dim(x, i + 7) for i, x in enumerate(images["mask"])])
    rows = {"real": real, "real_flipped": real, "real_unmasked": real_unmasked}
    return TrainingSet(
        features=_features({v: images[v] for v in VARIANTS}, recognizer),
        folds={v: folds[rows.get(v, clean)] for v in VARIANTS},
        crops={"clean": crops.where(clean), "real": crops.where(real), "real_unmasked": crops.where(real_unmasked)},
    )


def fit_head(data: TrainingSet, head: str, rows: dict[str, np.ndarray]) -> LinearHead:
    """One head fitted on the chosen rows of each variant (its cut-off is set later, from held-out scores)."""
    from sklearn.linear_model import LogisticRegression

    variants = POSITIVES[head] + NEGATIVES[head]
    x = np.vstack([data.features[v][head][rows[v]] for v in variants])
    y = np.concatenate([np.full(rows[v].sum(), v in POSITIVES[head]) for v in variants])
    weight = np.concatenate([np.full(rows[v].sum(), REAL_MASK_WEIGHT if v.startswith("real") else 1.0) for v in variants])
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-3
    model = LogisticRegression(C=REGULARISATION[head], max_iter=1000, random_state=SEED)
    model.fit((x - mean) / scale, y, sample_weight=weight)
    return LinearHead(mean.astype(np.float32), scale.astype(np.float32), model.coef_[0].astype(np.float32),
                     float(model.intercept_[0]), threshold=0.5)


def cross_validate(data: TrainingSet, progress: Callable[[str], None] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Out-of-fold logit of every row, per head: each fold scored by a model that never saw its people
    (or its crawl batch)."""
    scores = {head: {v: np.zeros(len(data.folds[v])) for v in VARIANTS} for head in HEADS}
    for head in HEADS:
        for fold in range(K_FOLDS):
            model = fit_head(data, head, {v: data.folds[v] != fold for v in VARIANTS})
            for v in VARIANTS:
                held_out = data.folds[v] == fold
                scores[head][v][held_out] = model.logit(data.features[v][head][held_out])
            if progress is not None:
                progress(f"{head} fold {fold + 1}/{K_FOLDS}")
    return scores


def report(data: TrainingSet, scores: dict[str, dict[str, np.ndarray]]) -> dict:
    """Cut-offs from clean celeba_dev out-of-fold scores, and what they flag on every held-out set (keyed by the
    one stack the set was made for, as the shipped provenance records it)."""
    clean, real, unmasked = data.crops["clean"], data.crops["real"], data.crops["real_unmasked"]
    result = {}
    for head in HEADS:
        s = scores[head]
        cut = float(np.quantile(s["clean"][(clean.source == "celeba") & clean.usable], 1 - MAX_FALSE_FLAGS[head]))

        def rate(values: np.ndarray, rows: np.ndarray) -> dict:
            flagged = round(float((values[rows] >= cut).mean()), 4) if rows.any() else None  # None: no such faces
            return {"flagged": flagged, "faces": int(rows.sum())}

        result[head] = {"threshold": 1 / (1 + np.exp(-cut)), str(clean.stack[0]): {
            "celeba_dev_clean": rate(s["clean"], (clean.source == "celeba") & clean.usable),
            "lfw_clean": rate(s["clean"], clean.source == "lfw"),
            "masked_real": rate(s["real"], real.usable),
            "masked_real_faces_showing_the_mouth": rate(s["real_unmasked"], unmasked.usable),
            "masked_real_eyes_15px_or_more": rate(s["real"], real.usable & (real.eye_distance >= 15)),
            "synthetic_training_masks": rate(s["mask"], clean.usable),
            "synthetic_held_out_masks": rate(s["held_out_mask"], clean.usable),
            "synthetic_sunglasses": rate(s["sunglasses"], clean.usable),
            "synthetic_masks_dimmed": rate(s["dim_mask"], clean.usable),
            "lfw_celeba_dimmed": rate(s["dim_clean"], clean.usable),
        }}
    return result


def train(crops: FaceCrops, progress: Callable[[str], None] | None = None) -> OcclusionClassifier:
    """Cross-validate, set the cut-offs, then refit each head on everything; provenance says how."""
    data = training_set(crops)
    checked = report(data, cross_validate(data, progress))
    heads = {}
    for head in HEADS:
        fitted = fit_head(data, head, {v: np.ones(len(data.folds[v]), bool) for v in VARIANTS})
        heads[head] = replace(fitted, threshold=checked[head]["threshold"])
    stack = stack_named(str(crops.stack[0]))  # training_set checked there is one
    counts = {s: int((crops.source == s).sum()) for s in ("lfw", "celeba", "masked_real")}
    provenance = {
        "model_ids": [stack.model_id],
        "detectors": [stack.detector.model_id],
        "model_ids_mean": "the recogniser whose crops (aligned from its detector's landmarks) these flags were"
                          " checked on, whose maps the lower-face head reads, and whose calibration may have a"
                          " 'covered' table fitted with them",
        "map_outputs": list(MAP_OUTPUTS[stack.name]),
        "script": "python -m facefind.evaluation.occlusion_training",
        "data": f"aligned crops from facefind's {stack.name} detection: LFW every {LFW_EVERY}th image, celeba_dev,"
                f" masked_real (faces: {counts}; in masked_real the {len(UNMASKED_IN_MASKED_REAL)} ArcFace-stack"
                " faces showing the mouth, and the same faces (by eye position) in other stacks, as uncovered, the"
                " rest as masked, with mirror images); synthetic masks (" + ", ".join(TRAINING_SHAPES)
                + ") and sunglasses drawn on every LFW/celeba_dev crop; every clean and masked crop also dimmed",
        "method": "lower face covered: the recogniser's map_outputs (its own preprocessing) averaged over the lower"
                  " face (rows 60-112, cols 16-96 of the crop) on a 2x3 grid; eyes covered: HOG + YCrCb colour grid"
                  " of the eye band against the forehead; per head: standardise -> logistic regression"
                  f" (scikit-learn, C={REGULARISATION}); cut-off for at most {MAX_FALSE_FLAGS} of clean celeba_dev"
                  " faces flagged (out-of-fold)",
        "seeds": {"folds_and_solver": SEED, "synthetic_coverings": "the crop's index"},
        "cross_validation": f"{K_FOLDS} folds: LFW and celeba_dev by identity, masked_real by whole crawl batch;"
                            " a photo's crops from every stack in the same fold",
        "date": datetime.now(timezone.utc).date().isoformat(),
        "check": checked,
    }
    return OcclusionClassifier(heads, provenance)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train facefind's pixel occlusion classifier (reproducible).")
    parser.add_argument("--data", type=Path, default=None, help="evaluation data folder (default ../shared/data)")
    parser.add_argument("--cache", type=Path, default=Path("bench/results/cache"), help="where aligned crops are cached")
    parser.add_argument("--out-dir", type=Path, default=Path(str(resources.files("facefind.pipeline").joinpath("data"))),
                        help="where the weights go, one file per stack (occlusion.weights_file)")
    parser.add_argument("--stack", choices=TRAINED_STACKS, action="append",
                        help="train only this stack's classifier (repeatable; default: every stack)")
    parser.add_argument("--workers", type=int, default=0)
    args = parser.parse_args()
    data = args.data or shared_data_dir()
    if data is None:
        raise SystemExit("../shared/data not found; pass --data or set FACEFIND_DATA")
    for stack in args.stack or TRAINED_STACKS:
        crops = collect_crops(data, args.cache / "occlusion-crops.npz", args.workers, stacks=(stack,),
                              progress=lambda d, t: print(f"\rcrops {d}/{t}", end="", flush=True))
        print(f"\n{stack}: {len(crops.crops)} crops")
        classifier = train(crops, progress=print)
        out = args.out_dir / weights_file(stack)
        classifier.save(out)
        print(json.dumps(classifier.provenance["check"], indent=1))
        print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
