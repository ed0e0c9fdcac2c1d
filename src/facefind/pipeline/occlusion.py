"""Covered faces: draw synthetic masks and sunglasses on aligned crops, and tell whether a face is covered.

Drawing happens on the 112x112 aligned crop, where the ArcFace template fixes
the eyes, nose and mouth, so a mask follows the face whatever its pose in the
photo (MaskTheFace-style, from landmarks). The same drawing serves three
purposes: training the occlusion classifier, making the masked template stored
for every gallery face, and evaluating masked matching on LFW.

The classifier is a logistic regression on the face embedding (the recogniser
already encodes what it cannot see), trained by ``facefind.occlusion_training``
on synthetic data and shipped as a few hundred numbers with their provenance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np

from facefind.pipeline.align import ARCFACE_TEMPLATE

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


@dataclass(frozen=True)
class OcclusionClassifier:
    """Two logistic regressions on the embedding: lower face covered, eyes covered."""

    weights: np.ndarray  # (2, dim)
    bias: np.ndarray  # (2,)
    thresholds: np.ndarray  # (2,) probability cut-offs
    provenance: dict

    def predict(self, embeddings: np.ndarray) -> list[Occlusion]:
        logits = np.atleast_2d(embeddings) @ self.weights.T + self.bias
        probabilities = 1.0 / (1.0 + np.exp(-logits))
        return [
            Occlusion(
                lower_face_covered=bool(p[0] >= self.thresholds[0]),
                lower_face_covered_score=round(float(p[0]), 4),
                eyes_covered=bool(p[1] >= self.thresholds[1]),
                eyes_covered_score=round(float(p[1]), 4),
            )
            for p in probabilities
        ]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "provenance": self.provenance,
            "thresholds": self.thresholds.tolist(),
            "bias": self.bias.tolist(),
            "weights": np.round(self.weights, 6).tolist(),
        }, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "OcclusionClassifier":
        data = json.loads(Path(path).read_text())
        return cls(
            weights=np.asarray(data["weights"], dtype=np.float32),
            bias=np.asarray(data["bias"], dtype=np.float32),
            thresholds=np.asarray(data["thresholds"], dtype=np.float32),
            provenance=data["provenance"],
        )


@cache
def default_occlusion_classifier() -> OcclusionClassifier:
    """The classifier shipped for the bundled recogniser."""
    return OcclusionClassifier.load(Path(str(resources.files("facefind.pipeline").joinpath("data", "occlusion_w600k_mbf.json"))))
