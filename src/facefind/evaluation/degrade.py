"""Degrade face images the way real footage does: tiny faces, blur, heavy JPEG compression.

Used to check that scores reported for poor probes stay honest. Each image
gets one degradation, chosen and parameterised deterministically by its index.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

DEGRADATIONS = ("downscale", "blur", "jpeg10")


def degradation_for(index: int) -> str:
    return DEGRADATIONS[index % len(DEGRADATIONS)]


def degrade(pixels: np.ndarray, index: int) -> np.ndarray:
    """One degraded copy of an LFW-style crop (face about 55% of the crop width)."""
    rng = np.random.default_rng(index)
    kind = degradation_for(index)
    if kind == "downscale":  # face 24-40 px wide
        face_px = rng.uniform(24, 40)
        scale = face_px / (0.55 * pixels.shape[1])
        return cv2.resize(pixels, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    if kind == "blur":
        return cv2.GaussianBlur(pixels, (0, 0), rng.uniform(2.0, 4.0))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=10)
    return np.asarray(Image.open(buffer).convert("RGB"))
