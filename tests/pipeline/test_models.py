import pytest

from facefind.errors import ModelIntegrityError
from facefind.pipeline import models


def test_shipped_models_pass_their_hash_check():
    for model in (models.SCRFD_500M, models.ARCFACE_MBF, models.LANDMARKS_2D106):
        assert models.verified_path(model).is_file()


def test_a_tampered_model_is_refused(tmp_path, monkeypatch):
    (tmp_path / "w600k_mbf.onnx").write_bytes(b"not the model")
    monkeypatch.setattr(models, "model_dir", lambda: tmp_path)
    models.verified_path.cache_clear()
    try:
        with pytest.raises(ModelIntegrityError, match="SHA-256"):
            models.verified_path(models.ARCFACE_MBF)
    finally:
        models.verified_path.cache_clear()


def test_model_ids_are_short_and_pinned():
    assert models.ARCFACE_MBF.model_id == "w600k_mbf:9cc6e4a75f0e"
