import cv2
import numpy as np
import pytest

from facefind.pipeline.align import similarity_transform
from facefind.pipeline.occlusion import (
    HELD_OUT_SHAPES,
    TRAINING_SHAPES,
    combine_scores,
    default_occlusion_classifier,
    draw_mask,
    draw_sunglasses,
)


def wear(rgb: np.ndarray, landmarks: np.ndarray, cover) -> np.ndarray:
    """The photo with a covering drawn on the aligned crop and warped back onto the face."""
    matrix = similarity_transform(landmarks)
    crop = cv2.warpAffine(rgb, matrix, (112, 112))
    covered = cover(crop)
    changed = (np.abs(covered.astype(int) - crop.astype(int)).sum(axis=2) > 0).astype(np.uint8) * 255
    inverse = cv2.invertAffineTransform(matrix)
    size = (rgb.shape[1], rgb.shape[0])
    back = cv2.warpAffine(covered, inverse, size)
    alpha = cv2.warpAffine(changed, inverse, size)[..., None] / 255.0
    return (rgb * (1 - alpha) + back * alpha).astype(np.uint8)


@pytest.fixture(scope="module")
def masked_sample(pipeline, sample_rgb) -> np.ndarray:
    face = pipeline.analyze(sample_rgb)[0]
    return wear(sample_rgb, face.landmarks, lambda crop: draw_mask(crop, "scarf", seed=3))


@pytest.mark.parametrize("shape", TRAINING_SHAPES + HELD_OUT_SHAPES)
def test_masks_cover_mouth_and_nose_tip_but_not_the_eyes(pipeline, sample_rgb, shape):
    crop = pipeline.analyze(sample_rgb)[0].aligned
    masked = draw_mask(crop, shape, seed=1)
    difference = np.abs(masked.astype(int) - crop.astype(int)).sum(axis=2)
    assert difference[40:60, 30:80].mean() < 1  # eye band untouched
    assert (difference[88:98, 45:68] > 0).mean() > 0.9  # mouth hidden


def test_sunglasses_hide_the_eyes_only():
    crop = np.full((112, 112, 3), 200, np.uint8)
    covered = draw_sunglasses(crop, seed=0)
    assert covered[51, 38].max() < 80 and covered[51, 73].max() < 80
    assert (covered[85:112] == 200).all()


def test_classifier_flags_a_real_detection_wearing_an_unseen_mask_shape(pipeline, sample_rgb, masked_sample):
    plain = pipeline.analyze(sample_rgb)[0].quality
    masked = pipeline.analyze(masked_sample)[0].quality
    assert plain.lower_face_covered is False and not plain.eyes_covered
    assert masked.lower_face_covered is True
    assert any(r.startswith("lower face covered") for r in masked.reasons)


def test_sunglasses_make_a_face_poor(pipeline, sample_rgb):
    face = pipeline.analyze(sample_rgb)[0]
    shaded = wear(sample_rgb, face.landmarks, lambda crop: draw_sunglasses(crop, seed=2))
    quality = pipeline.analyze(shaded)[0].quality
    assert quality.eyes_covered and quality.verdict == "poor"


def test_every_face_gets_a_masked_template(pipeline, sample_rgb):
    face = pipeline.analyze(sample_rgb)[0]
    assert face.masked_embedding is not None
    assert np.linalg.norm(face.masked_embedding) == pytest.approx(1.0, abs=1e-4)
    assert 0.3 < float(face.embedding @ face.masked_embedding) < 0.95


def test_shipped_classifier_provenance_and_held_out_check():
    classifier = default_occlusion_classifier()
    check = classifier.provenance["check"]
    assert classifier.provenance["model_id"] == "w600k_mbf:9cc6e4a75f0e"
    assert check["lower_face_covered"]["flag_rate_on_held_out_people"]["plain"] <= 0.02
    assert check["lower_face_covered"]["flag_rate_on_held_out_people"]["held_out_mask"] >= 0.75
    assert check["eyes_covered"]["flag_rate_on_held_out_people"]["sunglasses"] >= 0.75


def test_combined_scores():
    plain, masked = np.array([0.2, 0.6]), np.array([0.4, 0.2])
    assert list(combine_scores(plain, masked, "mean_of_both")) == pytest.approx([0.3, 0.4])
    assert list(combine_scores(plain, masked, "best_of_both")) == pytest.approx([0.4, 0.6])
    with pytest.raises(ValueError):
        combine_scores(plain, masked, "guess")
