"""PyTorch flavor: TorchScript (``.pt``), ``torch.export`` programs (``.pt2``) and whole
modules saved with ``torch.save(model)`` (``.pth``, a pickle: it needs the module's class
importable and runs code when loaded, like a joblib file).

A model takes tensors, a signature takes named values per row. The bridge is
:class:`TorchIO`, kept in a sidecar beside the artifact (``model.pt.json``, written by ``pack``):
the model's input tensors (name, dtype, shape with ``-1`` for the batch), the features that fill
them (each tensor's values flattened in C order, ``x_0_0, x_0_1, …``, or the columns of a CSV
example) and what its output is: ``logits`` (softmax, or a sigmoid for one column, gives
probabilities), ``probabilities``, or ``values`` (a regression). Without a sidecar it comes from
an example input (``pack --example x.npy|x.npz|x.csv``) or, for a ``.pt2`` program, from the
program's own input shapes.

``predict`` stacks the batch into one matrix, cuts and reshapes it into the input tensors and
calls the model once, under ``torch.inference_mode()``. Torch runs one thread per call (set
when the first model loads), as the other flavors do: the server runs many calls at once.
Torch's deprecation notices about TorchScript and quantized tensors are silenced around its own
load calls only; TorchScript stays the format the model is given in.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError, ModelLoadError
from modelport.runtimes import Example, require
from modelport.runtimes.devices import CPU, Placement, choose
from modelport.signature import Feature, FeatureType, Signature
from modelport.types import Columns, Outputs

__all__ = ["OutputKind", "TensorSpec", "TorchIO", "TorchRuntime", "load", "open_module",
           "quiet", "sidecar_path"]

OutputKind = Literal["logits", "probabilities", "values"]
ModuleKind = Literal["script", "export", "eager"]
THREADS = 1
_DTYPES: dict[str, FeatureType] = {
    "float32": "float", "float64": "float", "float16": "float", "bfloat16": "float",
    "int64": "int", "int32": "int", "int16": "int", "int8": "int", "uint8": "int",
    "bool": "bool"}
_KINDS: dict[str, ModuleKind] = {".pt": "script", ".pt2": "export", ".pth": "eager"}


@dataclass(frozen=True)
class TensorSpec:
    """One input tensor of the model: its name, dtype and shape (``-1`` for the batch)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def width(self) -> int:
        """Values per row (the product of the non-batch dimensions)."""
        return math.prod(self.shape[1:])


@dataclass(frozen=True)
class TorchIO:
    """What a torch model takes and gives, in the terms of a signature (the sidecar)."""

    inputs: tuple[TensorSpec, ...]
    features: tuple[str, ...]
    outputs: OutputKind
    width: int
    """Columns of the output (classes of a classifier; 1 for a single value)."""
    classes: tuple[Any, ...] | None = None
    examples: tuple[float, ...] | None = None
    """One example row (the first of ``--example``), for docs and golden rows."""

    def signature(self) -> Signature:
        """The signature these tensors and this output make."""
        kinds = [_feature_type(t.dtype) for t in self.inputs for _ in range(t.width)]
        examples = self.examples or (None,) * len(self.features)
        feats = tuple(Feature(n, k, example=_plain(e, k))
                      for n, k, e in zip(self.features, kinds, examples, strict=True))
        floats = {t.dtype for t in self.inputs}
        dtype = "float32" if floats <= {"float32", "float16", "bfloat16"} else "float64"
        if self.outputs == "values":
            return Signature(feats, "array", "regression", array_dtype=dtype)
        classes = self.classes or tuple(range(max(2, self.width)))
        return Signature(feats, "array", "classification", classes, True, dtype)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the sidecar file."""
        return {"format": 1, "inputs": [{"name": t.name, "dtype": t.dtype,
                                         "shape": list(t.shape)} for t in self.inputs],
                "features": list(self.features), "outputs": self.outputs, "width": self.width,
                "classes": None if self.classes is None else list(self.classes),
                "examples": None if self.examples is None else list(self.examples)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TorchIO:
        """Inverse of :meth:`to_dict`."""
        inputs = tuple(TensorSpec(str(t["name"]), str(t["dtype"]), tuple(t["shape"]))
                       for t in data["inputs"])
        classes, examples = data.get("classes"), data.get("examples")
        io = cls(inputs, tuple(data["features"]), data["outputs"], int(data["width"]),
                 None if classes is None else tuple(classes),
                 None if examples is None else tuple(examples))
        io.check()
        return io

    def check(self) -> None:
        """Refuse a description that cannot be right (features not filling the tensors)."""
        if self.outputs not in get_args(OutputKind):
            raise ModelLoadError(f"torch outputs '{self.outputs}' is not one of "
                                 f"{', '.join(get_args(OutputKind))}")
        total = sum(t.width for t in self.inputs)
        if total != len(self.features) or len(set(self.features)) != total:
            raise ModelLoadError(f"the model's inputs take {total} values per row but "
                                 f"{len(set(self.features))} distinct features are named")
        bad = [t for t in self.inputs if t.dtype not in _DTYPES]
        if bad:
            raise ModelLoadError(f"input '{bad[0].name}' has dtype {bad[0].dtype}, which "
                                 "modelport cannot feed")


@dataclass(frozen=True)
class TorchRuntime:
    """A torch module behind the :class:`~modelport.runtimes.Runtime` seam."""

    module: Any
    signature: Signature
    io: TorchIO
    device: str
    kind: ModuleKind
    flavor: str = "torch"

    def predict(self, batch: Columns) -> Outputs:
        """One call of the module for the whole batch."""
        import torch

        tensors = self.tensors(batch.stacked(self.signature.names))
        with torch.inference_mode():
            out = self.module(*tensors)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return self._outputs(out.detach().float().cpu().numpy())

    def tensors(self, matrix: npt.NDArray[Any]) -> list[Any]:
        """The model's input tensors for a ``rows x features`` matrix."""
        import torch

        out, start = [], 0
        rows = matrix.shape[0]
        for spec in self.io.inputs:
            part = matrix[:, start:start + spec.width].reshape((rows, *spec.shape[1:]))
            start += spec.width
            out.append(torch.from_numpy(np.ascontiguousarray(part, dtype=spec.dtype))
                       .to(self.device))
        return out

    def sidecar(self) -> dict[str, Any]:
        """The sidecar a package keeps beside the artifact."""
        return self.io.to_dict()

    def _outputs(self, raw: npt.NDArray[np.float32]) -> Outputs:
        classes = list(self.signature.classes or ())
        if self.io.outputs == "values":
            return Outputs(raw.reshape(len(raw), -1)[:, 0] if raw.ndim == 1 or raw.shape[1] == 1
                           else raw)
        proba = _probabilities(raw.reshape(len(raw), -1), self.io.outputs)
        return Outputs(np.asarray(classes)[proba.argmax(axis=1)], proba, classes)


def _probabilities(raw: npt.NDArray[np.float32], kind: OutputKind) -> npt.NDArray[np.float64]:
    x = raw.astype(np.float64)
    if x.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-x[:, 0])) if kind == "logits" else x[:, 0]
        return np.column_stack([1.0 - p, p])
    if kind == "probabilities":
        return x
    shifted = np.exp(x - x.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)  # type: ignore[no-any-return]


def sidecar_path(artifact: Path) -> Path:
    """Where the sidecar of ``artifact`` lives: ``model.pt`` -> ``model.pt.json``."""
    return artifact.with_name(artifact.name + ".json")


def load(path: Path, *, signature: Signature | None = None, placement: Placement = CPU,
         example: Example | None = None) -> TorchRuntime:
    """Open ``path`` on the device ``placement`` allows and describe its inputs (sidecar,
    ``example`` or the ``.pt2`` program)."""
    torch = require("torch", "torch")
    device = choose(placement, what=f"'{path.name}' (torch)", usable=torch.cuda.is_available(),
                    missing="torch sees no CUDA device (torch.cuda.is_available() is False)")
    if placement.providers:
        raise ConfigError("--providers lists ONNX Runtime execution providers; a torch model "
                          "takes --device")
    _bound_threads(torch)
    module, kind = open_module(path, device)
    io = _describe(path, module, kind, example)
    sig = signature or io.signature()
    if len(sig.features) != len(io.features):
        raise ModelLoadError(f"the signature has {len(sig.features)} features but "
                             f"'{path.name}' takes {len(io.features)} values per row")
    return TorchRuntime(module, sig, io, device, kind)


def open_module(path: Path, device: str = "cpu") -> tuple[Any, ModuleKind]:
    """The callable in ``path`` (in eval mode, on ``device``) and what kind of file held it."""
    torch = require("torch", "torch")
    kind = _KINDS.get(path.suffix.lower())
    if kind is None:
        raise ModelLoadError(f"'{path.name}' is not a torch model file (.pt TorchScript, .pt2 "
                             "torch.export program, .pth module saved with torch.save)")
    try:
        with quiet():
            if kind == "script":
                return torch.jit.load(str(path), map_location=device).eval(), kind
            if kind == "export":
                return torch.export.load(str(path)).module().to(device), kind
            module = torch.load(str(path), map_location=device, weights_only=False)
    except (RuntimeError, ValueError, OSError, EOFError, AttributeError,
            ModuleNotFoundError) as exc:
        raise ModelLoadError(f"torch cannot load '{path.name}' as a {kind} model: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from exc
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(f"'{path.name}' holds a {type(module).__name__}, not a module: "
                             "save the model itself (torch.save(model, path)) or as TorchScript")
    return module.eval(), kind


@contextmanager
def quiet() -> Iterator[None]:
    """Torch's own warnings off (TorchScript, export and quantized tensors are deprecated in
    favour of APIs that do not serve these files), for one call into torch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _bound_threads(torch: Any) -> None:
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)
    with contextlib.suppress(RuntimeError):  # settable once, before any parallel work
        torch.set_num_interop_threads(THREADS)


def _describe(path: Path, module: Any, kind: ModuleKind, example: Example | None) -> TorchIO:
    if example is not None:
        return from_example(module, kind, example)
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        try:
            return TorchIO.from_dict(json.loads(sidecar.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"'{sidecar.name}' is not a torch sidecar: {exc}") from exc
    if kind == "export":
        return _from_program(module, path)
    raise ModelLoadError(f"'{path.name}' does not say what tensors it takes: pack it with an "
                         f"example input (modelport pack {path.name} --example x.npy|x.npz|"
                         f"x.csv), or put its sidecar {sidecar.name} beside it")


def from_example(module: Any, kind: ModuleKind, example: Example) -> TorchIO:
    """Inputs, features and output kind from an example batch run through the model."""
    arrays, features = _read_example(example.path, input_names(module, kind))
    specs = tuple(TensorSpec(n, str(a.dtype), (-1, *a.shape[1:])) for n, a in arrays.items())
    names = features or tuple(_flat_names(specs))
    first = np.concatenate([a[:1].reshape(1, -1) for a in arrays.values()], axis=1)
    out = _run(module, [arrays[s.name] for s in specs])
    outputs = example.outputs if example.outputs != "auto" else guess_outputs(out)
    width = 1 if out.ndim == 1 else int(math.prod(out.shape[1:]))
    io = TorchIO(specs, names, outputs, width, None,  # type: ignore[arg-type]
                 tuple(float(v) for v in first[0]))
    io.check()
    return io


def guess_outputs(out: npt.NDArray[Any]) -> OutputKind:
    """``values`` for one column, ``probabilities`` for rows in [0, 1] that sum to 1, else
    ``logits`` (pass ``--outputs`` when this guess is wrong)."""
    if out.ndim == 1 or out.shape[1] == 1:
        return "values"
    rows = out.reshape(len(out), -1)
    if (rows >= 0).all() and (rows <= 1).all() and np.allclose(rows.sum(axis=1), 1, atol=1e-4):
        return "probabilities"
    return "logits"


def input_names(module: Any, kind: ModuleKind) -> list[str]:
    """The names of the model's forward arguments, in order."""
    if kind == "script":
        return [a.name for a in module.forward.schema.arguments[1:]]
    if kind == "export":
        return [n.name for n in module.graph.nodes if n.op == "placeholder"]
    params = inspect.signature(module.forward).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _read_example(path: Path, names: Sequence[str]) -> tuple[dict[str, npt.NDArray[Any]],
                                                              tuple[str, ...] | None]:
    """Input arrays by name, and feature names when the example names its columns (CSV)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ConfigError(f"--example: '{path}' does not exist")
    if suffix == ".npy":
        return {(names[0] if names else "input"): np.load(path, allow_pickle=False)}, None
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            order = [n for n in names if n in npz.files] or list(npz.files)
            return {n: npz[n] for n in order}, None
    if suffix in (".csv", ".parquet"):
        import pandas as pd

        frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        matrix = frame.to_numpy(dtype=np.float32)
        return {(names[0] if names else "input"): matrix}, tuple(str(c) for c in frame.columns)
    raise ConfigError(f"--example: '{path.name}' is not .npy, .npz, .csv or .parquet")


def _flat_names(specs: Sequence[TensorSpec]) -> Iterator[str]:
    for spec in specs:
        for index in np.ndindex(*spec.shape[1:]):
            yield "_".join([spec.name, *map(str, index)])


def _run(module: Any, arrays: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    import torch

    try:
        with torch.inference_mode(), quiet():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
    except Exception as exc:  # a model raises whatever its code raises
        raise ModelLoadError(f"the model fails on the example input: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if isinstance(out, (tuple, list)):
        out = out[0]
    return np.asarray(out.detach().float().cpu().numpy())


def _from_program(module: Any, path: Path) -> TorchIO:
    """A ``.pt2`` program's inputs from its graph (the batch dimension must be dynamic)."""
    specs = []
    for node in module.graph.nodes:
        if node.op != "placeholder" or "val" not in node.meta:
            continue
        val = node.meta["val"]
        dims = [d if isinstance(d, int) else -1 for d in val.shape]
        if not dims or -1 in dims[1:]:
            raise ModelLoadError(f"'{path.name}': input '{node.name}' has shape {dims}; export "
                                 "with a dynamic batch dimension only (dynamic_shapes={'x': "
                                 "{0: Dim('batch')}}), or pack it with --example")
        specs.append(TensorSpec(node.name, str(val.dtype).removeprefix("torch."),
                                (-1, *dims[1:])))
    rng = np.random.default_rng(0)
    out = _run(module, [rng.normal(size=(2, *s.shape[1:])).astype(s.dtype) for s in specs])
    width = 1 if out.ndim == 1 else int(math.prod(out.shape[1:]))
    io = TorchIO(tuple(specs), tuple(_flat_names(specs)), guess_outputs(out), width)
    io.check()
    return io


def _feature_type(dtype: str) -> FeatureType:
    return _DTYPES.get(dtype, "float")


def _plain(value: Any, kind: FeatureType) -> Any:
    if value is None:
        return None
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    return float(value)
