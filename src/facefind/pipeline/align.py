"""Align a face to the standard 5-point ArcFace template (112x112).

Recognisers are trained on faces warped by a similarity transform (rotation,
uniform scale, translation) onto fixed eye/nose/mouth positions; matching that
exactly is what keeps our accuracy at the model's published figure.
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 112
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def similarity_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 matrix mapping the 5 source landmarks onto the template (least squares)."""
    matrix, _ = cv2.estimateAffinePartial2D(
        landmarks.astype(np.float32), ARCFACE_TEMPLATE, method=cv2.LMEDS
    )
    if matrix is None:  # degenerate landmarks (all on one point); fall back to plain least squares
        matrix = cv2.getAffineTransform(landmarks[:3].astype(np.float32), ARCFACE_TEMPLATE[:3])
    return matrix


def align_face(rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 RGB crop the recogniser expects."""
    matrix = similarity_transform(landmarks)
    return cv2.warpAffine(rgb, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderValue=0.0)


def template_landmarks() -> np.ndarray:
    """Where the 5 landmarks sit on an aligned crop (for drawing evidence)."""
    return ARCFACE_TEMPLATE.copy()
