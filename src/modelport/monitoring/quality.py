"""Realized quality: logged predictions joined with the labels ``POST /feedback`` stored.

Why here and not in the prediction hook: labels arrive minutes or weeks after the answer, from
any replica, out of order and sometimes twice. The prediction log already keys both tables by
``(request_id, row)``; a label is an upsert (a second label for a row replaces the first, so
the latest wins and each row counts once), and the join happens in the database every
evaluation, so a late label changes the window it belongs to when it arrives.

A window is either the latest ``N`` labeled predictions (``"1000"``) or the predictions made in
the last duration (``"1h"``, ``"30m"``, ``"7d"``), taken per model version and traffic arm.
Metrics: accuracy, F1 (binary: of the second class; else macro), ROC AUC (binary, or macro
one-vs-rest) and log loss for classifiers; MAE, RMSE and R² for regressors.

The alert condition (:class:`Baseline`) compares them with the metrics ``modelport validate``
recorded in the package: a drop of ``margin`` (absolute) in accuracy, F1, ROC AUC or R², or a
rise of ``margin`` times the baseline in log loss, MAE or RMSE.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from modelport.errors import ConfigError

__all__ = [
    "CLASSIFICATION_METRICS",
    "LOWER_IS_BETTER",
    "REGRESSION_METRICS",
    "Baseline",
    "LabeledRow",
    "QualityEntry",
    "QualityWindow",
    "calibration_error",
    "class_key",
    "classification_quality",
    "realized_quality",
    "regression_quality",
]

Task = Literal["classification", "regression"]
CLASSIFICATION_METRICS = ("accuracy", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("mae", "rmse", "r2")
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})
NO_ARM = "none"
"""The ``arm`` label of predictions no traffic policy routed."""
_EPS = 1e-15
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class QualityWindow:
    """The latest ``rows`` labeled predictions, or the predictions of the last ``seconds``."""

    name: str
    rows: int | None = None
    seconds: float | None = None

    @classmethod
    def parse(cls, spec: str) -> QualityWindow:
        """``"1000"`` (rows) or ``"90s"``, ``"30m"``, ``"1h"``, ``"7d"`` (time)."""
        text = spec.strip()
        found = re.fullmatch(r"(\d+)([smhd]?)", text)
        if found is None or int(found.group(1)) <= 0:
            raise ConfigError(f"quality window {spec!r}: give a row count (1000) or a "
                              "duration (90s, 30m, 1h, 7d)")
        number, unit = int(found.group(1)), found.group(2)
        if not unit:
            return cls(text, rows=number)
        return cls(text, seconds=number * _UNITS[unit])


def class_key(value: Any) -> str:
    """One spelling per class: ``1``, ``1.0``, ``"1"`` and ``True`` are the same class."""
    if isinstance(value, str):
        try:
            return repr(float(value))
        except ValueError:
            return value
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def classification_quality(
    labels: Sequence[Any],
    predictions: Sequence[Any],
    proba: npt.NDArray[np.float64] | None,
    classes: Sequence[Any] | None,
) -> dict[str, float]:
    """Accuracy and F1 always; ROC AUC and log loss when probabilities (and their classes)
    are given. A metric that cannot be computed (one class only) is left out."""
    y = [class_key(v) for v in labels]
    pred = [class_key(v) for v in predictions]
    keys = [class_key(c) for c in classes] if classes else sorted(set(y) | set(pred))
    ya, pa = np.asarray(y, dtype=object), np.asarray(pred, dtype=object)
    out = {"accuracy": float(np.mean(ya == pa))}
    f1s = [_f1(ya == k, pa == k) for k in keys]
    out["f1"] = f1s[1] if len(keys) == 2 else float(np.mean(f1s))
    if proba is None or classes is None or proba.shape[1] != len(keys):
        return out
    aucs = [_auc(ya == k, proba[:, j]) for j, k in enumerate(keys)]
    auc = aucs[1] if len(keys) == 2 else _nanmean(aucs)
    if not math.isnan(auc):
        out["roc_auc"] = auc
    column = {k: j for j, k in enumerate(keys)}
    picked = np.asarray([proba[i, column[k]] if k in column else 0.0 for i, k in enumerate(y)])
    out["log_loss"] = float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))
    return out


def regression_quality(y: npt.NDArray[np.float64],
                       pred: npt.NDArray[np.float64]) -> dict[str, float]:
    """MAE, RMSE and R² (left out when the labels are constant)."""
    err = pred - y
    out = {"mae": float(np.mean(np.abs(err))), "rmse": float(np.sqrt(np.mean(err**2)))}
    total = float(np.sum((y - y.mean()) ** 2))
    if total > 0:
        out["r2"] = 1.0 - float(np.sum(err**2)) / total
    return out


def calibration_error(
    labels: Sequence[Any], proba: npt.NDArray[np.float64], classes: Sequence[Any],
    bins: int = 10,
) -> float:
    """Expected calibration error of the top-label confidence: the row-weighted mean gap
    between confidence and accuracy over ``bins`` equal-mass bins. For a binary model it is
    also computed on the positive class's probability, and the larger one is returned (the
    accuracy estimate leans on the first, the ROC AUC estimate on the second)."""
    y = np.asarray([class_key(v) for v in labels], dtype=object)
    keys = np.asarray([class_key(c) for c in classes], dtype=object)
    top = proba.argmax(axis=1)
    gaps = [_ece(proba.max(axis=1), (keys[top] == y).astype(np.float64), bins)]
    if len(keys) == 2:
        gaps.append(_ece(proba[:, 1], (y == keys[1]).astype(np.float64), bins))
    return max(gaps)


def _ece(confidence: npt.NDArray[np.float64], hit: npt.NDArray[np.float64], bins: int) -> float:
    order = np.argsort(confidence, kind="stable")
    total = 0.0
    for part in np.array_split(order, min(bins, len(order))):
        if part.size:
            total += part.size * abs(float(confidence[part].mean() - hit[part].mean()))
    return total / max(len(order), 1)


def _f1(truth: npt.NDArray[np.bool_], guess: npt.NDArray[np.bool_]) -> float:
    tp = float(np.sum(truth & guess))
    denominator = float(np.sum(truth) + np.sum(guess))
    return 2 * tp / denominator if denominator else 0.0


def _auc(truth: npt.NDArray[np.bool_], scores: npt.NDArray[Any]) -> float:
    """Mann-Whitney: the probability a random positive outscores a random negative."""
    from scipy.stats import rankdata

    truth = np.asarray(truth, dtype=bool)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _nanmean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else float("nan")


@dataclass(frozen=True)
class LabeledRow:
    """One logged prediction and the latest label stored for it."""

    version: str
    arm: str | None
    ts: float
    prediction: Any
    probabilities: Mapping[str, float] | Sequence[float] | None
    label: Any


@dataclass(frozen=True)
class QualityEntry:
    """The metrics of one (version, arm, window)."""

    version: str
    arm: str
    window: str
    labeled: int
    metrics: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {"version": self.version, "arm": self.arm, "window": self.window,
                "labeled": self.labeled, "metrics": dict(self.metrics)}


def realized_quality(
    rows: Iterable[LabeledRow],
    *,
    task: Task,
    windows: Sequence[QualityWindow],
    now: float,
    classes: Sequence[Any] | None = None,
    min_labels: int = 1,
) -> list[QualityEntry]:
    """Metrics per (version, arm, window) over labeled ``rows``; a window with fewer than
    ``min_labels`` labels gets its count but no metrics."""
    groups: dict[tuple[str, str], list[LabeledRow]] = {}
    for row in rows:
        groups.setdefault((row.version, row.arm or NO_ARM), []).append(row)
    out = []
    for (version, arm), members in sorted(groups.items()):
        members.sort(key=lambda r: r.ts)
        for window in windows:
            if window.rows is not None:
                chosen = members[-window.rows:]
            else:
                chosen = [r for r in members if r.ts >= now - (window.seconds or 0.0)]
            metrics = _metrics(chosen, task, classes) if len(chosen) >= min_labels else {}
            out.append(QualityEntry(version, arm, window.name, len(chosen), metrics))
    return out


def _metrics(rows: list[LabeledRow], task: Task,
             classes: Sequence[Any] | None) -> dict[str, float]:
    if not rows:
        return {}
    if task == "regression":
        try:
            y = np.asarray([float(r.label) for r in rows])
            pred = np.asarray([float(r.prediction) for r in rows])
        except (TypeError, ValueError):  # a non-numeric label: no regression metric
            return {}
        return regression_quality(y, pred)
    proba, names = _proba(rows, classes)
    return classification_quality([r.label for r in rows], [r.prediction for r in rows],
                                  proba, names)


def _proba(rows: list[LabeledRow], classes: Sequence[Any] | None
           ) -> tuple[npt.NDArray[np.float64] | None, list[Any] | None]:
    first = rows[0].probabilities
    if first is None or any(r.probabilities is None for r in rows):
        return None, None
    if isinstance(first, Mapping):
        names = list(first)
        matrix = [[float(r.probabilities[n]) for n in names]  # type: ignore[index,call-overload]
                  for r in rows]
        return np.asarray(matrix, dtype=np.float64), names
    if classes is None:
        return None, None
    return np.asarray([list(r.probabilities) for r in rows],  # type: ignore[arg-type]
                      dtype=np.float64), list(classes)


@dataclass(frozen=True)
class Baseline:
    """The validation metrics of a version and the margin that makes a breach."""

    metrics: Mapping[str, float] = field(default_factory=dict)
    margin: float = 0.05

    def threshold(self, metric: str) -> float | None:
        """Below it (above it, for log loss, MAE, RMSE) the realized metric is a breach."""
        base = self.metrics.get(metric)
        if base is None or not math.isfinite(base):
            return None
        if metric in LOWER_IS_BETTER:
            return base * (1.0 + self.margin)
        return base - self.margin

    def breached(self, metric: str, value: float) -> bool:
        """Whether ``value`` is worse than the threshold."""
        limit = self.threshold(metric)
        if limit is None or not math.isfinite(value):
            return False
        return value > limit if metric in LOWER_IS_BETTER else value < limit

    @classmethod
    def from_manifest(cls, metrics: Mapping[str, Any], margin: float) -> Baseline:
        """The ``validation`` metrics ``modelport validate`` stored in ``modelport.yaml``."""
        found = metrics.get("validation") or {}
        return cls({str(k): float(v) for k, v in found.items()
                    if isinstance(v, (int, float)) and math.isfinite(float(v))}, margin)
