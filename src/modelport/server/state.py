"""What every route handler reaches through ``request.app.state.modelport``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request

from modelport.cache import LookupHook, PredictionCache, cached_predict
from modelport.config import Settings
from modelport.errors import InvalidInput
from modelport.server.models import ModelRepository, ServedModel
from modelport.types import Columns, Outputs, PredictionEvent

__all__ = ["AppState", "PredictionHook", "app_state", "predict", "read_json", "resolve_model"]

PredictionHook = Callable[[PredictionEvent], None]
_log = logging.getLogger("modelport")


@dataclass
class AppState:
    """The server's shared state: settings, models and monitoring callbacks."""

    settings: Settings
    repo: ModelRepository
    on_prediction: list[PredictionHook] = field(default_factory=list)
    shutting_down: bool = False
    in_flight: int = 0
    """Prediction requests being computed now (shown by ``/ready``)."""
    cache: PredictionCache | None = None
    """Prediction cache (``MODELPORT_PREDICTION_CACHE``), or None."""
    on_cache_lookup: LookupHook | None = None
    shadow_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Mirrored requests to shadow versions, running off the hot path (bounded)."""
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    """Coroutines run for the app's lifetime (cancelled at shutdown)."""
    closers: list[Callable[[], object]] = field(default_factory=list)
    """Called once at shutdown, after in-flight requests finished (flush logs, …)."""


def app_state(request: Request) -> AppState:
    """The :class:`AppState` of the app serving ``request``."""
    state: AppState = request.app.state.modelport
    return state


MAX_SHADOW_TASKS = 256


def resolve_model(request: Request, name: str | None, version: str | None) -> ServedModel:
    """The version that answers: the one asked for, else the traffic policy's choice (A/B,
    canary, sticky), else the model's default version."""
    state = app_state(request)
    traffic = getattr(request.app.state, "traffic", None)
    if version is None and traffic is not None:
        assignment = traffic.route(name or state.repo.primary or "", request.headers)
        if assignment is not None:
            request.state.arm = assignment.arm
            request.state.shadow = assignment.shadow_versions
            version = assignment.version
    return state.repo.get(name, version)


async def predict(request: Request, served: ServedModel, batch: Columns, route: str) -> Outputs:
    """Run ``batch`` through the model's batcher and tell the monitoring callbacks."""
    state = app_state(request)
    started = time.perf_counter()
    request.state.model = served.name
    request.state.version = served.version
    state.in_flight += 1
    try:
        if state.cache is None:
            outputs = await state.repo.predict(served, batch)
        else:
            outputs = await cached_predict(
                state.cache, served.name, served.version, batch,
                lambda b: state.repo.predict(served, b), on_lookup=state.on_cache_lookup)
    finally:
        state.in_flight -= 1
    scope_state = request.scope["state"]
    rid = scope_state["request_id"]
    _emit(state, PredictionEvent(
        request_id=rid, timestamp=time.time(), model=served.name, version=served.version,
        inputs=batch, outputs=outputs, latency_s=time.perf_counter() - started, route=route,
        arm=scope_state.get("arm")))
    for version in scope_state.get("shadow", ()):
        if len(state.shadow_tasks) < MAX_SHADOW_TASKS:
            task = asyncio.get_running_loop().create_task(
                _shadow(state, served, version, batch=batch, answer=outputs, request_id=rid))
            state.shadow_tasks.add(task)
            task.add_done_callback(state.shadow_tasks.discard)
    return outputs


def _emit(state: AppState, event: PredictionEvent) -> None:
    for hook in state.on_prediction:
        try:
            hook(event)
        except Exception:  # monitoring must never fail a prediction
            _log.exception("prediction callback %r failed", hook)


async def _shadow(state: AppState, primary: ServedModel, version: str, *, batch: Columns,
                  answer: Outputs, request_id: str) -> None:
    """Mirror a request to a candidate version; record both answers and their disagreement."""
    started = time.perf_counter()
    try:
        candidate = state.repo.get(primary.name, version)
        outputs = await state.repo.predict(candidate, batch)
    except Exception as exc:
        _log.warning("shadow %s:%s failed for request %s: %s", primary.name, version,
                     request_id, exc)
        return
    differ = int((np.asarray(outputs.predictions) != np.asarray(answer.predictions)).sum())
    _log.info("shadow", extra={"fields": {
        "request_id": request_id, "model": primary.name, "primary": primary.version,
        "shadow": version, "rows": batch.n_rows, "disagreements": differ}})
    _emit(state, PredictionEvent(
        request_id=request_id, timestamp=time.time(), model=primary.name, version=version,
        inputs=batch, outputs=outputs, latency_s=time.perf_counter() - started,
        route="shadow", arm="shadow"))


async def read_json(request: Request) -> Any:
    """The request body parsed with orjson; malformed JSON is a 422/400 naming the problem."""
    body = await request.body()
    if not body:
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
