"""Live quality of served models: realized metrics from labels, CBPE estimates without them.

:class:`QualityTracker` is fed three ways, none of them on the request's critical path but the
first (O(batch) numpy copies):

- :meth:`QualityTracker.on_prediction` (a prediction hook) keeps the last ``estimate_rows``
  served probabilities per (model, version, arm) for CBPE (:mod:`~modelport.monitoring.cbpe`);
- :meth:`QualityTracker.refresh` (the periodic check, on a thread) asks the prediction log for
  the labeled predictions (:mod:`~modelport.monitoring.quality`), computes every window's
  metrics and the estimates, and keeps the result;
- the result is read by ``/metrics`` (:meth:`gauges`), the drift status JSON
  (:meth:`status`) and the retraining trigger (:meth:`breaches`).

Gauges (label ``arm`` is ``none`` for predictions no traffic policy routed)::

    modelport_quality{model, version, arm, metric, window}            realized
    modelport_quality_labeled_rows{model, version, arm, window}
    modelport_quality_estimated{model, version, arm, metric, window}  CBPE
    modelport_quality_baseline{model, version, metric}                from modelport validate
    modelport_quality_threshold{model, version, metric}               baseline -/+ margin
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import ModelportError
from modelport.monitoring.cbpe import Estimate, ProbaRing, estimate
from modelport.monitoring.metrics import GaugeFamily
from modelport.monitoring.quality import (
    NO_ARM,
    Baseline,
    LabeledRow,
    QualityEntry,
    QualityWindow,
    Task,
    realized_quality,
)
from modelport.types import PredictionEvent

__all__ = ["Fetch", "ModelQuality", "QualityTracker"]

log = logging.getLogger("modelport.quality")

Fetch = Callable[..., list[LabeledRow]]
"""``fetch(model, since=None, limit=None)``: labeled predictions, newest first
(``PredictionLog.labeled_rows``)."""
ROWS_FETCH_FACTOR = 8
"""A rows window of N reads up to N x this many of the model's newest labeled rows, shared by
its versions and arms (a version that gets a sliver of the traffic may see fewer)."""
MAX_ROWS = 100_000
"""Most labeled rows a time window reads (the newest): the refresh stays bounded however busy
a day was."""


@dataclass
class ModelQuality:
    """What the tracker knows of one served version."""

    model: str
    version: str
    task: Task
    classes: list[Any] | None
    baseline: Baseline
    ece: float | None
    rings: dict[str, ProbaRing] = field(default_factory=dict)


class QualityTracker:
    """Realized and estimated quality of every registered model version."""

    def __init__(
        self,
        *,
        windows: Sequence[QualityWindow],
        fetch: Fetch | None = None,
        margin: float = 0.05,
        min_labels: int = 100,
        estimate_rows: int = 1000,
        max_ece: float = 0.05,
        refresh_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.windows, self.margin, self.min_labels = tuple(windows), margin, min_labels
        self.estimate_rows, self.max_ece = estimate_rows, max_ece
        self._fetch, self._clock = fetch, clock
        self.refresh_s = refresh_s
        """Realized quality is recomputed at most this often (it reads the database);
        estimates at every refresh."""
        self._realized_at: dict[str, float] = {}
        self._models: dict[tuple[str, str], ModelQuality] = {}
        self._realized: dict[str, list[QualityEntry]] = {}
        self._estimated: dict[tuple[str, str], list[tuple[str, Estimate]]] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------

    def register(self, model: str, version: str, *, task: Task, classes: list[Any] | None,
                 metrics: dict[str, Any] | None = None) -> None:
        """A version starts serving; ``metrics`` is its package's ``metrics`` (the validation
        baseline and calibration ``modelport validate`` recorded)."""
        metrics = metrics or {}
        calibration = metrics.get("calibration") or {}
        ece = calibration.get("ece")
        with self._lock:
            self._models[(model, version)] = ModelQuality(
                model, version, task, classes, Baseline.from_manifest(metrics, self.margin),
                float(ece) if isinstance(ece, (int, float)) else None)

    def unregister(self, model: str, version: str) -> None:
        """A version stopped serving."""
        with self._lock:
            self._models.pop((model, version), None)
            self._estimated.pop((model, version), None)

    # -- hot path ----------------------------------------------------------------------------

    def on_prediction(self, event: PredictionEvent) -> None:
        """Keep the served probabilities for CBPE (classifiers with probabilities only)."""
        found = self._models.get((event.model, event.version))
        proba = event.outputs.probabilities
        if found is None or found.task != "classification" or proba is None or proba.ndim != 2:
            return
        arm = event.arm or NO_ARM
        ring = found.rings.get(arm)
        if ring is None:
            ring = found.rings[arm] = ProbaRing(self.estimate_rows, proba.shape[1])
        classes = event.outputs.classes or found.classes or list(range(proba.shape[1]))
        ring.push(proba, event.outputs.predictions, classes)

    # -- the periodic check ----------------------------------------------------------------

    def refresh(self) -> None:
        """Recompute every model's realized quality (one or two queries per model) and CBPE."""
        now = self._clock()
        with self._lock:
            models = list(self._models.values())
        for name in dict.fromkeys(m.model for m in models):
            versions = [m for m in models if m.model == name]
            due = now - self._realized_at.get(name, -math.inf) >= self.refresh_s
            if self._fetch is not None and due:
                self._realized_at[name] = now
                self._refresh_realized(name, versions[0], now)
            for mq in versions:
                estimates = []
                for arm, ring in sorted(mq.rings.items()):
                    proba, predicted = ring.rows()
                    estimates.append((arm, estimate(
                        proba, window=str(self.estimate_rows), ece=mq.ece,
                        max_ece=self.max_ece, min_rows=min(self.min_labels, self.estimate_rows),
                        predicted=predicted)))
                with self._lock:
                    self._estimated[(mq.model, mq.version)] = estimates

    def _refresh_realized(self, name: str, first: ModelQuality, now: float) -> None:
        assert self._fetch is not None
        by_rows = [w for w in self.windows if w.rows is not None]
        by_time = [w for w in self.windows if w.seconds is not None]
        entries: list[QualityEntry] = []
        try:
            if by_rows:
                limit = max(w.rows or 0 for w in by_rows) * ROWS_FETCH_FACTOR
                rows = self._fetch(name, limit=limit)
                entries += realized_quality(rows, task=first.task, windows=by_rows, now=now,
                                            classes=first.classes, min_labels=self.min_labels)
            if by_time:
                since = now - max(w.seconds or 0.0 for w in by_time)
                rows = self._fetch(name, since=since, limit=MAX_ROWS)
                entries += realized_quality(rows, task=first.task, windows=by_time, now=now,
                                            classes=first.classes, min_labels=self.min_labels)
        except ModelportError as exc:  # the log database is down: keep the last values
            with self._lock:
                self._errors[name] = exc.message
            log.warning("quality of %s not refreshed: %s", name, exc.message)
            return
        order = {w.name: i for i, w in enumerate(self.windows)}
        entries.sort(key=lambda e: (e.version, e.arm, order[e.window]))
        with self._lock:
            self._realized[name] = entries
            self._errors.pop(name, None)

    # -- readers ---------------------------------------------------------------------------

    def _baseline(self, model: str, version: str) -> Baseline:
        found = self._models.get((model, version))
        return found.baseline if found is not None else Baseline(margin=self.margin)

    def breaches(self, model: str) -> list[dict[str, Any]]:
        """Realized metrics worse than their version's baseline by more than the margin."""
        out = []
        with self._lock:
            entries = list(self._realized.get(model, []))
        for entry in entries:
            baseline = self._baseline(model, entry.version)
            for metric, value in entry.metrics.items():
                if baseline.breached(metric, value):
                    out.append({"version": entry.version, "arm": entry.arm,
                                "window": entry.window, "metric": metric, "value": value,
                                "baseline": baseline.metrics.get(metric),
                                "threshold": baseline.threshold(metric),
                                "labeled": entry.labeled})
        return out

    def status(self, model: str) -> dict[str, Any] | None:
        """The model's quality as plain data (the ``quality`` key of the drift status JSON);
        None for a model the tracker does not know."""
        with self._lock:
            versions = [m for (name, _), m in self._models.items() if name == model]
            entries = list(self._realized.get(model, []))
            estimates = {m.version: list(self._estimated.get((model, m.version), []))
                         for m in versions}
            error = self._errors.get(model)
        if not versions and not entries:
            return None
        return {
            "margin": self.margin, "min_labels": self.min_labels,
            "windows": [w.name for w in self.windows],
            "baseline": {m.version: dict(m.baseline.metrics) for m in versions},
            "thresholds": {m.version: {k: m.baseline.threshold(k) for k in m.baseline.metrics}
                           for m in versions},
            "calibration": {m.version: {"ece": m.ece, "max_ece": self.max_ece}
                            for m in versions},
            "realized": [e.to_dict() for e in entries],
            "estimated": [{"version": version, "arm": arm, **est.to_dict()}
                          for version, items in estimates.items() for arm, est in items],
            "breaches": self.breaches(model),
            "error": error,
        }

    def models(self) -> list[str]:
        """Names of the registered models."""
        with self._lock:
            return list(dict.fromkeys(name for name, _ in self._models))

    def gauges(self) -> list[GaugeFamily]:
        """The gauges listed in the module docstring (computed at scrape time)."""
        realized: list[tuple[tuple[str, ...], float]] = []
        labeled: list[tuple[tuple[str, ...], float]] = []
        estimated: list[tuple[tuple[str, ...], float]] = []
        base: list[tuple[tuple[str, ...], float]] = []
        limit: list[tuple[tuple[str, ...], float]] = []
        with self._lock:
            served = set(self._models)
            for model, entries in self._realized.items():
                for e in entries:
                    if (model, e.version) not in served:
                        continue
                    labeled.append(((model, e.version, e.arm, e.window), float(e.labeled)))
                    realized += [((model, e.version, e.arm, k, e.window), v)
                                 for k, v in e.metrics.items() if math.isfinite(v)]
            for (model, version), items in self._estimated.items():
                for arm, est in items:
                    estimated += [((model, version, arm, k, est.window), v)
                                  for k, v in est.metrics.items() if math.isfinite(v)]
            for (model, version), mq in self._models.items():
                for metric, value in mq.baseline.metrics.items():
                    base.append(((model, version, metric), value))
                    threshold = mq.baseline.threshold(metric)
                    if threshold is not None:
                        limit.append(((model, version, metric), threshold))
        mvamw = ("model", "version", "arm", "metric", "window")
        return [
            GaugeFamily("modelport_quality", "Realized quality from labels sent to /feedback, "
                        "per version, arm, metric and window.", mvamw, realized),
            GaugeFamily("modelport_quality_labeled_rows", "Labeled predictions in the window.",
                        ("model", "version", "arm", "window"), labeled),
            GaugeFamily("modelport_quality_estimated", "Quality estimated without labels "
                        "(CBPE) from the served probabilities.", mvamw, estimated),
            GaugeFamily("modelport_quality_baseline", "Validation metrics recorded by "
                        "modelport validate.", ("model", "version", "metric"), base),
            GaugeFamily("modelport_quality_threshold", "Baseline less the margin (plus the "
                        "margin for log loss, MAE, RMSE): past it the quality alert fires.",
                        ("model", "version", "metric"), limit),
        ]

