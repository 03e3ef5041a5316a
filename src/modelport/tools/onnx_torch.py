"""A torch model as an ONNX graph that takes what every ONNX model in modelport takes.

TorchScript and whole modules go through ``torch.onnx.export``'s TorchScript exporter (the
static graph the model already is); ``torch.export`` programs through the ``torch.export``-based
one (it needs ``onnxscript``, in the ``torch`` extra). Either way the batch dimension stays
dynamic.

The graph is then given one float ``[rows, features]`` input, ``features``: each of the
model's input tensors is cut from it, reshaped and cast (``Slice`` → ``Reshape`` → ``Cast``),
and its output becomes probabilities (``Softmax`` of logits, or ``[1 - p, p]`` from a single
column) or stays the regression's values. That is how modelport's ONNX runtime, and the edge
bundle's ``predict.py``, feed a matrix model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from modelport.runtimes import require
from modelport.runtimes.torch import TorchIO, TorchRuntime, quiet

__all__ = ["FEATURES", "OPSET", "torch_to_onnx"]

FEATURES = "features"
OPSET = 17
_ONNX_TYPES = {"float32": 1, "uint8": 2, "int8": 3, "int16": 5, "int32": 6, "int64": 7,
               "bool": 9, "float16": 10, "float64": 11, "bfloat16": 16}


def torch_to_onnx(native: TorchRuntime, artifact: Path) -> Any:
    """The model at ``artifact`` (loaded as ``native``) as an ONNX ModelProto with one
    ``features`` input and the outputs modelport serves."""
    onnx = require("onnx", "onnx")
    model = _export(native, artifact)
    _flat_input(onnx, model, native.io)
    _head(onnx, model, native.io)
    onnx.checker.check_model(model)
    return model


def _export(native: TorchRuntime, artifact: Path) -> Any:
    torch = require("torch", "torch")
    onnx = require("onnx", "onnx")
    specs = native.io.inputs
    with quiet():
        if native.kind == "export":
            require("onnxscript", "torch")
            program = torch.onnx.export(torch.export.load(str(artifact)), dynamo=True,
                                        verbose=False, optimize=True)
            return program.model_proto
        buffer = io.BytesIO()
        args = tuple(torch.zeros((2, *s.shape[1:]), dtype=getattr(torch, s.dtype))
                     for s in specs)
        names = [s.name for s in specs]
        torch.onnx.export(native.module, args, buffer, dynamo=False, opset_version=OPSET,
                          input_names=names, output_names=["output"],
                          dynamic_axes={n: {0: "rows"} for n in [*names, "output"]})
    return onnx.load_from_string(buffer.getvalue())


def _flat_input(onnx: Any, model: Any, spec: TorchIO) -> None:
    """Feed every model input from slices of one ``[rows, features]`` float input."""
    helper, graph = onnx.helper, model.graph
    graph_inputs = {i.name for i in graph.input}
    original = [i for i in graph.input if i.name in graph_inputs - _initializers(graph)]
    nodes, start = [], 0
    for tensor, node_input in zip(spec.inputs, original, strict=True):
        sliced, shaped = f"{tensor.name}__slice", f"{tensor.name}__shaped"
        _constant(onnx, graph, f"{tensor.name}__bounds", [start, start + tensor.width])
        nodes += [
            helper.make_node("Slice", [FEATURES, f"{tensor.name}__bounds_0",
                                       f"{tensor.name}__bounds_1", "__axis_1"], [sliced]),
            helper.make_node("Reshape", [sliced, f"{tensor.name}__shape"],
                             [shaped if tensor.dtype != "float32" else node_input.name]),
        ]
        _constant(onnx, graph, f"{tensor.name}__shape", [-1, *tensor.shape[1:]], split=False)
        if tensor.dtype != "float32":
            nodes.append(helper.make_node("Cast", [shaped], [node_input.name],
                                          to=_ONNX_TYPES[tensor.dtype]))
        start += tensor.width
    _constant(onnx, graph, "__axis_1", [1], split=False)
    for node_input in original:
        graph.input.remove(node_input)
    graph.input.insert(0, helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT,
                                                        ["rows", start]))
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)


def _head(onnx: Any, model: Any, spec: TorchIO) -> None:
    """Keep the first output; turn logits into probabilities."""
    helper, graph = onnx.helper, model.graph
    while len(graph.output) > 1:
        graph.output.remove(graph.output[-1])
    raw = graph.output[0].name
    if spec.outputs == "values":
        return
    graph.output.remove(graph.output[0])
    if spec.width > 1:
        if spec.outputs == "logits":
            graph.node.append(helper.make_node("Softmax", [raw], ["probabilities"], axis=-1))
        else:
            graph.node.append(helper.make_node("Identity", [raw], ["probabilities"]))
    else:
        positive = "positive"
        op = "Sigmoid" if spec.outputs == "logits" else "Identity"
        _constant(onnx, graph, "__one", np.ones(1, np.float32), split=False)
        graph.node.extend([
            helper.make_node(op, [raw], [positive]),
            helper.make_node("Sub", ["__one", positive], ["negative"]),
            helper.make_node("Concat", ["negative", positive], ["probabilities"], axis=1),
        ])
    graph.output.append(helper.make_tensor_value_info(
        "probabilities", onnx.TensorProto.FLOAT, ["rows", max(2, spec.width)]))


def _initializers(graph: Any) -> set[str]:
    return {i.name for i in graph.initializer}


def _constant(onnx: Any, graph: Any, name: str, values: Any, *, split: bool = True) -> None:
    """An initializer (int64 unless ``values`` is a float array); ``split`` makes one per
    value (``name_0``, ``name_1``), as Slice takes its start and end."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iu":
        arr = arr.astype(np.int64)
    if split:
        for i, v in enumerate(arr):
            graph.initializer.append(onnx.numpy_helper.from_array(np.asarray([v]), f"{name}_{i}"))
        return
    graph.initializer.append(onnx.numpy_helper.from_array(arr, name))
