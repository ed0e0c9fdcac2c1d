"""Choosing the model stack: a library is created with one, records it, and keeps it."""

import pytest

from facefind.api import FaceFind
from facefind.errors import FaceFindError
from facefind.pipeline.models import ARCFACE_MBF, SFACE_2021DEC
from facefind.samples import probe_sample
from tests.conftest import PURPOSE


def test_a_library_created_with_sface_keeps_it(tmp_path, photo_folder):
    library = tmp_path / "library"
    report = FaceFind(library, model="sface").index([photo_folder], workers=1)
    assert report.faces_added >= 14

    reopened = FaceFind(library)  # no model given: the library's own
    assert reopened.model_id == SFACE_2021DEC.model_id
    assert reopened.resolved_config.model == "sface"
    result = reopened.search(probe_sample(), purpose=PURPOSE, max_fmr=1e-4)
    assert result.model_id == SFACE_2021DEC.model_id
    # The probe's person is in the gallery. Their gallery face is only `fair`, and SFace's fair table
    # cannot back a claim below ~4e-5 (its support ends there), so the match is `possible`, not `strong`.
    assert result.matches and result.matches[0].verdict in ("strong", "possible")
    assert result.matches[0].similarity > 0.5
    assert reopened.calibration.model_id == SFACE_2021DEC.model_id

    with pytest.raises(FaceFindError) as refused:
        FaceFind(library, model="arcface").stats()
    assert refused.value.reason == "model_mismatch"


def test_a_new_library_defaults_to_arcface(tmp_path):
    assert FaceFind(tmp_path / "new").model_id == ARCFACE_MBF.model_id


def test_an_unknown_model_is_refused_at_once(tmp_path):
    with pytest.raises(FaceFindError) as refused:
        FaceFind(tmp_path / "new", model="facenet")
    assert refused.value.reason == "unknown_model"
