"""Turn aligned face crops into L2-normalised identity embeddings.

:class:`Recognizer` is the small interface a user implements to plug in a
different ONNX recogniser; facefind records each face's ``model_id`` so faces
from different models are never compared.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from facefind.pipeline.models import ARCFACE_MBF, ModelFile, open_session, verified_path

if TYPE_CHECKING:  # onnx (~0.1 s) is imported where maps are added, not by every import of this module
    import onnx


class Recognizer(Protocol):
    """Anything that maps N aligned 112x112 RGB uint8 crops to N unit vectors."""

    model_id: str
    dim: int

    def embed(self, crops: np.ndarray) -> np.ndarray: ...


class OnnxRecognizer:
    """An ONNX recogniser run in batches: aligned RGB crops -> network output -> unit vectors.

    Subclasses say how their network wants its pixels (:meth:`prepare`); the batching, the raw
    features the usability check reads, the intermediate maps the occlusion classifier reads
    (``map_outputs``, added to the graph's outputs at load) and the normalisation are shared.
    """

    def __init__(self, model_id: str, session, batch_size: int = 32, map_outputs: tuple[str, ...] = ()) -> None:
        self.model_id = model_id
        self._session = session
        self._input_name = session.get_inputs()[0].name
        self._output_name = session.get_outputs()[0].name
        self.dim = int(session.get_outputs()[0].shape[-1])
        self.batch_size = batch_size
        self.map_outputs = map_outputs

    def prepare(self, chunk: np.ndarray) -> np.ndarray:
        """N x 112 x 112 x 3 float32 RGB pixels (0..255) -> the network's NCHW input."""
        raise NotImplementedError

    def raw_features(self, crops: np.ndarray) -> np.ndarray:
        """The network's output before normalisation (its norm says how face-like the crop is)."""
        return self.features_and_maps(crops)[0]

    def features_and_maps(
        self, crops: np.ndarray, summarise: Callable[[list[np.ndarray]], np.ndarray] | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw features and, with ``summarise``, what it makes of each batch's ``map_outputs`` maps (a few
        numbers per face: the maps themselves are ~1 MB a face), from the same single pass."""
        if len(crops) == 0:
            return np.empty((0, self.dim), dtype=np.float32), None
        outputs = [self._output_name, *self.map_outputs] if summarise else [self._output_name]
        features, summaries = [], []
        for start in range(0, len(crops), self.batch_size):
            blob = np.ascontiguousarray(self.prepare(crops[start : start + self.batch_size].astype(np.float32)))
            first, *maps = self._session.run(outputs, {self._input_name: blob})
            features.append(first)
            if summarise:
                summaries.append(summarise(maps))
        return np.vstack(features), np.vstack(summaries) if summarise else None

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return l2_normalise(self.raw_features(crops))


class OnnxArcFace(OnnxRecognizer):
    """An ArcFace-style ONNX recogniser: RGB input scaled to [-1, 1], NCHW, batched."""

    def __init__(self, model: ModelFile = ARCFACE_MBF, threads: int | None = None, batch_size: int = 32,
                 map_outputs: tuple[str, ...] = ()) -> None:
        graph = with_outputs(verified_path(model), map_outputs) if map_outputs else verified_path(model)
        super().__init__(model.model_id, open_session(graph, threads), batch_size, map_outputs)

    def prepare(self, chunk: np.ndarray) -> np.ndarray:
        return ((chunk - 127.5) / 127.5).transpose(0, 3, 1, 2)


def with_outputs(graph: Path, names: tuple[str, ...]) -> bytes:
    """The ONNX graph file, serialised, also giving the intermediate tensors ``names`` as outputs."""
    import onnx  # ~0.1 s: only a recogniser whose maps are read pays it

    model = onnx.load(str(graph))
    add_outputs(model, names)
    return model.SerializeToString()


def add_outputs(model: onnx.ModelProto, names: tuple[str, ...]) -> None:
    """Make the intermediate float tensors ``names`` outputs of ``model`` too (onnxruntime returns only outputs)."""
    import onnx

    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, so inner product equals cosine similarity."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
