"""Plug monitoring into the app: Prometheus metrics, the prediction log, drift, alerts.

Everything here is a callable handed to :func:`~modelport.server.app.create_app`: prediction
hooks, a batch hook, a model-change hook, and one extension that mounts the routes and starts
the periodic drift evaluation.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from modelport.batching import BatchStats
from modelport.config import Settings
from modelport.monitoring.alerts import WebhookAlerter
from modelport.monitoring.drift import DriftMonitor
from modelport.monitoring.fleet import drift_gauges
from modelport.monitoring.live_quality import QualityTracker
from modelport.monitoring.metrics import Metrics
from modelport.monitoring.predlog import PredictionLog
from modelport.monitoring.profile import ReferenceProfile
from modelport.monitoring.quality import QualityWindow
from modelport.monitoring.retrain import RetrainWebhook
from modelport.monitoring.stats import DriftReport, warm_up_tests
from modelport.package import LoadedModel, file_sha256
from modelport.server.dataplane import RequestContext
from modelport.server.drift_routes import drift_router, quality_router
from modelport.server.models import ServedModel
from modelport.server.observability import install_observability
from modelport.server.pool import ModelPool, PoolEvent
from modelport.server.state import AppState, PredictionHook
from modelport.types import PredictionEvent

__all__ = ["Monitoring", "build_monitoring"]

_log = logging.getLogger("modelport")
DRIFT_HISTORY = 120
"""Periodic drift evaluations kept per model (at the default 15 s: the last half hour)."""


@dataclass
class Monitoring:
    """The monitoring parts of one app and the hooks that feed them."""

    metrics: Metrics
    predlog: PredictionLog | None = None
    alerter: WebhookAlerter | None = None
    drift: dict[str, DriftMonitor] = field(default_factory=dict)
    drift_check_s: float = 15.0
    drift_history: dict[str, deque[tuple[float, DriftReport]]] = field(default_factory=dict)
    """Each model's latest periodic drift evaluations, oldest first (the console's trend)."""
    quality: QualityTracker = field(default_factory=lambda: QualityTracker(windows=()))
    """Realized quality (labels joined in the prediction log) and CBPE estimates."""
    retrain: RetrainWebhook | None = None

    @property
    def on_prediction(self) -> list[PredictionHook]:
        """Prediction hooks: metrics, the log, and each model's drift monitor."""
        hooks: list[PredictionHook] = [self.metrics.on_prediction, self._drift_event,
                                       self.quality.on_prediction]
        if self.predlog is not None:
            hooks.append(self.predlog.on_prediction)
        return hooks

    def _drift_event(self, event: PredictionEvent) -> None:
        monitor = self.drift.get(event.model)
        if monitor is not None:
            monitor.on_prediction(event)

    def on_batch(self, served: ServedModel, stats: BatchStats) -> None:
        """Batch size, queue delay and inference time per model call."""
        self.metrics.observe_batch(served.name, served.version, stats.rows,
                                   stats.queue_delay_s, stats.inference_s)

    def on_model_change(self, served: ServedModel, serving: bool) -> None:
        """Register a version's metric labels (bounded cardinality) or drop them."""
        name, version = served.name, served.version
        if not serving:
            self.metrics.remove_model(name, version)
            self.quality.unregister(name, version)
            return
        pkg = served.loaded.package
        ref = pkg.reference_path if pkg is not None else None
        ref_hash = file_sha256(ref)[:12] if ref is not None else ""
        self.metrics.set_model_info(name, version, flavor=served.loaded.runtime.flavor,
                                    reference_hash=ref_hash)
        self.metrics.set_model_ready(name, version, served.ready)
        self.metrics.observe_model_load(name, version, served.warm_s)
        sig = served.loaded.signature
        self.quality.register(name, version, task=sig.task,
                              classes=list(sig.classes) if sig.classes else None,
                              metrics=pkg.manifest.metrics if pkg is not None else None)
        monitor = self.drift.get(name)
        if ref is None:
            _log.info("drift monitoring is off for %s:%s: no reference profile (add one with: "
                      "modelport profile DATA --package PKG)", name, version)
        elif monitor is None or monitor.version != version:
            self.drift[name] = _drift_monitor(served.loaded, ref.read_text(encoding="utf-8"))

    def on_pool_event(self, event: PoolEvent) -> None:
        """A model loaded or unloaded on demand: load/eviction counts, readiness, load time."""
        self.metrics.observe_pool(event.kind, event.model, event.version, reason=event.reason,
                                  loaded_models=event.loaded_models,
                                  loaded_bytes=event.loaded_bytes)
        self.metrics.set_model_ready(event.model, event.version, event.kind == "load")
        if event.kind == "load":
            self.metrics.observe_model_load(event.model, event.version, event.seconds)

    def extend(self, app: FastAPI, state: AppState) -> None:
        """Mount ``/metrics``, ``/feedback``, ``/monitoring/drift``; start the drift checks;
        count the loads and unloads of models loaded on demand."""
        if isinstance(state.repo.pool, ModelPool):
            state.repo.pool.hooks.append(self.on_pool_event)
        app.include_router(drift_router(lambda: self.drift, self.quality.status))
        app.include_router(quality_router(self.quality.status, self.quality.models,
                                          self.retrain_status))
        self.metrics.add_gauges(lambda: drift_gauges(self.drift))  # summed by Prometheus
        self.metrics.add_gauges(self.quality.gauges)
        on_request = self.alerter.observe if self.alerter is not None else None
        install_observability(app, metrics=self.metrics, predlog=self.predlog,
                              on_request=on_request, answered=state.on_answer)
        state.refusals.hooks.append(
            lambda r: self.metrics.count_refusal(r.name, r.version, r.action))
        state.on_request.append(self._on_request)
        state.background.append(self._check_drift_forever)
        if self.predlog is not None:
            state.closers.append(self.predlog.close)
        if self.alerter is not None:
            state.closers.append(self.alerter.close)
        if self.retrain is not None:
            state.closers.append(self.retrain.close)

    def _on_request(self, ctx: RequestContext, route: str, status: int, seconds: float) -> None:
        """A request answered outside HTTP (gRPC): the same request metrics and alerts."""
        model, version = ctx.model or "", ctx.version or ""
        self.metrics.observe_request(model, version, route, status, seconds,
                                     protocol=ctx.protocol)
        if self.alerter is not None:
            self.alerter.observe(*self.metrics.labels_for(model, version), status, seconds)

    async def _check_drift_forever(self) -> None:
        while True:
            await asyncio.sleep(self.drift_check_s)
            # on a thread: a wide model's evaluation takes tens of ms (300 features: ~70 ms),
            # which would stall every request in flight; the loop now keeps its turns
            await asyncio.to_thread(self.check_drift)

    def check_drift(self) -> None:
        """Evaluate every model's drift window: metrics gauges, and alerts on changes."""
        for name, monitor in list(self.drift.items()):
            report = monitor.status()
            self.drift_history.setdefault(name, deque(maxlen=DRIFT_HISTORY)).append(
                (time.time(), report))
            for feat in (*report.features, *report.predictions):
                score = feat.score if feat.score is not None else float("nan")
                self.metrics.set_drift(name, feat.name, feat.method, score, feat.status)
                if self.alerter is not None:
                    self.alerter.on_drift(name, feat.name, feat.status, feat.score)
        self.check_quality()

    def check_quality(self) -> None:
        """Refresh realized quality and CBPE; tell the retraining trigger what fires."""
        self.quality.refresh()
        if self.retrain is None:
            return
        for name in dict.fromkeys([*self.quality.models(), *self.drift]):
            history = self.drift_history.get(name)
            report = history[-1][1] if history else None
            status = self.quality.status(name) or {}
            version = report.version if report is not None else next(
                iter(status.get("baseline", {})), "")
            self.retrain.check(name, version,
                               drift=report.to_dict() if report is not None else None,
                               breaches=self.quality.breaches(name),
                               estimated=status.get("estimated", []))

    def retrain_status(self) -> dict[str, Any]:
        """The retraining webhook's settings, open episodes and latest calls (no token)."""
        hook = self.retrain
        if hook is None:
            return {"enabled": False, "calls": []}
        models = dict.fromkeys([*self.quality.models(), *self.drift])
        return {"enabled": True, "style": hook.style, "after_s": hook.after_s,
                "firing_since": {m: hook.trigger.firing_since(m) for m in models},
                "suppressed": hook.trigger.suppressed,
                "calls": [c.to_dict() for c in hook.calls()]}


def _drift_monitor(model: LoadedModel, profile_json: str) -> DriftMonitor:
    """A model's drift monitor. scipy's distributions are imported here, while the model
    loads: at the first periodic check they would stall the event loop for half a second."""
    warm_up_tests()
    return DriftMonitor(ReferenceProfile.from_json(profile_json), model.name, model.version)


def _share_episodes(retrain: RetrainWebhook, predlog: PredictionLog, *, stale_s: float) -> None:
    """Claim retraining episodes in the prediction log's database, as this process."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{id(retrain):x}"
    retrain.claim = lambda model, now: predlog.claim_retrain(model, holder, now, stale_s)
    retrain.release = lambda model: predlog.release_retrain(model, holder)


def build_monitoring(settings: Settings) -> Monitoring:
    """Metrics always; the prediction log and alerts when configured; drift for every served
    model whose package has a reference profile (created as each model starts serving)."""
    metrics = Metrics(multiprocess_dir=settings.metrics_multiproc_dir)
    predlog = None
    if settings.log_db:
        predlog = PredictionLog(settings.log_db, spool_dir=settings.log_spool_dir,
                                sample_rate=settings.log_sample_rate,
                                on_count=metrics.count_predlog)
    alerter = WebhookAlerter(settings.alert_webhook) if settings.alert_webhook else None
    quality = QualityTracker(
        windows=[QualityWindow.parse(w) for w in settings.quality_windows],
        fetch=predlog.labeled_rows if predlog is not None else None,
        margin=settings.quality_margin, min_labels=settings.quality_min_labels,
        estimate_rows=settings.quality_estimate_rows, max_ece=settings.quality_max_ece,
        refresh_s=settings.quality_check_s)
    retrain = None
    if settings.retrain_webhook:
        token = settings.retrain_token
        retrain = RetrainWebhook(
            settings.retrain_webhook, after_s=settings.retrain_after_s,
            style=settings.retrain_style, event_type=settings.retrain_event_type,
            token=token.get_secret_value() if token is not None else None,
            attempts=settings.retrain_attempts,
            on_call=lambda call: metrics.count_retrain(call.model, call.outcome))
        if predlog is not None:  # workers and replicas sharing the log call once between them
            _share_episodes(retrain, predlog, stale_s=max(60.0, 10 * settings.drift_check_s))
    return Monitoring(metrics, predlog, alerter, drift_check_s=settings.drift_check_s,
                      quality=quality, retrain=retrain)


