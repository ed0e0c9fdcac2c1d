import cv2
import numpy as np
import pytest

from facefind.pipeline.align import ARCFACE_TEMPLATE, align_face, similarity_transform
from facefind.pipeline.quality import assess_quality


def test_alignment_maps_landmarks_onto_the_template(stack_pipeline, sample_rgb):
    face = stack_pipeline.detector.detect(sample_rgb)[0]
    matrix = similarity_transform(face.landmarks)
    mapped = np.hstack([face.landmarks, np.ones((5, 1))]) @ matrix.T
    assert np.abs(mapped - ARCFACE_TEMPLATE).max() < 6.0
    assert align_face(sample_rgb, face.landmarks).shape == (112, 112, 3)


def test_embeddings_are_unit_length_and_batch_invariant(stack_pipeline, sample_rgb):
    face = stack_pipeline.analyze(sample_rgb)[0]
    crops = np.stack([face.aligned, np.fliplr(face.aligned), face.aligned])
    batch = stack_pipeline.recognizer.embed(crops)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert np.allclose(batch[0], stack_pipeline.recognizer.embed(face.aligned[None])[0], atol=1e-4)
    assert np.allclose(batch[0], face.embedding, atol=1e-4)


def test_same_face_under_mild_changes_stays_similar(stack_pipeline, sample_rgb):
    original = stack_pipeline.analyze(sample_rgb)[0].embedding
    darker = stack_pipeline.analyze((sample_rgb * 0.7).astype(np.uint8))[0].embedding
    smaller = stack_pipeline.analyze(cv2.resize(sample_rgb, None, fx=0.6, fy=0.6))[0].embedding
    assert float(original @ darker) > 0.8
    assert float(original @ smaller) > 0.7


def test_different_people_are_dissimilar(stack_pipeline):
    from facefind.pipeline.decode import decode_image
    from facefind.samples import sample_path

    faces = stack_pipeline.analyze(decode_image(sample_path("gdp.jpg")).pixels)[:3]  # the three players; the crowd is smaller
    assert len(faces) == 3
    similarities = [float(a.embedding @ b.embedding) for i, a in enumerate(faces) for b in faces[i + 1 :]]
    assert max(similarities) < 0.3


def test_quality_flags_blur_and_small_faces(stack_pipeline, sample_rgb):
    sharp = stack_pipeline.analyze(sample_rgb)[0].quality
    blurred = stack_pipeline.analyze(cv2.GaussianBlur(sample_rgb, (0, 0), 4))[0].quality
    tiny = stack_pipeline.analyze(cv2.resize(sample_rgb, None, fx=0.12, fy=0.12, interpolation=cv2.INTER_AREA))
    assert blurred.sharpness < sharp.sharpness / 2
    assert any("blurred" in r for r in blurred.reasons)
    assert sharp.verdict in ("good", "fair")
    assert tiny and tiny[0].quality.verdict == "poor"
    assert any("small face" in r for r in tiny[0].quality.reasons)


@pytest.mark.parametrize("turn,expected_sign", [(-0.25, -1), (0.25, 1)])
def test_yaw_follows_the_nose(turn, expected_sign):
    left_eye, right_eye = np.array([40.0, 50.0]), np.array([80.0, 50.0])
    nose = np.array([60.0 + turn * 40, 70.0])
    landmarks = np.array([left_eye, right_eye, nose, [45.0, 90.0], [75.0, 90.0]])
    quality = assess_quality(np.array([20, 20, 100, 110.0]), landmarks, 0.9, np.zeros((112, 112, 3), np.uint8))
    assert np.sign(quality.yaw_deg) == expected_sign
    assert 20 < abs(quality.yaw_deg) < 32  # tan(26.6 deg) = 0.5 half-eye-distances
    assert abs(quality.pitch_deg) < 10
