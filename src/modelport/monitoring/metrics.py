"""Prometheus metrics of a modelport server: the only module that imports ``prometheus_client``.

A :class:`Metrics` owns its registry, so two servers in one process (or two tests) never share
counters. With ``multiprocess_dir`` (``uvicorn --workers N``) every worker writes its values to
memory-mapped files in that directory and :meth:`Metrics.render` merges them, so a scrape of any
worker returns the exact sum over all of them.

Label cardinality is bounded on purpose: a model or version that was never registered with
:meth:`Metrics.set_model_info` (e.g. a typo that got a 404) is counted under
:data:`UNKNOWN`, never under the name the client sent.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.types import PredictionEvent

__all__ = [
    "DRIFT_LEVELS",
    "GaugeFamily",
    "LATENCY_BUCKETS",
    "PREDLOG_OUTCOMES",
    "ROLLOUT_ACTIONS",
    "UNKNOWN",
    "Metrics",
    "reset_multiprocess_dir",
]

UNKNOWN = "__unknown__"
"""The label value every unregistered model or version is collapsed to."""

LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Seconds; sub-millisecond at the bottom because a small tabular model answers in ~1 ms."""

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)

PREDLOG_OUTCOMES = ("written", "dropped", "failed", "spooled", "replayed", "unspooled")
"""Outcomes of prediction-log records, in ``modelport_predlog_records_total{outcome}``
(``unspooled``: the part of ``failed`` the spool could not take, e.g. on a full disk)."""

ROLLOUT_ACTIONS = ("alias_move", "rollback", "load", "repository_load", "traffic", "follow")
"""What a refused candidate was refused for, in ``modelport_rollout_refusals_total{action}``."""

DRIFT_LEVELS = {"insufficient": -1, "ok": 0, "warn": 1, "alert": 2}
"""Values of ``modelport_drift_status`` (the drift statuses of ``monitoring.stats``)."""


def reset_multiprocess_dir(directory: Path) -> None:
    """Empty (or create) a multiprocess directory; call once before the workers start.

    Values left by a previous run would otherwise be added to the new run's counters.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def _enable_multiprocess(directory: Path) -> None:
    from prometheus_client import values

    # prometheus_client reads this variable itself on every write; it has no other switch.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


class Metrics:
    """The server's metrics, with plain methods the server and monitoring callbacks call."""

    def __init__(self, *, multiprocess_dir: Path | None = None) -> None:
        import prometheus_client as pc

        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            multiprocess_dir.mkdir(parents=True, exist_ok=True)
            _enable_multiprocess(multiprocess_dir)
        # In multiprocess mode the values live in files; the registry is built at render time.
        self.registry = pc.CollectorRegistry() if multiprocess_dir is None else None
        self._info: dict[tuple[str, str], tuple[str, str]] = {}
        self._models: set[str] = set()
        # label children of the hot-path metrics, which are never removed: ``labels()`` costs
        # microseconds (validation, a lock, a dict) and runs several times per request
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._in_flight: dict[str, int] | None = {} if multiprocess_dir is None else None
        """Requests in flight by route, read by the in-flight gauge at scrape time (a plain
        count per request instead of the gauge's locked increment; one process only)."""
        self._prediction_series: dict[tuple[str, str], Any] = {}
        self._request_series: dict[tuple[str, str, str, int | str, str], tuple[Any, Any]] = {}
        """Request counter and histogram series by what ``observe_request`` is given (the
        label values depend on the registered models: cleared when they change)."""
        self._computed: list[_Computed] = []
        self._define(pc)

    def _define(self, pc: Any) -> None:
        reg, mv = self.registry, ("model", "version")
        self.requests = pc.Counter(
            "modelport_requests",
            "Requests answered, by protocol (rest, grpc), route (template or gRPC method) and "
            "status (HTTP; a gRPC answer counts as the HTTP status REST gives it).",
            [*mv, "route", "status", "protocol"], registry=reg,
        )  # fmt: skip
        self.request_duration = pc.Histogram(
            "modelport_request_duration_seconds", "Time from request to response, seconds.",
            [*mv, "route", "protocol"], buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.inference_duration = pc.Histogram(
            "modelport_inference_duration_seconds", "Time one model call took, seconds.",
            mv, buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.queue_delay = pc.Histogram(
            "modelport_queue_delay_seconds", "Time a batch waited before the model ran, seconds.",
            mv, buckets=LATENCY_BUCKETS, registry=reg,
        )  # fmt: skip
        self.batch_size = pc.Histogram(
            "modelport_batch_size", "Rows per model call (after micro-batching).",
            mv, buckets=BATCH_BUCKETS, registry=reg,
        )  # fmt: skip
        self.in_flight = pc.Gauge(
            "modelport_in_flight_requests", "Requests being answered now.",
            ["route"], registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.predictions = pc.Counter("modelport_predictions", "Rows predicted.", mv, registry=reg)
        self.cache_lookups = pc.Counter(
            "modelport_cache_lookups", "Prediction-cache row lookups, by result (hit, miss).",
            [*mv, "result"], registry=reg,
        )  # fmt: skip
        self.cache_fallbacks = pc.Counter(
            "modelport_cache_fallbacks",
            "Rows the prediction cache could not serve or store, by reason: error (it failed: "
            "predicted without it), unavailable (it had just failed: not asked), store_error.",
            ["model", "reason"], registry=reg,
        )  # fmt: skip
        self._define_state(pc)

    def _define_state(self, pc: Any) -> None:
        reg, mv = self.registry, ("model", "version")
        self.model_info = pc.Gauge(
            "modelport_model_info", "1 for every served model version, with its details.",
            [*mv, "flavor", "reference_hash"], registry=reg, multiprocess_mode="max",
        )  # fmt: skip
        self.model_ready = pc.Gauge(
            "modelport_model_ready", "1 when the model version is loaded and warmed, else 0.",
            mv, registry=reg, multiprocess_mode="min",
        )  # fmt: skip
        self.model_load = pc.Gauge(
            "modelport_model_load_seconds", "How long loading and warming the model took.",
            mv, registry=reg, multiprocess_mode="max",
        )  # fmt: skip
        self.predlog_records = pc.Counter(
            "modelport_predlog_records", "Prediction-log records by outcome.",
            ["outcome"], registry=reg,
        )  # fmt: skip
        self.drift_score = pc.Gauge(
            "modelport_drift_score", "Latest drift statistic per feature and method.",
            ["model", "feature", "method"], registry=reg, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.drift_status = pc.Gauge(
            "modelport_drift_status", "Drift per feature: -1 too few rows, 0 ok, 1 warn, 2 alert.",
            ["model", "feature"], registry=reg, multiprocess_mode="mostrecent",
        )  # fmt: skip
        self.rollout_refusals = pc.Counter(
            "modelport_rollout_refusals",
            "Candidate versions refused before going live (golden rows failed), by action.",
            [*mv, "action"], registry=reg,
        )  # fmt: skip
        self.retrain_calls = pc.Counter(
            "modelport_retrain_calls",
            "Retraining webhook calls (one per episode of sustained drift or quality loss), "
            "by outcome: sent (2xx) or failed (after bounded retries).",
            ["model", "outcome"], registry=reg,
        )  # fmt: skip
        self.model_loads = pc.Counter(
            "modelport_model_loads",
            "Models loaded on demand (a budget is set: --max-models/--max-memory).",
            mv, registry=reg,
        )  # fmt: skip
        self.model_evictions = pc.Counter(
            "modelport_model_evictions",
            "Models unloaded to keep within the budget, by reason (max_models, max_memory, "
            "unload: an admin's call).", [*mv, "reason"], registry=reg,
        )  # fmt: skip
        self.models_loaded = pc.Gauge(
            "modelport_models_loaded", "Models loaded now (of those loaded on demand).",
            registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        self.models_loaded_bytes = pc.Gauge(
            "modelport_models_loaded_bytes",
            "Estimated memory of the models loaded on demand (artifact size, or the RSS a load "
            "added when larger).", registry=reg, multiprocess_mode="livesum",
        )  # fmt: skip
        for outcome in PREDLOG_OUTCOMES:  # export zeros so rate() works from the first scrape
            self.predlog_records.labels(outcome)

    # -- labels ---------------------------------------------------------------------------

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered (only for series that are never removed)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def labels_for(self, model: str, version: str) -> tuple[str, str]:
        """``(model, version)`` as label values: unregistered names collapse to UNKNOWN."""
        if not model:
            return "", ""
        if model not in self._models:
            return UNKNOWN, UNKNOWN
        return model, version if (model, version) in self._info else UNKNOWN

    # -- model lifecycle ------------------------------------------------------------------

    def set_model_info(
        self, model: str, version: str, *, flavor: str, reference_hash: str = ""
    ) -> None:
        """Register a served model version: its labels become valid, and its info series is 1."""
        self.remove_model(model, version)
        self._request_series.clear()
        self._prediction_series.clear()
        self._models.add(model)
        self._info[(model, version)] = (flavor, reference_hash)
        self.model_info.labels(model, version, flavor, reference_hash).set(1)

    def set_model_ready(self, model: str, version: str, ready: bool) -> None:
        """Whether the version is loaded and warmed (``/ready`` and the not-ready alert)."""
        self.model_ready.labels(*self.labels_for(model, version)).set(1 if ready else 0)

    def observe_model_load(self, model: str, version: str, seconds: float) -> None:
        """How long loading (and warming) the version took."""
        self.model_load.labels(*self.labels_for(model, version)).set(seconds)

    def observe_pool(self, kind: str, model: str, version: str, *, reason: str,
                     loaded_models: int, loaded_bytes: int) -> None:
        """A model loaded (``kind="load"``) or unloaded (``"evict"``) on demand, and what is
        loaded after it."""
        labels = self.labels_for(model, version)
        if kind == "load":
            self.model_loads.labels(*labels).inc()
        else:
            self.model_evictions.labels(*labels, reason).inc()
        self.models_loaded.set(loaded_models)
        self.models_loaded_bytes.set(loaded_bytes)

    def remove_model(self, model: str, version: str) -> None:
        """Forget a version no longer served: its info, ready and load series disappear.

        (In multiprocess mode the files keep the last values, so those series stay.)
        """
        details = self._info.pop((model, version), None)
        if details is None:
            return
        self._request_series.clear()
        self._prediction_series.clear()
        if self.multiprocess_dir is None:  # prometheus_client cannot remove from its files
            self.model_info.remove(model, version, *details)
            self.model_ready.remove(model, version)
            self.model_load.remove(model, version)
        if not any(m == model for m, _ in self._info):
            self._models.discard(model)

    # -- hot path -------------------------------------------------------------------------

    def observe_request(
        self, model: str, version: str, route: str, status: int | str, seconds: float, *,
        protocol: str = "rest",
    ) -> None:
        """One answered request (REST: the observability middleware; gRPC: its servicer)."""
        key = (model, version, route, status, protocol)
        pair = self._request_series.get(key)
        if pair is None:  # the label values checked and the two series looked up once
            m, v = self.labels_for(model, version)
            pair = (self._child(self.requests, m, v, route, str(status), protocol),
                    self._child(self.request_duration, m, v, route, protocol))
            if len(self._request_series) >= 4096:  # bounded as the labels are
                self._request_series.clear()
            self._request_series[key] = pair
        pair[0].inc()
        pair[1].observe(seconds)

    def request_started(self, route: str) -> None:
        """A request entered ``route`` (in-flight gauge up)."""
        counts = self._in_flight
        if counts is None:  # worker processes: each writes its own value to its file
            self._child(self.in_flight, route).inc()
            return
        if route not in counts:  # one process: the gauge reads the count when scraped
            counts[route] = 0
            self.in_flight.labels(route).set_function(lambda: counts[route])
        counts[route] += 1

    def request_finished(self, route: str) -> None:
        """A request left ``route`` (in-flight gauge down)."""
        counts = self._in_flight
        if counts is None:
            self._child(self.in_flight, route).dec()
        else:
            counts[route] -= 1

    def on_prediction(self, event: PredictionEvent) -> None:
        """Prediction callback: counts the rows of one answered request."""
        key = (event.model, event.version)
        child = self._prediction_series.get(key)
        if child is None:  # labels checked once per version (cleared when models change)
            child = self._child(self.predictions, *self.labels_for(*key))
            if len(self._prediction_series) >= 4096:
                self._prediction_series.clear()
            self._prediction_series[key] = child
        child.inc(event.inputs.n_rows)

    def observe_batch(
        self, model: str, version: str, size: int, queue_delay_s: float, inference_s: float
    ) -> None:
        """One model call by the micro-batcher: its rows, its wait, its duration."""
        labels = self.labels_for(model, version)
        self._child(self.batch_size, *labels).observe(size)
        self._child(self.queue_delay, *labels).observe(queue_delay_s)
        self._child(self.inference_duration, *labels).observe(inference_s)

    def count_cache(self, model: str, version: str, hits: int, misses: int) -> None:
        """Prediction-cache lookups of one request (``cached_predict(on_lookup=...)``)."""
        labels = self.labels_for(model, version)
        if hits:
            self._child(self.cache_lookups, *labels, "hit").inc(hits)
        if misses:
            self._child(self.cache_lookups, *labels, "miss").inc(misses)

    def count_cache_fallback(self, model: str, version: str, reason: str, rows: int) -> None:
        """Rows the prediction cache failed (``cached_predict(on_fallback=...)``)."""
        self._child(self.cache_fallbacks, self.labels_for(model, version)[0], reason).inc(rows)

    def count_predlog(self, outcome: str, n: int) -> None:
        """Callback for :class:`~modelport.monitoring.predlog.PredictionLog` counters."""
        if outcome not in PREDLOG_OUTCOMES:
            raise ValueError(f"outcome must be one of {PREDLOG_OUTCOMES}, got {outcome!r}")
        self.predlog_records.labels(outcome).inc(n)

    def count_refusal(self, model: str, version: str, action: str) -> None:
        """A candidate refused by the rollout gate. Its version is labelled as is, though not
        served: only admin requests and alias moves name one, after the registry resolved it."""
        if action not in ROLLOUT_ACTIONS:
            raise ValueError(f"action must be one of {ROLLOUT_ACTIONS}, got {action!r}")
        m = model if model in self._models else UNKNOWN
        self.rollout_refusals.labels(m, version, action).inc()

    def set_drift(self, model: str, feature: str, method: str, score: float, status: str) -> None:
        """Latest drift decision for one feature (``status`` is a key of DRIFT_LEVELS)."""
        if status not in DRIFT_LEVELS:
            raise ValueError(f"drift status must be one of {sorted(DRIFT_LEVELS)}, got {status!r}")
        m = model if model in self._models else UNKNOWN
        self.drift_score.labels(m, feature, method).set(score)
        self.drift_status.labels(m, feature).set(DRIFT_LEVELS[status])

    def count_retrain(self, model: str, outcome: str) -> None:
        """One retraining webhook call (``RetrainWebhook(on_call=...)``)."""
        self.retrain_calls.labels(model if model in self._models else UNKNOWN, outcome).inc()

    def add_gauges(self, families: Callable[[], Iterable[GaugeFamily]]) -> None:
        """Gauges computed at each scrape by ``families()`` (e.g. the drift windows' bin
        counts, which Prometheus can then sum across replicas). With ``multiprocess_dir`` they
        are the values of the worker that answers the scrape."""
        computed = _Computed(families)
        self._computed.append(computed)
        if self.registry is not None:
            self.registry.register(computed)

    # -- exposition -----------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition format: ``(body, content_type)`` for ``GET /metrics``."""
        import prometheus_client as pc

        registry = self.registry
        if registry is None:
            from prometheus_client import multiprocess

            registry = pc.CollectorRegistry()
            multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
                registry, path=str(self.multiprocess_dir)
            )
            for computed in self._computed:  # this worker's own values
                registry.register(computed)
        return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST

    def mark_process_dead(self, pid: int) -> None:
        """Drop a dead worker's live gauges (in-flight); its counters stay in the sums."""
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                pid, str(self.multiprocess_dir)
            )


@dataclass(frozen=True)
class GaugeFamily:
    """One gauge metric computed at scrape time: ``(label values, value)`` per series."""

    name: str
    doc: str
    labels: tuple[str, ...]
    samples: Sequence[tuple[tuple[str, ...], float]]


class _Computed:
    """A prometheus_client collector over a function that returns :class:`GaugeFamily`s."""

    def __init__(self, families: Callable[[], Iterable[GaugeFamily]]) -> None:
        self._families = families

    def describe(self) -> list[Any]:
        return []  # names are not known before the first scrape; no duplicate check

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        for fam in self._families():
            metric = GaugeMetricFamily(fam.name, fam.doc, labels=fam.labels)
            for values, value in fam.samples:
                metric.add_metric(values, value)
            yield metric
