"""What every route handler reaches through ``request.app.state.modelport``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request

from modelport.config import Settings
from modelport.errors import InvalidInput
from modelport.server.models import ModelRepository, ServedModel
from modelport.types import Columns, Outputs, PredictionEvent

__all__ = ["AppState", "PredictionHook", "app_state", "predict", "read_json"]

PredictionHook = Callable[[PredictionEvent], None]
_log = logging.getLogger("modelport")


@dataclass
class AppState:
    """The server's shared state: settings, models and monitoring callbacks."""

    settings: Settings
    repo: ModelRepository
    on_prediction: list[PredictionHook] = field(default_factory=list)
    shutting_down: bool = False


def app_state(request: Request) -> AppState:
    """The :class:`AppState` of the app serving ``request``."""
    state: AppState = request.app.state.modelport
    return state


async def predict(request: Request, served: ServedModel, batch: Columns, route: str) -> Outputs:
    """Run ``batch`` through the model's batcher and tell the monitoring callbacks."""
    state = app_state(request)
    started = time.perf_counter()
    request.state.model = served.name
    request.state.version = served.version
    outputs = await state.repo.predict(served, batch)
    if state.on_prediction:
        event = PredictionEvent(
            request_id=request.state.request_id, timestamp=time.time(), model=served.name,
            version=served.version, inputs=batch, outputs=outputs,
            latency_s=time.perf_counter() - started, route=route,
            arm=getattr(request.state, "arm", None))
        for hook in state.on_prediction:
            try:
                hook(event)
            except Exception:  # monitoring must never fail a prediction
                _log.exception("prediction callback %r failed", hook)
    return outputs


async def read_json(request: Request) -> Any:
    """The request body parsed with orjson; malformed JSON is a 422/400 naming the problem."""
    body = await request.body()
    if not body:
        raise InvalidInput("the request body is empty; send a JSON object")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON: {exc}") from None
