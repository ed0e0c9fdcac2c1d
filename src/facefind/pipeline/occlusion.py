"""Covered faces: draw synthetic masks and sunglasses on aligned crops, and tell whether a face is covered.

Drawing happens on the 112x112 aligned crop, where the ArcFace template fixes
the eyes, nose and mouth, so a mask follows the face whatever its pose in the
photo (MaskTheFace-style, from landmarks). The same drawing serves three
purposes: training the occlusion classifier, making the masked template stored
for every gallery face, and evaluating masked matching on LFW.

The classifier reads the face, not the identity embedding: an embedding-based one
flagged heavy make-up, dark eye sockets and ordinary in-the-wild faces, and missed
black cloth masks and white N95s. Each head is a logistic regression trained by
``facefind.evaluation.occlusion_training`` on synthetic coverings plus real masked
photos. "Eyes covered" reads gradient (HOG) and colour features of the eye band.
"Lower face covered" reads the recogniser's own mid-level feature maps (the stack's
``map_outputs``, computed in the embedding pass every face already gets) averaged
over the lower face: they see a patterned cloth mask or a small blurred crowd face
as a covering where hand-made pixel features did not (real masks found: 91% -> 97%,
masks in crowd photos 68% -> 93%; README). The weights ship as a small .npz per model
stack, whose provenance records the stack, the map outputs, data, seeds,
cross-validated figures and a hash of the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from facefind.pipeline.align import ARCFACE_TEMPLATE
from facefind.pipeline.models import DEFAULT_STACK, STACKS

NOSE = ARCFACE_TEMPLATE[2]
MOUTH_LEFT, MOUTH_RIGHT = ARCFACE_TEMPLATE[3], ARCFACE_TEMPLATE[4]
LEFT_EYE, RIGHT_EYE = ARCFACE_TEMPLATE[0], ARCFACE_TEMPLATE[1]

# Mask shapes: polygons in aligned-crop coordinates, as (x, y) fractions of the landmark layout.
# TRAINING_SHAPES build the classifier and the gallery's masked templates; HELD_OUT_SHAPES are
# only used to evaluate, so the benchmark measures masks the system has never seen.
TRAINING_SHAPES = ("surgical", "cloth", "n95")
HELD_OUT_SHAPES = ("scarf", "bandana")
GALLERY_SHAPE = "surgical"
COLOURS = {
    "surgical": [(170, 205, 230), (235, 235, 235), (120, 170, 210)],
    "cloth": [(40, 40, 40), (150, 30, 40), (60, 80, 140), (200, 190, 170)],
    "n95": [(240, 240, 235), (225, 215, 190)],
    "scarf": [(120, 30, 60), (30, 70, 40), (90, 90, 95)],
    "bandana": [(180, 20, 20), (20, 40, 120), (15, 15, 15)],
}


def _mask_polygon(shape: str, rng: np.random.Generator) -> np.ndarray:
    """Outline of a face covering on the 112x112 template, jittered a little."""
    top = NOSE[1] - {"surgical": 8, "cloth": 6, "n95": 10, "scarf": 4, "bandana": 12}[shape] + rng.uniform(-2, 2)
    half_width = {"surgical": 44, "cloth": 42, "n95": 38, "scarf": 56, "bandana": 50}[shape] + rng.uniform(-2, 2)
    bottom = {"surgical": 112, "cloth": 114, "n95": 108, "scarf": 120, "bandana": 118}[shape]
    centre = NOSE[0] + rng.uniform(-1.5, 1.5)
    if shape == "n95":  # a rounded cup
        angles = np.linspace(np.pi * 1.05, -0.05 * np.pi, 24)
        arc = np.stack([centre + half_width * np.cos(angles), top + 8 - 8 * np.sin(angles)], axis=1)
        cup = np.stack([centre + half_width * np.cos(angles[::-1]), (top + 8) + (bottom - top - 8) * np.sin(angles[::-1])], axis=1)
        return np.vstack([arc, cup])
    if shape == "bandana":  # a triangle hanging from the nose
        return np.array([[centre - half_width, top], [centre + half_width, top], [centre + 4, bottom]], dtype=np.float64)
    # surgical / cloth / scarf: a band narrowing a little towards the chin
    chin = half_width * {"surgical": 0.7, "cloth": 0.75, "scarf": 1.0}[shape]
    return np.array([
        [centre - half_width, top + 4], [centre - half_width * 0.6, top], [centre, top - 2],
        [centre + half_width * 0.6, top], [centre + half_width, top + 4],
        [centre + chin, bottom], [centre - chin, bottom],
    ], dtype=np.float64)


def draw_mask(crop: np.ndarray, shape: str, seed: int = 0) -> np.ndarray:
    """The aligned crop wearing a mask of ``shape`` (colour and fit vary with ``seed``)."""
    rng = np.random.default_rng(seed)
    colour = np.array(COLOURS[shape][int(rng.integers(len(COLOURS[shape])))], dtype=np.float64)
    polygon = _mask_polygon(shape, rng)
    layer = np.zeros(crop.shape[:2], np.uint8)
    cv2.fillPoly(layer, [np.round(polygon * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA, shift=2)
    shading = 0.85 + 0.15 * np.linspace(1, 0, crop.shape[0])[:, None]  # light from above
    texture = rng.normal(0, 6, crop.shape[:2])
    fabric = np.clip(colour[None, None, :] * shading[..., None] + texture[..., None], 0, 255)
    alpha = (layer.astype(np.float64) / 255.0)[..., None]
    return (crop * (1 - alpha) + fabric * alpha).astype(np.uint8)


def draw_sunglasses(crop: np.ndarray, seed: int = 0) -> np.ndarray:
    """The aligned crop with dark lenses over both eyes (eyes hidden)."""
    rng = np.random.default_rng(seed)
    out = crop.copy()
    shade = int(rng.integers(5, 60))
    radius = (int(rng.integers(11, 15)), int(rng.integers(8, 11)))
    for eye in (LEFT_EYE, RIGHT_EYE):
        cv2.ellipse(out, (int(eye[0]), int(eye[1])), radius, 0, 0, 360, (shade, shade, shade), -1, cv2.LINE_AA)
    cv2.line(out, (int(LEFT_EYE[0] + radius[0]), int(LEFT_EYE[1])), (int(RIGHT_EYE[0] - radius[0]), int(RIGHT_EYE[1])),
             (shade, shade, shade), 2, cv2.LINE_AA)
    return out


def combine_scores(plain: np.ndarray, masked: np.ndarray, mode: str) -> np.ndarray:
    """A covered probe's score from its similarity to a gallery face and to that face's masked template.

    Masked templates alone over-score strangers (two masks look alike), so averaging with
    the plain score is what bench/masked.py measured to work best.
    """
    if mode == "plain":
        return plain
    if mode == "masked":
        return masked
    if mode == "best_of_both":
        return np.maximum(plain, masked)
    if mode == "mean_of_both":
        return (plain + masked) / 2
    raise ValueError(f"unknown match mode {mode!r}")


@dataclass(frozen=True)
class Occlusion:
    """Whether parts of the face are covered, with the classifier's probabilities."""

    lower_face_covered: bool
    lower_face_covered_score: float
    eyes_covered: bool
    eyes_covered_score: float


# Regions of the aligned 112x112 crop (rows, columns), placed from ARCFACE_TEMPLATE: the lower face runs
# from just above the nose tip (where every mask's top edge sits) to the chin; the eye band holds both eyes
# and brows; the forehead is the reference skin a covering is compared against. Sizes are whole cells.
LOWER_FACE = (slice(60, 112), slice(16, 96))  # 52 x 80: the recogniser's maps averaged on a 2 x 3 grid
EYE_BAND = (slice(35, 68), slice(20, 92))  # 33 x 72: colour grid 3 x 6 of 11 x 12 px
FOREHEAD = (slice(12, 36), slice(34, 78))
FACE_AREA = (slice(20, 108), slice(18, 94))  # brows to chin: the reference for brightness and contrast
HEADS = ("lower_face_covered", "eyes_covered")
MAP_GRID = (2, 3)
_HOG_CELL = 8
_HOG_BINS = 9
# RGB -> YCrCb (ITU-R BT.601): brightness apart from skin-tone chroma, in plain numpy (OpenCV's threads
# cost more than the conversion on crops this small).
_YCRCB = np.array([[0.299, 0.587, 0.114], [0.5, -0.4187, -0.0813], [-0.1687, -0.3313, 0.5]], np.float32)


def _hog(grey: np.ndarray) -> np.ndarray:
    """Histogram of oriented gradients (8 px cells, 9 unsigned bins, 2x2-cell blocks, L2-Hys).

    OpenCV 5 dropped cv2.HOGDescriptor, and these few lines avoid a dependency.
    """
    gx, gy = np.zeros_like(grey), np.zeros_like(grey)
    gx[:, 1:-1] = grey[:, 2:] - grey[:, :-2]
    gy[1:-1, :] = grey[2:, :] - grey[:-2, :]
    rows, cols = grey.shape[0] // _HOG_CELL, grey.shape[1] // _HOG_CELL
    h, w = rows * _HOG_CELL, cols * _HOG_CELL
    magnitude = np.hypot(gx, gy)[:h, :w]
    bins = (np.mod(np.degrees(np.arctan2(gy, gx)), 180.0) * (_HOG_BINS / 180.0)).astype(np.int32)[:h, :w] % _HOG_BINS
    cell_of = (np.arange(h)[:, None] // _HOG_CELL) * cols + np.arange(w)[None, :] // _HOG_CELL
    cells = np.bincount((cell_of * _HOG_BINS + bins).ravel(), magnitude.ravel(), rows * cols * _HOG_BINS)
    cells = cells.reshape(rows, cols, _HOG_BINS)
    blocks = np.concatenate([cells[:-1, :-1], cells[1:, :-1], cells[:-1, 1:], cells[1:, 1:]], axis=2)
    blocks = blocks / np.sqrt((blocks ** 2).sum(axis=2, keepdims=True) + 1e-6)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt((blocks ** 2).sum(axis=2, keepdims=True) + 1e-6)
    return blocks.ravel()


def _colour_grid(ycc: np.ndarray, region: tuple[slice, slice], reference: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Per cell of a grid over ``region``: mean colour minus the forehead's, and the colour spread (texture)."""
    patch = ycc[region]
    cells = patch.reshape(grid[0], patch.shape[0] // grid[0], grid[1], patch.shape[1] // grid[1], 3)
    return np.concatenate([(cells.mean(axis=(1, 3)) - reference).ravel(), cells.std(axis=(1, 3)).ravel()])


def eye_features(crop: np.ndarray) -> np.ndarray:
    """What the eyes head reads from an aligned RGB crop: gradient shape (HOG) and colour against the forehead.

    Sunglasses replace the eyes with two dark, edge-less blobs, which shows in these features whatever
    the identity.
    """
    ycc = crop.astype(np.float32) @ _YCRCB.T
    # Photometric normalisation: a dark or flat photo must not look like a smooth dark covering.
    face = ycc[FACE_AREA + (0,)]
    ycc[..., 0] = (ycc[..., 0] - face.mean()) * (40.0 / (face.std() + 4.0))
    ycc[..., 1:] *= 128.0 / (max(float(face.mean()), 16.0))
    forehead = ycc[FOREHEAD].reshape(-1, 3)
    reference, spread = forehead.mean(axis=0), forehead.std(axis=0)
    return np.concatenate([_hog(ycc[..., 0][EYE_BAND]), _colour_grid(ycc, EYE_BAND, reference, (3, 6)), spread])


def lower_face_map_features(maps: list[np.ndarray]) -> np.ndarray:
    """What the lower-face head reads: each of the recogniser's (n, channels, h, w) feature maps averaged over
    LOWER_FACE on a MAP_GRID grid, concatenated -> (n, sum of channels x 6).

    A map of side h covers the 112 px crop in steps of 112 / h, so the region is the same part of the face
    at every depth.
    """
    parts = []
    for fmap in maps:
        step = 112 / fmap.shape[2]
        region = fmap[:, :, int(LOWER_FACE[0].start / step): int(np.ceil(LOWER_FACE[0].stop / step)),
                      int(LOWER_FACE[1].start / step): int(np.ceil(LOWER_FACE[1].stop / step))]
        for rows in np.array_split(np.arange(region.shape[2]), MAP_GRID[0]):
            for cols in np.array_split(np.arange(region.shape[3]), MAP_GRID[1]):
                parts.append(region[:, :, rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1].mean(axis=(2, 3)))
    return np.concatenate(parts, axis=1).astype(np.float32)


@dataclass(frozen=True)
class LinearHead:
    """A logistic regression on standardised features, with the cut-off its cross-validation chose."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float  # probability at or above which the part is flagged covered

    def logit(self, features: np.ndarray) -> np.ndarray:
        return ((np.atleast_2d(features) - self.mean) / self.scale).astype(np.float64) @ self.weights + self.bias

    def flags(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(covered, probability) per row; compared as logits, since cut-offs can sit very close to 1."""
        logit = self.logit(features)
        cut = np.log(self.threshold) - np.log1p(-self.threshold) if self.threshold < 1 else np.inf
        return logit >= cut, 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))


def _arrays_sha256(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class OcclusionClassifier:
    """Lower face covered (from the recogniser's feature maps) and eyes covered (from pixels) of aligned crops."""

    heads: dict[str, LinearHead]
    provenance: dict

    @property
    def map_outputs(self) -> tuple[str, ...]:
        """The recogniser graph's intermediate outputs the lower-face head was trained on, deepest first."""
        return tuple(self.provenance["map_outputs"])

    def predict(self, crops: np.ndarray, lower_face_maps: np.ndarray) -> list[Occlusion]:
        """One Occlusion per aligned 112x112 RGB crop, given :func:`lower_face_map_features` of the same crops
        (the recogniser computes them with the embedding: ``OnnxRecognizer.features_and_maps``)."""
        if len(crops) == 0:
            return []
        lower = self.heads["lower_face_covered"].flags(lower_face_maps)
        eyes = self.heads["eyes_covered"].flags(np.stack([eye_features(crop) for crop in crops]))
        return [
            Occlusion(
                lower_face_covered=bool(lower[0][i]),
                lower_face_covered_score=round(float(lower[1][i]), 4),
                eyes_covered=bool(eyes[0][i]),
                eyes_covered_score=round(float(eyes[1][i]), 4),
            )
            for i in range(len(crops))
        ]

    def covers(self, model_id: str) -> bool:
        """Whether the flags were checked on the crops of the stack whose recogniser is ``model_id``.

        The pixels it reads are placed by that stack's detector's landmarks, and its flags send covered
        probes to a 'covered' calibration table: a stack it was not checked on gets no flags.
        """
        return model_id in self.provenance.get("model_ids", ())

    def save(self, path: Path) -> None:
        """An .npz of the weights (float32: small enough to ship) and the provenance, with the weights' hash in it."""
        arrays = {}
        for name, head in self.heads.items():
            arrays.update({f"{name}/mean": head.mean, f"{name}/scale": head.scale, f"{name}/weights": head.weights,
                           f"{name}/bias": np.float32(head.bias), f"{name}/threshold": np.float64(head.threshold)})
        arrays = {k: np.asarray(v, np.float64 if k.endswith("threshold") else np.float32) for k, v in arrays.items()}
        provenance = {**self.provenance, "weights_sha256": _arrays_sha256(arrays)}
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            np.savez_compressed(handle, provenance=np.array(json.dumps(provenance, indent=1)), **arrays)

    @classmethod
    def load(cls, path: Path) -> "OcclusionClassifier":
        """Load shipped weights, refusing a file whose weights do not hash to what its provenance records."""
        with np.load(path, allow_pickle=False) as stored:
            provenance = json.loads(str(stored["provenance"]))
            arrays = {k: stored[k] for k in stored.files if k != "provenance"}
        if _arrays_sha256(arrays) != provenance.get("weights_sha256"):
            raise ValueError(f"{path}: occlusion weights do not match their recorded hash")
        heads = {
            name: LinearHead(arrays[f"{name}/mean"], arrays[f"{name}/scale"], arrays[f"{name}/weights"].astype(np.float64),
                            float(arrays[f"{name}/bias"]), float(arrays[f"{name}/threshold"]))
            for name in HEADS
        }
        return cls(heads, provenance)


SHIPPED_WEIGHTS = "occlusion.npz"  # the default stack's


def weights_file(stack: str) -> str:
    """The shipped weights for a model stack: one classifier per stack, reading its recogniser's maps and checked
    on crops aligned from its detector's landmarks (README, "Masked and partly covered faces")."""
    return SHIPPED_WEIGHTS if stack == DEFAULT_STACK else f"occlusion_{stack}.npz"


def _shipped(name: str) -> Path:
    return Path(str(resources.files("facefind.pipeline").joinpath("data", name)))


@cache
def occlusion_classifier_for(model_id: str) -> OcclusionClassifier | None:
    """The shipped classifier checked on the crops of the stack whose recogniser is ``model_id``; None where none is."""
    for stack in STACKS.values():
        if stack.model_id == model_id and _shipped(weights_file(stack.name)).is_file():
            classifier = OcclusionClassifier.load(_shipped(weights_file(stack.name)))
            return classifier if classifier.covers(model_id) else None
    return None
