"""Liveness and readiness: ``/health`` and ``/ready``, and their V2 twins."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelport.server.schemas import Liveness, Readiness, answers
from modelport.server.state import app_state

__all__ = ["router"]

router = APIRouter(tags=["probes"])
_LIVE = answers(Liveness)
_READY: dict[int | str, dict[str, Any]] = {
    200: {"model": Readiness},
    503: {"model": Readiness, "description": "Not ready: a model is loading or unloaded, or the "
                                             "server is shutting down"}}


def _live() -> Response:
    return Response(orjson.dumps({"status": "alive"}), media_type="application/json")


def _ready(request: Request) -> Response:
    state = app_state(request)
    ready = state.repo.ready() and not state.shutting_down
    models = {f"{s.name}:{s.version}": s.ready for s in state.repo.all()}
    body = {"status": "ready" if ready else "not ready", "models": models,
            "in_flight": state.in_flight}
    if state.shutting_down:
        body["reason"] = "shutting down"
    return Response(orjson.dumps(body), status_code=200 if ready else 503,
                    media_type="application/json")


@router.get("/health", summary="Liveness: the process answers", responses=_LIVE)
async def health() -> Response:
    """Always 200 while the process can answer."""
    return _live()


@router.get("/ready", summary="Readiness: every model loaded and warmed", responses=_READY)
async def ready(request: Request) -> Response:
    """200 when every model answered its warm-up prediction; 503 otherwise."""
    return _ready(request)


@router.get("/v2/health/live", summary="V2 liveness", responses=_LIVE)
async def v2_live() -> Response:
    """Same answer as ``/health``."""
    return _live()


@router.get("/v2/health/ready", summary="V2 readiness", responses=_READY)
async def v2_ready(request: Request) -> Response:
    """Same answer as ``/ready``."""
    return _ready(request)
