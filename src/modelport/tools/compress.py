"""Compression with proof: a smaller copy of a model, what it costs, and whether it is served.

Every compressed copy (a torch model quantized to INT8 with
``torch.ao.quantization.quantize_dynamic`` or pruned with L1 unstructured pruning; an ONNX
model quantized by onnxruntime) gets one :class:`CompressionReport`: the file size before and
after, the latency of a 1-row and a 100-row call before and after (medians, in this process),
the change of a metric on the evaluation rows and, for pruning, the share of zero weights.

The metric is the accuracy (classifiers) or R² (regressors) against the labels when the data
has them (``--data`` with ``--target``), otherwise the agreement with the original model's own
answers (the share of equal labels, or R² against its outputs). The copy is served only when the
metric drops by no more than ``max_metric_drop``; otherwise it is kept, recorded as refused, and
the original keeps serving.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError
from modelport.golden import boundary_records
from modelport.package import Package, read_table
from modelport.runtimes import Runtime, require
from modelport.types import Columns, Outputs

__all__ = ["DEFAULT_MAX_DROP", "CompressionReport", "Evaluation", "Latency", "MetricChange",
           "check_drop", "evaluation", "measure", "quantize_onnx"]

DEFAULT_MAX_DROP = 0.01
"""Largest accepted metric drop by default (one point of accuracy)."""
_LATENCY_ROWS = (1, 100)
_REPEATS = {1: 50, 100: 20}


@dataclass(frozen=True)
class Evaluation:
    """The rows a compressed copy is judged on, with their labels when the data has them."""

    batch: Columns
    labels: npt.NDArray[Any] | None = None


@dataclass(frozen=True)
class Latency:
    """Median milliseconds of one call of ``rows`` rows, before and after."""

    rows: int
    before_ms: float
    after_ms: float


@dataclass(frozen=True)
class MetricChange:
    """A metric before and after compression, on ``rows`` rows."""

    metric: str
    rows: int
    before: float
    after: float

    @property
    def drop(self) -> float:
        """How much worse the copy is (negative: better)."""
        return self.before - self.after


@dataclass(frozen=True)
class CompressionReport:
    """What a compressed copy is, what it costs, and whether it is served."""

    method: str
    artifact: str
    flavor: str
    bytes_before: int
    bytes_after: int
    latency: tuple[Latency, ...]
    metric: MetricChange
    max_metric_drop: float
    sparsity: float | None = None
    """Share of zero weights in the pruned layers (pruning only)."""

    @property
    def served(self) -> bool:
        """The metric dropped by no more than allowed."""
        return self.metric.drop <= self.max_metric_drop + 1e-12

    def record(self) -> dict[str, Any]:
        """The manifest's ``compressed`` entry."""
        out = asdict(self)
        out["latency"] = [asdict(lat) for lat in self.latency]
        out["metric"] = asdict(self.metric) | {"drop": self.metric.drop}
        out["served"] = self.served
        return out


def quantize_onnx(source: Path, target: Path) -> None:
    """onnxruntime's dynamic INT8 quantization of ``source`` into ``target`` (its advice to
    pre-process first, logged on the root logger at every call, is held back)."""
    import logging

    quantization = require("onnxruntime.quantization", "onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantization.quantize_dynamic(source, target, weight_type=quantization.QuantType.QInt8)
    finally:
        root.setLevel(level)


def evaluation(pkg: Package, data: Path | None, target: str | None) -> Evaluation:
    """The rows of ``data`` (with the labels of its ``target`` column when named), else the
    package's golden rows (rows made from the signature for a package without them)."""
    sig = pkg.signature
    if data is None:
        if target is not None:
            raise ConfigError("--target names a column of --data: pass --data too")
        inputs = (pkg.golden() or {}).get("inputs") or boundary_records(sig)
        return Evaluation(sig.from_records(inputs, unseen="pass"))
    frame = read_table(data)
    if target is not None and target not in frame.columns:
        raise ConfigError(f"--target: '{data.name}' has no column '{target}'")
    missing = [n for n in sig.names if n not in frame.columns]
    if missing:
        raise ConfigError(f"'{data.name}' lacks the feature '{missing[0]}' the model takes")
    batch = sig.from_columns({n: frame[n].to_numpy() for n in sig.names}, unseen="pass")
    return Evaluation(batch, None if target is None else frame[target].to_numpy())


def measure(before: Runtime, after: Runtime, evaluation: Evaluation) -> tuple[
        tuple[Latency, ...], MetricChange]:
    """Latencies and the metric change of ``after`` against ``before`` on ``evaluation``."""
    if evaluation.batch.n_rows == 0:
        raise ConfigError("no rows to judge the compressed model on: pass --data")
    first, second = before.predict(evaluation.batch), after.predict(evaluation.batch)
    metric = _metric(first, second, evaluation.labels, before.signature.task)
    lat = tuple(Latency(n, _median_ms(before, _rows(evaluation.batch, n)),
                        _median_ms(after, _rows(evaluation.batch, n))) for n in _LATENCY_ROWS)
    return lat, metric


def check_drop(max_metric_drop: float) -> None:
    """Refuse a limit that is not a number of metric points."""
    if not max_metric_drop >= 0:
        raise ConfigError(f"--max-metric-drop must be 0 or more, got {max_metric_drop}")


def _metric(before: Outputs, after: Outputs, labels: npt.NDArray[Any] | None,
            task: str) -> MetricChange:
    rows = len(before.predictions)
    if task == "classification":
        if labels is None:
            return MetricChange("agreement with the original", rows, 1.0,
                                _accuracy(after.predictions, before.predictions))
        return MetricChange("accuracy", rows, _accuracy(before.predictions, labels),
                            _accuracy(after.predictions, labels))
    if labels is None:
        return MetricChange("R² against the original", rows, 1.0,
                            _r2(after.predictions, before.predictions))
    return MetricChange("R²", rows, _r2(before.predictions, labels),
                        _r2(after.predictions, labels))


def _accuracy(got: npt.NDArray[Any], want: npt.NDArray[Any]) -> float:
    return float(np.mean(np.asarray(got).ravel() == np.asarray(want).ravel()))


def _r2(got: npt.NDArray[Any], want: npt.NDArray[Any]) -> float:
    y = np.asarray(want, dtype=np.float64).ravel()
    err = float(np.sum((np.asarray(got, dtype=np.float64).ravel() - y) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - err / total if total > 0 else float(err == 0)


def _rows(batch: Columns, n: int) -> Columns:
    """``n`` rows cycled from ``batch``."""
    parts, have = [], 0
    while have < n:
        part = batch.take(0, n - have)
        parts.append(part)
        have += part.n_rows
    return Columns.concat(parts)


def _median_ms(runtime: Runtime, batch: Columns) -> float:
    for _ in range(3):
        runtime.predict(batch)
    times = []
    for _ in range(_REPEATS.get(batch.n_rows, 10)):
        start = time.perf_counter()
        runtime.predict(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0
