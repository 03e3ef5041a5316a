"""``modelport export PKG --edge``: a bundle that predicts on a device with no server.

The package's model becomes an ONNX graph (converted now, or its ONNX artifact), checked
against the model itself on the golden rows and ``data`` (labels identical, probabilities
within ``tolerance``: otherwise the bundle would not answer as the server does, and nothing is
written). A neural network is then quantized to INT8 (onnxruntime's dynamic quantization) when
its metric drop against the float graph on the same rows is within ``max_metric_drop``; the
graph is saved in ONNX Runtime's ORT format (the format of its mobile and minimal builds), with
the graph optimizations that hold on any hardware applied.

Beside it: ``predict.py``, rendered from a template with the signature inside, which needs only
numpy and onnxruntime, checks rows the way the server does (names, types, categories, nulls)
and feeds the graph exactly as modelport's ONNX runtime does; ``requirements.txt``; and a
README with the size and the latency of ``predict()`` measured here. This module returns the
files; the CLI writes them.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from modelport.errors import ConfigError
from modelport.package import Package, open_package
from modelport.runtimes import library_versions, load_runtime, require
from modelport.runtimes.onnx import OnnxRuntime, strip_zipmap
from modelport.signature import Signature
from modelport.tools.compress import (
    DEFAULT_MAX_DROP,
    Evaluation,
    MetricChange,
    check_drop,
    evaluation,
    measure,
    quantize_onnx,
)
from modelport.tools.optimize import NEURAL_OPS, graph_ops, parity, parity_rows, to_onnx

__all__ = ["MODEL_FILE", "EdgeBundle", "edge_bundle"]

MODEL_FILE = "model.ort"
TEMPLATES = Path(__file__).parent / "templates" / "edge"


@dataclass(frozen=True)
class EdgeBundle:
    """The files of an edge bundle, and what was decided and measured making it."""

    files: dict[str, bytes]
    precision: str
    """``int8`` or ``float32``."""
    model_bytes: int
    latency_1_ms: float
    latency_100_ms: float
    int8: MetricChange | None
    """The INT8 graph's metric change against the float one (``None``: not tried)."""
    max_abs_diff: float
    """Largest |Δ| of the float graph against the package's model on the checked rows."""


def edge_bundle(root: Path, *, int8: bool = True, data: Path | None = None,
                target: str | None = None, max_metric_drop: float = DEFAULT_MAX_DROP,
                tolerance: float = 1e-4) -> EdgeBundle:
    """The edge bundle of the package at ``root``."""
    check_drop(max_metric_drop)
    pkg = open_package(root)
    sig = pkg.signature
    model = to_onnx(pkg)
    strip_zipmap(model)
    with tempfile.TemporaryDirectory(prefix="modelport-edge-") as tmp:
        work = Path(tmp)
        fp32 = work / "model.onnx"
        fp32.write_bytes(model.SerializeToString())
        diff = _check_parity(pkg, fp32, data, tolerance)
        chosen, change, note = _precision(fp32, sig, graph_ops(model), int8=int8,
                                    rows=evaluation(pkg, data, target),
                                    max_drop=max_metric_drop)
        ort_bytes = _ort_format(chosen, work / MODEL_FILE)
        runtime = load_runtime(fp32, "onnx", signature=sig)
        assert isinstance(runtime, OnnxRuntime)
        precision = "int8" if chosen.name.endswith(".int8.onnx") else "float32"
        predict_py = _render("predict.py.j2", _context(pkg, runtime, precision, len(ort_bytes)))
        fast, slow = _latency(work, predict_py, sig)
    context = _context(pkg, runtime, precision, len(ort_bytes)) | {
        "latency_1_ms": fast, "latency_100_ms": slow, "precision_note": note}
    files = {MODEL_FILE: ort_bytes, "predict.py": predict_py.encode(),
             "README.md": _render("README.md.j2", context).encode(),
             "requirements.txt": _requirements().encode()}
    return EdgeBundle(files, precision, len(ort_bytes), fast, slow, change, diff)


def _check_parity(pkg: Package, fp32: Path, data: Path | None, tolerance: float) -> float:
    """Refuse a graph that does not answer like the package's model."""
    sig = pkg.signature
    rows = parity_rows(pkg, sig, data)
    native = load_runtime(pkg.artifact_path, pkg.manifest.flavor, signature=sig)
    result = parity(native.predict(rows), load_runtime(fp32, "onnx", signature=sig).predict(rows),
                    tolerance)
    if not result.passed:
        raise ConfigError(f"the ONNX graph does not answer like the model on {result.rows} rows "
                          f"(labels differing {result.label_mismatches}, max |Δ| "
                          f"{result.max_abs_diff:.3g}, tolerance {tolerance:g}): the edge "
                          "bundle would not predict what the server does")
    return result.max_abs_diff


def _precision(fp32: Path, sig: Signature, ops: set[str], *, int8: bool, rows: Evaluation,
               max_drop: float) -> tuple[Path, MetricChange | None, str]:
    """The INT8 graph when it is a neural network whose metric holds and that it makes
    smaller, else the float one; and why, in a sentence."""
    if not int8 or not ops & NEURAL_OPS:
        why = "INT8 was not asked for" if not int8 else "no MatMul/Gemm weights to quantize"
        return fp32, None, f"Precision: float32 ({why})."
    small = fp32.with_name("model.int8.onnx")
    quantize_onnx(fp32, small)
    before, after = (load_runtime(p, "onnx", signature=sig) for p in (fp32, small))
    _, change = measure(before, after, rows)
    said = (f"The INT8 graph's {change.metric} on {change.rows} rows: {change.before:.4f} -> "
            f"{change.after:.4f} (drop {change.drop:+.4f}, limit {max_drop:g})")
    if change.drop > max_drop + 1e-12:
        return fp32, change, f"Precision: float32. {said}: beyond the limit."
    if small.stat().st_size >= fp32.stat().st_size:
        return fp32, change, (f"Precision: float32. {said}, but it was no smaller "
                              f"({small.stat().st_size:,} bytes as ONNX against "
                              f"{fp32.stat().st_size:,}).")
    return small, change, f"Precision: int8. {said}: within the limit."


def _ort_format(model: Path, target: Path) -> bytes:
    """``model`` saved in ORT format, with the hardware-independent optimizations applied."""
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(target)
    options.add_session_config_entry("session.save_model_format", "ORT")
    options.log_severity_level = 3
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return target.read_bytes()


def _context(pkg: Package, runtime: OnnxRuntime, precision: str,
             model_bytes: int) -> dict[str, Any]:
    sig = runtime.signature
    m = pkg.manifest
    return {
        "name": m.name, "version": m.version, "model_file": MODEL_FILE,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "features": [{"name": f.name, "dtype": f.dtype, "nullable": f.nullable,
                      "categories": None if f.categories is None else list(f.categories)}
                     for f in sig.features],
        "feeds": [{"input": f.name, "columns": list(f.columns),
                   "dtype": np.dtype(f.dtype).name, "rank": f.rank} for f in runtime.feeds],
        "outputs": list(runtime.output_names), "mode": runtime.mode,
        "classes": None if sig.classes is None else list(sig.classes),
        "has_proba": sig.has_proba and runtime.mode != "single",
        "example_json": json.dumps(sig.example_record()), "precision": precision,
        "model_bytes": model_bytes, "output_text": _output_text(sig),
    }


def _output_text(sig: Signature) -> str:
    if sig.task == "regression":
        return "`predictions`, one number per row"
    return (f"`predictions`, one class per row (of {list(sig.classes or ())}), and "
            "`probabilities`, one row of class probabilities per row, in the order of `classes`")


def _latency(work: Path, predict_py: str, sig: Signature) -> tuple[float, float]:
    """Median ms of the rendered ``predict()`` for 1 and 100 rows (imported from ``work``)."""
    path = work / "predict.py"
    path.write_text(predict_py, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("modelport_edge_predict", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look their module up
    try:
        spec.loader.exec_module(module)
        row = sig.example_record()
        return _median_ms(module.predict, [row]), _median_ms(module.predict, [row] * 100)
    finally:
        sys.modules.pop(spec.name, None)


def _median_ms(call: Any, rows: list[dict[str, Any]]) -> float:
    for _ in range(3):
        call(rows)
    times = []
    for _ in range(30):
        start = time.perf_counter()
        call(rows)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def _requirements() -> str:
    pins = library_versions("onnx")
    return "".join(f"{dist}=={pins[dist]}\n" for dist in ("numpy", "onnxruntime") if dist in pins)


@lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["py"] = repr
    return env


def _render(template: str, ctx: dict[str, Any]) -> str:
    text: str = _environment().get_template(template).render(**ctx)
    return text
