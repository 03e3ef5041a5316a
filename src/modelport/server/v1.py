"""KServe / TF-Serving V1: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from modelport.errors import InvalidInput
from modelport.server.fastlane import FastRoute
from modelport.server.native import native_batch, read_native
from modelport.server.state import app_state, predict, resolve_model

__all__ = ["FAST_ROUTES", "router"]

router = APIRouter(prefix="/v1", tags=["v1 (KServe)"])


@router.get("/models", summary="Served models")
async def list_models(request: Request) -> Response:
    """Names of the served models."""
    return Response(orjson.dumps({"models": app_state(request).repo.names()}),
                    media_type="application/json")


@router.get("/models/{name}", summary="Model status")
async def model_status(request: Request, name: str) -> Response:
    """Whether the model is ready."""
    served = app_state(request).repo.get(name)
    return Response(orjson.dumps({"name": served.name, "ready": served.ready}),
                    media_type="application/json")


@router.post("/models/{name}:predict", summary="Predict")
async def v1_predict(request: Request, name: str) -> Response:
    """Labels for each instance (records keyed by feature name, or ordered rows)."""
    return await _predict(request, name, None)


async def _predict(request: Request, name: str | None, _version: str | None) -> Response:
    state = app_state(request)
    served = resolve_model(request, name, None)
    body, plain = await read_native(request)
    if not isinstance(body, Mapping) or "instances" not in body:
        raise InvalidInput("expected {\"instances\": [...]}", field="instances")
    batch = native_batch({"instances": body["instances"]}, served.signature,
                         unseen=state.settings.unseen_categories,
                         max_rows=state.settings.max_batch_rows, plain=plain)
    outputs = await predict(request, served, batch, "v1")
    preds = outputs.predictions
    body = {"predictions": preds.tolist() if preds.dtype == object else preds}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


FAST_ROUTES = [FastRoute(router.prefix + "/models/{name}:predict", _predict)]
"""Answered by the fast lane; the FastAPI route above documents it."""
