"""``modelport optimize``: convert a package's model to ONNX and prove it answers the same.

The model (a scikit-learn Pipeline through skl2onnx, an XGBoost or LightGBM booster through
onnxmltools, a torch model through ``torch.onnx.export``: see :mod:`modelport.tools.onnx_torch`)
is converted to ``model.onnx`` inside the package, with one graph input per column
when the signature takes a DataFrame. Both runtimes then score the package's golden rows (made
from the signature for an old package without them), and the rows of ``data`` when given;
parity holds when every label is identical and no probability (or regression output) moves by
more than ``tolerance``. The result is recorded in the manifest
(``onnx: {artifact, opset, parity}``) and ``load_model(runtime="auto")`` serves the ONNX
artifact only when parity passed.

ONNX tree ensembles compute in float32: a threshold that falls between a float64 value and its
float32 rounding can move a probability by a few hundredths on rare rows. The default
tolerance (1e-4) catches that; choose a looser one if that is acceptable for your use.

``quantize=True`` adds a dynamically INT8-quantized copy (``model.int8.onnx``) for neural
networks (MatMul/Gemm weights) and reports how far its outputs move, with the compression report
of :mod:`modelport.tools.compress` (size, latency, metric change on ``data``/``target`` against
the float ONNX model); the copy is served only when its metric drop is within
``max_metric_drop`` and parity passed. Tree ensembles and linear models have no such weights,
and are refused. (Torch packages are quantized and pruned in torch by
:mod:`modelport.tools.compress_torch`.)
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConfigError
from modelport.golden import boundary_records
from modelport.package import Package, open_package, read_table, write_manifest
from modelport.runtimes import library_versions, load_runtime, require
from modelport.signature import Signature
from modelport.tools.compress import (
    DEFAULT_MAX_DROP,
    CompressionReport,
    Evaluation,
    check_drop,
    evaluation,
    measure,
    quantize_onnx,
)
from modelport.types import Columns, Outputs

__all__ = ["ARTIFACT", "NEURAL_OPS", "QUANTIZED", "OptimizeReport", "Parity", "QuantizeReport",
           "graph_ops", "optimize", "parity", "parity_rows", "to_onnx"]

ARTIFACT = "model.onnx"
QUANTIZED = "model.int8.onnx"
NEURAL_OPS = {"MatMul", "Gemm", "Conv"}
_SKL_TYPES = "skl2onnx.common.data_types"
_MLTOOLS_TYPES = "onnxmltools.convert.common.data_types"
FLOAT32_NOTE = ("float32 conversion can move a probability by a few hundredths on rare rows; "
                "choose --tolerance to suit (the ONNX artifact is served only when parity passes)")


@dataclass(frozen=True)
class Parity:
    """How closely a converted model's outputs match the native model's on the same rows."""

    passed: bool
    rows: int
    max_abs_diff: float
    """Largest |Δ| over every probability (classifiers) or prediction (regressors)."""
    label_mismatches: int
    tolerance: float


@dataclass(frozen=True)
class QuantizeReport:
    """The INT8 copy: where it is, how much smaller, how far its outputs moved."""

    artifact: str
    bytes_before: int
    bytes_after: int
    parity: Parity
    compression: CompressionReport | None = None
    """Size, latency and metric change against the float ONNX model, and whether it is
    served."""


@dataclass(frozen=True)
class OptimizeReport:
    """What ``optimize`` wrote and proved."""

    package: Path
    artifact: str
    opset: int
    converter: str
    parity: Parity
    quantized: QuantizeReport | None = None
    note: str = FLOAT32_NOTE


def optimize(
    root: Path, *, tolerance: float = 1e-4, quantize: bool = False, data: Path | None = None,
    target: str | None = None, max_metric_drop: float = DEFAULT_MAX_DROP,
) -> OptimizeReport:
    """Convert the package at ``root`` to ONNX, check parity, record it in the manifest;
    ``quantize`` adds an INT8 copy judged on ``data`` (labels in its ``target`` column)."""
    if not tolerance >= 0:
        raise ConfigError(f"--tolerance must be 0 or more, got {tolerance}")
    check_drop(max_metric_drop)
    pkg = open_package(root)
    if pkg.manifest.flavor == "onnx" and not quantize:
        raise ConfigError(f"package '{pkg.manifest.name}' is already ONNX: nothing to convert "
                          "(--quantize makes an INT8 copy of a neural network)")
    sig = pkg.signature
    batch = parity_rows(pkg, sig, data)
    native = load_runtime(pkg.artifact_path, pkg.manifest.flavor, signature=sig)
    expected = native.predict(batch)
    model, converter = _convert(native, sig, pkg.artifact_path)
    if quantize and not graph_ops(model) & NEURAL_OPS:
        raise ConfigError("nothing to quantize: this model has no MatMul/Gemm weights (tree "
                          "ensembles and linear models are already compact); run without "
                          "--quantize")
    judge = _Judge(evaluation(pkg, data, target), max_metric_drop) if quantize else None
    parity, quantized = _stage(pkg, model, _Check(sig, batch, expected, tolerance), judge)
    artifact = pkg.manifest.artifact if pkg.manifest.flavor == "onnx" else ARTIFACT
    report = OptimizeReport(root, artifact, _opset(model), converter, parity, quantized)
    write_manifest(pkg, onnx=_record(report), compressed=_compressed(pkg, report))
    return report


def to_onnx(pkg: Package) -> Any:
    """The package's model as an ONNX ModelProto (converted now, or its ONNX artifact)."""
    native = load_runtime(pkg.artifact_path, pkg.manifest.flavor, signature=pkg.signature)
    return _convert(native, pkg.signature, pkg.artifact_path)[0]


@dataclass(frozen=True)
class _Judge:
    """How an INT8 copy is judged: the rows, and the largest metric drop that is served."""

    rows: Evaluation
    max_metric_drop: float


def _compressed(pkg: Package, report: OptimizeReport) -> dict[str, Any] | None:
    """The manifest's ``compressed`` entry: the INT8 copy (served only when its metric drop is
    within the limit and the float conversion passed parity); a torch copy stays."""
    earlier = pkg.manifest.compressed
    q = report.quantized
    if q is None or q.compression is None:
        return earlier if earlier is not None and earlier.get("flavor") != "onnx" else None
    record = q.compression.record()
    record["served"] = bool(record["served"] and report.parity.passed)
    return record


@dataclass(frozen=True)
class _Check:
    """The rows parity is checked on and what the native model answered for them."""

    signature: Signature
    batch: Columns
    expected: Outputs
    tolerance: float

    def run(self, path: Path) -> Parity:
        """Parity of the ONNX file at ``path`` with the native answers."""
        actual = load_runtime(path, "onnx", signature=self.signature).predict(self.batch)
        return parity(self.expected, actual, self.tolerance)


def _stage(pkg: Package, model: Any, check: _Check,
           judge: _Judge | None) -> tuple[Parity, QuantizeReport | None]:
    """Write and check the artifacts beside the package, then move them in (all or nothing)."""
    root = pkg.root
    with tempfile.TemporaryDirectory(prefix=".optimize-", dir=root) as tmp:
        staged = Path(tmp) / ARTIFACT
        staged.write_bytes(model.SerializeToString())
        parity = check.run(staged)
        quantized = _quantize(staged, check, judge) if judge is not None else None
        if pkg.manifest.flavor != "onnx":
            os.replace(staged, root / ARTIFACT)
        if quantized is not None:
            os.replace(Path(tmp) / QUANTIZED, root / QUANTIZED)
        else:
            (root / QUANTIZED).unlink(missing_ok=True)  # from an earlier run: now unrecorded
    return parity, quantized


def parity_rows(pkg: Package, sig: Signature, data: Path | None) -> Columns:
    """The golden rows (rows made from the signature for a package packed without them),
    plus ``data``'s rows when given."""
    golden = pkg.golden()
    inputs = (golden or {}).get("inputs") or boundary_records(sig)
    parts = [sig.from_records(inputs, unseen="pass")]
    if data is not None:
        frame = read_table(data)
        missing = [n for n in sig.names if n not in frame.columns]
        if missing:
            raise ConfigError(f"'{data.name}' lacks the feature '{missing[0]}' the model takes")
        parts.append(sig.from_columns({n: frame[n].to_numpy() for n in sig.names}))
    return Columns.concat(parts)


def _convert(native: Any, sig: Signature, artifact: Path) -> tuple[Any, str]:
    """The native model as an ONNX ModelProto, and the converter that made it."""
    flavor = native.flavor
    try:
        if flavor in ("sklearn", "skops"):  # skops: the same estimator, read safely
            return _from_sklearn(native.model, sig), _version("skl2onnx")
        if flavor == "xgboost":
            return _from_xgboost(native, sig), _version("onnxmltools")
        if flavor == "lightgbm":
            return _from_lightgbm(native, sig), _version("onnxmltools")
        if flavor == "torch":
            from modelport.tools.onnx_torch import torch_to_onnx

            return torch_to_onnx(native, artifact), _version("torch")
        if flavor == "onnx":
            onnx = require("onnx", "onnx")
            return onnx.load(str(artifact)), "none (already ONNX)"
    except (ConfigError, ImportError):
        raise
    except Exception as exc:  # converters raise many types for "not supported"
        raise ConfigError(f"this {flavor} model cannot be converted to ONNX: {exc}; it is "
                          "still served natively") from exc
    raise ConfigError(f"no ONNX converter for the '{flavor}' flavor")


def _from_sklearn(model: Any, sig: Signature) -> Any:
    """One float matrix (columns in signature order) when every feature is numeric; one input
    per column when the model needs them by name (strings, a ColumnTransformer routing by name).

    The matrix comes first: skl2onnx's FeatureVectorizer, which joins per-column inputs of
    mixed int/float types, can put them in another order than the model was fitted with.
    """
    skl2onnx = require("skl2onnx", "onnx")
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    options = {id(final): {"zipmap": False}} if sig.has_proba else None
    numeric = all(f.dtype != "string" for f in sig.features)
    if numeric:
        try:
            return skl2onnx.convert_sklearn(model, initial_types=_matrix(sig, _SKL_TYPES),
                                            options=options)
        except RuntimeError:  # columns selected by name: they must be inputs of their own
            if sig.input_kind != "dataframe":
                raise
    return skl2onnx.convert_sklearn(model, initial_types=_input_types(sig), options=options)


def _input_types(sig: Signature) -> list[tuple[str, Any]]:
    """One ``[None, 1]`` input per column, typed like the feature."""
    types = require(_SKL_TYPES, "onnx")
    kinds = {"string": types.StringTensorType, "int": types.Int64TensorType,
             "bool": types.BooleanTensorType, "float": types.FloatTensorType}
    return [(f.name, (types.FloatTensorType if f.dtype == "int" and f.nullable
                      else kinds[f.dtype])([None, 1])) for f in sig.features]


def _from_xgboost(native: Any, sig: Signature) -> Any:
    onnxmltools = require("onnxmltools", "onnx")
    if native.categorical:
        raise ConfigError("XGBoost models with categorical features cannot be converted to "
                          "ONNX by onnxmltools; they are still served natively")
    booster = native.booster.copy()
    booster.feature_names = None  # the converter expects f0..fN
    if native.kind == "multi_margin":  # multi:softmax: the graph should give probabilities
        booster.set_param({"objective": "multi:softprob"})
    return onnxmltools.convert_xgboost(booster, initial_types=_matrix(sig))


def _from_lightgbm(native: Any, sig: Signature) -> Any:
    onnxmltools = require("onnxmltools", "onnx")
    if native.codes:
        raise ConfigError("LightGBM models with pandas categorical features cannot be "
                          "converted to ONNX here; they are still served natively")
    return onnxmltools.convert_lightgbm(native.booster, initial_types=_matrix(sig),
                                        zipmap=False)


def _matrix(sig: Signature, module: str = _MLTOOLS_TYPES) -> list[tuple[str, Any]]:
    """One float32 matrix input, the features as its columns in signature order."""
    types = require(module, "onnx")
    return [("input", types.FloatTensorType([None, len(sig.features)]))]


def parity(expected: Outputs, actual: Outputs, tolerance: float) -> Parity:
    """Labels must match exactly; probabilities (or regression outputs) within tolerance."""
    rows = len(expected.predictions)
    if expected.probabilities is not None:
        want, got = expected.probabilities, actual.probabilities
        mismatches = int(np.sum(np.asarray(expected.predictions) != np.asarray(
            actual.predictions).reshape(np.shape(expected.predictions))))
    else:
        want, got = expected.predictions, actual.predictions
        mismatches = 0
    if got is None or np.shape(want) != np.shape(got):
        return Parity(False, rows, float("inf"), mismatches, tolerance)
    if want.dtype.kind not in "fiub":  # labels of a classifier without probabilities
        mismatches, diff = int(np.sum(want != got)), 0.0
    else:
        diff = float(np.max(np.abs(np.asarray(want, np.float64) - np.asarray(got, np.float64))))
    passed = mismatches == 0 and diff <= tolerance
    return Parity(passed, rows, diff, mismatches, tolerance)


def _quantize(staged: Path, check: _Check, judge: _Judge) -> QuantizeReport:
    target = staged.parent / QUANTIZED
    quantize_onnx(staged, target)
    before, after = (load_runtime(p, "onnx", signature=check.signature) for p in (staged, target))
    latency, metric = measure(before, after, judge.rows)
    sizes = staged.stat().st_size, target.stat().st_size
    compression = CompressionReport("int8", QUANTIZED, "onnx", *sizes, latency, metric,
                                    judge.max_metric_drop)
    return QuantizeReport(QUANTIZED, *sizes, check.run(target), compression)


def graph_ops(model: Any) -> set[str]:
    """The operator types of an ONNX graph (``MatMul``, ``Gemm`` … mark a neural network)."""
    return {node.op_type for node in model.graph.node}


def _opset(model: Any) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return f"{dist} {version(dist)}"


def _record(report: OptimizeReport) -> dict[str, Any]:
    """The manifest's ``onnx`` entry."""
    record: dict[str, Any] = {
        "artifact": report.artifact, "opset": report.opset, "converter": report.converter,
        "libraries": library_versions("onnx"), "parity": asdict(report.parity),
    }
    if report.quantized is not None:
        record["quantized"] = {"artifact": report.quantized.artifact,
                               "parity": asdict(report.quantized.parity)}
    return record
