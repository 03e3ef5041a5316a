"""The web console at ``GET /ui``: models, rollouts with live traffic, drift and predictions.

The page is plain HTML and a small script, vendored in ``server/static/console/`` and served
by this process (no CDN, no build step). It holds no data, so it opens without a key (like the
probes); everything it shows comes from the JSON routes below, which need a prediction key
when keys are configured (the edge checks them, as for every route), and its actions call the
admin API (``/admin/...``), which needs the admin key. The page asks for both keys and sends
them as headers; it never stores them beyond the browser tab's session.

Read-only JSON for the console, under ``/ui/api`` (documented in ``docs/console.md``)::

    GET /ui/api/summary                       server facts; every model: versions (ready,
                                              flavor, runtime, device, package sha256,
                                              signature), aliases, traffic policy
    GET /ui/api/models/{name}/rollout         policy, live per-arm req/s, p50/p99, error
                                              rate, shadow disagreement, alias history
    GET /ui/api/models/{name}/drift           per-feature status/score/p-value (the latest
                                              periodic evaluation), the chosen feature's
                                              histogram (window now) against the reference,
                                              the trend over recent evaluations, realized
                                              accuracy
    GET /ui/api/predictions                   latest logged rows (model, version, arm filters)

Cheap by construction: live statistics are counted on the hot path in O(1)
(:mod:`~modelport.server.livestats`); each answer is computed at most once per
:data:`MIN_INTERVAL_S` whatever the number of open consoles (later calls in that interval
share it); work that blocks (registry and prediction-log queries, taking the drift counts)
runs on a thread, and the drift page shows the periodic check's latest evaluation
(``MODELPORT_DRIFT_CHECK_S``) instead of running the tests again. The page polls every two
seconds and stops while hidden.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

import modelport
from modelport.errors import ModelNotFound, ModelportError
from modelport.monitoring.drift import evaluate_snapshot
from modelport.monitoring.profile import ReferenceProfile
from modelport.registry import Registry
from modelport.registry.store import digest_of
from modelport.server.docs import STATIC_DIR, STATIC_PREFIX, asset_versions, root_of
from modelport.server.livestats import LiveStats
from modelport.server.models import ServedModel
from modelport.server.monitoring import Monitoring
from modelport.server.schemas import Answer, answers
from modelport.server.state import AppState

__all__ = ["MIN_INTERVAL_S", "console_extension"]

MIN_INTERVAL_S = 1.0
"""Each console answer is computed at most this often (the server-side bound on polling)."""
POLL_MS = 2000
"""How often the page asks (it stops while the tab is hidden)."""
_PAGE = "/ui"
_HISTORY_ROWS = 50
_TREND_POINTS = 60


def console_extension(registry: Registry | None, monitoring: Monitoring
                      ) -> Callable[[FastAPI, AppState], None]:
    """An ``extensions=`` hook for ``create_app``: the page, its JSON routes and the live
    per-arm statistics (a prediction hook, and an answer hook the observability middleware and
    the gRPC servicer call with each request's context, status and time)."""
    def extend(app: FastAPI, state: AppState) -> None:
        def has_shadow(model: str) -> bool:
            policy = state.traffic.get(model)
            return policy is not None and bool(policy.shadow)

        stats = LiveStats(has_shadow)
        state.on_prediction.append(stats.on_prediction)
        state.on_answer.append(lambda ctx, status, seconds: stats.request(
            ctx.model or "", ctx.version or "", ctx.arm, status, seconds))
        state.repo.on_change.append(
            lambda served, serving: None if serving else stats.forget(served.name,
                                                                      served.version))
        state.open_paths.add(_PAGE)
        app.include_router(console_router(state, registry, monitoring, stats))

    return extend


class _Throttle:
    """At most one computation per key per ``interval_s``; callers in between share it."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._done: dict[Any, tuple[float, asyncio.Future[Any]]] = {}

    async def get(self, key: Any, compute: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        hit = self._done.get(key)
        if hit is None or now - hit[0] >= self.interval_s:
            if len(self._done) > 256:  # made-up keys must not grow memory
                self._done.clear()
            future: asyncio.Future[Any] = asyncio.ensure_future(compute())
            hit = self._done[key] = (now, future)
        return await asyncio.shield(hit[1])


def _json(data: Any) -> Response:
    """orjson: numpy values, NaN as null, datetimes as ISO text."""
    body = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                        default=str)
    return Response(body, media_type="application/json",
                    headers={"cache-control": "no-store"})


def console_router(state: AppState, registry: Registry | None, monitoring: Monitoring,
                   stats: LiveStats) -> APIRouter:
    """``GET /ui`` and the ``/ui/api`` routes over the app's state."""
    router = APIRouter(tags=["console"])
    throttle = _Throttle(MIN_INTERVAL_S)
    page = (STATIC_DIR / "console" / "index.html").read_text("utf-8")
    ok_404 = answers(Answer, 404, 422)

    def served_model(name: str) -> list[ServedModel]:
        versions = state.repo.versions(name)
        if not versions:
            raise ModelNotFound(f"model '{name}' is not served (served: "
                                f"{', '.join(state.repo.names()) or 'none'})")
        return versions

    @router.get(_PAGE, include_in_schema=False)
    async def console(request: Request) -> HTMLResponse:
        html = (page.replace("{{root}}", root_of(request))
                .replace("{{static}}", root_of(request) + STATIC_PREFIX)
                .replace("{{version}}", modelport.__version__))
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    @router.get("/ui/api/summary", responses=answers(Answer),
                summary="Console: server facts and every served model")
    async def summary() -> Response:
        return _json(await throttle.get("summary", lambda: _summary(state, registry,
                                                                     monitoring)))

    @router.get("/ui/api/models/{name}/rollout", responses=ok_404,
                summary="Console: traffic policy, live per-arm traffic, alias history")
    async def rollout(name: str) -> Response:
        served_model(name)
        return _json(await throttle.get(("rollout", name), lambda: _rollout(
            state, registry, stats, name)))

    @router.get("/ui/api/models/{name}/drift", responses=ok_404,
                summary="Console: drift per feature, one feature's histogram, the trend, "
                        "realized accuracy")
    async def drift(name: str, feature: Annotated[str | None, Query(max_length=200)] = None
                    ) -> Response:
        served_model(name)
        return _json(await throttle.get(("drift", name, feature), lambda: _drift(
            monitoring, name, feature)))

    @router.get("/ui/api/predictions", responses=answers(Answer, 422),
                summary="Console: the latest logged predictions")
    async def predictions(model: Annotated[str | None, Query(max_length=200)] = None,
                          version: Annotated[str | None, Query(max_length=200)] = None,
                          arm: Annotated[str | None, Query(max_length=200)] = None,
                          limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Response:
        log = monitoring.predlog
        if log is None:
            return _json({"enabled": False, "rows": []})
        key = ("predictions", model, version, arm, limit)
        rows = await throttle.get(key, lambda: asyncio.to_thread(
            log.recent, model=model or None, version=version or None, arm=arm or None,
            limit=limit))
        return _json({"enabled": True, "rows": rows})

    return router


async def _summary(state: AppState, registry: Registry | None,
                   monitoring: Monitoring) -> dict[str, Any]:
    settings = state.settings
    models = []
    for name in state.repo.names():
        aliases, registered = await asyncio.to_thread(_registry_facts, registry, name)
        policy = state.traffic.get(name)
        follower = state.followers.get(name)
        refused = state.refusals.last(name)
        models.append({
            "name": name, "default": state.repo.default_version(name),
            "primary": name == state.repo.primary, "aliases": aliases,
            "registered": registered,
            "follow": None if follower is None else asdict(follower.status()),
            "traffic": None if policy is None else policy.model_dump(mode="json"),
            "refused": None if refused is None else asdict(refused),
            "drift": name in monitoring.drift,
            "versions": [_version(s) for s in sorted(state.repo.versions(name),
                                                    key=lambda s: s.loaded_at)]})
    return {"server": {"version": modelport.__version__, "ready": state.dataplane.ready(),
                       "keys": bool(settings.all_api_keys()),
                       "admin": bool(settings.all_admin_keys()),
                       "registry": registry is not None,
                       "predlog": monitoring.predlog is not None,
                       "drift_check_s": monitoring.drift_check_s, "poll_ms": POLL_MS,
                       "min_interval_s": MIN_INTERVAL_S, "assets": asset_versions()},
            "models": models}


def _registry_facts(registry: Registry | None, name: str) -> tuple[dict[str, str], list[str]]:
    """The model's aliases and registered versions (empty when it is not in a registry)."""
    if registry is None:
        return {}, []
    try:
        return registry.aliases(name), [v.version for v in registry.versions(name)]
    except ModelportError:
        return {}, []


def _version(served: ServedModel) -> dict[str, Any]:
    loaded, sig = served.loaded, served.signature
    pkg = loaded.package
    flavor = pkg.manifest.flavor if pkg is not None else loaded.runtime.flavor
    return {
        "version": served.version, "ready": served.ready, "flavor": flavor,
        "runtime": "onnx" if loaded.runtime.flavor == "onnx" else "native",
        "compressed": loaded.compressed,
        "device": getattr(loaded.runtime, "device", "cpu"),
        "sha256": None if pkg is None else digest_of(pkg.manifest.files),
        "loaded_at": served.loaded_at, "warm_s": served.warm_s,
        "signature": {"task": sig.task, "input_kind": sig.input_kind,
                      "classes": None if sig.classes is None else [str(c) for c in
                                                                   sig.classes],
                      "features": [{"name": f.name, "dtype": f.dtype,
                                    "categories": None if f.categories is None
                                    else [str(c) for c in f.categories],
                                    "nullable": f.nullable} for f in sig.features]}}


async def _rollout(state: AppState, registry: Registry | None, stats: LiveStats,
                   name: str) -> dict[str, Any]:
    policy = state.traffic.get(name)
    history = await asyncio.to_thread(_history, registry, name)
    return {
        "model": name, "default": state.repo.default_version(name),
        "served": sorted(s.version for s in state.repo.versions(name)),
        "policy": None if policy is None else policy.model_dump(mode="json"),
        "canary_percent": None if policy is None else policy.canary_percent,
        "arms": [asdict(a) for a in stats.arms(name)],
        "shadows": [asdict(s) for s in stats.shadows(name)],
        "history": history, "window_s": 10,
    }


def _history(registry: Registry | None, name: str) -> list[dict[str, Any]]:
    if registry is None:
        return []
    try:
        moves = registry.history(name)
    except ModelportError:
        return []
    return [asdict(m) for m in moves[-_HISTORY_ROWS:]][::-1]


async def _drift(monitoring: Monitoring, name: str, feature: str | None) -> dict[str, Any]:
    monitor = monitoring.drift.get(name)
    accuracy = await _accuracy(monitoring, name)
    if monitor is None:
        return {"enabled": False, "model": name, "accuracy": accuracy,
                "reason": "no reference profile: add one with modelport profile DATA "
                          "--package PKG"}
    snapshot = await asyncio.to_thread(monitor.snapshot)
    history = list(monitoring.drift_history.get(name, ()))
    if history and history[-1][1].version == monitor.version:
        evaluated, report = history[-1]  # the periodic check's: the tests cost CPU time
    else:  # none yet for this version: evaluate the counts just taken
        evaluated, report = time.time(), await asyncio.to_thread(
            evaluate_snapshot, monitor.profile, snapshot, thresholds=monitor.thresholds,
            model=monitor.model, version=monitor.version)
    chosen = feature or _worst(report.to_dict())
    return {"enabled": True, "model": name, "report": report.to_dict(), "evaluated": evaluated,
            "histogram": _histogram(monitor.profile, snapshot.features, snapshot.outputs,
                                    chosen),
            "trend": [{"t": t, "status": r.status, "window_rows": r.window_rows,
                       "scores": {f.name: f.score for f in (*r.features, *r.predictions)}}
                      for t, r in history[-_TREND_POINTS:]],
            "accuracy": accuracy}


def _worst(report: dict[str, Any]) -> str | None:
    """The feature to show first: the one with the highest score."""
    feats = [*report["features"], *report["predictions"]]
    scored = [f for f in feats if f.get("score") is not None]
    return max(scored, key=lambda f: f["score"])["name"] if scored else (
        feats[0]["name"] if feats else None)


def _histogram(profile: ReferenceProfile, features: Any, outputs: Any,
               name: str | None) -> dict[str, Any] | None:
    profiles: Iterable[Any] = (*profile.features, *profile.outputs)
    for prof in profiles:
        if prof.name == name:
            current = features.get(name) or outputs.get(name) or ()
            return {"feature": name, "kind": prof.kind, "labels": list(prof.labels()),
                    "reference": list(prof.counts),
                    "current": list(current) or [0] * len(prof.counts)}
    return None


async def _accuracy(monitoring: Monitoring, name: str) -> dict[str, Any] | None:
    """Realized accuracy from ``/feedback`` labels (None without a prediction log)."""
    log = monitoring.predlog
    if log is None:
        return None
    try:
        found = await asyncio.to_thread(log.realized_accuracy, name)
    except ModelportError as exc:
        return {"error": exc.message}
    return {"labeled": found.labeled, "correct": found.correct, "accuracy": found.accuracy}
