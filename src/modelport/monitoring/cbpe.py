"""Label-free quality: confidence-based performance estimation (CBPE), from NannyML.

Between an answer and its label, a classifier's own probabilities say how good it is, *if
they are calibrated*: a row answered with probability 0.8 for its predicted class is right 80 %
of the time. So, over a window of served rows:

- expected accuracy = the mean probability of the predicted class;
- expected ROC AUC = the area under the *expected* ROC curve: sorting rows by the score of the
  positive class, each row adds ``p`` to the expected true positives and ``1 - p`` to the
  expected false positives above its threshold (one-vs-rest and macro-averaged for more than
  two classes).

The estimate is only as good as the calibration, and covariate shift (the inputs move, the
relation between inputs and label does not) is the case it is made for; a change of that
relation (concept drift) is invisible to it. Hence the guard: :func:`estimate` is given the
calibration error measured on labelled reference data (``modelport validate`` records it) and
withholds the estimate, with the reason, when it is above ``max_ece`` or unknown.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Estimate", "ProbaRing", "estimate", "expected_accuracy", "expected_roc_auc",
           "predicted_columns"]

FloatMatrix = npt.NDArray[np.float64]


def expected_accuracy(proba: FloatMatrix, predicted: npt.NDArray[np.intp] | None = None) -> float:
    """Mean probability of the predicted class (the argmax when ``predicted`` is None)."""
    idx = proba.argmax(axis=1) if predicted is None else predicted
    return float(np.mean(proba[np.arange(len(proba)), idx]))


def _expected_auc(scores: npt.NDArray[np.float64]) -> float:
    """Area under the expected ROC curve of one class, its own probabilities as scores."""
    order = np.argsort(-scores, kind="stable")
    p = scores[order]
    positives, negatives = float(p.sum()), float((1.0 - p).sum())
    if positives <= 0 or negatives <= 0:
        return float("nan")
    # one ROC point per distinct score: tied rows move together
    last = np.r_[np.diff(p) != 0, True]
    tpr = np.r_[0.0, np.cumsum(p)[last] / positives]
    fpr = np.r_[0.0, np.cumsum(1.0 - p)[last] / negatives]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def expected_roc_auc(proba: FloatMatrix) -> float:
    """Binary: of the second column; more classes: the macro mean one-vs-rest."""
    if proba.shape[1] == 2:
        return _expected_auc(proba[:, 1])
    aucs = [_expected_auc(proba[:, j]) for j in range(proba.shape[1])]
    kept = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(kept)) if kept else float("nan")


@dataclass(frozen=True)
class Estimate:
    """One window's estimate, or why there is none."""

    window: str
    rows: int
    metrics: dict[str, float] = field(default_factory=dict)
    withheld: str | None = None
    """The reason no estimate is given (badly calibrated, no calibration, too few rows)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {"method": "cbpe", "window": self.window, "rows": self.rows,
                "metrics": dict(self.metrics), "withheld": self.withheld}


def estimate(
    proba: FloatMatrix,
    *,
    window: str,
    ece: float | None,
    max_ece: float = 0.05,
    min_rows: int = 100,
    predicted: npt.NDArray[np.intp] | None = None,
) -> Estimate:
    """Estimated accuracy and ROC AUC of the rows in ``proba`` (one row per answer), or the
    reason they are withheld."""
    rows = int(proba.shape[0]) if proba.ndim == 2 else 0
    if ece is None:
        return Estimate(window, rows, withheld="no calibration recorded for this version: run "
                        "modelport validate PKG --data LABELLED --target COLUMN")
    if not math.isfinite(ece) or ece > max_ece:
        return Estimate(window, rows, withheld=f"badly calibrated: expected calibration error "
                        f"{ece:.3f} on the validation data exceeds {max_ece:g}")
    if rows < max(min_rows, 1):
        return Estimate(window, rows, withheld=f"too few rows: {rows} of at least {min_rows}")
    metrics = {"accuracy": expected_accuracy(proba, predicted)}
    auc = expected_roc_auc(proba)
    if not math.isnan(auc):
        metrics["roc_auc"] = auc
    return Estimate(window, rows, metrics)


class ProbaRing:
    """The last ``size`` rows of served probabilities (and predicted columns) of one group.

    :meth:`push` (the hot path) only appends the batch to a list under a lock; batches are
    copied into the ring in bulk when they add up to ``size`` rows or when :meth:`rows` reads
    it, so a one-row answer costs about a microsecond. A ring serves one model version (one
    arm): its classes are those of its first answer, and an answer of another width is
    ignored as it comes."""

    def __init__(self, size: int, n_classes: int) -> None:
        self.size = size
        self._proba = np.zeros((size, n_classes), np.float64)
        self._pred = np.zeros(size, np.intp)
        self._next = 0
        self._filled = 0
        self._classes: Sequence[Any] | None = None
        self._pending: list[tuple[Any, Any]] = []
        self._pending_rows = 0
        self._lock = threading.Lock()

    def push(self, proba: Any, predictions: Any, classes: Sequence[Any]) -> None:
        """Queue one answered batch: probabilities, predicted labels, the classes' order."""
        if np.ndim(proba) != 2 or np.shape(proba)[1] != self._proba.shape[1]:
            return
        with self._lock:
            if self._classes is None:
                self._classes = classes
            self._pending.append((proba, predictions))
            self._pending_rows += len(proba)
            if self._pending_rows >= self.size:
                self._flush()

    def _flush(self) -> None:
        items, self._pending, self._pending_rows = self._pending, [], 0
        if not items or self._classes is None:
            return
        matrix = np.concatenate([np.asarray(p, np.float64) for p, _ in items])
        predictions = np.concatenate([np.asarray(y) for _, y in items])
        self.add(matrix, predicted_columns(predictions, self._classes, matrix))

    def add(self, proba: FloatMatrix, predicted: npt.NDArray[np.intp]) -> None:
        """Copy a batch in; the oldest rows fall out. A batch of another width is ignored."""
        if proba.ndim != 2 or proba.shape[1] != self._proba.shape[1]:
            return
        n = len(proba)
        if n >= self.size:
            proba, predicted, n = proba[-self.size:], predicted[-self.size:], self.size
        idx = (self._next + np.arange(n)) % self.size
        self._proba[idx] = proba
        self._pred[idx] = predicted
        self._next = (self._next + n) % self.size
        self._filled = min(self.size, self._filled + n)

    def rows(self) -> tuple[FloatMatrix, npt.NDArray[np.intp]]:
        """A copy of the rows held (in no particular order: the estimates do not need one)."""
        with self._lock:
            self._flush()
            return self._proba[: self._filled].copy(), self._pred[: self._filled].copy()


def predicted_columns(predictions: npt.NDArray[Any], classes: Sequence[Any],
                      proba: FloatMatrix) -> npt.NDArray[np.intp]:
    """The column of each predicted label among ``classes`` (the argmax where not found)."""
    from modelport.monitoring.quality import class_key

    fallback: npt.NDArray[np.intp] = proba.argmax(axis=1).astype(np.intp)
    try:  # the usual case, vectorised: the labels are the probabilities' argmax
        if np.array_equal(np.asarray(classes)[fallback], predictions):
            return fallback
    except (TypeError, ValueError):
        pass
    column = {class_key(c): j for j, c in enumerate(classes)}
    return np.asarray([column.get(class_key(p), int(fallback[i]))
                       for i, p in enumerate(predictions.tolist())], dtype=np.intp)
