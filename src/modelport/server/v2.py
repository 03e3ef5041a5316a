"""Open Inference Protocol V2 (KServe / Triton / MLServer), with the binary-tensor and
model-repository extensions. Errors answer ``{"error": "..."}``."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

import modelport
from modelport.runtimes import device_of
from modelport.server import tracing
from modelport.server.edge import request_context
from modelport.server.fastlane import JSONBytes, RouteTable
from modelport.server.models import ServedModel
from modelport.server.schemas import (
    Empty,
    ModelMetadata,
    ModelReady,
    RepositoryIndex,
    ServerMetadata,
    answers,
)
from modelport.server.state import app_state
from modelport.server.v2codec import decode_request, encode_response, feature_datatype, to_columns

__all__ = ["router", "table"]

router = APIRouter(prefix="/v2", tags=["v2 (Open Inference Protocol)"])
table = RouteTable(router)
"""The inference routes: answered by the fast lane."""
_HEADER = "inference-header-content-length"
_META = answers(ModelMetadata, 404, 503)
_READY = answers(ModelReady, 404, 503)
_INFER = answers(None, 400, 404, 500, 503, 504)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get("", summary="Server metadata", responses=answers(ServerMetadata))
async def server_metadata() -> Response:
    """Name, version and the protocol extensions this server speaks."""
    return _json({"name": "modelport", "version": modelport.__version__,
                  "extensions": ["binary_tensor_data", "model_repository"]})


def _metadata(request: Request, served: ServedModel) -> Response:
    sig = served.signature
    outputs = [{"name": "predict", "datatype": "BYTES" if sig.classes and any(
        isinstance(c, str) for c in sig.classes) else ("INT64" if sig.classes else "FP64"),
        "shape": [-1]}]
    if sig.has_proba:
        outputs.append({"name": "predict_proba", "datatype": "FP64",
                        "shape": [-1, len(sig.classes or ())]})
    repo = app_state(request).repo
    return _json({
        "name": served.name,
        "versions": [s.version for s in repo.versions(served.name)],
        "platform": served.loaded.runtime.flavor,
        "inputs": [{"name": f.name, "datatype": feature_datatype(f.dtype), "shape": [-1]}
                   for f in sig.features],
        "outputs": outputs,
        "parameters": {"content_type": "pd", "device": device_of(served.loaded.runtime)},
    })


@router.get("/models/{name}", summary="Model metadata", responses=_META)
async def model_metadata(request: Request, name: str) -> Response:
    """Inputs (one tensor per feature, MLServer's ``pd`` convention) and outputs."""
    return _metadata(request, app_state(request).repo.get(name))


@router.get("/models/{name}/versions/{version}", summary="Model version metadata",
            responses=_META)
async def version_metadata(request: Request, name: str, version: str) -> Response:
    """Metadata of one version."""
    return _metadata(request, app_state(request).repo.get(name, version))


def _ready(request: Request, name: str, version: str | None) -> Response:
    served = app_state(request).repo.get(name, version)
    return _json({"name": served.name, "ready": served.ready})


@router.get("/models/{name}/ready", summary="Model readiness", responses=_READY)
async def model_ready(request: Request, name: str) -> Response:
    """200 when loaded and warmed; 503 while loading; 404 when unknown."""
    return _ready(request, name, None)


@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness",
            responses=_READY)
async def version_ready(request: Request, name: str, version: str) -> Response:
    """Readiness of one version."""
    return _ready(request, name, version)


async def _infer(request: Request, name: str | None, version: str | None) -> Response:
    state = app_state(request)
    plane = state.dataplane
    ctx = request_context(request)
    ctx.protocol = ctx.route = "v2"
    served = plane.resolve(ctx, name, version)
    header = request.headers.get(_HEADER)
    with tracing.span("modelport.validate") if tracing.ON else tracing.NOOP:
        body, tensors = decode_request(await request.body(), int(header) if header and
                                       header.isdigit() else None)
        batch = to_columns(tensors, served.signature, unseen=state.settings.unseen_categories,
                           max_rows=state.settings.max_batch_rows)
    outputs = await plane.infer(ctx, served, batch)
    payload, head_len = encode_response(body, outputs, model=served.name, version=served.version,
                                        request_id=ctx.request_id)
    if head_len is None:
        return JSONBytes(payload)
    return Response(payload, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(head_len)})


@table.post("/models/{name}/infer", kind="v2", summary="Inference", responses=_INFER)
async def infer(request: Request, name: str) -> Response:
    """JSON tensors, or the binary-tensor extension (``Inference-Header-Content-Length``)."""
    return await _infer(request, name, None)


@table.post("/models/{name}/versions/{version}/infer", kind="v2",
            summary="Inference with a version", responses=_INFER)
async def infer_version(request: Request, name: str, version: str) -> Response:
    """Inference with one version."""
    return await _infer(request, name, version)


@router.post("/repository/index", summary="Repository index",
             responses=answers(RepositoryIndex))
async def repository_index(request: Request) -> Response:
    """Every model this server knows, loaded or not."""
    plane = app_state(request).dataplane
    out = [{"name": s.name, "version": s.version, "state": "READY" if s.ready else "LOADING",
            "reason": ""} for s in plane.models()]
    for name in plane.unloaded():
        out.append({"name": name, "version": "", "state": "UNAVAILABLE", "reason": "unloaded"})
    return _json(out)


@router.post("/repository/models/{name}/load", summary="Load a model",
             responses=answers(Empty, 404, 409))
async def repository_load(request: Request, name: str) -> Response:
    """(Re)load a model this server knows from its source (after it passes its golden rows:
    409 if not)."""
    await app_state(request).dataplane.load(name)
    return _json({})


@router.post("/repository/models/{name}/unload", summary="Unload a model",
             responses=answers(Empty, 404))
async def repository_unload(request: Request, name: str) -> Response:
    """Stop serving a model; it stays in the index and can be loaded again."""
    await app_state(request).dataplane.unload(name)
    return _json({})
