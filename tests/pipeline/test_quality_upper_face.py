"""The usability check reads the upper face where the whole face reads low: masked faces stay usable,
face-like patterns (which read fairly as a whole) do not."""

import cv2
import numpy as np
import pytest

from facefind.pipeline.align import ARCFACE_TEMPLATE, align_face
from facefind.pipeline.decode import decode_image
from facefind.pipeline.detect import Detection
from facefind.pipeline.models import ARCFACE_MBF, SFACE_2021DEC
from facefind.pipeline.quality import MIN_FEATURE_NORM, MIN_UPPER_FACE_NORM, usability_problems

PLAUSIBLE = ARCFACE_TEMPLATE.astype(np.float64) * 2


@pytest.mark.parametrize("model_id", [ARCFACE_MBF.model_id, SFACE_2021DEC.model_id])
@pytest.mark.parametrize("whole,upper,usable", [
    (+1.0, None, True),  # the whole face reads: the upper face is not needed
    (-0.5, +1.0, True),  # a masked face: the whole reads low, the upper face reads
    (-0.5, -0.5, False),  # a face-like pattern: neither reads
    (-0.5, None, False),  # the upper face unread: refused, the safe side
])
def test_a_low_whole_face_norm_is_forgiven_only_when_the_upper_face_reads(model_id, whole, upper, usable):
    feature_norm = MIN_FEATURE_NORM[model_id] + whole
    upper_norm = None if upper is None else MIN_UPPER_FACE_NORM[model_id] + upper
    problems = usability_problems(PLAUSIBLE, 40.0, feature_norm, model_id, upper_norm)
    assert (not problems) == usable, problems
    if not usable:
        assert problems[0].startswith("the recogniser cannot read it")


def _face_like_pattern(seed: int) -> np.ndarray:
    """Two dark eyes and a mouth bar on a skin-coloured oval: reads fairly as a whole face, not as an upper face."""
    rng = np.random.default_rng(seed)
    image = np.full((224, 224, 3), 235, np.uint8)
    cv2.ellipse(image, (112, 118), (80 + seed, 96), 0, 0, 360, tuple(int(v) for v in rng.integers(150, 240, 3)), -1)
    for x in (76, 148):
        cv2.ellipse(image, (x, 103), (14, 8), 0, 0, 360, (30, 25, 20), -1)
    cv2.rectangle(image, (84, 180), (140, 190), (60, 30, 30), -1)
    return image


@pytest.mark.parametrize("masked_templates", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_face_like_patterns_are_not_usable(stack_pipeline, seed, masked_templates):
    """Read as the pipeline reads a detection (with or without masked templates, as video frames are)."""
    pixels = _face_like_pattern(seed)
    detection = Detection(np.array([32, 32, 192, 212], np.float32), PLAUSIBLE.astype(np.float32), 0.9)
    face = stack_pipeline.describe([detection], align_face(pixels, PLAUSIBLE)[None], masked_templates)[0]
    assert not face.quality.usable and face.quality.verdict == "poor"
    assert face.quality.reasons[0].startswith("not a usable face: the recogniser cannot read it")
    assert face.quality.upper_face_norm is not None  # the upper face was read, and read low


def test_real_masked_faces_stay_usable(stack_pipeline, data_dir):
    """Real masked faces with the eyes >= 15 px apart: at most 1 in 10 refused (bench/masked.py --usability
    measures all of masked_real)."""
    paths = sorted(p for p in (data_dir / "masked_real").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    faces = [f for p in paths[::12] for f in stack_pipeline.analyze(decode_image(p).pixels, masked_templates=False)
             if f.quality.eye_distance_px >= 15]
    refused = [f.quality.reasons[0] for f in faces if not f.quality.usable]
    assert len(faces) >= 25
    assert len(refused) <= len(faces) // 10, refused
