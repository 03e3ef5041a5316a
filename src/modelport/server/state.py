"""What every route handler reaches through ``request.app.state.modelport``: :class:`AppState`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from modelport.cache import FallbackHook, LookupHook, PredictionCache
from modelport.config import Settings
from modelport.errors import InvalidInput
from modelport.server.dataplane import DataPlane, RequestContext
from modelport.server.gate import Refusals
from modelport.server.models import ModelRepository
from modelport.server.rollout import AliasFollower
from modelport.server.traffic import TrafficRouter
from modelport.types import PredictionEvent

__all__ = ["AnswerHook", "AppState", "PredictionHook", "RequestHook", "app_state", "read_json"]

PredictionHook = Callable[[PredictionEvent], None]
RequestHook = Callable[[RequestContext, str, int, float], None]
AnswerHook = Callable[[RequestContext, int, float], None]
"""``(context, status, seconds)`` of a request a model was named for, HTTP or gRPC."""
"""``(ctx, route, status, seconds)`` after a request answered outside the HTTP middleware (a
gRPC call); ``status`` is the HTTP status REST gives the same outcome."""


@dataclass
class AppState:
    """The server's shared state: settings, models, traffic, monitoring callbacks, and the
    :class:`~modelport.server.dataplane.DataPlane` every front door calls."""

    settings: Settings
    repo: ModelRepository
    on_prediction: list[PredictionHook] = field(default_factory=list)
    on_request: list[RequestHook] = field(default_factory=list)
    """Told of every gRPC call answered (request metrics, alerts), as HTTP requests are by the
    observability middleware."""
    on_answer: list[AnswerHook] = field(default_factory=list)
    """Told of every answered request that named a model, over HTTP (by the observability
    middleware, which already times it) and gRPC alike: the console's live statistics."""
    shutting_down: bool = False
    in_flight: int = 0
    """Prediction requests being computed now (shown by ``/ready``)."""
    cache: PredictionCache | None = None
    """Prediction cache (``MODELPORT_PREDICTION_CACHE``), or None."""
    on_cache_lookup: LookupHook | None = None
    on_cache_fallback: FallbackHook | None = None
    """Told about rows the cache failed (metrics count them)."""
    traffic: TrafficRouter = field(default_factory=TrafficRouter)
    """Traffic policies (A/B, canary, shadow, sticky) by model name (the admin API sets them)."""
    followers: dict[str, AliasFollower] = field(default_factory=dict)
    """Registry alias followers by model name."""
    refusals: Refusals = field(default_factory=Refusals)
    """The last golden-gate refusal per model, and the hooks told of each one."""
    shadow_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    """Mirrored requests to shadow versions, running off the hot path (bounded)."""
    background: list[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    """Coroutines run for the app's lifetime (cancelled at shutdown)."""
    closers: list[Callable[[], object]] = field(default_factory=list)
    """Called once at shutdown, after in-flight requests finished (flush logs, …)."""
    open_paths: set[str] = field(default_factory=set)
    """Paths answered without a key besides the probes: the console's page and the vendored
    browser assets (they hold no data; the JSON they read needs a key)."""
    dataplane: DataPlane = field(init=False, repr=False)
    """Resolve, predict and emit: what every protocol's front door calls."""

    def __post_init__(self) -> None:
        self.dataplane = DataPlane(self)


def app_state(request: Request) -> AppState:
    """The :class:`AppState` of the app serving ``request``."""
    app = request.scope["app"]
    state: AppState | None = getattr(app, "modelport_state", None)  # set by create_app
    return state if state is not None else app.state.modelport


async def read_json(request: Request) -> Any:
    """The request body parsed with orjson; malformed JSON is a 422/400 naming the problem."""
    body = await request.body()
    if not body:
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
