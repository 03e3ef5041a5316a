"""The native REST protocol: ``/predict`` and ``/models/{name}[/versions/{v}]/predict``.

Bodies: ``{"features": {...}}`` (one record, or one ordered row ``[63, 1, ...]``),
``{"instances": [...]}`` (records keyed by feature name, or ordered rows) or
``{"columns": {"age": [...], ...}}`` (columnar, the cheapest to parse). ``/predict/batch``
takes large bodies and skips the micro-batcher.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from modelport.errors import InvalidInput
from modelport.server import tracing
from modelport.server.edge import request_context
from modelport.server.fastlane import JSONBytes, RouteTable
from modelport.server.models import ServedModel
from modelport.server.schemas import ModelDocument, ModelList, answers
from modelport.server.state import app_state, read_json
from modelport.signature import Signature, numbers_only
from modelport.types import Columns, Outputs

__all__ = ["native_batch", "native_response", "read_native", "router", "table"]

router = APIRouter(tags=["native"])
table = RouteTable(router)
"""The prediction routes (micro-batched and bulk): answered by the fast lane."""
_OPTS = orjson.OPT_SERIALIZE_NUMPY
_SHAPES = ("features", "instances", "columns")


def native_batch(body: Any, sig: Signature, *, unseen: Any, max_rows: int,
                 plain: bool = False) -> Columns:
    """Validate a native request body into a batch (``plain``: the JSON text held only
    numbers, see :func:`~modelport.signature.numbers_only`)."""
    if not isinstance(body, Mapping):
        raise InvalidInput("expected a JSON object with 'features', 'instances' or 'columns'")
    given = [k for k in _SHAPES if k in body] if len(body) > 1 else ()  # one key: one shape
    if len(given) > 1:
        raise InvalidInput(f"give one of 'features', 'instances' or 'columns', not "
                           f"{' and '.join(repr(k) for k in given)}", field=given[1])
    if "features" in body:
        record = body["features"]
        if isinstance(record, list):  # one ordered row, features in signature order
            return sig.from_rows([record], unseen=unseen, max_rows=max_rows, numbers_only=plain)
        if not isinstance(record, Mapping):
            raise InvalidInput("expected an object keyed by feature name or a list of values "
                               "in signature order", field="features")
        return sig.from_records([record], unseen=unseen, max_rows=max_rows)
    if "instances" in body:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise InvalidInput("expected a list of records or rows", field="instances")
        if rows and isinstance(rows[0], Mapping):
            return sig.from_records(rows, unseen=unseen, max_rows=max_rows)
        return sig.from_rows(rows, unseen=unseen, max_rows=max_rows, numbers_only=plain)
    if "columns" in body:
        cols = body["columns"]
        if not isinstance(cols, Mapping) or not all(isinstance(v, list) for v in cols.values()):
            raise InvalidInput("expected an object of equal-length lists", field="columns")
        return sig.from_columns(cols, unseen=unseen, max_rows=max_rows)
    raise InvalidInput("expected 'features' (one record), 'instances' (a list of records or "
                       "rows) or 'columns' (one list per feature)")


async def read_native(request: Request) -> tuple[Any, bool]:
    """The parsed JSON body, and whether its text held only numbers (``plain`` of
    :func:`native_batch`)."""
    body = await read_json(request)
    return body, numbers_only(await request.body())  # the body is cached: no second read


def native_response(served: ServedModel, outputs: Outputs, request_id: str) -> Response:
    """Predictions, probabilities and class labels, encoded straight from numpy arrays."""
    preds = outputs.predictions
    payload: dict[str, Any] = {
        "model": served.name,
        "version": served.version,
        "request_id": request_id,
        "predictions": preds.tolist() if preds.dtype == object else preds,
    }
    if outputs.probabilities is not None:
        payload["probabilities"] = outputs.probabilities
        payload["classes"] = outputs.classes
    return JSONBytes(orjson.dumps(payload, option=_OPTS))


async def _predict(request: Request, name: str | None, version: str | None) -> Response:
    state = app_state(request)
    plane, s = state.dataplane, state.settings
    ctx = request_context(request)
    ctx.protocol = ctx.route = "native"
    served = plane.resolve(ctx, name, version)
    with tracing.span("modelport.validate") if tracing.ON else tracing.NOOP:
        body, plain = await read_native(request)
        batch = native_batch(body, served.signature, unseen=s.unseen_categories,
                             max_rows=s.max_batch_rows, plain=plain)
    outputs = await plane.infer(ctx, served, batch)
    return native_response(served, outputs, ctx.request_id)


async def _predict_bulk(request: Request, name: str | None, version: str | None) -> Response:
    state = app_state(request)
    plane, s = state.dataplane, state.settings
    ctx = request_context(request)
    ctx.protocol = ctx.route = "native"
    served = plane.get(name, version)
    with tracing.span("modelport.validate") if tracing.ON else tracing.NOOP:
        body, plain = await read_native(request)
        batch = await run_in_threadpool(native_batch, body, served.signature,
                                        unseen=s.unseen_categories, max_rows=s.max_bulk_rows,
                                        plain=plain)
    outputs = await plane.infer_bulk(ctx, served, batch)
    return native_response(served, outputs, ctx.request_id)


_PREDICT = answers(None, 404, 422, 500, 503, 504)
_BULK = answers(None, 404, 422, 500, 503)


@table.post("/predict", kind="native", summary="Predict with the primary model",
            responses=_PREDICT)
async def predict_primary(request: Request) -> Response:
    """One record (``features``), several (``instances``) or columns (``columns``)."""
    return await _predict(request, None, None)


@table.post("/models/{name}/predict", kind="native", summary="Predict with a model",
            responses=_PREDICT)
async def predict_model(request: Request, name: str) -> Response:
    """Predict with the default version of ``name`` (or the version its traffic policy
    picks)."""
    return await _predict(request, name, None)


@table.post("/models/{name}/versions/{version}/predict", kind="native",
            summary="Predict with a version", responses=_PREDICT)
async def predict_version(request: Request, name: str, version: str) -> Response:
    """Predict with one version of ``name``."""
    return await _predict(request, name, version)


@table.post("/predict/batch", kind="bulk", summary="Large batch with the primary model",
            responses=_BULK)
async def bulk_primary(request: Request) -> Response:
    """Large bodies: validated and predicted off the event loop, not micro-batched."""
    return await _predict_bulk(request, None, None)


@table.post("/models/{name}/predict/batch", kind="bulk", summary="Large batch with a model",
            responses=_BULK)
async def bulk_model(request: Request, name: str) -> Response:
    """Large batch with the default version of ``name``."""
    return await _predict_bulk(request, name, None)


@table.post("/models/{name}/versions/{version}/predict/batch", kind="bulk",
            summary="Large batch with a version", responses=_BULK)
async def bulk_version(request: Request, name: str, version: str) -> Response:
    """Large batch with one version of ``name``."""
    return await _predict_bulk(request, name, version)


@router.get("/models", summary="Served models", responses=answers(ModelList))
async def list_models(request: Request) -> Response:
    """Every served model with its versions and which one the unversioned routes use."""
    repo = app_state(request).repo
    out = [{"name": n, "default_version": repo.default_version(n),
            "versions": [s.version for s in repo.versions(n)],
            "ready": all(s.ready for s in repo.versions(n))} for n in repo.names()]
    return Response(orjson.dumps({"models": out}), media_type="application/json")


@router.get("/models/{name}", summary="A model's signature",
            responses=answers(ModelDocument, 404, 503))
async def model_info(request: Request, name: str) -> Response:
    """Name, version, flavor and signature (inputs with types and categories; outputs)."""
    served = app_state(request).repo.get(name)
    return Response(orjson.dumps(model_document(served)), media_type="application/json")


def model_document(served: ServedModel) -> dict[str, Any]:
    """What ``GET /models/{name}`` answers."""
    sig = served.signature
    return {"name": served.name, "version": served.version,
            "flavor": served.loaded.runtime.flavor, "outputs": list(sig.outputs),
            "signature": sig.to_dict(), "example": {"features": sig.example_record()},
            "classes": None if sig.classes is None else np.asarray(sig.classes).tolist()}
