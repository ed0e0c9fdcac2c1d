"""A pair that cannot support an identification never gets 'strong' or 'possible', whatever its score."""

import cv2
import numpy as np
import pytest
from PIL import Image

from facefind.calibration import default_calibration
from facefind.calibration.table import verdict_for_fmr
from facefind.pipeline.models import STACKS
from facefind.pipeline.occlusion import draw_mask
from tests.conftest import PURPOSE


@pytest.mark.parametrize("fmr,cap,expected", [
    (1e-7, "strong", "strong"), (1e-7, "weak", "weak"), (1e-4, "weak", "weak"), (0.5, "weak", "not a match"),
])
def test_a_cap_lowers_verdicts_but_never_raises_them(fmr, cap, expected):
    assert verdict_for_fmr(fmr, cap) == expected


@pytest.mark.parametrize("covered", [False, True])
def test_the_table_for_a_poor_face_caps_its_verdicts(covered):
    calibration = default_calibration()
    score = 0.95  # far beyond any impostor: 'strong' for a good pair
    assert calibration.table_for("good", covered).evidence(score).verdict == "strong"
    assert calibration.table_for("poor", covered).evidence(score).verdict == "weak"


@pytest.mark.parametrize("model", sorted(STACKS))
def test_each_shipped_model_has_its_own_tables(model):
    calibration = default_calibration(STACKS[model].model_id)
    assert calibration.model_id == STACKS[model].model_id
    assert {"standard", "low_quality"} <= set(calibration.tables)


def test_a_covered_probe_that_shows_too_little_gets_no_strong_match(facefind, photo_folder, pipeline, sample_rgb,
                                                                    tmp_path):
    """The sample probe's person, masked and small: the gallery holds them and the score is high, but the
    verdict stays weak."""
    facefind.index([photo_folder], workers=1)
    face = pipeline.analyze(sample_rgb)[0]
    masked = cv2.resize(draw_mask(face.aligned, "surgical", seed=3), (224, 224), interpolation=cv2.INTER_CUBIC)
    probe = cv2.copyMakeBorder(masked, 48, 48, 48, 48, cv2.BORDER_CONSTANT, value=(90, 90, 90))
    probe = cv2.resize(probe, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)  # eyes about 25 px apart
    path = tmp_path / "masked_small.png"
    Image.fromarray(probe).save(path)

    result = facefind.search(path, show_all=True, purpose=PURPOSE)

    quality = result.searched_face.quality
    assert quality.lower_face_covered and quality.verdict == "poor"
    assert any("too little" in reason for reason in quality.reasons)
    assert not result.probe_assessment.supports_identification
    best = result.matches[0]
    uncapped = facefind.calibration.tables[best.calibration_table].evidence(best.similarity).verdict
    assert uncapped in ("strong", "possible")  # the score alone would have claimed an identification
    assert best.verdict == "weak"
    assert all(match.verdict not in ("strong", "possible") for match in result.matches)


def test_probes_with_the_eyes_a_few_px_apart_get_no_strong_match(facefind, photo_folder, pipeline, sample_rgb,
                                                                 tmp_path):
    """The sample probe's person shrunk until the eyes are 8 and 10 px apart (the issue saw such crops matched
    'strong'): the score alone would claim an identification, the verdict stays weak and says why."""
    facefind.index([photo_folder], workers=1)
    eye_distance = pipeline.analyze(sample_rgb)[0].quality.eye_distance_px
    for eye_px in (8.0, 10.0):
        small = cv2.resize(sample_rgb, None, fx=eye_px / eye_distance, fy=eye_px / eye_distance,
                           interpolation=cv2.INTER_AREA)
        canvas = np.full((240, 240, 3), 120, np.uint8)
        canvas[: small.shape[0], : small.shape[1]] = small[:240, :240]
        path = tmp_path / f"eyes_{eye_px:.0f}px.png"
        Image.fromarray(canvas).save(path)

        result = facefind.search(path, show_all=True, purpose=PURPOSE)

        assert not result.searched_face.quality.usable
        assert any("not a usable face" in note for note in result.probe_assessment.notes)
        best = result.matches[0]
        uncapped = facefind.calibration.tables[best.calibration_table].evidence(best.similarity).verdict
        assert uncapped in ("strong", "possible")
        assert all(match.verdict not in ("strong", "possible") for match in result.matches)
