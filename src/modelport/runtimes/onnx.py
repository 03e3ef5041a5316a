"""ONNX flavor: any ``.onnx`` graph, run by onnxruntime on the CPU.

The signature comes from the graph: one 2-D numeric input ``[N, n]`` is an ``array`` model with
features ``f0..f{n-1}``; several inputs (skl2onnx's one-input-per-column style) are named
features typed by their tensors.

Execution providers follow the placement (``--device``/``--providers``): ``auto`` takes TensorRT
or CUDA when this onnxruntime has them and a GPU is visible, else OpenVINO when installed, else
the CPU, and logs what it chose; ``cuda`` or an explicit provider list that onnxruntime cannot
start is an error at load. Class labels are read from the classifier nodes
(``classlabels_int64s`` / ``classlabels_strings``). A ZipMap (probabilities as a list of dicts)
is cut off the graph at load time so that probabilities come back as one float tensor.

When a package passes its ``signature`` (its sklearn/XGBoost/LightGBM model was converted), its
features are mapped onto the graph inputs and its classes are used. ``predict`` calls
``session.run`` once per batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError, ModelLoadError
from modelport.runtimes import require
from modelport.runtimes.devices import CPU, Placement, cuda_device_count
from modelport.signature import Feature, FeatureType, Signature
from modelport.types import Columns, Outputs

__all__ = ["Feed", "OnnxRuntime", "infer_signature", "load", "select_providers", "strip_zipmap"]

_NUMPY: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
    "tensor(int32)": np.int32, "tensor(string)": object, "tensor(bool)": np.bool_,
    "tensor(float16)": np.float16,
}
_FEATURE: dict[str, FeatureType] = {
    "tensor(float)": "float", "tensor(double)": "float", "tensor(float16)": "float",
    "tensor(int64)": "int", "tensor(int32)": "int", "tensor(string)": "string",
    "tensor(bool)": "bool",
}
_CLASSIFIERS = ("ZipMap", "TreeEnsembleClassifier", "LinearClassifier", "SVMClassifier")
_GPU = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
_OPENVINO = "OpenVINOExecutionProvider"
_CPU = "CPUExecutionProvider"
_DEVICE = {"TensorrtExecutionProvider": "cuda", "CUDAExecutionProvider": "cuda",
           _OPENVINO: "openvino"}
_log = logging.getLogger("modelport")


@dataclass(frozen=True)
class Feed:
    """How one graph input is built from a batch: which features, stacked how, of which type."""

    name: str
    columns: tuple[str, ...]
    dtype: Any
    rank: int = 2

    def build(self, batch: Columns) -> npt.NDArray[Any]:
        """The array this input takes for ``batch``."""
        if len(self.columns) == 1:
            col = np.asarray(batch.data[self.columns[0]]).astype(self.dtype, copy=False)
            return col.reshape(-1, 1) if self.rank == 2 else col
        return batch.stacked(self.columns).astype(self.dtype, copy=False)


@dataclass(frozen=True)
class OnnxRuntime:
    """An onnxruntime session behind the :class:`~modelport.runtimes.Runtime` seam."""

    session: Any
    signature: Signature
    feeds: tuple[Feed, ...]
    output_names: tuple[str, ...]
    mode: Literal["classifier", "proba_only", "single"]
    flavor: str = "onnx"
    device: str = "cpu"
    """``cpu``, ``cuda`` (CUDA or TensorRT provider) or ``openvino``: the session's first
    provider."""

    def predict(self, batch: Columns) -> Outputs:
        """One ``session.run`` for the whole batch."""
        inputs = {f.name: f.build(batch) for f in self.feeds}
        results = self.session.run(list(self.output_names), inputs)
        classes = list(self.signature.classes or ())
        if self.mode == "classifier":
            return Outputs(np.asarray(results[0]).ravel(), _floats(results[1]), classes)
        out = np.asarray(results[0])
        if self.mode == "proba_only":
            proba = _floats(out)
            return Outputs(np.asarray(classes)[proba.argmax(axis=1)], proba, classes)
        return Outputs(out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out)


def load(path: Path, *, signature: Signature | None = None,
         placement: Placement = CPU) -> OnnxRuntime:
    """Open ``path`` in an onnxruntime session tuned for serving, on the execution providers
    ``placement`` allows, and map the signature."""
    onnx = require("onnx", "onnx")
    ort = require("onnxruntime", "onnx")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends: any is a bad file
        raise ModelLoadError(f"'{path.name}' is not a readable ONNX model: {exc}") from exc
    strip_zipmap(model)
    providers = select_providers(ort, placement, path.name)
    session = _session(ort, model.SerializeToString(), providers, path.name,
                       fallback=placement.device == "auto" and not placement.providers)
    device = _check_started(session, placement, providers, path.name)
    sig = signature or infer_signature(session, _class_labels(model))
    outputs, mode = _outputs(session, sig)
    return OnnxRuntime(session, sig, _feeds(session, sig), outputs, mode, device=device)


def select_providers(ort: Any, placement: Placement, name: str) -> list[str]:
    """The providers to ask for: the explicit list (each must be installed), or what the
    device allows of what is installed."""
    available = list(ort.get_available_providers())
    if placement.providers:
        missing = [p for p in placement.providers if p not in available]
        if missing:
            raise ConfigError(f"--providers: {missing[0]} is not installed in this onnxruntime "
                              f"(it has {', '.join(available)}); install the onnxruntime build "
                              "that has it (onnxruntime-gpu: CUDA, TensorRT; "
                              "onnxruntime-openvino: OpenVINO) or leave it out")
        return list(placement.providers)
    gpu = [p for p in _GPU if p in available]
    if placement.device == "cuda":
        if not gpu or not cuda_device_count():
            why = ("no CUDA device is visible" if gpu else
                   f"this onnxruntime has no CUDA or TensorRT provider (it has "
                   f"{', '.join(available)}; install onnxruntime-gpu)")
            raise ConfigError(f"--device cuda: '{name}' (onnx) cannot run on a GPU here: "
                              f"{why}; use --device auto (falls back to the CPU) or --device cpu")
        return [*gpu, _CPU]
    if placement.device == "cpu":
        return [_CPU]
    accelerated = (gpu if cuda_device_count() else []) + [p for p in (_OPENVINO,)
                                                          if p in available]
    return [*accelerated, _CPU]


def _session(ort: Any, model: bytes, providers: list[str], name: str, *,
             fallback: bool) -> Any:
    try:
        return ort.InferenceSession(model, _session_options(ort), providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        if fallback and providers != [_CPU]:
            _log.warning("'%s': onnxruntime could not start %s (%s); running on the CPU",
                         name, providers[0], str(exc).splitlines()[0])
            return _session(ort, model, [_CPU], name, fallback=False)
        raise ModelLoadError(f"onnxruntime cannot run '{name}': {exc}") from exc


def _check_started(session: Any, placement: Placement, asked: list[str], name: str) -> str:
    """The device the session runs on; an explicit request onnxruntime fell back from is an
    error, an ``auto`` choice is logged."""
    started = list(session.get_providers())
    device = _DEVICE.get(started[0], "cpu")
    wanted = placement.providers[0] if placement.providers else (
        asked[0] if placement.device == "cuda" else None)
    if wanted is not None and wanted not in started:
        raise ConfigError(f"'{name}': onnxruntime could not start {wanted} (it started "
                          f"{', '.join(started)}); check the GPU drivers, or use --device auto")
    if placement.device == "auto" and not placement.providers:
        _log.info("'%s' (onnx) runs on %s (--device auto; providers %s)", name, device,
                  ", ".join(started), extra={"fields": {"device": device}})
    return device


def infer_signature(session: Any, classes: tuple[Any, ...] | None = None) -> Signature:
    """Features from the session's graph inputs; classes as read from the graph's nodes."""
    inputs = session.get_inputs()
    first = inputs[0]
    outputs = session.get_outputs()
    has_proba = classes is not None and len(outputs) >= 2
    task: Literal["classification", "regression"] = (
        "classification" if classes is not None else "regression")
    if len(inputs) == 1 and len(first.shape) == 2 and first.type != "tensor(string)":
        width = first.shape[1]
        if not isinstance(width, int):
            raise ModelLoadError(f"the ONNX input '{first.name}' has no fixed width "
                                 f"({first.shape}); pack it with an explicit signature")
        kind = _FEATURE.get(first.type, "float")
        features = tuple(Feature(f"f{i}", kind) for i in range(width))
        dtype = "float32" if first.type == "tensor(float)" else "float64"
        return Signature(features, "array", task, classes, has_proba, dtype)
    features = tuple(Feature(i.name, _FEATURE.get(i.type, "float")) for i in inputs)
    return Signature(features, "dataframe", task, classes, has_proba)


def _session_options(ort: Any) -> Any:
    """One thread per call (serving runs many calls at once), all graph optimizations, quiet."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # converters declare label shapes that onnxruntime warns about
    return opts


def _feeds(session: Any, sig: Signature) -> tuple[Feed, ...]:
    inputs = session.get_inputs()
    names = set(sig.names)
    if len(inputs) > 1 or (inputs[0].name in names and len(sig.features) == 1):
        missing = [i.name for i in inputs if i.name not in names]
        if missing:
            raise ModelLoadError(f"the ONNX graph takes an input '{missing[0]}' that is not a "
                                 f"feature of the signature ({', '.join(sig.names)})")
        return tuple(Feed(i.name, (i.name,), _dtype(i), len(i.shape)) for i in inputs)
    only = inputs[0]
    width = only.shape[1] if len(only.shape) == 2 else None
    if isinstance(width, int) and width != len(sig.features):
        raise ModelLoadError(f"the ONNX input '{only.name}' takes {width} columns but the "
                             f"signature has {len(sig.features)} features")
    return (Feed(only.name, sig.names, _dtype(only), len(only.shape)),)


def _dtype(node: Any) -> Any:
    if node.type not in _NUMPY:
        raise ModelLoadError(f"the ONNX input '{node.name}' has type {node.type}, which "
                             "modelport cannot feed")
    return _NUMPY[node.type]


def _outputs(session: Any, sig: Signature) -> tuple[tuple[str, ...], Any]:
    outs = session.get_outputs()
    if len(outs) >= 2:
        proba = next((o for o in outs if "prob" in o.name.lower()), outs[1])
        label = next(o for o in outs if o.name != proba.name)
        return (label.name, proba.name), "classifier"
    width = outs[0].shape[1] if len(outs[0].shape) == 2 else None
    if sig.has_proba and sig.classes and width == len(sig.classes):
        return (outs[0].name,), "proba_only"
    return (outs[0].name,), "single"


def _class_labels(model: Any) -> tuple[Any, ...] | None:
    """Class labels recorded on the graph's classifier nodes, if any."""
    for node in model.graph.node:
        if node.op_type not in _CLASSIFIERS:
            continue
        for attr in node.attribute:
            if attr.name == "classlabels_int64s" and attr.ints:
                return tuple(int(v) for v in attr.ints)
            if attr.name == "classlabels_strings" and attr.strings:
                return tuple(v.decode("utf-8") for v in attr.strings)
    return None


def strip_zipmap(model: Any) -> None:
    """Make a ZipMap's input tensor the graph output in its place (probabilities as one array
    instead of a list of dicts: no per-row Python objects)."""
    graph = model.graph
    outputs = {o.name: i for i, o in enumerate(graph.output)}
    for node in list(graph.node):
        if node.op_type != "ZipMap" or node.output[0] not in outputs:
            continue
        from onnx import TensorProto, helper

        position = outputs[node.output[0]]
        replacement = helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT,
                                                    [None, None])
        graph.output.remove(graph.output[position])
        graph.output.insert(position, replacement)
        graph.node.remove(node)


def _floats(values: Any) -> npt.NDArray[np.floating[Any]]:
    arr = np.asarray(values)
    return arr if arr.dtype.kind == "f" else arr.astype(np.float64)
