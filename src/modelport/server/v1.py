"""KServe / TF-Serving V1: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from modelport.errors import InvalidInput
from modelport.server import tracing
from modelport.server.edge import request_context
from modelport.server.fastlane import RouteTable
from modelport.server.native import native_batch, read_native
from modelport.server.schemas import ModelReady, V1ModelList, answers
from modelport.server.state import app_state

__all__ = ["router", "table"]

router = APIRouter(prefix="/v1", tags=["v1 (KServe)"])
table = RouteTable(router)
"""The prediction route: answered by the fast lane."""
_PREDICT = ":predict"


@router.get("/models", summary="Served models", responses=answers(V1ModelList))
async def list_models(request: Request) -> Response:
    """Names of the served models."""
    return Response(orjson.dumps({"models": app_state(request).repo.names()}),
                    media_type="application/json")


@router.get("/models/{name}", summary="Model status",
            responses=answers(ModelReady, 404, 503))
async def model_status(request: Request, name: str) -> Response:
    """Whether the model is ready."""
    if name.endswith(_PREDICT):  # the path of the predict route: it takes POST only
        raise HTTPException(405)
    served = app_state(request).repo.get(name)
    return Response(orjson.dumps({"name": served.name, "ready": served.ready}),
                    media_type="application/json")


@table.post("/models/{name}:predict", kind="v1", summary="Predict",
            responses=answers(None, 404, 422, 500, 503, 504))
async def v1_predict(request: Request, name: str) -> Response:
    """Labels for each instance (records keyed by feature name, or ordered rows)."""
    return await _predict(request, name, None)


async def _predict(request: Request, name: str | None, _version: str | None) -> Response:
    state = app_state(request)
    plane = state.dataplane
    ctx = request_context(request)
    ctx.protocol = ctx.route = "v1"
    served = plane.resolve(ctx, name, None)
    with tracing.span("modelport.validate") if tracing.ON else tracing.NOOP:
        body, plain = await read_native(request)
        if not isinstance(body, Mapping) or "instances" not in body:
            raise InvalidInput("expected {\"instances\": [...]}", field="instances")
        batch = native_batch({"instances": body["instances"]}, served.signature,
                             unseen=state.settings.unseen_categories,
                             max_rows=state.settings.max_batch_rows, plain=plain)
    outputs = await plane.infer(ctx, served, batch)
    preds = outputs.predictions
    body = {"predictions": preds.tolist() if preds.dtype == object else preds}
    return Response(orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")
