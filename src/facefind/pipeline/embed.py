"""Turn aligned face crops into L2-normalised identity embeddings.

:class:`Recognizer` is the small interface a user implements to plug in a
different ONNX recogniser; facefind records each face's ``model_id`` so faces
from different models are never compared.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from facefind.pipeline.models import ARCFACE_MBF, ModelFile, open_session, verified_path


class Recognizer(Protocol):
    """Anything that maps N aligned 112x112 RGB uint8 crops to N unit vectors."""

    model_id: str
    dim: int

    def embed(self, crops: np.ndarray) -> np.ndarray: ...


class OnnxArcFace:
    """An ArcFace-style ONNX recogniser: RGB input scaled to [-1, 1], NCHW, batched."""

    def __init__(self, model: ModelFile = ARCFACE_MBF, threads: int | None = None, batch_size: int = 32) -> None:
        self.model_id = model.model_id
        self._session = open_session(verified_path(model), threads)
        self._input_name = self._session.get_inputs()[0].name
        self.dim = int(self._session.get_outputs()[0].shape[-1])
        self.batch_size = batch_size

    def raw_features(self, crops: np.ndarray) -> np.ndarray:
        """The network's output before normalisation (its norm says how face-like the crop is)."""
        if len(crops) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        batches = []
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start : start + self.batch_size].astype(np.float32)
            blob = ((chunk - 127.5) / 127.5).transpose(0, 3, 1, 2)
            batches.append(self._session.run(None, {self._input_name: blob})[0])
        return np.vstack(batches)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return l2_normalise(self.raw_features(crops))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so inner product equals cosine similarity."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
