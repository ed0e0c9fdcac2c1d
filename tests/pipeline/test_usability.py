"""The usability check: detections that are not a readable face are poor and flagged, for both model stacks."""

import cv2
import numpy as np
import pytest

from facefind.pipeline.align import ARCFACE_TEMPLATE, align_face
from facefind.pipeline.decode import decode_image
from facefind.pipeline.quality import assess_quality, landmark_fit_error


def _non_face(kind: str) -> np.ndarray:
    """A 224x224 image with no face in it, to be read at the template's landmark positions."""
    rng = np.random.default_rng(0)
    if kind == "flat":
        return np.full((224, 224, 3), 128, np.uint8)
    if kind == "noise":
        return rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    # a smiley: a cartoon face drawn with three strokes
    drawing = np.full((224, 224, 3), 235, np.uint8)
    cv2.circle(drawing, (112, 120), 90, (255, 220, 80), -1)
    for x in (76, 148):
        cv2.circle(drawing, (x, 100), 12, (0, 0, 0), -1)
    cv2.ellipse(drawing, (112, 160), (40, 20), 0, 0, 180, (0, 0, 0), 6)
    return drawing


def _quality_at_template(pipeline, pixels: np.ndarray):
    """Quality of ``pixels`` read as a face whose 5 points sit exactly on the (2x) template."""
    landmarks = ARCFACE_TEMPLATE.astype(np.float64) * 2
    crop = align_face(pixels, landmarks)
    norm = float(np.linalg.norm(pipeline.recognizer.raw_features(crop[None])[0]))
    box = np.array([0, 0, 224, 224], dtype=np.float64)
    return assess_quality(box, landmarks, 0.9, crop, None, norm, pipeline.model_id)


@pytest.mark.parametrize("kind", ["flat", "noise", "cartoon"])
def test_synthetic_non_faces_are_not_usable(stack_pipeline, kind):
    quality = _quality_at_template(stack_pipeline, _non_face(kind))
    assert not quality.usable
    assert quality.verdict == "poor"
    assert quality.reasons[0].startswith("not a usable face: the recogniser cannot read it")


def test_a_real_face_at_the_same_place_is_usable(stack_pipeline, sample_rgb):
    face = stack_pipeline.analyze(sample_rgb)[0]
    assert face.quality.usable and face.quality.verdict != "poor"
    assert face.quality.feature_norm is not None


@pytest.mark.parametrize("eye_px", [8.0, 10.0])
def test_faces_a_few_px_between_the_eyes_are_not_usable(stack_pipeline, sample_rgb, eye_px):
    face = stack_pipeline.analyze(sample_rgb)[0]
    scale = eye_px / face.quality.eye_distance_px
    small = cv2.resize(sample_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((240, 240, 3), 120, np.uint8)
    canvas[: small.shape[0], : small.shape[1]] = small
    found = stack_pipeline.analyze(canvas)
    assert found, "the detector should still see a face this small; the check must then refuse it"
    for tiny in found:
        assert not tiny.quality.usable
        assert tiny.quality.verdict == "poor"
        assert "eyes" in tiny.quality.reasons[0] and "px apart" in tiny.quality.reasons[0]


def test_landmarks_no_face_could_have_are_not_usable(sample_rgb):
    plausible = ARCFACE_TEMPLATE.astype(np.float64) * 2
    scrambled = plausible[[3, 4, 2, 0, 1]]  # mouth above the eyes
    assert landmark_fit_error(plausible) < 0.01
    crop = align_face(sample_rgb, scrambled)
    quality = assess_quality(np.array([0, 0, 224, 224.0]), scrambled, 0.9, crop)
    assert not quality.usable
    assert "implausible landmarks" in quality.reasons[0]


@pytest.mark.parametrize("data_set,pattern,limit", [("lfw", "*/*_0001.jpg", 40), ("celeba_dev", "*/*.jpg", 25)])
def test_real_faces_are_usable(stack_pipeline, data_dir, data_set, pattern, limit):
    """Real, reasonably sized faces pass: at most 1 in 20 of celeba_dev's in-the-wild faces is refused."""
    paths = sorted((data_dir / data_set).glob(pattern))
    paths = paths[:: max(1, len(paths) // limit)]
    faces = [f for p in paths for f in stack_pipeline.analyze(decode_image(p).pixels)[:1] if f.quality.eye_distance_px >= 20]
    refused = [f.quality.reasons[0] for f in faces if not f.quality.usable]
    assert len(faces) >= limit * 0.8
    assert len(refused) <= (0 if data_set == "lfw" else len(faces) // 20), refused
